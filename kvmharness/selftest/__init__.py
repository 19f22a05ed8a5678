"""`kvmharness selftest`: does this host's KVM dirty tracking tell the
truth?  What a platform team runs after a kernel upgrade, from the
installed package alone: dirty bitmap with and without manual protection,
KVM_CLEAR_DIRTY_LOG, the dirty ring in both flavours (ACQ_REL and plain),
a ring that fills, two vCPUs, a loopback live migration with verified
RAM, and guest RAM from every backing source the host offers (anonymous,
THP, hugetlb 2 MiB and 1 GiB, shmem, shared hugetlb) split over several
memslots, each against replay of the guest's writes (checks.py).

`hide` names capabilities to treat as absent (kvm.system.hidden_capabilities):
the checks that need them skip, saying so, and the others take the
fallbacks a host without them would.

A backing source the host cannot offer (no such huge page size, THP off,
a short hugetlb pool and no root to reserve pages) is a skip that says why;
as root, the hugetlb checks reserve the pages they need and put the pool
back afterwards.
"""

import time

from ..errors import HarnessError, UsageError
from ..kvm import Kvm
from ..kvm.system import DEFAULT_DEVICE, hidden_capabilities
from .checks import CHECKS
from .report import CheckResult

# --hide NAME -> the capabilities it hides
HIDEABLE = {
    "dirty-ring": ("KVM_CAP_DIRTY_LOG_RING", "KVM_CAP_DIRTY_LOG_RING_ACQ_REL"),
    "dirty-ring-acq-rel": ("KVM_CAP_DIRTY_LOG_RING_ACQ_REL",),
    "manual-protect": ("KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2",),
}


def check_hide(hide):
    """Refuse a name --hide does not know, before anything runs."""
    unknown = sorted(set(hide) - set(HIDEABLE))
    if unknown:
        raise UsageError(f"cannot hide {', '.join(unknown)}: choose from {', '.join(HIDEABLE)}")


def _missing(check, hide, device):
    """Why `check` cannot run here (None: it can)."""
    hidden = {cap: name for name in hide for cap in HIDEABLE[name]}
    with Kvm(device) as kvm:
        for cap, least in check.needs:
            if cap in hidden:
                return f"{cap} hidden by --hide {hidden[cap]}"
            value = kvm.check_extension(cap)
            if value < least:
                return f"this host's KVM lacks {cap}" + (f" >= {least} (has {value})" if least > 1 else "")
    return check.unavailable() if check.unavailable else None


def run_selftest(quick=False, hide=(), device=DEFAULT_DEVICE, progress=None):
    """Run every check; returns a tuple of CheckResult.  A check that fails
    with an error (a HarnessError: the host refused something) is a fail
    with the error's message; `progress(result)` is called after each."""
    check_hide(hide)
    Kvm(device).close()  # no /dev/kvm: one error, not a table of failures
    results = []
    hidden = [cap for name in hide for cap in HIDEABLE[name]]
    for check in CHECKS:
        t0 = time.monotonic()
        with hidden_capabilities(hidden):
            why = _missing(check, hide, device)
            if why:
                result = CheckResult(check.name, "skip", 0.0, why)
            else:
                with hidden_capabilities(check.hide_while_running):
                    try:
                        result = CheckResult(check.name, "pass", 0.0, check.run(quick))
                    except HarnessError as e:
                        result = CheckResult(check.name, "fail", 0.0, f"{type(e).__name__}: {e}")
        result = CheckResult(result.name, result.status, time.monotonic() - t0, result.detail)
        results.append(result)
        if progress:
            progress(result)
    return tuple(results)
