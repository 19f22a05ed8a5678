"""The migration stream: a versioned header, then typed records.

    header   "KVMHMIG\\0", u32 version, u32 flags (0), u32 meta length, meta (JSON)
    record   u8 type, 3 bytes 0, u32 n, then by type:
      PAGES    n x u64 page index, then n x 4096 bytes     n <= 1024
      ZERO     n x u64 page index: pages of zeros, no data n <= 65536
      CONTROL  n bytes: the whole control slot           n == control slot size
      VCPU     n bytes: u32 id, u32 0, u64 TSC, kvm_regs, kvm_sregs
      HASHES   n x u64: XXH64 (seed 1) of every data page as last sent,
               n == data pages (zero pages: the zero page's hash)
      END      n == 0: switch over
      ABORT    n bytes of UTF-8: the source gives up
    switch-over, after END, in lines of JSON (a two-phase commit):
      destination -> {"status": "ready", "verified": true, "pages-received",
                     "hash-ms"}: RAM verified and the vCPUs loaded, not run;
                     or at any point {"status": "refused", "verified": false,
                     "error"}
      source      -> {"go": true}, once it has retired its own vCPUs
      destination -> {"status": "resumed", "resume-counters", "boot-id",
                     "resumed-at"}, once the guest runs there

So at most one copy of the guest ever runs: the source's until it sends go
(a source that hears no "ready" within its switch-over bound resumes its own
guest; the destination, which never got go, discards its copy), the
destination's after it receives go.  A go that is lost on the way loses the
guest (its state is still in the source process): no protocol over one
connection can rule that out, and it is the failure we choose over two
running copies.

The meta (JSON) describes the VM: mem, vcpus, seed, page-size, control-size,
and each vCPU's writer log as [counter, seed, first page, pages, pattern,
read threshold, table seed] segments, so the destination replays the
guest's writes as the source does and rebuilds the alias tables of the
hotcold and zipf patterns (pure functions of the stream) instead of
receiving them.

Everything is little-endian.  The receiver checks each record against the
header before acting on it: a page index past the data slot, a length that
does not match, an unknown type, a truncated stream: each is refused with a
message, and nothing is ever written outside guest RAM.  A page costs 4104
bytes (its index and its data), as in QEMU's RAM stream; indices come
first in a record so that both ends move the data in one piece.

The hashes are taken while the pages move (each end hashes the very copy
it sent or received, so the hash of a page the guest was writing matches
what crossed), not in a pass over all of RAM during the downtime.  They
prove the transfer; that the dirty log missed no page is what `verify=
"full"` adds: the source hashes all of RAM with the vCPUs stopped and
sends that instead, so a page that changed without being logged and sent
again shows up as a mismatch (the tests' replay checks the same after
every migration).
"""

import ctypes
import json
import struct
import time

import numpy as np

from ..errors import HarnessError, StreamError
from ..kvm import uapi
from ..microvm.guest import MAX_VCPUS, PAGE_SIZE
from ..microvm.machine import VmConfig
from ..microvm.page_hash import ZERO_PAGE_HASH, gather_pages
from ..microvm.replay import WriterLog, WriterStream
from .. import patterns

MAGIC = b"KVMHMIG\x00"
VERSION = 2  # 2: ZERO records, writer logs with read threshold and table seed
HEADER = struct.Struct("<8sIII")
RECORD = struct.Struct("<B3xI")
VCPU_HEAD = struct.Struct("<IIQ")
PAGES, CONTROL, VCPU, HASHES, END, ABORT, ZERO = 1, 2, 3, 4, 5, 6, 7
RECORD_NAMES = {PAGES: "PAGES", CONTROL: "CONTROL", VCPU: "VCPU", HASHES: "HASHES", END: "END", ABORT: "ABORT",
                ZERO: "ZERO"}
MAX_META = 1 << 20
MAX_PAGES_PER_RECORD = 1024
MAX_ZERO_PER_RECORD = 65536
ZERO_WIRE_BYTES = 8  # a zero page's index, as QEMU's RAM_SAVE_FLAG_ZERO page costs its header
MAX_ABORT = 4096
MAX_SLOTS = 512  # the most data memslots a stream may ask for (the CLI's --slots bound)
MAX_REPLY = 65536
VCPU_BYTES = VCPU_HEAD.size + ctypes.sizeof(uapi.kvm_regs) + ctypes.sizeof(uapi.kvm_sregs)


