"""vCPU exits decoded from kvm_run into frozen dataclasses.

KVM_RUN returning is a tagged union in kvm_run; decoding it once here means
the rest of the harness matches on types, never on raw exit_reason numbers.
"""

from dataclasses import dataclass

from . import uapi


@dataclass(frozen=True)
class VcpuExit:
    def describe(self):
        return type(self).__name__


@dataclass(frozen=True)
class MmioWrite(VcpuExit):
    addr: int
    data: bytes

    @property
    def value(self):
        return int.from_bytes(self.data, "little")

    def describe(self):
        return f"MMIO write of {self.data.hex()} to {self.addr:#x}"


@dataclass(frozen=True)
class MmioRead(VcpuExit):
    addr: int
    length: int

    def describe(self):
        return f"MMIO read of {self.length} bytes at {self.addr:#x}"


@dataclass(frozen=True)
class Io(VcpuExit):
    direction: int
    port: int
    size: int
    count: int

    def describe(self):
        kind = "OUT" if self.direction == 1 else "IN"
        return f"port I/O {kind} port {self.port:#x} size {self.size} count {self.count}"


@dataclass(frozen=True)
class Shutdown(VcpuExit):
    def describe(self):
        return "KVM_EXIT_SHUTDOWN (the guest triple-faulted)"


@dataclass(frozen=True)
class Hlt(VcpuExit):
    pass


@dataclass(frozen=True)
class FailEntry(VcpuExit):
    hardware_entry_failure_reason: int
    cpu: int

    def describe(self):
        return (
            f"KVM_EXIT_FAIL_ENTRY: hardware entry failure reason "
            f"{self.hardware_entry_failure_reason:#x} on host CPU {self.cpu}"
        )


@dataclass(frozen=True)
class InternalError(VcpuExit):
    suberror: int
    data: tuple

    def describe(self):
        words = " ".join(f"{d:#x}" for d in self.data)
        return f"KVM_EXIT_INTERNAL_ERROR suberror {self.suberror} data [{words}]"


@dataclass(frozen=True)
class SystemEvent(VcpuExit):
    type: int

    def describe(self):
        return f"KVM_EXIT_SYSTEM_EVENT type {self.type}"


@dataclass(frozen=True)
class DirtyRingFull(VcpuExit):
    pass


@dataclass(frozen=True)
class Interrupted(VcpuExit):
    """KVM_RUN returned EINTR or KVM_EXIT_INTR: a signal or immediate_exit."""


@dataclass(frozen=True)
class Other(VcpuExit):
    exit_reason: int

    def describe(self):
        name = uapi.EXIT_REASON_NAMES.get(self.exit_reason, "unknown")
        return f"unexpected exit {self.exit_reason} ({name})"


def decode(run):
    """The exit that `run` (a kvm_run) describes."""
    reason = run.exit_reason
    if reason == uapi.KVM_EXIT_MMIO:
        mmio = run.exit.mmio
        if mmio.is_write:
            return MmioWrite(mmio.phys_addr, bytes(mmio.data[: mmio.len]))
        return MmioRead(mmio.phys_addr, mmio.len)
    if reason == uapi.KVM_EXIT_IO:
        io = run.exit.io
        return Io(io.direction, io.port, io.size, io.count)
    if reason == uapi.KVM_EXIT_SHUTDOWN:
        return Shutdown()
    if reason == uapi.KVM_EXIT_HLT:
        return Hlt()
    if reason == uapi.KVM_EXIT_FAIL_ENTRY:
        fe = run.exit.fail_entry
        return FailEntry(fe.hardware_entry_failure_reason, fe.cpu)
    if reason == uapi.KVM_EXIT_INTERNAL_ERROR:
        ie = run.exit.internal
        return InternalError(ie.suberror, tuple(ie.data[: min(ie.ndata, 16)]))
    if reason == uapi.KVM_EXIT_SYSTEM_EVENT:
        return SystemEvent(run.exit.system_event.type)
    if reason == uapi.KVM_EXIT_DIRTY_RING_FULL:
        return DirtyRingFull()
    if reason == uapi.KVM_EXIT_INTR:
        return Interrupted()
    return Other(reason)
