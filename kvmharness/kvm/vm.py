"""`Vm`: a KVM VM file descriptor and its VM ioctls."""

from ..errors import UsageError
from . import uapi
from .capability import check_extension
from .ioctl import close_fd, ioctl
from .vcpu import Vcpu


class Vm:
    """One VM.  Ordering rules of the API are enforced here, not in comments:
    the dirty ring can only be enabled before the first vCPU exists."""

    def __init__(self, kvm, fd):
        self.kvm = kvm
        self.fd = fd
        self.vcpus_created = 0

    def check_extension(self, cap):
        """KVM_CHECK_EXTENSION on the VM fd (some answers are per VM)."""
        return check_extension(self.fd, cap)

    def set_user_memory_region(self, slot, guest_phys_addr, memory_size, userspace_addr, flags=0):
        region = uapi.kvm_userspace_memory_region(
            slot=slot,
            flags=flags,
            guest_phys_addr=guest_phys_addr,
            memory_size=memory_size,
            userspace_addr=userspace_addr,
        )
        ioctl(self.fd, "KVM_SET_USER_MEMORY_REGION", region)

    def enable_cap(self, cap, *args):
        number = getattr(uapi, cap) if isinstance(cap, str) else cap
        ec = uapi.kvm_enable_cap(cap=number)
        for i, a in enumerate(args):
            ec.args[i] = a
        ioctl(self.fd, "KVM_ENABLE_CAP", ec)

    def enable_dirty_log_ring(self, ring_bytes, acq_rel):
        """KVM_CAP_DIRTY_LOG_RING(_ACQ_REL): must come before any vCPU."""
        if self.vcpus_created:
            raise UsageError("the dirty ring must be enabled before the first vCPU is created")
        cap = "KVM_CAP_DIRTY_LOG_RING_ACQ_REL" if acq_rel else "KVM_CAP_DIRTY_LOG_RING"
        self.enable_cap(cap, ring_bytes)

    def create_vcpu(self, vcpu_id):
        fd = ioctl(self.fd, "KVM_CREATE_VCPU", vcpu_id)
        self.vcpus_created += 1
        try:
            return Vcpu(self, vcpu_id, fd)
        except BaseException:
            close_fd(fd)
            raise

    def get_dirty_log(self, slot, bitmap_addr):
        """KVM_GET_DIRTY_LOG into the buffer at `bitmap_addr` (one bit per page)."""
        ioctl(self.fd, "KVM_GET_DIRTY_LOG", uapi.kvm_dirty_log(slot=slot, dirty_bitmap=bitmap_addr))

    def clear_dirty_log(self, slot, first_page, num_pages, bitmap_addr):
        """KVM_CLEAR_DIRTY_LOG: re-protect the pages whose bits are set."""
        arg = uapi.kvm_clear_dirty_log(
            slot=slot, num_pages=num_pages, first_page=first_page, dirty_bitmap=bitmap_addr
        )
        ioctl(self.fd, "KVM_CLEAR_DIRTY_LOG", arg)

    def reset_dirty_rings(self):
        return ioctl(self.fd, "KVM_RESET_DIRTY_RINGS")

    def close(self):
        if self.fd >= 0:
            close_fd(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
