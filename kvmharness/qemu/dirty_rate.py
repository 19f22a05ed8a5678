"""QEMU's calc-dirty-rate, driven over QMP the way a user drives it, with
what that QEMU offers found out rather than assumed.

Millisecond windows (`calc-time-unit`) exist from QEMU 8.2 on (the seed's
patch); QEMU 7.2 takes whole seconds and answers `calc-time-unit` with
"Parameter 'calc-time-unit' is unexpected" (qemu-target-notes).  We ask
query-qmp-schema which arguments calc-dirty-rate takes; a server without it
(our own) is judged by the version in its greeting.
"""

import threading
import time
from dataclasses import dataclass

from .. import peer
from ..errors import QmpError, UsageError
from ..qmp import replies
from ..qmp.client import QmpConnectionError
from .launch import MS_SINCE

MODES_SINCE = {"page-sampling": (0, 0, 0), "dirty-ring": (6, 2, 0), "dirty-bitmap": (6, 2, 0)}
MAX_WINDOW_MS = 3_600_000  # a measured window's calc-time: QEMU's longest is 60 s, an hour is no window
SAMPLE_EVERY = 0.001  # seconds between two readings of the guest's counter while QEMU measures
SAMPLER_WAIT = 5.0  # seconds a measurement waits for the sampler's first reading after QEMU's answer


