"""Pre-copy live migration, destination side: build the VM the header
describes, fill it from the stream, check every page's hash against the
source's, load the vCPUs and resume the guest where it stopped.

Anything wrong with the stream (StreamError) is answered with a refusal and
the half-built VM is thrown away; the source then keeps its guest.
"""

import threading
import time
from dataclasses import dataclass

import numpy as np

from ..errors import HarnessError
from ..peer import printable
from ..microvm.machine import MicroVm
from ..microvm.page_hash import ZERO_PAGE_HASH, scatter_pages
from .auth import authenticate_source
from .stream import (ABORT, CONTROL, END, HASHES, MAX_PAGES_PER_RECORD, PAGES, RECORD_NAMES, VCPU, ZERO, StreamError,
                     StreamReader,
                     boot_id, decode_meta, read_reply, send_line, send_reply)

GO_TIMEOUT = 30.0  # after "ready"; the source answers at once, or never
STREAM_IDLE_TIMEOUT = 60.0  # a source that sends nothing for this long is gone


@dataclass(frozen=True)
class Arrival:
    vm: MicroVm  # running; the caller owns it
    verified: bool
    pages_received: int
    resumed_at: float  # time.monotonic() just after the vCPUs were started (the guest may have run a little)
    resume_counters: tuple
    resume_schedules: tuple  # WriterSchedule per vCPU as the guest resumed
    starting_at: float = 0.0  # time.monotonic() just before the vCPUs were started (the guest had not run)


def _back(mapping):
    """Prefault guest RAM (a thread's body).  If the host cannot, the pages
    that arrive fault themselves in, as they did before this existed, and
    any shortage shows there: a thread must not die with a traceback."""
    try:
        mapping.populate_write()
    except HarnessError:
        pass


def migrate_in(sock, secret=None, backing="anonymous"):
    """Receive a VM on connected socket `sock`; returns an Arrival with the
    VM running, or raises (after telling the source) if the stream is bad.
    A peer that does not prove `secret` (see auth.py) raises AuthError
    before anything of the stream is read."""
    authenticate_source(sock, secret)
    return receive(sock, backing)


def receive(sock, backing="anonymous"):
    """migrate_in on a connection whose handshake is done (the listener
    runs handshakes side by side: listener.py)."""
    sock.settimeout(STREAM_IDLE_TIMEOUT)
    reader = StreamReader(sock)
    vm = None
    try:
        config, control_size, logs = decode_meta(reader.header(), backing)
        try:
            vm = MicroVm(config)
        except HarnessError as e:
            raise StreamError(f"cannot build the VM the stream describes: {e}") from None
        # Back guest RAM ahead of the pages that arrive (each first write to
        # a host page faults and zeroes it: that halved the receive rate),
        # beside the receiving, not before it.  Joined before RAM is unmapped.
        populate = threading.Thread(target=_back, args=(vm.data,), name="populate", daemon=True)
        populate.start()
        vm.add_teardown(populate.join)
        if control_size != vm.control.size:
            raise StreamError("the control slot size in the stream does not match this kvmharness")
        vm.writer.adopt_logs(logs)
        pages = vm.data_pages()
        hashes = np.zeros(vm.slot_pages, dtype=np.uint64)  # of each page as received
        arrived = np.empty(MAX_PAGES_PER_RECORD, dtype=np.uint64)
        received, restored, control_seen = 0, set(), False
        verified = None
        while True:
            rtype, payload = reader.record(vm.slot_pages, vm.control.size, len(vm.vcpus))
            if verified is not None and rtype not in (END, ABORT):
                # RAM was verified: nothing may change it after that point
                raise StreamError(f"{RECORD_NAMES[rtype]} record after the page hashes")
            if rtype == PAGES:
                indices, data = payload
                scatter_pages(data, indices, vm.data.addr, arrived[: len(indices)])  # hashed as copied in
                hashes[indices] = arrived[: len(indices)]
                received += len(indices)
            elif rtype == ZERO:
                pages[payload] = 0
                hashes[payload] = ZERO_PAGE_HASH
                received += len(payload)
            elif rtype == CONTROL:
                vm.control.write(0, payload)
                control_seen = True
            elif rtype == VCPU:
                vcpu_id, tsc, regs, sregs = payload
                try:
                    vm.restore_vcpu(vcpu_id, tsc, regs, sregs)
                except HarnessError as e:  # KVM refused the registers: a bad record
                    raise StreamError(f"vCPU {vcpu_id}'s state is not loadable: {e}") from None
                restored.add(vcpu_id)
            elif rtype == HASHES:
                # what arrived, hashed as it arrived, against what the source
                # says it sent (or, verify="full", against all of its RAM)
                t_check = time.perf_counter()
                mismatched = np.flatnonzero(hashes != payload)
                hash_ms = (time.perf_counter() - t_check) * 1e3
                verified = len(mismatched) == 0
                if not verified:
                    raise StreamError(f"{len(mismatched)} pages differ from the source's "
                                      f"(first: page {int(mismatched[0])})")
            elif rtype == ABORT:
                raise StreamError(f"the source gave up: {printable(payload)}")
            elif rtype == END:
                if not control_seen or len(restored) != len(vm.vcpus) or verified is None:
                    raise StreamError("END before the control slot, every vCPU and the hashes")
                try:
                    vm.writer.load_tables()
                except HarnessError as e:
                    raise StreamError(f"the control slot does not match the writer logs: {e}") from None
                break
        counters = tuple(vm.counters())  # as the source left them: the guest resumes from here
        schedules = tuple(vm.schedules())
        send_line(sock, {"status": "ready", "verified": True, "pages-received": received,
                         "hash-ms": round(hash_ms, 3)})
        try:
            go = read_reply(sock, GO_TIMEOUT)
        except HarnessError as e:
            raise StreamError(f"no go from the source after ready ({e}): the guest stays there") from None
        if go != {"go": True}:
            raise StreamError("the source did not say go: the guest stays there")
        starting_at = time.monotonic()
        vm.start()
        resumed_at = time.monotonic()
        send_reply(sock, {"status": "resumed", "verified": True, "pages-received": received,
                          "resume-counters": list(counters), "hash-ms": round(hash_ms, 3),
                          "boot-id": boot_id(), "resumed-at": resumed_at})
        return Arrival(vm, True, received, resumed_at, counters, schedules, starting_at)
    except (HarnessError, OSError) as e:  # every refusal is sent to the peer
        if vm is not None:
            vm.close()
        message = str(e) if isinstance(e, HarnessError) else f"connection failed: {e}"
        send_reply(sock, {"status": "refused", "verified": False, "error": message})
        raise StreamError(message) from None
    except BaseException:
        if vm is not None:
            vm.close()
        raise
