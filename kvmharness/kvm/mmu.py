"""Which MMU this host's KVM gives a guest: two-dimensional paging (Intel
EPT, AMD NPT) or shadow paging (KVM without them, and kvm_pvm's nested
runners).

It decides what ending dirty logging costs the guest (dirtyrate/log_stop.py):
under shadow paging every page write-protected for the log stays so after
the log stops, until the guest's next write to it faults; under EPT with PML
the log clears dirty bits instead and nothing stays protected.  `probe` and
the measuring-cost benchmark say which they ran on.  KVM says
which through its vendor module's parameters (kvm_intel's `ept`, kvm_amd's
`npt`); a host with neither module loaded (kvm_pvm) shadows.
"""

import os

SYSFS_MODULES = "/sys/module"
TDP_PARAMETERS = (("kvm_intel", "ept", "ept"), ("kvm_amd", "npt", "npt"))


def host_mmu(sysfs=SYSFS_MODULES):
    """'ept', 'npt' or 'shadow'."""
    for module, parameter, name in TDP_PARAMETERS:
        try:
            with open(os.path.join(sysfs, module, "parameters", parameter)) as f:
                value = f.read().strip()
        except OSError:
            continue
        return name if value in ("Y", "y", "1") else "shadow"
    return "shadow"
