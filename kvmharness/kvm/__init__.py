"""The KVM API and nothing else: uapi structs, one ioctl call site, and the
`Kvm`, `Vm`, `Vcpu` types with one method per ioctl (after rust-vmm's
kvm-ioctls)."""

from .system import Kvm
from .vcpu import Vcpu
from .vm import Vm

__all__ = ["Kvm", "Vm", "Vcpu"]
