"""Host memory: mappings that back guest RAM, and how much the host can give.

Mappings are made with mmap(2) through ctypes, not Python's mmap module,
because KVM needs the address (userspace_addr) and we need MAP_NORESERVE and
MADV_POPULATE_WRITE, and because a Python mmap cannot be closed while a
view of it exists.  Every mapping is a context manager.
"""

import ctypes
import mmap
import os

from ..errors import HarnessError, HostMemoryError

PROT_READ, PROT_WRITE = mmap.PROT_READ, mmap.PROT_WRITE
MAP_SHARED, MAP_PRIVATE = mmap.MAP_SHARED, mmap.MAP_PRIVATE
MAP_ANONYMOUS = mmap.MAP_ANONYMOUS
MAP_NORESERVE = 0x4000  # asm-generic/mman-common.h
MAP_FIXED = 0x10
MAP_HUGETLB = 0x40000
MAP_HUGE_SHIFT = 26  # the huge page size's log2 goes in flags >> MAP_HUGE_SHIFT
MADV_HUGEPAGE = 14
MADV_POPULATE_WRITE = 23  # Linux 5.14
MAP_FAILED = ctypes.c_void_p(-1).value

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def _mmap(size, prot, flags, fd, offset, where):
    addr = _libc.mmap(where, size, prot, flags, fd, offset)
    if addr in (None, MAP_FAILED):
        err = ctypes.get_errno()
        raise HostMemoryError(f"mmap of {size} bytes failed: {os.strerror(err)}")
    return addr


class Mapping:
    """One mmap(2) region, unmapped on close.

    Views handed out by `array()` point into the mapping: they must not
    outlive it, which is why owners close mappings last (after vCPUs and VM).
    """

    def __init__(self, size, *, fd=-1, offset=0, prot=PROT_READ | PROT_WRITE, flags=None, align=0):
        if flags is None:
            flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
        where, fixed = None, 0
        if align:
            # The kernel aligns an anonymous mapping only as it likes; a
            # transparent huge page needs a 2 MiB aligned address, so reserve
            # size + align of address space and map inside it.
            where = _mmap(size + align, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0, None)
            aligned = -(-where // align) * align
            fixed = MAP_FIXED
            if aligned > where:
                _libc.munmap(where, aligned - where)
            _libc.munmap(aligned + size, where + align - aligned)
            where = aligned
        try:
            self.addr = _mmap(size, prot, flags | fixed, fd, offset, where)
        except BaseException:
            if where is not None:
                _libc.munmap(where, size)
            raise
        self.size = size

    @classmethod
    def of_fd(cls, fd, size, offset=0):
        """A shared mapping of a kernel object (kvm_run, a dirty ring)."""
        return cls(size, fd=fd, offset=offset, flags=MAP_SHARED)

    def advise_huge_pages(self):
        """MADV_HUGEPAGE: back this range with transparent huge pages where
        the kernel can (THP "madvise" mode, or "always")."""
        if _libc.madvise(self.addr, self.size, MADV_HUGEPAGE) != 0:
            err = ctypes.get_errno()
            raise HostMemoryError(f"madvise(MADV_HUGEPAGE) failed: {os.strerror(err)}")

    def populate_write(self):
        """Fault every page in writable now, so the guest's first touch is cheap.

        Returns False where the kernel has no MADV_POPULATE_WRITE (< 5.14).
        """
        if _libc.madvise(self.addr, self.size, MADV_POPULATE_WRITE) == 0:
            return True
        err = ctypes.get_errno()
        if err == 12:  # ENOMEM: the host could not back it after all
            raise HostMemoryError(
                f"the host ran out of memory while backing {self.size >> 20} MiB of guest RAM"
            )
        return False

    def array(self, ctype, count, offset=0):
        """A ctypes array of `count` `ctype`s at `offset`, aliasing the mapping."""
        if self.addr is None:
            raise ValueError("mapping is closed")
        if offset + ctypes.sizeof(ctype) * count > self.size:
            raise ValueError("view beyond the end of the mapping")
        return (ctype * count).from_address(self.addr + offset)

    def write(self, offset, data):
        if offset + len(data) > self.size:
            raise ValueError("write beyond the end of the mapping")
        ctypes.memmove(self.addr + offset, data, len(data))

    def read(self, offset, length):
        if offset + length > self.size:
            raise ValueError("read beyond the end of the mapping")
        return ctypes.string_at(self.addr + offset, length)

    def close(self):
        if self.addr is not None:
            _libc.munmap(self.addr, self.size)
            self.addr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def host_available_bytes():
    """What the host can back now: MemAvailable, capped by our cgroup's limit."""
    available = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    if available is None:
        raise HarnessError("cannot read MemAvailable from /proc/meminfo")
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            current = int(f.read())
        if limit != "max":
            available = min(available, int(limit) - current)
    except (OSError, ValueError):
        pass
    return available


def check_host_can_back(size, what="the data slot"):
    """Refuse, before mapping anything, a slot the host cannot back."""
    available = host_available_bytes()
    if size > available:
        raise HostMemoryError(
            f"{what} needs {format_bytes(size)} but the host has only "
            f"{format_bytes(available)} available; ask for less memory"
        )


def format_bytes(n):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"
