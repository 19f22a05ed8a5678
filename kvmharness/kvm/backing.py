"""Backing sources for guest RAM: what host memory the data slot lives in.

The names and meanings follow the KVM selftests' backing sources
(tools/testing/selftests/kvm/lib/test_util.c, vm_mem_backing_src_alias, the
`-s` option of dirty_log_perf_test), with dashes:

    anonymous              private anonymous memory (the default)
    anonymous-thp          the same, 2 MiB aligned, with MADV_HUGEPAGE
    anonymous-hugetlb-2mb  MAP_HUGETLB | MAP_HUGE_2MB
    anonymous-hugetlb-1gb  MAP_HUGETLB | MAP_HUGE_1GB
    shmem                  a memfd (shared memory), mapped MAP_SHARED
    shared-hugetlb         a memfd with MFD_HUGETLB | MFD_HUGE_2MB, MAP_SHARED

Why they matter to dirty tracking: KVM maps guest memory with the host's
page size where it can, and enabling dirty logging must split those huge
mappings into 4 KiB ones (eagerly, or on the first write), which is what
dirty_log_perf_test's "Enabling dirty logging time" shows.

hugetlb pages come only from the host's pool, reserved beforehand by root
(`reserve_huge_pages`, or `echo N > /sys/kernel/mm/hugepages/hugepages-
2048kB/nr_hugepages`); a source that finds too few free says so in one line
before anything is mapped.
"""

import contextlib
import os
from dataclasses import dataclass

from ..errors import HarnessError, HostMemoryError, UsageError
from .memory import (MAP_ANONYMOUS, MAP_HUGE_SHIFT, MAP_HUGETLB, MAP_PRIVATE, MAP_SHARED,
                     Mapping, format_bytes)

SIZE_4K, SIZE_2M, SIZE_1G = 4 << 10, 2 << 20, 1 << 30
HUGEPAGES_SYSFS = "/sys/kernel/mm/hugepages"
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
MFD_HUGETLB = 0x0004  # linux/memfd.h
MFD_HUGE_SHIFT = 26


@dataclass(frozen=True)
class BackingSource:
    name: str
    page_size: int  # the host page size the source backs guest RAM with (THP: where it can)
    hugetlb: bool = False  # from the host's reserved hugetlb pool
    memfd: bool = False  # a memfd mapped shared, not private anonymous memory
    thp: bool = False  # MADV_HUGEPAGE

    def huge_flags(self):
        """The page size as mmap's / memfd_create's flag bits (log2 << 26)."""
        return (self.page_size.bit_length() - 1) << MAP_HUGE_SHIFT


SOURCES = {s.name: s for s in (
    BackingSource("anonymous", SIZE_4K),
    BackingSource("anonymous-thp", SIZE_2M, thp=True),
    BackingSource("anonymous-hugetlb-2mb", SIZE_2M, hugetlb=True),
    BackingSource("anonymous-hugetlb-1gb", SIZE_1G, hugetlb=True),
    BackingSource("shmem", SIZE_4K, memfd=True),
    BackingSource("shared-hugetlb", SIZE_2M, hugetlb=True, memfd=True),
)}
DEFAULT = "anonymous"


def source(name):
    """The BackingSource called `name`, or a usage error listing them."""
    try:
        return SOURCES[name]
    except KeyError:
        raise UsageError(f"unknown backing source {name[:40]!r}: one of {', '.join(SOURCES)}") from None


# ---- the hugetlb pool -----------------------------------------------------------
def pool_dir(page_size):
    return f"{HUGEPAGES_SYSFS}/hugepages-{page_size >> 10}kB"


def _read_int(path):
    with open(path) as f:
        return int(f.read())


@dataclass(frozen=True)
class HugePool:
    page_size: int
    exists: bool  # the kernel offers this size at all
    total: int = 0  # nr_hugepages: reserved by root
    free: int = 0  # not in use and not promised to a mapping

    @property
    def nr_path(self):
        return f"{pool_dir(self.page_size)}/nr_hugepages"


def huge_pool(page_size):
    """The host's hugetlb pool of one page size, as sysfs says now."""
    d = pool_dir(page_size)
    if not os.path.isdir(d):
        return HugePool(page_size, False)
    free = _read_int(f"{d}/free_hugepages") - _read_int(f"{d}/resv_hugepages")
    return HugePool(page_size, True, _read_int(f"{d}/nr_hugepages"), max(0, free))


def reserve_hint(page_size, count):
    nr = f"{pool_dir(page_size)}/nr_hugepages"
    alt = " (or /proc/sys/vm/nr_hugepages, the default size)" if page_size == SIZE_2M else ""
    return f"reserve them as root: echo {count} > {nr}{alt}"


def check_pool(src, size):
    """Refuse, before mapping, a hugetlb source whose pool lacks the pages:
    a hugetlb mapping made anyway would fail at mmap (or, without a
    reservation, kill us with SIGBUS at the first fault)."""
    pool = huge_pool(src.page_size)
    need = size // src.page_size
    if not pool.exists:
        raise HostMemoryError(f"{src.name}: this host's kernel has no {format_bytes(src.page_size)} huge pages "
                              f"({pool_dir(src.page_size)} is missing)")
    if pool.free < need:
        raise HostMemoryError(f"{src.name} needs {need} free {format_bytes(src.page_size)} huge pages, the host has "
                              f"{pool.free} free of {pool.total} reserved; {reserve_hint(src.page_size, pool.total - pool.free + need)}")


