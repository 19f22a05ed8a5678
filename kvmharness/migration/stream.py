"""The migration stream: a versioned header, then typed records.

    header   "KVMHMIG\\0", u32 version, u32 flags (0), u32 meta length, meta (JSON)
    record   u8 type, 3 bytes 0, u32 n, then by type:
      PAGES    n x (u64 page index, 4096 bytes)          n <= 1024
      CONTROL  n bytes: the whole control slot           n == control slot size
      VCPU     n bytes: u32 id, u32 0, u64 TSC, kvm_regs, kvm_sregs
      HASHES   n x u64: XXH64 (seed 1) of every data page, n == data pages
      END      n == 0: switch over
      ABORT    n bytes of UTF-8: the source gives up

Everything is little-endian.  The receiver checks each record against the
header before acting on it: a page index past the data slot, a length that
does not match, an unknown type, a truncated stream: each is refused with a
message, and nothing is ever written outside guest RAM.  The page entry
(8-byte header + page) costs the same 4104 bytes as in QEMU's RAM stream.
"""

import ctypes
import json
import struct
import time

import numpy as np

from ..errors import HarnessError
from ..kvm import uapi

MAGIC = b"KVMHMIG\x00"
VERSION = 1
HEADER = struct.Struct("<8sIII")
RECORD = struct.Struct("<B3xI")
VCPU_HEAD = struct.Struct("<IIQ")
PAGES, CONTROL, VCPU, HASHES, END, ABORT = 1, 2, 3, 4, 5, 6
RECORD_NAMES = {PAGES: "PAGES", CONTROL: "CONTROL", VCPU: "VCPU", HASHES: "HASHES", END: "END", ABORT: "ABORT"}
MAX_META = 1 << 20
MAX_PAGES_PER_RECORD = 1024
MAX_ABORT = 4096
PAGE_SIZE = 4096
PAGE_ENTRY = np.dtype([("index", "<u8"), ("data", "u1", PAGE_SIZE)])
VCPU_BYTES = VCPU_HEAD.size + ctypes.sizeof(uapi.kvm_regs) + ctypes.sizeof(uapi.kvm_sregs)


class StreamError(HarnessError):
    """The stream is malformed, truncated or hostile."""


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

    @property
    def bytes_sent(self):
        return self.pacer.sent

    def _send(self, *parts):
        for part in parts:
            self.sock.sendall(part)
            self.pacer.account(len(part))

    def header(self, meta):
        body = json.dumps(meta).encode()
        self._send(HEADER.pack(MAGIC, VERSION, 0, len(body)), body)

    def pages(self, indices, data_pages):
        """Send pages `indices` (uint64) of `data_pages` (an [npages, 4096] uint8 view)."""
        for lo in range(0, len(indices), MAX_PAGES_PER_RECORD):
            chunk = indices[lo : lo + MAX_PAGES_PER_RECORD]
            entries = np.empty(len(chunk), dtype=PAGE_ENTRY)
            entries["index"] = chunk
            entries["data"] = data_pages[chunk]
            self._send(RECORD.pack(PAGES, len(chunk)), entries.tobytes())

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

    def read_exact(self, n, what):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:], n - got)
            if k == 0:
                raise StreamError(f"migration stream truncated in {what} ({got} of {n} bytes)")
            got += k
        self.received += n
        return bytes(buf)

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

    def record(self, npages, control_size, nvcpus):
        """(type, payload) of the next record, checked against the VM's shape."""
        rtype, n = RECORD.unpack(self.read_exact(RECORD.size, "a record header"))
        name = RECORD_NAMES.get(rtype)
        if name is None:
            raise StreamError(f"unknown migration record type {rtype}")
        if rtype == PAGES:
            if not 0 < n <= MAX_PAGES_PER_RECORD:
                raise StreamError(f"PAGES record with {n} pages (1..{MAX_PAGES_PER_RECORD} allowed)")
            entries = np.frombuffer(self.read_exact(n * PAGE_ENTRY.itemsize, "a PAGES record"), dtype=PAGE_ENTRY)
            bad = entries["index"] >= npages
            if bad.any():
                raise StreamError(f"page index {int(entries['index'][bad][0])} is outside guest RAM "
                                  f"({npages} pages)")
            return rtype, entries
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