def boot_id():
    """This kernel's boot id: two processes that share it share CLOCK_MONOTONIC."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def encode_meta(config, control_size, logs):
    return {
        "mem": config.mem,
        "vcpus": config.vcpus,
        "seed": config.seed,
        "slots": config.slots,
        "page-size": PAGE_SIZE,
        "control-size": control_size,
        "logs": [[[c, s.seed, s.first_page, s.npages, s.pattern, s.read_threshold, s.table_seed]
                  for c, s in log.segments] for log in logs],
    }


def _uint(meta, key, high):
    value = meta.get(key) if isinstance(meta, dict) else None
    if type(value) is not int or not 0 <= value < high:  # bool, float, Infinity: refused
        raise StreamError(f"migration stream metadata is malformed: '{key}' must be a whole number below {high}")
    return value


def _log(segments, slot_pages):
    if not isinstance(segments, list) or not 1 <= len(segments) <= 1 << 16:
        raise StreamError("migration stream metadata is malformed: a writer log is a list of segments")
    out, last = [], 0
    for segment in segments:
        if (not isinstance(segment, list) or len(segment) != 7 or not isinstance(segment[4], str)
                or any(type(x) is not int or x < 0 for x in segment[:4] + segment[5:])):
            raise StreamError("migration stream metadata is malformed: a writer log segment is [counter, seed, "
                              "first page, pages, pattern, read threshold, table seed]")
        counter, seed, first, npages, pattern, threshold, table_seed = segment
        if (counter < last or seed >= 1 << 64 or npages < 1 or first + npages > slot_pages
                or threshold > patterns.ALL_READS or table_seed >= 1 << 64):
            raise StreamError("migration stream metadata is malformed: writer log segment out of range")
        try:
            if patterns.parse_pattern(pattern) != pattern:
                raise HarnessError("not canonical")
        except HarnessError:
            raise StreamError(f"migration stream metadata is malformed: unknown pattern '{pattern[:40]}'") from None
        out.append((counter, WriterStream(seed, first, npages, pattern, threshold, table_seed)))
        last = counter
    return WriterLog(tuple(out))


def decode_meta(meta, backing="anonymous"):
    """(VmConfig, control slot size, writer logs) from a header's meta; every
    field typed and bounded before use.  The memslots are the source's (the
    machine's layout, as a QEMU destination has the source's machine
    type); the backing source is the destination's own (a host matter, as
    QEMU's memory backend is given on each side's command line)."""
    mem = _uint(meta, "mem", 1 << 64)  # how much this host can build is MicroVm's to say
    vcpus = _uint(meta, "vcpus", MAX_VCPUS + 1)
    seed = _uint(meta, "seed", 1 << 64)
    slots = _uint(meta, "slots", MAX_SLOTS + 1) if "slots" in meta else 1
    if not slots:
        raise StreamError("migration stream metadata is malformed: slots must be at least 1")
    if _uint(meta, "page-size", 1 << 32) != PAGE_SIZE:
        raise StreamError(f"page size {meta['page-size']} is not supported")
    control_size = _uint(meta, "control-size", 1 << 32)
    if mem % PAGE_SIZE or not vcpus:
        raise StreamError("migration stream metadata is malformed: mem must be whole pages, vcpus at least 1")
    logs = meta.get("logs")
    if not isinstance(logs, list) or len(logs) != vcpus:
        raise StreamError("migration stream metadata is malformed: one writer log per vCPU expected")
    logs = [_log(log, mem // PAGE_SIZE) for log in logs]
    return (VmConfig(mem=mem, vcpus=vcpus, seed=seed, warm=False, prefault=False, backing=backing, slots=slots),
            control_size, logs)


def send_line(sock, obj):
    """One line of JSON of the switch-over."""
    sock.sendall(json.dumps(obj).encode() + b"\n")


def send_reply(sock, obj):
    """The destination's answer; a peer that has gone is no error."""
    try:
        send_line(sock, obj)
    except OSError:
        pass


