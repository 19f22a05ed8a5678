"""Starting and stopping a QEMU that boots our writer.

What a user expects of a tool that starts QEMU for them: QEMU found or a
one-line way to get it, QEMU's own complaint when it refuses to start, and
no QEMU left running whatever happens to us.  So the child gets
PR_SET_PDEATHSIG (it dies with us even on SIGKILL), its stderr goes to a
file we quote from, and every exit path quits it over QMP, then terminates,
then kills it.

The flags are those measured on our runners (docs/qemu.md,
qemu-target-notes): `-cpu host,-arch-capabilities` (plain `-cpu host` dies
on nested runners setting MSR 0x10a), no default devices, no reboot (a
triple fault ends QEMU instead of looping), QMP on a unix socket.
"""

import contextlib
import ctypes
import functools
import glob
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from ..errors import CapabilityMissing, HarnessError
from ..qmp.client import QmpClient, QmpConnectionError

QEMU_NAMES = ("qemu-system-x86_64", "/usr/libexec/qemu-kvm")
# where scripts/setup.sh unpacks a QEMU that is not the system's (bookworm-backports' QEMU 10 beside Debian's
# 7.2): <sys.prefix>/qemu/<version>/usr/bin/qemu-system-x86_64, its firmware under .../usr/share
PRIVATE_ROOT = os.path.join(sys.prefix, "qemu")
PRIVATE_BINARY = os.path.join("usr", "bin", "qemu-system-x86_64")
FIRMWARE_DIRS = (os.path.join("usr", "share", "qemu"), os.path.join("usr", "share", "seabios"))
INSTALL_HINT = ("install it (Debian/Ubuntu: apt-get install qemu-system-x86; `scripts/setup.sh` brings Debian's "
                "and bookworm-backports' QEMU) or pass --qemu PATH")
MS_SINCE = (8, 2, 0)  # calc-time-unit: the seed's millisecond windows
START_TIMEOUT = 20.0
QUIT_TIMEOUT = 5.0
PR_SET_PDEATHSIG = 1
SIGKILL = 9


@dataclass(frozen=True)
class Qemu:
    """One QEMU binary we can run: its version and the firmware folders it
    needs passed with -L (an unpacked package, unlike an installed one,
    does not find its own BIOS)."""

    binary: str
    version: tuple
    firmware: tuple = ()

    @property
    def version_text(self):
        return ".".join(map(str, self.version))

    @property
    def millisecond(self):
        """calc-dirty-rate takes calc-time-unit (QEMU 8.2+, the seed)."""
        return self.version >= MS_SINCE

    def to_json(self):
        return {"binary": self.binary, "version": self.version_text, "millisecond-windows": self.millisecond,
                "firmware": list(self.firmware)}


def firmware_dirs(binary):
    """-L folders for a QEMU unpacked into a prefix (PREFIX/usr/bin/qemu-...
    beside PREFIX/usr/share/qemu); none for one installed in /usr."""
    prefix = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(binary))))
    if prefix == "/":
        return ()
    return tuple(d for d in (os.path.join(prefix, f) for f in FIRMWARE_DIRS) if os.path.isdir(d))


