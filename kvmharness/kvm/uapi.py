"""The slice of the KVM userspace API (linux/kvm.h, asm/kvm.h) that we use.

Names are the kernel's, verbatim.  ioctl numbers are derived from the
argument struct with the kernel's _IOC encoding (include/uapi/asm-generic/
ioctl.h), never written as hex.  tests/test_uapi_layout.py compiles the
kernel headers and checks every size and offset below against them.
"""

import ctypes

# ---- ioctl number encoding (asm-generic/ioctl.h) ---------------------------
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _IOC(direction, type_, nr, size):
    return (direction << _IOC_DIRSHIFT) | (type_ << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (
        size << _IOC_SIZESHIFT
    )


def _IO(type_, nr):
    return _IOC(_IOC_NONE, type_, nr, 0)


def _IOR(type_, nr, struct):
    return _IOC(_IOC_READ, type_, nr, ctypes.sizeof(struct))


def _IOW(type_, nr, struct):
    return _IOC(_IOC_WRITE, type_, nr, ctypes.sizeof(struct))


def _IOWR(type_, nr, struct):
    return _IOC(_IOC_READ | _IOC_WRITE, type_, nr, ctypes.sizeof(struct))


KVMIO = 0xAE
KVM_API_VERSION = 12

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


# ---- structs ------------------------------------------------------------------
class kvm_userspace_memory_region(ctypes.Structure):
    _fields_ = [
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
    ]


class kvm_dirty_log(ctypes.Structure):
    _fields_ = [("slot", u32), ("padding1", u32), ("dirty_bitmap", u64)]


class kvm_clear_dirty_log(ctypes.Structure):
    _fields_ = [
        ("slot", u32),
        ("num_pages", u32),
        ("first_page", u64),
        ("dirty_bitmap", u64),
    ]


class kvm_enable_cap(ctypes.Structure):
    _fields_ = [("cap", u32), ("flags", u32), ("args", u64 * 4), ("pad", u8 * 64)]


class kvm_regs(ctypes.Structure):
    _fields_ = [
        (name, u64)
        for name in (
            "rax rbx rcx rdx rsi rdi rsp rbp r8 r9 r10 r11 r12 r13 r14 r15 rip rflags".split()
        )
    ]


class kvm_segment(ctypes.Structure):
    _fields_ = [
        ("base", u64),
        ("limit", u32),
        ("selector", u16),
        ("type", u8),
        ("present", u8),
        ("dpl", u8),
        ("db", u8),
        ("s", u8),
        ("l", u8),
        ("g", u8),
        ("avl", u8),
        ("unusable", u8),
        ("padding", u8),
    ]


class kvm_dtable(ctypes.Structure):
    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


KVM_NR_INTERRUPTS = 256


class kvm_sregs(ctypes.Structure):
    _fields_ = [(name, kvm_segment) for name in "cs ds es fs gs ss tr ldt".split()] + [
        ("gdt", kvm_dtable),
        ("idt", kvm_dtable),
        ("cr0", u64),
        ("cr2", u64),
        ("cr3", u64),
        ("cr4", u64),
        ("cr8", u64),
        ("efer", u64),
        ("apic_base", u64),
        ("interrupt_bitmap", u64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    ]


class kvm_cpuid_entry2(ctypes.Structure):
    _fields_ = [
        ("function", u32),
        ("index", u32),
        ("flags", u32),
        ("eax", u32),
        ("ebx", u32),
        ("ecx", u32),
        ("edx", u32),
        ("padding", u32 * 3),
    ]


class kvm_cpuid2(ctypes.Structure):
    """Header only; the entries follow it (a flexible array member)."""

    _fields_ = [("nent", u32), ("padding", u32)]


def _with_entries(header, entry, n):
    """`header` (a struct ending in a flexible array) with room for n `entry`s."""
    return type(f"{header.__name__}_{n}", (ctypes.Structure,),
                {"_fields_": list(header._fields_) + [("entries", entry * n)]})


def kvm_cpuid2_with(nent):
    """A kvm_cpuid2 header followed by room for `nent` entries."""
    return _with_entries(kvm_cpuid2, kvm_cpuid_entry2, nent)


class kvm_msr_entry(ctypes.Structure):
    _fields_ = [("index", u32), ("reserved", u32), ("data", u64)]


class kvm_msrs(ctypes.Structure):
    """Header only; the entries follow it (a flexible array member)."""

    _fields_ = [("nmsrs", u32), ("pad", u32)]


def kvm_msrs_with(nmsrs):
    """A kvm_msrs header followed by room for `nmsrs` entries."""
    return _with_entries(kvm_msrs, kvm_msr_entry, nmsrs)


class kvm_dirty_gfn(ctypes.Structure):
    _fields_ = [("flags", u32), ("slot", u32), ("offset", u64)]


# kvm_run: the fixed header and the members of the exit union we decode.
class _kvm_run_hw(ctypes.Structure):
    _fields_ = [("hardware_exit_reason", u64)]


class _kvm_run_fail_entry(ctypes.Structure):
    _fields_ = [("hardware_entry_failure_reason", u64), ("cpu", u32)]


class _kvm_run_ex(ctypes.Structure):
    _fields_ = [("exception", u32), ("error_code", u32)]


class _kvm_run_io(ctypes.Structure):
    _fields_ = [
        ("direction", u8),
        ("size", u8),
        ("port", u16),
        ("count", u32),
        ("data_offset", u64),
    ]


class _kvm_run_mmio(ctypes.Structure):
    _fields_ = [("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8)]


class _kvm_run_internal(ctypes.Structure):
    _fields_ = [("suberror", u32), ("ndata", u32), ("data", u64 * 16)]


class _kvm_run_system_event(ctypes.Structure):
    _fields_ = [("type", u32), ("ndata", u32), ("data", u64 * 16)]


class _kvm_run_exit(ctypes.Union):
    _fields_ = [
        ("hw", _kvm_run_hw),
        ("fail_entry", _kvm_run_fail_entry),
        ("ex", _kvm_run_ex),
        ("io", _kvm_run_io),
        ("mmio", _kvm_run_mmio),
        ("internal", _kvm_run_internal),
        ("system_event", _kvm_run_system_event),
        ("padding", ctypes.c_char * 256),
    ]


class kvm_run(ctypes.Structure):
    _fields_ = [
        ("request_interrupt_window", u8),
        ("immediate_exit", u8),
        ("padding1", u8 * 6),
        ("exit_reason", u32),
        ("ready_for_interrupt_injection", u8),
        ("if_flag", u8),
        ("flags", u16),
        ("cr8", u64),
        ("apic_base", u64),
        ("exit", _kvm_run_exit),
    ]


# ---- ioctls ------------------------------------------------------------------
# /dev/kvm
KVM_GET_API_VERSION = _IO(KVMIO, 0x00)
KVM_CREATE_VM = _IO(KVMIO, 0x01)
KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04)
KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, kvm_cpuid2)
# VM
KVM_CREATE_VCPU = _IO(KVMIO, 0x41)
KVM_GET_DIRTY_LOG = _IOW(KVMIO, 0x42, kvm_dirty_log)
KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, kvm_userspace_memory_region)
KVM_ENABLE_CAP = _IOW(KVMIO, 0xA3, kvm_enable_cap)
KVM_CLEAR_DIRTY_LOG = _IOWR(KVMIO, 0xC0, kvm_clear_dirty_log)
KVM_RESET_DIRTY_RINGS = _IO(KVMIO, 0xC7)
# vCPU
KVM_RUN = _IO(KVMIO, 0x80)
KVM_GET_REGS = _IOR(KVMIO, 0x81, kvm_regs)
KVM_SET_REGS = _IOW(KVMIO, 0x82, kvm_regs)
KVM_GET_SREGS = _IOR(KVMIO, 0x83, kvm_sregs)
KVM_SET_SREGS = _IOW(KVMIO, 0x84, kvm_sregs)
KVM_GET_MSRS = _IOWR(KVMIO, 0x88, kvm_msrs)
KVM_SET_MSRS = _IOW(KVMIO, 0x89, kvm_msrs)
KVM_SET_CPUID2 = _IOW(KVMIO, 0x90, kvm_cpuid2)
KVM_GET_TSC_KHZ = _IO(KVMIO, 0xA3)

# ---- capabilities --------------------------------------------------------------
KVM_CAP_USER_MEMORY = 3
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_VCPUS = 9
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_SYNC_MMU = 16
KVM_CAP_GET_TSC_KHZ = 61
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168
KVM_CAP_DIRTY_LOG_RING = 192
KVM_CAP_DIRTY_LOG_RING_ACQ_REL = 223

KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1 << 0
KVM_DIRTY_LOG_INITIALLY_SET = 1 << 1

# ---- memory slots, dirty ring --------------------------------------------------
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_DIRTY_LOG_PAGE_OFFSET = 64  # x86 (arch/x86/include/uapi/asm/kvm.h)
KVM_DIRTY_GFN_F_DIRTY = 1 << 0
KVM_DIRTY_GFN_F_RESET = 1 << 1

# ---- exit reasons ---------------------------------------------------------------
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_DIRTY_RING_FULL = 31

EXIT_REASON_NAMES = {
    value: name
    for name, value in globals().items()
    if name.startswith("KVM_EXIT_") and isinstance(value, int)
}

# ---- x86 architectural bits used to set up the guest -----------------------------
MSR_IA32_TSC = 0x10
X86_CR0_PE = 1 << 0
X86_CR0_PG = 1 << 31
X86_CR4_PAE = 1 << 5
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
X86_RFLAGS_FIXED = 1 << 1