def read_reply(sock, timeout):
    """One line of JSON of the switch-over, within `timeout` seconds."""
    sock.settimeout(timeout)
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(PAGE_SIZE)
        if not chunk:
            raise HarnessError("the destination closed the connection without answering")
        buf += chunk
        if len(buf) > MAX_REPLY:
            raise HarnessError("the destination's answer is too long")
    try:
        reply = json.loads(buf)
    except ValueError:
        raise HarnessError("the destination's answer is not JSON") from None
    if not isinstance(reply, dict):
        raise HarnessError("the destination's answer is not a JSON object")
    return reply


class Pacer:
    """Keeps a sender at or under `bytes_per_second` (None: unlimited)."""

    def __init__(self, bytes_per_second=None):
        self.rate = bytes_per_second
        self.t0 = time.perf_counter()
        self.sent = 0

    def account(self, n):
        self.sent += n
        if self.rate:
            ahead = self.sent / self.rate - (time.perf_counter() - self.t0)
            if ahead > 0:
                time.sleep(ahead)


class StreamWriter:
    def __init__(self, sock, bytes_per_second=None):
        self.sock = sock
        self.pacer = Pacer(bytes_per_second)
        self._buffer = np.empty((MAX_PAGES_PER_RECORD, PAGE_SIZE), dtype=np.uint8)
        self.zero_pages = 0  # sent as ZERO records (QEMU's "duplicate")
        self.normal_pages = 0  # sent with their data (QEMU's "normal")

    @property
    def bytes_sent(self):
        return self.pacer.sent

    def _send(self, *parts):
        for part in parts:
            self.sock.sendall(part)
            self.pacer.account(memoryview(part).nbytes)

    def header(self, meta):
        body = json.dumps(meta).encode()
        self._send(HEADER.pack(MAGIC, VERSION, 0, len(body)), body)

    def pages(self, indices, base_addr, zero, hashes):
        """Send pages `indices` (uint64) of the guest RAM at `base_addr`;
        those where the mask `zero` is set go as ZERO records, their index
        only (QEMU's zero page flag).  `hashes` (per data page) gets the
        hash of each page as sent."""
        if zero.any():
            zeros = indices[zero]
            for lo in range(0, len(zeros), MAX_ZERO_PER_RECORD):
                chunk = np.ascontiguousarray(zeros[lo : lo + MAX_ZERO_PER_RECORD], dtype="<u8")
                self._send(RECORD.pack(ZERO, len(chunk)), chunk.tobytes())
            hashes[zeros] = ZERO_PAGE_HASH
            indices = indices[~zero]
            self.zero_pages += len(zeros)
        self.normal_pages += len(indices)
        sent = np.empty(MAX_PAGES_PER_RECORD, dtype=np.uint64)
        for lo in range(0, len(indices), MAX_PAGES_PER_RECORD):
            chunk = np.ascontiguousarray(indices[lo : lo + MAX_PAGES_PER_RECORD], dtype="<u8")
            data = self._buffer[: len(chunk)]
            gather_pages(base_addr, chunk, data, sent)  # one copy, hashed as it is made, then sent
            hashes[chunk] = sent[: len(chunk)]
            self._send(RECORD.pack(PAGES, len(chunk)) + chunk.tobytes(), data)

    def control(self, data):
        self._send(RECORD.pack(CONTROL, len(data)), data)

    def vcpu(self, vcpu_id, tsc, regs, sregs):
        body = VCPU_HEAD.pack(vcpu_id, 0, tsc) + bytes(regs) + bytes(sregs)
        self._send(RECORD.pack(VCPU, len(body)), body)

    def hashes(self, hashes):
        self._send(RECORD.pack(HASHES, len(hashes)), np.ascontiguousarray(hashes, dtype="<u8").tobytes())

    def end(self):
        self._send(RECORD.pack(END, 0))

    def abort(self, reason):
        body = reason.encode()[:MAX_ABORT]
        self._send(RECORD.pack(ABORT, len(body)), body)


