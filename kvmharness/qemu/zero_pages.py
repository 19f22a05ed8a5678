"""How much of a QEMU VM's RAM is zero pages, read from the QEMU process
itself when it runs on this host (issue 24, `predict --qmp`).

QMP alone cannot tell: calc-dirty-rate counts pages dirtied, not what the
rest holds, and a real VM is full of zero pages (free memory, RAM never
touched), which QEMU sends as a header of a few bytes each.  An idle 1 GiB
VM migrates in tens of milliseconds; predicted as 1 GiB of data it takes
nine seconds.  So:

* the peer: for a unix socket the kernel gives its pid (SO_PEERCRED); for
  TCP on a local address, the process that holds the other end (found by
  its socket's inode in /proc/net/tcp and /proc/*/fd);
* the RAM: every RAM block of `info ramblock` (HMP, through QMP), with its
  host virtual address in that process (QEMU 10 prints it, 7.2 does not);
* the pages that were never made resident are zero for certain: for a
  file-backed block (memory-backend-file, /dev/shm) the file's holes
  (SEEK_DATA / SEEK_HOLE), for anonymous memory the pages /proc/PID/pagemap
  shows neither present nor swapped;
* of the others a random sample is read (the file, or /proc/PID/mem) and
  the zero share is scaled up, with its Wilson interval.

Whatever stops it (another host, no permission, a QEMU without HVA, our own
qmp server) gives an estimate of 0 with the reason, which predict prints.
"""

import contextlib
import functools
import mmap
import os
import re
import socket
import struct
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from ..dirtyrate.trackers.sampling import wilson_interval
from ..errors import QmpError
from ..qmp import replies

PAGE = 4096
ZERO_PAGE = bytes(PAGE)
SAMPLE_PAGES = 4096
PRESENT, SWAPPED = 1 << 63, 1 << 62
_RAMBLOCK = re.compile(r"^\s*(\S+)\s+\d+ \w+\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)", re.M | re.ASCII)


@dataclass(frozen=True)
class RamBlock:
    name: str
    used: int  # bytes
    hva: int  # host virtual address in QEMU's process


@dataclass(frozen=True)
class ZeroPageEstimate:
    """The zero pages of a QEMU VM's RAM blocks, and how they were found."""

    pages: int  # pages of every RAM block (what the first pass sends); 0 when not read
    zero: float  # estimated zero pages (0 when not read)
    untouched: int  # of them, pages never made resident: zero for certain
    sampled: int  # resident pages read
    sampled_zero: int  # of those, zero
    low: float  # 95 % interval of `zero`
    high: float
    source: str  # where the estimate came from, or why there is none
    pid: int | None = None
    seconds: float = 0.0
    scan_seconds: float = 0.0  # what reading the zero pages will cost QEMU's first pass (ScanCosts)
    blocks: tuple = ()  # (name, pages, estimated zero pages) of each RAM block

    @property
    def known(self):
        return self.pid is not None and self.pages > 0

    def to_json(self):
        return {"pid": self.pid, "pages": self.pages, "zero-pages": round(self.zero), "untouched": self.untouched,
                "sampled": self.sampled, "sampled-zero": self.sampled_zero,
                "zero-pages-95": [round(self.low), round(self.high)], "source": self.source,
                "seconds": round(self.seconds, 4), "scan-seconds": round(self.scan_seconds, 4),
                "blocks": [{"name": n, "pages": p, "zero-pages": round(z)} for n, p, z in self.blocks]}

    def describe(self):
        if not self.known:
            return f"zero pages: not known ({self.source}); every page counted as data"
        return (f"zero pages: {self.zero:.0f} of {self.pages} (95 % {self.low:.0f}..{self.high:.0f}): "
                f"{self.untouched} never resident, {self.sampled_zero} of {self.sampled} resident pages sampled "
                f"were zero; finding them costs the first pass ~{self.scan_seconds * 1e3:.0f} ms ({self.source})")


def unknown(reason):
    return ZeroPageEstimate(0, 0.0, 0, 0, 0, 0.0, 0.0, reason)


