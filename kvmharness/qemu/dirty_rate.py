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

from ..errors import QmpError, UsageError
from .launch import MS_SINCE

MODES_SINCE = {"page-sampling": (0, 0, 0), "dirty-ring": (6, 2, 0), "dirty-bitmap": (6, 2, 0)}
SAMPLE_EVERY = 0.001  # seconds between two readings of the guest's counter while QEMU measures


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
    """Argument names and the mode enum of `command` in a query-qmp-schema reply."""
    by_name = {entry.get("name"): entry for entry in schema if isinstance(entry, dict)}
    cmd = next((e for e in schema if e.get("meta-type") == "command" and e.get("name") == command), None)
    if cmd is None:
        return None, ()
    members = by_name.get(cmd.get("arg-type"), {}).get("members", [])
    names = {m.get("name") for m in members}
    mode_type = next((m.get("type") for m in members if m.get("name") == "mode"), None)
    values = by_name.get(mode_type, {}).get("values", ())
    return names, tuple(v if isinstance(v, str) else v.get("name") for v in values)


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
        reply = client.wait_for("query-dirty-rate", lambda r: r.get("status") == "measured",
                                calc_ms / 1000 + 60, interval=0.002)
        done = time.perf_counter()
        time.sleep(2 * SAMPLE_EVERY)
    finally:
        stop.set()
        if sampler is not None:
            sampler.join()
    return QemuDirtyRate(mode, int(calc_ms), int(reply.get("dirty-rate", -1)), reply, sent, done, tuple(samples))
