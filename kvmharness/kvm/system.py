"""`Kvm`: the /dev/kvm file descriptor and its system ioctls."""

import errno
import os

from ..errors import CapabilityMissing, KvmIoctlError, KvmUnavailable
from . import uapi
# hidden_capabilities lives in capability.py; selftest and the tests take it from here
from .capability import check_extension, hidden_capabilities  # noqa: F401 - re-exported
from .ioctl import close_fd, ioctl
from .vm import Vm

DEFAULT_DEVICE = os.environ.get("KVMHARNESS_DEVICE", "/dev/kvm")  # for tests of a missing device

# What the harness cannot work without, with the reason a user is told.
REQUIRED_CAPS = {
    "KVM_CAP_USER_MEMORY": "guest RAM lives in our own mappings",
    "KVM_CAP_EXT_CPUID": "the guest needs the host's CPUID (KVM_SET_CPUID2)",
    "KVM_CAP_SYNC_MMU": "the host reads guest RAM while the guest runs",
    "KVM_CAP_GET_TSC_KHZ": "the writer paces itself by the TSC",
    "KVM_CAP_IMMEDIATE_EXIT": "vCPUs must be kicked out of KVM_RUN",
}


class Kvm:
    """An open /dev/kvm.  One method per system ioctl."""

    def __init__(self, path=DEFAULT_DEVICE):
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KvmUnavailable(f"{path} does not exist. Is KVM loaded and enabled?") from None
        except PermissionError:
            raise KvmUnavailable(
                f"permission denied opening {path}: run as root, or add your user "
                "to the group that owns it (usually 'kvm') and log in again"
            ) from None
        except OSError as e:
            raise KvmUnavailable(f"cannot open {path}: {e.strerror}. Is KVM loaded and enabled?") from None
        try:
            version = self.get_api_version()
            if version != uapi.KVM_API_VERSION:
                raise KvmUnavailable(
                    f"{path} speaks KVM API version {version}, we need {uapi.KVM_API_VERSION}"
                )
        except BaseException:
            self.close()
            raise
        self.path = path

    def get_api_version(self):
        return ioctl(self.fd, "KVM_GET_API_VERSION")

    def check_extension(self, cap):
        """KVM_CHECK_EXTENSION; `cap` is a KVM_CAP_* name or number."""
        return check_extension(self.fd, cap)

    def require(self, caps=REQUIRED_CAPS):
        """Check every required capability up front, naming the missing one."""
        for name, why in caps.items():
            if self.check_extension(name) <= 0:
                raise CapabilityMissing(f"this host's KVM lacks {name}, needed because {why}")

    def get_vcpu_mmap_size(self):
        return ioctl(self.fd, "KVM_GET_VCPU_MMAP_SIZE")

    def get_supported_cpuid(self):
        """KVM_GET_SUPPORTED_CPUID, growing the buffer until it is large enough."""
        nent = 64
        while True:
            cpuid = uapi.kvm_cpuid2_with(nent)()
            cpuid.nent = nent
            try:
                ioctl(self.fd, "KVM_GET_SUPPORTED_CPUID", cpuid)
                return cpuid
            except KvmIoctlError as e:
                if e.errno != errno.E2BIG or nent >= 4096:
                    raise
                nent *= 2

    def create_vm(self):
        return Vm(self, ioctl(self.fd, "KVM_CREATE_VM", 0))

    def close(self):
        if getattr(self, "fd", -1) >= 0:
            close_fd(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