def peer_pid(sock):
    """The pid of the process at the other end of a connected socket on
    this host, or None with the reason."""
    if sock.family == socket.AF_UNIX:
        pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return (pid, None) if pid > 0 else (None, "the unix socket's peer has no pid in this namespace")
    local, remote = sock.getsockname()[:2], sock.getpeername()[:2]
    inode = _tcp_inode(sock.family, remote, local)
    if inode is None:
        return None, f"the QMP peer {remote[0]}:{remote[1]} is not a process on this host"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return int(pid), None
    return None, f"no process on this host holds the QMP peer's socket ({remote[0]}:{remote[1]})"


def _tcp_inode(family, local, remote):
    """The inode of the TCP socket bound to `local` and connected to
    `remote` (the peer's view of our connection), from /proc/net/tcp(6)."""
    table = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    want = (_proc_address(family, *local), _proc_address(family, *remote))
    with contextlib.suppress(OSError), open(table) as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if (fields[1], fields[2]) == want:
                return fields[9]
    return None


def _proc_address(family, host, port):
    packed = socket.inet_pton(family, host)
    words = struct.unpack(f"<{len(packed) // 4}I", packed)  # /proc prints each 32-bit word in host order
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def ram_blocks(client):
    """QEMU's RAM blocks from `info ramblock`; () where it has no HVA
    column or no such command (QEMU 7.2, our own qmp server)."""
    try:
        text = replies.text(client, "human-monitor-command",
                            client.execute("human-monitor-command", {"command-line": "info ramblock"}))
    except QmpError:
        return ()
    if "HVA" not in text:
        return ()
    return tuple(RamBlock(m[1], int(m[3], 16), int(m[5], 16)) for m in _RAMBLOCK.finditer(text))


@dataclass(frozen=True)
class _Mapping:
    start: int
    end: int
    offset: int
    path: str

    @property
    def file_backed(self):
        return bool(self.path) and not self.path.startswith("[")


def _mappings(pid):
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            path = fields[5].strip() if len(fields) > 5 else ""
            out.append(_Mapping(start, end, int(fields[2], 16), path))
    return out


