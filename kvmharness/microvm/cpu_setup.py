"""vCPU register set-up for the one guest mode that runs natively on both
hardware KVM and the nested runner: 64-bit mode at CPL 3.

docs/platform.md: the nested runner's backend executes a guest on the
hardware only when it is in 64-bit mode and CPL (taken from SS.DPL) is 3;
otherwise every instruction is emulated.  Flat segments, no GDT, IDT or TSS
of ours: the selectors are never loaded by the guest.
"""

from ..kvm import uapi

USER_CODE_SELECTOR = 0x33  # GDT index 6, RPL 3
USER_DATA_SELECTOR = 0x2B  # GDT index 5, RPL 3


def _segment(selector, type_, long_mode):
    return uapi.kvm_segment(
        base=0,
        limit=0xFFFFFFFF,
        selector=selector,
        type=type_,
        present=1,
        dpl=3,
        db=0 if long_mode else 1,
        s=1,
        l=1 if long_mode else 0,
        g=1,
    )


def enter_long_mode_cpl3(vcpu, pml4_gpa):
    sregs = vcpu.get_sregs()
    sregs.cs = _segment(USER_CODE_SELECTOR, 0xB, long_mode=True)  # execute/read, accessed
    data = _segment(USER_DATA_SELECTOR, 0x3, long_mode=False)  # read/write, accessed
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data
    sregs.cr0 = uapi.X86_CR0_PE | uapi.X86_CR0_PG
    sregs.cr3 = pml4_gpa
    sregs.cr4 = uapi.X86_CR4_PAE
    sregs.efer = uapi.EFER_LME | uapi.EFER_LMA
    vcpu.set_sregs(sregs)


def set_entry(vcpu, rip, rdi):
    """Start at `rip` with `rdi` as the guest's only argument."""
    regs = uapi.kvm_regs()
    regs.rip = rip
    regs.rdi = rdi
    regs.rflags = uapi.X86_RFLAGS_FIXED
    vcpu.set_regs(regs)