@contextlib.contextmanager
def reserve_huge_pages(page_size, count):
    """Make `count` huge pages of `page_size` free in the host's pool for the
    block (raising nr_hugepages as root), and put nr_hugepages back as it
    was on every way out.  The kernel may give fewer than asked (memory too
    fragmented for 1 GiB pages): then it is restored and we raise."""
    pool = huge_pool(page_size)
    if not pool.exists:
        raise HostMemoryError(f"this host's kernel has no {format_bytes(page_size)} huge pages")
    before = pool.total
    want = before + max(0, count - pool.free)
    try:
        if want != before:
            _write_nr(pool.nr_path, want)
        got = huge_pool(page_size)
        if got.free < count:
            raise HostMemoryError(f"the host gave only {got.free} free {format_bytes(page_size)} huge pages of the "
                                  f"{count} asked for (memory too fragmented or too small)")
        yield got
    finally:
        if want != before:
            _write_nr(pool.nr_path, before)


def _write_nr(path, value):
    try:
        with open(path, "w") as f:
            f.write(f"{value}\n")
    except PermissionError:
        raise HarnessError(f"reserving huge pages needs root (writing {path})") from None
    except OSError as e:
        raise HostMemoryError(f"cannot set {path} to {value}: {e.strerror or e}") from None


# ---- mappings -----------------------------------------------------------------------
@contextlib.contextmanager
def memfd(name, flags, size):
    """A memfd of `size` bytes, closed when the block ends (a mapping of it
    keeps the memory alive after that)."""
    try:
        fd = os.memfd_create(name, os.MFD_CLOEXEC | flags)
    except OSError as e:
        raise HostMemoryError(f"memfd_create failed: {e.strerror or e}") from None
    try:
        try:
            os.ftruncate(fd, size)
        except OSError as e:
            raise HostMemoryError(f"cannot size a memfd to {format_bytes(size)}: {e.strerror or e}") from None
        yield fd
    finally:
        os.close(fd)


def check_size(src, size):
    if size % src.page_size:
        raise UsageError(f"{src.name} backs memory in {format_bytes(src.page_size)} pages: the size "
                         f"({format_bytes(size)}) must be a multiple of that")


def map_backing(name, size):
    """A Mapping of `size` bytes from backing source `name` (a context
    manager: it unmaps on close)."""
    src = source(name)
    check_size(src, size)
    if src.hugetlb:
        check_pool(src, size)
    try:
        if src.memfd:
            with memfd(f"kvmharness-{src.name}", (MFD_HUGETLB | src.huge_flags()) if src.hugetlb else 0,
                       size) as fd:
                return Mapping(size, fd=fd, flags=MAP_SHARED)
        if src.hugetlb:
            # no MAP_NORESERVE: the pages are reserved at mmap, so a short
            # pool fails here and never as a SIGBUS in the guest's fault
            return Mapping(size, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | src.huge_flags())
        mapping = Mapping(size, align=SIZE_2M if src.thp else 0)
    except HostMemoryError as e:
        if src.hugetlb:
            raise HostMemoryError(f"{src.name}: {e}; {reserve_hint(src.page_size, size // src.page_size)}") from None
        raise
    if src.thp:
        try:
            mapping.advise_huge_pages()
        except BaseException:
            mapping.close()
            raise
    return mapping


# ---- what the host offers ---------------------------------------------------------------
@dataclass(frozen=True)
class Offer:
    name: str
    offered: bool  # the host can back memory this way (hugetlb: once pages are reserved)
    detail: str  # why not, or the pool's state


def thp_mode():
    """The THP mode in force: always, madvise or never (None: no THP)."""
    try:
        with open(THP_ENABLED) as f:
            text = f.read()
    except OSError:
        return None
    return next((w.strip("[]") for w in text.split() if w.startswith("[")), None)


def _memfd_works(flags):
    try:
        with memfd("kvmharness-probe", flags, 0):
            return True
    except HostMemoryError:
        return False


def offers():
    """Per source: can this host back the data slot with it, and its state."""
    out = []
    mode = thp_mode()
    shmem = _memfd_works(0)
    for src in SOURCES.values():
        if src.hugetlb:
            pool = huge_pool(src.page_size)
            works = pool.exists and (not src.memfd or _memfd_works(MFD_HUGETLB | src.huge_flags()))
            detail = (f"{pool.free} free of {pool.total} reserved ({pool.nr_path})" if works
                      else f"no {format_bytes(src.page_size)} hugetlb pages in this kernel")
            out.append(Offer(src.name, works, detail))
        elif src.thp:
            out.append(Offer(src.name, mode in ("always", "madvise"), f"transparent_hugepage/enabled: {mode}"))
        elif src.memfd:
            out.append(Offer(src.name, shmem, "memfd_create" + ("" if shmem else " failed")))
        else:
            out.append(Offer(src.name, True, ""))
    return tuple(out)
