"""Our writer as a QEMU guest, with the same exact ground truth as our own VM.

QEMU boots the multiboot image (guest/multiboot.S) with its RAM in a file
we created and map (memory-backend-file, share=on).  Guest physical RAM is
laid out in that file in order, so the writer's control block and every
page of its region are at fixed file offsets (guest/layout.h, KVMH_MB_*):
the host reads the counters and page tags there and writes the control
block there, without an exit and without QEMU's help, exactly as
microvm/writer.py does for our own VM.  So the same WriterControl drives
the guest, and the same replay (microvm/replay.py) says which pages it wrote.

The control block is written before QEMU starts (the file is ours and
fresh; the boot stub leaves it alone), so the guest warms its region up
and holds, as our own VM's guest does.  The file is unlinked once QEMU has
it open: no exit path of ours leaves it behind.
"""

import contextlib
import ctypes
import os
import secrets
import threading
import time

import numpy as np

from .._native import ffi, lib
from ..errors import BuildMismatch, HarnessError, HostMemoryError, UsageError
from ..kvm import Kvm
from ..kvm.memory import Mapping, format_bytes
from ..microvm import guest as writer_guest
from ..microvm.replay import WriterLog, WriterStream
from ..microvm.workload import table_seed
from ..microvm.writer import WriterControl, WriterHost
from ..qmp import replies
from . import launch

SIZE_2M = 2 << 20
SHM = "/dev/shm"
MIN_MEM = 16 << 20
BOOT_TIMEOUT = 60.0  # SeaBIOS and the stub run emulated on nested runners: ~4 s measured
STUB_FAILURES = {
    lib.KVMH_MB_FAIL_MAGIC: "it was not entered by a multiboot loader",
    lib.KVMH_MB_FAIL_MEMINFO: "the multiboot loader gave no memory information",
    lib.KVMH_MB_FAIL_SMALL: "QEMU gave it no RAM beyond the boot area",
    lib.KVMH_MB_FAIL_LARGE: "QEMU gave it more RAM than its page tables map",
}


def multiboot_image():
    """The multiboot ELF32 file built with the extension (build_native.py)."""
    pp = ffi.new("const unsigned char **")
    size = lib.kvmh_multiboot_image(pp)
    if size < 64:
        raise BuildMismatch("no multiboot image in the native extension")
    return bytes(ffi.buffer(pp[0], size))


