"""The error tree.  Every error a user can cause or meet is a HarnessError
whose message says what happened and what to do; the CLI prints it without a
traceback.  Anything else escaping is a bug in kvmharness.

    HarnessError
     +-- UsageError          bad arguments (sizes, rates, counts, ranges)
     +-- KvmUnavailable      /dev/kvm missing or not accessible
     +-- CapabilityMissing   the host's KVM lacks something we need
     +-- HostMemoryError     a slot larger than the host can back
     +-- KvmIoctlError       an ioctl failed (names the ioctl and errno)
     +-- GuestError          the guest stopped in a way it should not
"""

import errno as _errno
import os


class HarnessError(Exception):
    """Base of every error that is reported to the user as a message."""


class UsageError(HarnessError):
    pass


class KvmUnavailable(HarnessError):
    pass


class CapabilityMissing(HarnessError):
    pass


class HostMemoryError(HarnessError):
    pass


class KvmIoctlError(HarnessError):
    """An ioctl returned -1.  `errno` is kept for callers that handle some."""

    def __init__(self, name, err):
        self.ioctl = name
        self.errno = err
        super().__init__(f"{name} failed: {_errno.errorcode.get(err, err)} ({os.strerror(err)})")


class GuestError(HarnessError):
    """The guest stopped unexpectedly; carries the exit and the registers."""

    def __init__(self, vcpu, exit, regs=None):
        self.vcpu = vcpu
        self.exit = exit
        self.regs = regs
        detail = f"vCPU {vcpu}: {exit.describe()}"
        if regs is not None:
            detail += "\n" + format_regs(regs)
        super().__init__(detail)


def format_regs(regs):
    """kvm_regs as four lines, the way a crash report reads."""
    names = [name for name, _ in regs._fields_]
    cells = [f"{name.upper():>6}={getattr(regs, name):016x}" for name in names]
    return "\n".join("  " + " ".join(cells[i : i + 5]) for i in range(0, len(cells), 5))
