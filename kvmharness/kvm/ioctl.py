"""The one place where kvmharness calls ioctl(2).

Through ctypes rather than fcntl.ioctl because ctypes releases the GIL for
the whole call (a vCPU thread sits in KVM_RUN for seconds) and hands EINTR
back to us instead of retrying it, which is how a kicked vCPU leaves
KVM_RUN.  Failures raise KvmIoctlError naming the ioctl.
"""

import ctypes
import os

from ..errors import KvmIoctlError
from . import uapi

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.restype = ctypes.c_int
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


def ioctl(fd, name, arg=None):
    """Issue the ioctl called `name` (a constant of uapi) on `fd`.

    `arg` is a ctypes object (passed by reference), an int (passed as is),
    or None.  Returns the ioctl's non-negative result.
    """
    request = getattr(uapi, name)
    if arg is None:
        ptr = None
    elif isinstance(arg, int):
        ptr = arg
    else:
        ptr = ctypes.addressof(arg)
    ret = _libc.ioctl(fd, request, ptr)
    if ret < 0:
        raise KvmIoctlError(name, ctypes.get_errno())
    return ret


def close_fd(fd):
    """Close a KVM fd; EINTR on close means it is closed all the same."""
    try:
        os.close(fd)
    except InterruptedError:
        pass