@dataclass(frozen=True)
class CalcSupport:
    """What a QMP server's calc-dirty-rate takes."""

    millisecond: bool  # calc-time-unit accepted
    modes: tuple  # the measurement modes it names
    source: str  # how we know: "query-qmp-schema" or "version X.Y.Z"
    version: tuple | None

    def windows_note(self):
        if self.millisecond:
            return "millisecond windows: calc-time-unit, 50 ms and up"
        return "whole-second windows only: calc-time-unit came in QEMU 8.2"

    def arguments(self, calc_ms, mode=None, sample_pages=None):
        """calc-dirty-rate's arguments for a window of `calc_ms`."""
        if self.millisecond:
            args = {"calc-time": int(calc_ms), "calc-time-unit": "millisecond"}
        elif calc_ms % 1000:
            raise UsageError(f"this QEMU measures whole seconds only (calc-time-unit came in QEMU 8.2): "
                             f"{calc_ms} ms is not a whole second")
        else:
            args = {"calc-time": int(calc_ms // 1000)}
        if mode is not None:
            args["mode"] = mode
        if sample_pages is not None:
            args["sample-pages"] = int(sample_pages)
        return args


def _schema_members(schema, command):
    """Argument names and the mode enum of `command` in a query-qmp-schema
    reply; entries that are not objects, and fields of the wrong type, are
    passed over (the peer's word: replies.py)."""
    entries = [e for e in schema if isinstance(e, dict)]
    by_name = {e.get("name"): e for e in entries if isinstance(e.get("name"), str)}
    cmd = next((e for e in entries if e.get("meta-type") == "command" and e.get("name") == command), None)
    if cmd is None:
        return None, ()

    def members(name):
        found = by_name.get(name) if isinstance(name, str) else None
        listed = found.get("members") if isinstance(found, dict) else None
        return [m for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []

    args = members(cmd.get("arg-type"))
    names = {m.get("name") for m in args if isinstance(m.get("name"), str)}
    mode_type = next((m.get("type") for m in args if m.get("name") == "mode"), None)
    enum = by_name.get(mode_type) if isinstance(mode_type, str) else None
    values = enum.get("values") if isinstance(enum, dict) else None
    values = values if isinstance(values, list) else []
    named = (v if isinstance(v, str) else v.get("name") if isinstance(v, dict) else None for v in values)
    return names, tuple(v for v in named if isinstance(v, str))


def calc_support(client):
    """Ask `client`'s server what calc-dirty-rate takes."""
    version = client.version
    try:
        schema = client.execute("query-qmp-schema")
    except QmpError:
        schema = None
    if isinstance(schema, list):
        names, modes = _schema_members(schema, "calc-dirty-rate")
        if names is None:
            raise UsageError("this QEMU has no calc-dirty-rate (it needs QEMU 5.2 or newer)")
        return CalcSupport("calc-time-unit" in names, modes or ("page-sampling",), "query-qmp-schema", version)
    v = version or (0, 0, 0)
    modes = tuple(m for m, since in MODES_SINCE.items() if v >= since)
    return CalcSupport(v >= MS_SINCE, modes, f"version {'.'.join(map(str, v))}", version)


@dataclass(frozen=True)
class QemuDirtyRate:
    """One calc-dirty-rate as QEMU answered it, with the host-side clock
    around it and, where the host can read the guest's counter, its
    readings meanwhile (the ground truth's brackets)."""

    mode: str
    calc_ms: int
    dirty_rate: int  # MB/s (MiB/s) as QEMU reports it: whole, truncated
    reply: dict  # query-dirty-rate's full answer
    sent: float  # perf_counter() before calc-dirty-rate was sent
    done: float  # perf_counter() when query-dirty-rate first said "measured"
    samples: tuple = ()  # ((perf_counter, counter), ...) of the guest writer
    # the window QEMU measured and divided by, as it reports it once measured (calc-time): whole milliseconds
    # where calc-time-unit exists (dirty_stat_wait's elapsed time, the seed's patch), else whole seconds
    window_ms: int = 0


def _sample(counter, stop, out):
    while not stop.is_set():
        t0 = time.perf_counter()
        c = counter()
        out.append(((t0 + time.perf_counter()) / 2, c))
        stop.wait(SAMPLE_EVERY)


def calc_dirty_rate(client, support, calc_ms, mode, counter=None, sample_pages=None):
    """Measure once: calc-dirty-rate, then query-dirty-rate until measured.
    `counter()` (the guest's access counter, read from shared memory) is
    sampled meanwhile when given; its thread is joined before returning."""
    args = support.arguments(calc_ms, mode, sample_pages)
    samples, stop = [], threading.Event()
    sampler = None
    if counter is not None:
        sampler = threading.Thread(target=_sample, args=(counter, stop, samples), name="qemu-counter", daemon=True)
    try:
        if sampler is not None:
            sampler.start()
            while not samples:
                time.sleep(SAMPLE_EVERY / 4)
        sent = time.perf_counter()
        client.execute("calc-dirty-rate", args)
        unit = {"calc-time-unit": "millisecond"} if support.millisecond else None
        reply = client.wait_for("query-dirty-rate", lambda r: _measured(client, r),
                                calc_ms / 1000 + 60, arguments=unit, interval=0.002)
        done = time.perf_counter()
        # the brackets end at a reading taken after the answer: wait for one, however late a loaded host runs
        # the sampler (a fixed 2 ms left a watch on a busy runner without one)
        while sampler is not None and samples[-1][0] < done and time.perf_counter() < done + SAMPLER_WAIT:
            time.sleep(SAMPLE_EVERY)
    finally:
        stop.set()
        if sampler is not None:
            sampler.join()
    rate = measured_rate(client, reply)
    window = replies.whole(client, "query-dirty-rate", reply, "calc-time", 0, MAX_WINDOW_MS)
    return QemuDirtyRate(mode, int(calc_ms), rate, reply, sent, done, tuple(samples),
                         window if support.millisecond else window * 1000)


def _measured(client, reply):
    """Whether query-dirty-rate's answer is final (QEMU's statuses:
    unstarted, measuring, measured)."""
    status = replies.status(client, "query-dirty-rate", reply)
    if status not in ("unstarted", "measuring", "measured"):
        raise QmpConnectionError(f"QMP at {client.shown}: query-dirty-rate answered status "
                                 f"{peer.printable(status, 40)!r}, not unstarted, measuring or measured")
    return status == "measured"


def measured_rate(client, reply):
    """The dirty rate (MiB/s) of a measured answer.  QEMU leaves dirty-rate
    at -1 when the measurement failed (our server too, with x-error): that
    is an error, never a rate (it became a negative curve that
    "converges")."""
    value = reply.get("dirty-rate")
    if value == -1 and type(value) is int:
        why = reply.get("x-error")
        raise QmpError(f"calc-dirty-rate failed at {client.shown} (query-dirty-rate reports dirty-rate -1"
                       + (f": {peer.printable(why)})" if isinstance(why, str) else ")"), "GenericError")
    return replies.whole(client, "query-dirty-rate", reply, "dirty-rate", 0, replies.MAX_DIRTY_RATE)
