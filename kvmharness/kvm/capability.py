"""KVM_CHECK_EXTENSION, for the system fd (`Kvm`) and a VM's fd (`Vm`)
alike, and the capabilities this process pretends not to have.

Its own module, below both system.py and vm.py, so that each asks through
the same function (and sees the same hidden capabilities) without the two
importing each other.
"""

import contextlib

from . import uapi
from .ioctl import ioctl

_hidden = frozenset()  # KVM_CAP_* numbers that KVM_CHECK_EXTENSION reports as 0 (hidden_capabilities)


def cap_number(cap):
    """A KVM_CAP_* name or number -> the number."""
    return getattr(uapi, cap) if isinstance(cap, str) else cap


@contextlib.contextmanager
def hidden_capabilities(caps):
    """Within, every Kvm and Vm of this process answers KVM_CHECK_EXTENSION
    with 0 for `caps` (names or numbers), as a host without them would:
    what takes a missing capability's fallback (the plain dirty ring when
    ACQ_REL is hidden, GET-only dirty logging without manual protection)
    takes it for real, so `selftest --hide` shows how a host lacking them
    behaves, on the host that has them."""
    global _hidden
    before = _hidden
    _hidden = before | {cap_number(c) for c in caps}
    try:
        yield
    finally:
        _hidden = before


def check_extension(fd, cap):
    """KVM_CHECK_EXTENSION on a system or VM fd, hidden capabilities reading 0."""
    number = cap_number(cap)
    return 0 if number in _hidden else ioctl(fd, "KVM_CHECK_EXTENSION", number)