def _round_2m(n):
    return -(-n // SIZE_2M) * SIZE_2M


def host_tsc_hz():
    """The TSC rate KVM gives a guest by default (QEMU asks for no other)."""
    with Kvm() as kvm, kvm.create_vm() as vm, vm.create_vcpu(0) as vcpu:
        return vcpu.get_tsc_khz() * 1000


class _TableWindow:
    """The pattern tables' part of the RAM file, as WriterControl writes it."""

    def __init__(self, ram, offset, size):
        self._ram, self._offset, self.size = ram, offset, size

    def write(self, offset, data):
        if offset + len(data) > self.size:
            raise ValueError("table write beyond the table area")
        self._ram.write(self._offset + offset, data)


@contextlib.contextmanager
def ram_file(size):
    """A fresh file in /dev/shm of `size` bytes: (path, shared mapping).
    Unlink it early with os.unlink(path) (QEMU keeps it open); it is
    removed at the end in any case."""
    st = os.statvfs(SHM)
    if size > st.f_bavail * st.f_frsize:
        raise HostMemoryError(f"QEMU's guest RAM needs {format_bytes(size)} in {SHM}, which has "
                              f"{format_bytes(st.f_bavail * st.f_frsize)} free; ask for less memory")
    launch.sweep_stale(SHM)
    path = os.path.join(SHM, f"{launch.STALE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        with Mapping.of_fd(fd, size) as mapping:
            yield path, mapping
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def ram_layout(mem):
    """(table gpa, table bytes, guest RAM bytes) of a QEMU guest whose
    writer region is `mem` bytes: the region, then its pattern tables, after
    the boot area (layout.h KVMH_MB_*)."""
    table_gpa = lib.KVMH_DATA_GPA + _round_2m(mem)
    table_size = 2 * (mem // writer_guest.PAGE_SIZE) * 8
    return table_gpa, table_size, _round_2m(lib.KVMH_MB_DATA_OFFSET + (table_gpa - lib.KVMH_DATA_GPA) + table_size)


class QemuGuest(WriterHost):
    """QEMU running our writer over `mem` bytes, one vCPU.  The WriterControl
    API of MicroVm (run_writer, hold, counters, snapshot, logs, page_tags)
    so that truth.py and the replay work on it unchanged.

    `incoming` makes it a migration destination: QEMU waits for the RAM
    instead of booting, and `adopt()` takes the source's writer logs.
    `extra_qmp` opens a second QMP socket at that path for another client
    (`predict --qmp`), since QEMU serves one client per socket."""

    def __init__(self, mem, *, seed=1, qemu=None, dirty_ring_size=0, warm=True, enter=None, incoming=None,
                 extra_qmp=None):
        if mem < MIN_MEM or mem % writer_guest.PAGE_SIZE:
            raise UsageError(f"QEMU's writer region must be a multiple of 4 KiB and at least {MIN_MEM >> 20} MiB")
        self.mem, self.seed, self.warm = mem, seed, warm
        self.slot_pages = mem // writer_guest.PAGE_SIZE
        self.table_gpa, table_size, self.ram_bytes = ram_layout(mem)
        self._stack = contextlib.ExitStack()
        self._closed = False
        try:
            self._build(qemu, dirty_ring_size, enter, incoming, table_size, extra_qmp)
        except BaseException:
            self.close()
            raise

    def _build(self, qemu, dirty_ring_size, enter, incoming, table_size, extra_qmp):
        found = launch.find_qemu(qemu)
        tsc_hz = host_tsc_hz()
        work = self._stack.enter_context(launch.workdir())
        kernel = os.path.join(work, "kvmharness-writer.elf")
        with open(kernel, "wb") as f:
            f.write(multiboot_image())
        path, self.ram = self._stack.enter_context(ram_file(self.ram_bytes))
        ctl = writer_guest.ControlBlock.from_address(self.ram.addr + lib.KVMH_MB_CTL_GPA)
        stream = WriterStream(self.seed, 0, self.slot_pages, "random", 0, table_seed(self.seed, 0, self.slot_pages))
        if incoming is None:
            ctl.seed, ctl.npages, ctl.base = self.seed, self.slot_pages, lib.KVMH_DATA_GPA
            ctl.pattern, ctl.cmd, ctl.warm = lib.KVMH_PATTERN_RANDOM, writer_guest.CMD_HOLD, int(self.warm)
        self.cond = threading.Condition()
        tables = _TableWindow(self.ram, lib.KVMH_MB_DATA_OFFSET + self.table_gpa - lib.KVMH_DATA_GPA, table_size)
        self.writer = WriterControl([ctl], [WriterLog(((0, stream),))], tsc_hz, self.cond, self.check,
                                    slot_pages=self.slot_pages, vm_seed=self.seed, tables=tables,
                                    table_gpa=self.table_gpa)
        self._stack.callback(self.writer.detach)  # before the RAM is unmapped
        config = launch.QemuConfig(found, self.ram_bytes, path, kernel, dirty_ring_size, incoming, extra_qmp)
        self.qemu = self._stack.enter_context(launch.QemuProcess(config, work, enter))
        os.unlink(path)  # QEMU holds it now; nothing of ours can leave it behind
        self.qmp = self.qemu.qmp
        self.dirty_ring_size = dirty_ring_size

    # ---- boot ---------------------------------------------------------------------------------
    def boot_info(self):
        """What the boot stub found: (lowmem, highmem, mapped) bytes, or None
        while it has not finished; raises if it gave up."""
        words = self.ram.array(ctypes.c_uint64, 5, lib.KVMH_MB_INFO_GPA)
        magic, status, low, high, mapped = list(words)
        if magic == lib.KVMH_MB_FAILED:
            raise HarnessError(f"the writer's boot stub stopped: {STUB_FAILURES.get(status, f'reason {status}')}")
        return (low, high, mapped) if magic == lib.KVMH_MB_BOOTED else None

    def wait_ready(self, timeout=None):
        """Until the guest has booted, warmed its region up and holds; the
        warm-up's seconds (guest TSC stamps)."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while (info := self.boot_info()) is None:
            self.check()
            if time.monotonic() > deadline:
                raise HarnessError(f"QEMU did not boot the writer within {BOOT_TIMEOUT:.0f} s")
            time.sleep(0.02)
        low, high, mapped = info
        if low + high != self.ram_bytes or mapped != self.ram_bytes - lib.KVMH_MB_DATA_OFFSET:
            raise HarnessError(f"QEMU laid out {format_bytes(self.ram_bytes)} of RAM as {format_bytes(low)} low + "
                               f"{format_bytes(high)} high, which the writer's map does not cover")
        if timeout is None:
            timeout = 30.0 + self.mem / (50 << 20)
        self.writer.wait(lambda c: c.state == lib.KVMH_STATE_HELD, timeout, "finish its warm-up")
        return self.writer.warm_seconds() if self.warm else 0.0

    def check(self):
        self.qemu.check()

    # ---- the writer: MicroVm's API comes from WriterHost ----------------------------------------
    def adopt(self, logs, timeout=30.0):
        """A migration destination takes the source's writer logs (the
        control block came with the RAM), once QEMU runs the guest: until
        then the incoming stream may still overwrite the control block, and
        a command written there would be lost."""
        self.qmp.wait_for("query-status", lambda s: replies.status(self.qmp, "query-status", s) == "running",
                          timeout, interval=0.02)
        self.writer.adopt_logs(logs)
        self.writer.load_tables()

    def region_offset(self, page=0):
        """File offset (= RAM offset) of region page `page`."""
        return lib.KVMH_MB_DATA_OFFSET + page * writer_guest.PAGE_SIZE

    def page_tags(self):
        """The tag (first 8 bytes) of every region page, as a copy."""
        words = np.ctypeslib.as_array(self.ram.array(ctypes.c_uint64, self.slot_pages * 512, self.region_offset()))
        return words[::512].copy()

    # ---- lifecycle ------------------------------------------------------------------------------
    def close(self):
        if not self._closed:
            self._closed = True
            self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
