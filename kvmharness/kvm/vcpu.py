"""`Vcpu`: a vCPU file descriptor, its kvm_run page and its ioctls."""

import errno

from ..errors import KvmIoctlError
from .memory import Mapping
from . import exits, uapi
from .ioctl import close_fd, ioctl


class Vcpu:
    def __init__(self, vm, vcpu_id, fd):
        self.vm = vm
        self.id = vcpu_id
        self.fd = fd
        self._run_map = Mapping.of_fd(fd, vm.kvm.get_vcpu_mmap_size())
        self.run_struct = uapi.kvm_run.from_address(self._run_map.addr)

    def run(self):
        """KVM_RUN once; returns the decoded exit.

        EINTR (a kick: a signal, or immediate_exit set) comes back as
        exits.Interrupted rather than an exception, since it is how the host
        asks a vCPU to come out.
        """
        try:
            ioctl(self.fd, "KVM_RUN")
        except KvmIoctlError as e:
            if e.errno == errno.EINTR:
                return exits.Interrupted()
            raise
        return exits.decode(self.run_struct)

    @property
    def immediate_exit(self):
        return bool(self.run_struct.immediate_exit)

    @immediate_exit.setter
    def immediate_exit(self, value):
        self.run_struct.immediate_exit = 1 if value else 0

    def get_regs(self):
        regs = uapi.kvm_regs()
        ioctl(self.fd, "KVM_GET_REGS", regs)
        return regs

    def set_regs(self, regs):
        ioctl(self.fd, "KVM_SET_REGS", regs)

    def get_sregs(self):
        sregs = uapi.kvm_sregs()
        ioctl(self.fd, "KVM_GET_SREGS", sregs)
        return sregs

    def set_sregs(self, sregs):
        ioctl(self.fd, "KVM_SET_SREGS", sregs)

    def set_cpuid2(self, cpuid):
        ioctl(self.fd, "KVM_SET_CPUID2", cpuid)

    def get_msrs(self, indices):
        """KVM_GET_MSRS: {index: value} for the MSRs asked for."""
        msrs = uapi.kvm_msrs_with(len(indices))()
        msrs.nmsrs = len(indices)
        for entry, index in zip(msrs.entries, indices):
            entry.index = index
        got = ioctl(self.fd, "KVM_GET_MSRS", msrs)
        if got != len(indices):
            raise KvmIoctlError("KVM_GET_MSRS", errno.EINVAL)
        return {e.index: e.data for e in msrs.entries}

    def set_msrs(self, values):
        """KVM_SET_MSRS from {index: value}."""
        msrs = uapi.kvm_msrs_with(len(values))()
        msrs.nmsrs = len(values)
        for entry, (index, value) in zip(msrs.entries, values.items()):
            entry.index, entry.data = index, value
        if ioctl(self.fd, "KVM_SET_MSRS", msrs) != len(values):
            raise KvmIoctlError("KVM_SET_MSRS", errno.EINVAL)

    def get_tsc_khz(self):
        return ioctl(self.fd, "KVM_GET_TSC_KHZ")

    def close(self):
        if self.fd >= 0:
            self.run_struct = None
            self._run_map.close()
            close_fd(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