class StreamReader:
    def __init__(self, sock):
        self.sock = sock
        self.received = 0
        self._buffer = np.empty((MAX_PAGES_PER_RECORD, PAGE_SIZE), dtype=np.uint8)

    def read_into(self, view, what):
        """Fill the writable buffer `view` from the stream."""
        view = memoryview(view).cast("B")
        n, got = view.nbytes, 0
        while got < n:
            k = self.sock.recv_into(view[got:], n - got)
            if k == 0:
                raise StreamError(f"migration stream truncated in {what} ({got} of {n} bytes)")
            got += k
        self.received += n
        return view

    def read_exact(self, n, what):
        return bytes(self.read_into(bytearray(n), what))

    def header(self):
        magic, version, flags, meta_len = HEADER.unpack(self.read_exact(HEADER.size, "the header"))
        if magic != MAGIC:
            raise StreamError("not a kvmharness migration stream (bad magic)")
        if version != VERSION:
            raise StreamError(f"migration stream version {version}, this kvmharness speaks {VERSION}")
        if flags != 0:
            raise StreamError(f"unknown migration stream flags {flags:#x}")
        if meta_len > MAX_META:
            raise StreamError(f"migration stream metadata of {meta_len} bytes is too large")
        try:
            meta = json.loads(self.read_exact(meta_len, "the metadata"))
        except ValueError as e:
            raise StreamError(f"migration stream metadata is not JSON: {e}") from None
        if not isinstance(meta, dict):
            raise StreamError("migration stream metadata is not an object")
        return meta

    def _indices(self, n, npages, what):
        """n page indices, each checked to lie in guest RAM before anything is written."""
        indices = np.frombuffer(self.read_exact(n * 8, what), dtype="<u8")
        if (indices >= npages).any():
            raise StreamError(f"page index {int(indices[indices >= npages][0])} is outside guest RAM "
                              f"({npages} pages)")
        return indices

    def record(self, npages, control_size, nvcpus):
        """(type, payload) of the next record, checked against the VM's shape."""
        rtype, n = RECORD.unpack(self.read_exact(RECORD.size, "a record header"))
        name = RECORD_NAMES.get(rtype)
        if name is None:
            raise StreamError(f"unknown migration record type {rtype}")
        if rtype == PAGES:
            if not 0 < n <= MAX_PAGES_PER_RECORD:
                raise StreamError(f"PAGES record with {n} pages (1..{MAX_PAGES_PER_RECORD} allowed)")
            indices = self._indices(n, npages, "a PAGES record")
            data = self._buffer[:n]  # valid until the next record
            self.read_into(data, "a PAGES record")
            return rtype, (indices, data)
        if rtype == ZERO:
            if not 0 < n <= MAX_ZERO_PER_RECORD:
                raise StreamError(f"ZERO record with {n} pages (1..{MAX_ZERO_PER_RECORD} allowed)")
            return rtype, self._indices(n, npages, "a ZERO record")
        if rtype == CONTROL:
            if n != control_size:
                raise StreamError(f"CONTROL record of {n} bytes, the control slot has {control_size}")
            return rtype, self.read_exact(n, "the CONTROL record")
        if rtype == VCPU:
            if n != VCPU_BYTES:
                raise StreamError(f"VCPU record of {n} bytes, expected {VCPU_BYTES}")
            body = self.read_exact(n, "a VCPU record")
            vcpu_id, _, tsc = VCPU_HEAD.unpack_from(body)
            if vcpu_id >= nvcpus:
                raise StreamError(f"VCPU record for vCPU {vcpu_id}, the VM has {nvcpus}")
            regs = uapi.kvm_regs.from_buffer_copy(body, VCPU_HEAD.size)
            sregs = uapi.kvm_sregs.from_buffer_copy(body, VCPU_HEAD.size + ctypes.sizeof(uapi.kvm_regs))
            return rtype, (vcpu_id, tsc, regs, sregs)
        if rtype == HASHES:
            if n != npages:
                raise StreamError(f"HASHES record for {n} pages, guest RAM has {npages}")
            return rtype, np.frombuffer(self.read_exact(8 * n, "the HASHES record"), dtype="<u8")
        if rtype == END:
            if n != 0:
                raise StreamError("END record with a payload")
            return rtype, None
        if n > MAX_ABORT:
            raise StreamError("ABORT record too long")
        return rtype, self.read_exact(n, "the ABORT record").decode(errors="replace")