@functools.lru_cache(maxsize=32)
def qemu_version(binary):
    """(major, minor, micro) of `binary --version`; asked once per binary
    and process (the pytest plugin looks QEMU up for every qemu test)."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20).stdout
        numbers = out.split("version", 1)[1].split()[0].split(".")
        return tuple(int(n) for n in numbers[:3])
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        raise CapabilityMissing(f"{binary} --version did not say which QEMU it is") from None


def describe(binary):
    """The Qemu at `binary` (which must be an executable QEMU)."""
    if not binary or not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise CapabilityMissing(f"{binary or 'an empty path'} is not an executable QEMU")
    return Qemu(binary, qemu_version(binary), firmware_dirs(binary))


def _candidates():
    for name in QEMU_NAMES:
        found = shutil.which(name)
        if found:
            yield found
    for path in sorted(glob.glob(os.path.join(PRIVATE_ROOT, "*", PRIVATE_BINARY))):
        yield path


def find_qemus():
    """Every QEMU found here, on PATH and unpacked by the set-up, oldest
    first; one binary reached twice (a link) once.  A binary that does not
    say its version is left out."""
    seen, found = set(), []
    for path in _candidates():
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        try:
            found.append(describe(path))
        except CapabilityMissing:
            continue
    return sorted(found, key=lambda q: q.version)


def find_qemu(path=None):
    """The QEMU to run: `path` (a binary's path, or a Qemu), else the
    newest found (the one with millisecond windows where the set-up brought
    it)."""
    if isinstance(path, Qemu):
        return path
    if path is not None:
        return describe(path)
    found = find_qemus()
    if not found:
        raise CapabilityMissing(f"QEMU (qemu-system-x86_64) is not installed: {INSTALL_HINT}")
    return found[-1]


@dataclass(frozen=True)
class QemuConfig:
    """One QEMU: RAM `ram_bytes` (a multiple of 2 MiB) backed by the file
    `mem_path` (shared, so the host maps the guest's RAM), booting `kernel`."""

    qemu: Qemu
    ram_bytes: int
    mem_path: str
    kernel: str
    dirty_ring_size: int = 0  # 0: dirty bitmap (QEMU's default)
    incoming: str | None = None  # "tcp:IP:PORT" for a migration destination
    extra_qmp: str | None = None  # a second QMP socket, for another client (QEMU serves one per socket)

    def argv(self, qmp_path):
        accel = "kvm" + (f",dirty-ring-size={self.dirty_ring_size}" if self.dirty_ring_size else "")
        firmware = [a for d in self.qemu.firmware for a in ("-L", d)]
        argv = [self.qemu.binary, *firmware, "-accel", accel, "-cpu", "host,-arch-capabilities",
                "-machine", "pc,memory-backend=ram", "-m", f"{self.ram_bytes >> 20}M", "-smp", "1",
                "-object", f"memory-backend-file,id=ram,size={self.ram_bytes},mem-path={self.mem_path},share=on",
                "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "none", "-monitor", "none",
                "-kernel", self.kernel, "-qmp", f"unix:{qmp_path},server=on,wait=off"]
        if self.extra_qmp:
            argv += ["-qmp", f"unix:{self.extra_qmp},server=on,wait=off"]
        if self.incoming:
            argv += ["-incoming", self.incoming]
        return argv


def _child_setup(enter):
    """In the child before exec: die with the parent, then enter a network
    namespace if asked (the migration testbed's two hosts)."""
    def setup():
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
        if enter is not None:
            enter()
    return setup


class QemuProcess:
    """A running QEMU with a negotiated QMP session (`.qmp`).  Use as a
    context manager; `workdir` holds its QMP socket and stderr log and must
    outlive it."""

    def __init__(self, config, workdir, enter=None):
        self.config = config
        self.qmp_path = os.path.join(workdir, "qmp.sock")
        self._log_path = os.path.join(workdir, "qemu.log")
        self.qmp = None
        with open(self._log_path, "wb") as log:
            try:
                self.process = subprocess.Popen(config.argv(self.qmp_path), stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=log, preexec_fn=_child_setup(enter))
            except OSError as e:
                raise CapabilityMissing(f"cannot run {config.qemu.binary}: {e.strerror}") from None
        try:
            self.qmp = self._connect()
        except BaseException:
            self.close()
            raise

    def _connect(self):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self.check()
            if os.path.exists(self.qmp_path):
                try:
                    return QmpClient(self.qmp_path)
                except QmpConnectionError:
                    pass
            if time.monotonic() > deadline:
                raise HarnessError(f"QEMU did not open its QMP socket within {START_TIMEOUT:.0f} s")
            time.sleep(0.02)

    def stderr_tail(self, lines=5):
        try:
            with open(self._log_path, errors="replace") as f:
                return " | ".join(line.strip() for line in f.read().strip().splitlines()[-lines:])
        except OSError:
            return ""

    def check(self):
        """Raise if QEMU has exited: with its exit status and last words."""
        status = self.process.poll()
        if status is not None:
            said = self.stderr_tail()
            why = f": {said}" if said else (
                " (the guest shut down: a triple fault ends a guest that has no IDT, and -no-reboot ends QEMU)"
                if status == 0 else "")
            raise HarnessError(f"QEMU exited with status {status}{why}")

    def close(self):
        """Quit QEMU over QMP, else terminate it, else kill it; reap it."""
        if self.qmp is not None:
            with contextlib.suppress(Exception):
                self.qmp.execute("quit")
            with contextlib.suppress(Exception):
                self.qmp.close()
            self.qmp = None
        if self.process.poll() is None:
            for stop in (lambda: None, self.process.terminate, self.process.kill):
                stop()
                try:
                    self.process.wait(QUIT_TIMEOUT)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


STALE_PREFIX = "kvmh-qemu-"


def sweep_stale(folder, prefix=STALE_PREFIX):
    """Remove what an earlier kvmharness killed by SIGKILL left in `folder`
    (no handler runs on SIGKILL: qemu-check left its folder 5 times of 6):
    our own entries named PREFIX<pid>-... whose process is gone.  A pid
    reused since is taken as alive: the entry then waits for a later run."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        m = re.fullmatch(re.escape(prefix) + r"([0-9]+)-.*", name, re.ASCII | re.DOTALL)
        if not m or int(m[1]) == os.getpid() or _alive(int(m[1])):
            continue
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            if st.st_uid != os.getuid():
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, and is not ours to signal
    return True


@contextlib.contextmanager
def workdir():
    """A private directory (0700) for one QEMU's socket, log and image,
    removed with all it holds (and, by the next run, if SIGKILL stopped
    this one: sweep_stale)."""
    sweep_stale(tempfile.gettempdir())
    path = tempfile.mkdtemp(prefix=f"{STALE_PREFIX}{os.getpid()}-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