def _block_pages(pid, block, maps, mem, rng, sample):
    """(pages, untouched, [addresses or file offsets of a sample of the
    resident pages], reader, fd to close or None, file-backed) for one
    block: reader(key) gives a page."""
    npages = block.used // PAGE
    mapping = next((m for m in maps if m.start <= block.hva < m.end), None)
    if mapping is None:
        raise LookupError(f"RAM block {block.name} is not mapped in process {pid}")
    if mapping.file_backed:
        fd = os.open(f"/proc/{pid}/map_files/{mapping.start:x}-{mapping.end:x}", os.O_RDONLY)
        base = mapping.offset + block.hva - mapping.start
        resident = np.zeros(npages, dtype=bool)
        pos, end = base, base + npages * PAGE
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data past pos
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
            if data >= end:
                break
            resident[(data - base) // PAGE:-(-(hole - base) // PAGE)] = True
            pos = hole
        keys = base + PAGE * _choose(np.flatnonzero(resident), rng, sample)
        return npages, int(npages - resident.sum()), keys, lambda key: os.pread(fd, PAGE, int(key)), fd, True
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        entries = np.frombuffer(os.pread(f.fileno(), npages * 8, block.hva // PAGE * 8), dtype=np.uint64)
    resident = (entries & np.uint64(PRESENT | SWAPPED)) != 0
    keys = block.hva + PAGE * _choose(np.flatnonzero(resident), rng, sample)
    return npages, int(npages - resident.sum()), keys, lambda key: os.pread(mem, PAGE, int(key)), None, False


def _choose(indices, rng, k):
    return indices if len(indices) <= k else rng.choice(indices, size=k, replace=False)


def estimate(client, sample=SAMPLE_PAGES, seed=1):
    """ZeroPageEstimate of the QEMU behind `client` (a QmpClient): each
    block's never-resident pages plus its sampled zero share of the rest
    (up to `sample` pages a block; a small block is read whole)."""
    t0 = time.perf_counter()
    pid, reason = peer_pid(client._sock)
    if pid is None:
        return unknown(reason)
    blocks = ram_blocks(client)
    if not blocks:
        return unknown("the QMP peer lists no RAM blocks with their host addresses (info ramblock has an HVA "
                       "column in QEMU 10, none in 7.2; our own qmp server has no such command)")
    rng = np.random.default_rng(seed)
    pages = untouched = sampled = zero = 0
    estimate, low, high, scan, per_block = 0.0, 0.0, 0.0, 0.0, []
    costs = scan_costs()
    try:
        maps = _mappings(pid)
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            for block in blocks:
                n, never, keys, read, fd, file_backed = _block_pages(pid, block, maps, mem.fileno(), rng, sample)
                try:
                    found = sum(read(key) == ZERO_PAGE for key in keys)
                finally:
                    if fd is not None:
                        os.close(fd)
                resident = n - never
                share, (lo, hi) = (found / len(keys), wilson_interval(found, len(keys))) if len(keys) else (0, (0, 0))
                if len(keys) == resident:  # read whole: exact
                    lo = hi = share
                zeros = never + (found if len(keys) == resident else share * resident)
                estimate, low, high = (estimate + zeros, low + never + lo * resident, high + never + hi * resident)
                pages, untouched, sampled, zero = pages + n, untouched + never, sampled + len(keys), zero + found
                per_block.append((block.name, n, zeros))
                scan += never * (costs.file_hole if file_backed else costs.anonymous_hole) \
                    + share * resident * costs.resident
    except (OSError, LookupError) as e:
        return unknown(f"cannot read QEMU's memory (pid {pid}): {e}")
    how = f"read from QEMU's process {pid} on this host: /proc/PID/pagemap or the backing file's holes, " \
          f"and a sample of the resident pages"
    return ZeroPageEstimate(pages, estimate, untouched, sampled, zero, low, high, how, pid,
                            time.perf_counter() - t0, scan, tuple(per_block))


@dataclass(frozen=True)
class ScanCosts:
    """Seconds QEMU's first pass spends on one zero page, by where it lies
    (it reads every page to find the zero ones, buffer_is_zero): one never
    made resident in anonymous memory reads the shared (huge) zero page;
    one in a file's hole (tmpfs: memory-backend-file, /dev/shm) makes the
    kernel allocate and clear a page on the read fault; a resident one is
    read from memory."""

    anonymous_hole: float
    file_hole: float
    resident: float

    def to_json(self):
        return {k: round(v * 1e9, 1) for k, v in vars(self).items()} | {"unit": "ns per page"}


@functools.lru_cache(maxsize=1)
def scan_costs():
    """ScanCosts of this host, each timed once per process on a fresh
    mapping: 64 MiB of untouched anonymous memory (MADV_HUGEPAGE, as QEMU
    asks for its RAM) and of resident memory, 8 MiB of a /dev/shm file's
    holes.  On our runner: ~0.1, ~2.2 and ~0.25 us a page."""
    def per_page(mapping, touch=False):
        words = np.frombuffer(mapping, dtype=np.uint64)
        try:
            if touch:
                words[::PAGE // 8] = 0
            t0 = time.perf_counter()
            words.max()
            return (time.perf_counter() - t0) / (len(mapping) // PAGE)
        finally:
            del words

    big, small = 64 << 20, 8 << 20
    with contextlib.closing(mmap.mmap(-1, big, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)) as m:
        with contextlib.suppress(AttributeError, OSError):
            m.madvise(mmap.MADV_HUGEPAGE)
        anonymous = per_page(m)
    with contextlib.closing(mmap.mmap(-1, big, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)) as m:
        resident = per_page(m, touch=True)
    file_hole = resident
    with contextlib.suppress(OSError), tempfile.TemporaryFile(dir="/dev/shm") as f:
        f.truncate(small)
        with contextlib.closing(mmap.mmap(f.fileno(), small, flags=mmap.MAP_SHARED)) as m:
            file_hole = per_page(m)
    return ScanCosts(anonymous, file_hole, resident)
