"""The error tree.  Every error a user can cause or meet is a HarnessError
whose message says what happened and what to do; the CLI prints it without a
traceback.  Anything else escaping is a bug in kvmharness.

    HarnessError
     +-- UsageError          bad arguments (sizes, rates, counts, ranges)
     +-- KvmUnavailable      /dev/kvm missing or not accessible
     +-- CapabilityMissing   the host's KVM lacks something we need
     +-- HostMemoryError     a slot larger than the host can back, a failed mmap
     +-- KvmIoctlError       an ioctl failed (names the ioctl and errno)
     +-- GuestError          the guest stopped in a way it should not
     +-- BuildMismatch       the native extension does not match guest/layout.h
     +-- StreamError         a migration stream is malformed, truncated or hostile
     +-- QmpError            a QMP error reply: class and desc as QEMU sends them
          +-- DirtyRateError calc-dirty-rate refused, in QEMU's words

Layers raise the error that names what went wrong; only the CLI (one line,
exit status) and the QMP server (an error reply) turn them into output.
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


class BuildMismatch(HarnessError):
    """The installed extension was built from another guest/layout.h."""

    def __init__(self, what):
        super().__init__(f"kvmharness is mis-built ({what}): reinstall it (scripts/setup.sh)")


class StreamError(HarnessError):
    """A migration stream is malformed, truncated or hostile."""


class QmpError(HarnessError):
    """An error reply: `qmp_class` and the message as QEMU would send them."""

    def __init__(self, desc, qmp_class="GenericError"):
        super().__init__(desc)
        self.desc = desc
        self.qmp_class = qmp_class


class DirtyRateError(QmpError):
    """calc-dirty-rate / query-dirty-rate refused: the message is QEMU's, to the letter."""


class Signalled(BaseException):
    """SIGTERM or SIGHUP arrived (SIGINT is KeyboardInterrupt): not an error
    but an order to stop, so it unwinds like KeyboardInterrupt and every
    `with` closes; the CLI exits 128 + signo."""

    def __init__(self, signo):
        super().__init__(signo)
        self.signo = signo


def format_regs(regs):
    """kvm_regs as four lines, the way a crash report reads."""
    names = [name for name, _ in regs._fields_]
    cells = [f"{name.upper():>6}={getattr(regs, name):016x}" for name in names]
    return "\n".join("  " + " ".join(cells[i : i + 5]) for i in range(0, len(cells), 5))
