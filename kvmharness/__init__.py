"""kvmharness: measure how fast a KVM guest dirties its memory, the way
QEMU's calc-dirty-rate does, by driving /dev/kvm directly."""

__version__ = "0.1.0"
