"""The differential corpus: one sequence of QMP and HMP commands sent to a
QEMU with the seed's millisecond windows and to `kvmharness qmp`, each with
and without a dirty ring, and the rules by which their replies must agree
(tests/test_qemu_contract.py).

Every command our server shares with QEMU is here, with its argument edges
and errors: calc-dirty-rate / query-dirty-rate (both units, every mode),
the vcpu-dirty-limit commands, the migration's capabilities and parameters
with their query forms, query-migrate before, during and after a migration,
query-memory-size-summary and query-cpus-fast, and the HMP commands
calc_dirty_rate, info dirty_rate, set_vcpu_dirty_limit,
cancel_vcpu_dirty_limit and info vcpu_dirty_limit.

Agreement means (issue 23): an error has QEMU's class and text; a return
has QEMU's keys, all the way down, our x- keys aside, and QEMU's enum and
flag values (numbers aside); HMP text is QEMU's line for line with every
number masked, "\\r\\n" line ends included, and any extra lines of ours come
after QEMU's.  Where QEMU itself is wrong we keep our behaviour: such steps
carry `divergence`, the reason, which docs/qemu-contract.md lists; their
replies are recorded, not compared.
"""

import re
import time
from dataclasses import dataclass

from kvmharness.errors import QmpError

NUMBER = re.compile(r"-?[0-9]+")
# A measurement QEMU accepted reads "unstarted" (and a second calc-dirty-rate is accepted) until its thread runs
# (see ALREADY_MEASURING): a step that needs QEMU's "measuring" waits a moment first.
SETTLE = 0.3


@dataclass(frozen=True)
class Step:
    """One command of the corpus.  kind: "qmp" (command, arguments), "hmp"
    (a command line through human-monitor-command), "wait" (until the
    current measurement is measured, the migration is past its setup or
    has ended; not compared), "sleep" (not compared), "writer" (the guest's
    writes/s; not compared), "migrate" (to a fresh destination; compared
    like a qmp step).  `ring`: only with (True) or without (False) a dirty
    ring; None: both."""

    kind: str
    name: str
    arguments: dict | None = None
    ring: bool | None = None
    divergence: str | None = None


def qmp(name, arguments=None, **kw):
    return Step("qmp", name, arguments, **kw)


def hmp(line, **kw):
    return Step("hmp", line, **kw)


WAIT = Step("wait", "measured")
ALREADY_MEASURING = ("QEMU 10 accepts a second calc-dirty-rate sent right after a first: its state becomes "
                     "'measuring' only once the new thread runs (migration/dirtyrate.c), so the check for a "
                     "measurement in progress misses it; kvmharness refuses it")
UINT64_WRAP = ("QEMU's QAPI input visitor takes a negative JSON integer for a uint64 or size member and wraps "
               "it (-1 becomes 2^64 - 1); kvmharness refuses it with \"Parameter '...' expects uint64\"")
MS_HMP = ("kvmharness's HMP calc_dirty_rate also takes a unit suffix (500ms, 2s), which QEMU's HMP (whole "
          "seconds) refuses as an invalid character")


def _calc(seconds=None, ms=None, **more):
    args = {"calc-time": seconds} if ms is None else {"calc-time": ms, "calc-time-unit": "millisecond"}
    return qmp("calc-dirty-rate", args | more)


def _caps(*names, state=True):
    return qmp("migrate-set-capabilities", {"capabilities": [{"capability": n, "state": state} for n in names]})


CORPUS = (
    # ---- query-dirty-rate before any measurement, and every refusal of calc-dirty-rate ----
    qmp("query-dirty-rate"),
    qmp("query-dirty-rate", {"calc-time-unit": "millisecond"}),
    qmp("query-dirty-rate", {"calc-time-unit": "minute"}),
    qmp("calc-dirty-rate", {}),
    qmp("calc-dirty-rate", {"calc-time": "1"}),
    qmp("calc-dirty-rate", {"calc-time": 1.5}),
    _calc(0),
    _calc(-1),
    _calc(61),
    _calc(ms=49),
    _calc(ms=60001),
    _calc(1, **{"calc-time-unit": "minute"}),
    _calc(1, mode="dirty-bitmap", **{"sample-pages": 256}),
    _calc(1, mode="dirty-ring", **{"sample-pages": 256}),
    _calc(1, **{"sample-pages": 127}),
    _calc(1, **{"sample-pages": 16385}),
    _calc(1, mode="foo"),
    _calc(1, bogus=1),
    _calc(1, mode="dirty-ring", ring=False),
    _calc(1, mode="dirty-bitmap", ring=True),
    # ---- a measurement in each unit and mode, queried while measuring and once measured ----
    _calc(1, mode="dirty-bitmap", ring=False),
    _calc(1, mode="dirty-ring", ring=True),
    Step("qmp", "calc-dirty-rate", {"calc-time": 1, "mode": "dirty-bitmap"}, ring=False,
         divergence=ALREADY_MEASURING),
    Step("qmp", "calc-dirty-rate", {"calc-time": 1, "mode": "dirty-ring"}, ring=True, divergence=ALREADY_MEASURING),
    Step("sleep", str(SETTLE)),
    _calc(1),  # now QEMU too says it is measuring
    _calc(2 ** 62),  # the measurement in progress is checked before the range (QEMU's order)
    qmp("query-dirty-rate"),
    qmp("query-dirty-rate", {"calc-time-unit": "millisecond"}),
    hmp("info dirty_rate"),
    WAIT,
    qmp("query-dirty-rate"),
    qmp("query-dirty-rate", {"calc-time-unit": "millisecond"}),
    hmp("info dirty_rate"),
    _calc(ms=500, **{"sample-pages": 128}),
    Step("sleep", "0.1"),
    qmp("query-dirty-rate"),
    qmp("query-dirty-rate", {"calc-time-unit": "millisecond"}),
    WAIT,
    qmp("query-dirty-rate"),
    qmp("query-dirty-rate", {"calc-time-unit": "millisecond"}),
    hmp("info dirty_rate"),
    _calc(ms=200, mode="dirty-bitmap", ring=False),
    _calc(ms=200, mode="dirty-ring", ring=True),
    WAIT,
    qmp("query-dirty-rate", {"calc-time-unit": "millisecond"}),
    hmp("info dirty_rate"),
    _calc(ms=50),
    WAIT,
    qmp("query-dirty-rate", {"calc-time-unit": "millisecond"}),
    # ---- HMP calc_dirty_rate and its errors ----
    hmp("calc_dirty_rate"),
    hmp("calc_dirty_rate -r -b 1"),
    hmp("calc_dirty_rate 0"),
    hmp("calc_dirty_rate -1"),
    hmp("calc_dirty_rate 61"),
    hmp("calc_dirty_rate 1 64"),
    hmp("calc_dirty_rate -b 1 256"),
    hmp("calc_dirty_rate x"),
    hmp("calc_dirty_rate -z 1"),
    hmp("calc_dirty_rate 1 2 3"),
    hmp("calc_dirty_rate 99999999999999999999"),
    hmp("calc_dirty_rate 18446744073709551616"),
    hmp("calc_dirty_rate 1x"),
    hmp("calc_dirty_rate 0x0"),
    hmp("calc_dirty_rate 500ms", divergence=MS_HMP),
    Step("sleep", str(SETTLE)),
    WAIT,
    hmp("calc_dirty_rate -r 1", ring=False),
    hmp("calc_dirty_rate -b 1", ring=True),
    hmp("calc_dirty_rate 1 128"),
    Step("sleep", str(SETTLE)),
    hmp("calc_dirty_rate 1"),
    hmp("info dirty_rate"),
    WAIT,
    hmp("info dirty_rate"),
    hmp("calc_dirty_rate -b 1", ring=False),
    hmp("calc_dirty_rate -r 1", ring=True),
    WAIT,
    hmp("info dirty_rate"),
    # ---- dirty limit, QMP and HMP ----
    qmp("query-vcpu-dirty-limit"),
    hmp("info vcpu_dirty_limit"),
    qmp("set-vcpu-dirty-limit", {}),
    qmp("set-vcpu-dirty-limit", {"dirty-rate": "x"}),
    qmp("set-vcpu-dirty-limit", {"dirty-rate": 100, "cpu-index": 2}),
    qmp("set-vcpu-dirty-limit", {"dirty-rate": -1}, divergence=UINT64_WRAP),
    qmp("cancel-vcpu-dirty-limit", {"cpu-index": -1}),
    qmp("cancel-vcpu-dirty-limit", {"cpu-index": 2}),
    qmp("set-vcpu-dirty-limit", {"dirty-rate": 100}),
    qmp("query-vcpu-dirty-limit"),
    hmp("info vcpu_dirty_limit"),
    qmp("set-vcpu-dirty-limit", {"dirty-rate": 0}),
    qmp("query-vcpu-dirty-limit"),
    qmp("set-vcpu-dirty-limit", {"dirty-rate": 200, "cpu-index": 0}),
    qmp("cancel-vcpu-dirty-limit", {"cpu-index": 0}),
    qmp("cancel-vcpu-dirty-limit"),
    qmp("query-vcpu-dirty-limit"),
    hmp("set_vcpu_dirty_limit"),
    hmp("set_vcpu_dirty_limit -5"),
    hmp("set_vcpu_dirty_limit x"),
    hmp("set_vcpu_dirty_limit 100 5"),
    hmp("set_vcpu_dirty_limit 100 0 1"),
    hmp("set_vcpu_dirty_limit 0x64 7"),
    hmp("set_vcpu_dirty_limit 100"),
    hmp("info vcpu_dirty_limit"),
    hmp("set_vcpu_dirty_limit 300 0"),
    hmp("info vcpu_dirty_limit"),
    hmp("cancel_vcpu_dirty_limit 3"),
    hmp("cancel_vcpu_dirty_limit x"),
    hmp("cancel_vcpu_dirty_limit 0 1"),
    hmp("cancel_vcpu_dirty_limit 0"),
    hmp("info vcpu_dirty_limit"),
    hmp("set_vcpu_dirty_limit 100"),
    hmp("cancel_vcpu_dirty_limit"),
    hmp("info vcpu_dirty_limit"),
    hmp("info bogus"),
    hmp("bogus"),
    # ---- the migration's capabilities and parameters ----
    qmp("query-migrate"),
    qmp("query-migrate-capabilities"),
    qmp("query-migrate-parameters"),
    _caps("dirty-limit"),
    qmp("query-migrate-capabilities"),
    _caps("dirty-limit", state=False),
    _caps("dirty-limit", "auto-converge"),
    _caps("bogus"),
    qmp("migrate-set-capabilities", {}),
    qmp("migrate-set-capabilities", {"capabilities": [{"capability": "auto-converge"}]}),
    qmp("migrate-set-capabilities", {"capabilities": {"capability": "auto-converge", "state": True}}),
    _caps("auto-converge"),
    _caps("auto-converge", state=False),
    qmp("migrate-set-parameters", {"x-vcpu-dirty-limit-period": 0}),
    qmp("migrate-set-parameters", {"x-vcpu-dirty-limit-period": 1001}),
    qmp("migrate-set-parameters", {"vcpu-dirty-limit": 0}),
    qmp("migrate-set-parameters", {"downtime-limit": 2000001}),
    qmp("migrate-set-parameters", {"downtime-limit": "x"}),
    qmp("migrate-set-parameters", {"max-bandwidth": "x"}),
    qmp("migrate-set-parameters", {"cpu-throttle-initial": "x"}),
    qmp("migrate-set-parameters", {"cpu-throttle-initial": -1}),
    qmp("migrate-set-parameters", {"max-cpu-throttle": 100}),
    qmp("migrate-set-parameters", {"cpu-throttle-initial": 0}),
    qmp("migrate-set-parameters", {"cpu-throttle-initial": 100}),
    qmp("migrate-set-parameters", {"cpu-throttle-increment": 0}),
    qmp("migrate-set-parameters", {"cpu-throttle-increment": 101}),
    qmp("migrate-set-parameters", {"throttle-trigger-threshold": 0}),
    qmp("migrate-set-parameters", {"throttle-trigger-threshold": 101}),
    qmp("migrate-set-parameters", {"cpu-throttle-initial": 256}),
    qmp("migrate-set-parameters", {"cpu-throttle-tailslow": 1}),
    qmp("migrate-set-parameters", {"max-bandwidth": -1}, divergence=UINT64_WRAP),
    qmp("migrate-set-parameters", {"bogus": 1}),
    qmp("migrate-set-parameters", {"downtime-limit": 250, "cpu-throttle-initial": 30, "vcpu-dirty-limit": 20,
                                   "x-vcpu-dirty-limit-period": 500, "cpu-throttle-tailslow": True}),
    qmp("query-migrate-parameters"),
    qmp("migrate-set-parameters", {"downtime-limit": 300, "cpu-throttle-initial": 20, "vcpu-dirty-limit": 1,
                                   "x-vcpu-dirty-limit-period": 1000, "cpu-throttle-tailslow": False}),
    # ---- the VM ----
    qmp("query-memory-size-summary"),
    qmp("query-cpus-fast"),
    qmp("cont"),  # a running guest: {} from both (ours pauses only after an unconfirmed switch-over)
    # ---- query-migrate before, during and after a migration ----
    qmp("query-migrate"),
    Step("writer", "1000"),
    qmp("migrate-set-parameters", {"max-bandwidth": 32 << 20}),
    qmp("migrate", {}),
    Step("migrate", "migrate"),
    Step("wait", "active"),
    qmp("query-migrate"),
    _caps("auto-converge"),
    qmp("migrate-set-parameters", {"max-bandwidth": 1 << 30}),
    Step("wait", "completed"),
    qmp("query-migrate"),
)


def corpus(ring):
    """The steps for a VM with (`ring`) or without a dirty ring."""
    return [s for s in CORPUS if s.ring in (None, ring)]


def compared(ring):
    """The steps whose replies are compared."""
    return [s for s in corpus(ring) if s.kind in ("qmp", "hmp", "migrate") and s.divergence is None]


# ---- running it ------------------------------------------------------------------------------------------------

def run(client, ring, start_destination, set_writer):
    """Send the corpus through `client` (a kvmharness.qmp.client.QmpClient):
    one reply per step, in order.  `start_destination()` gives the URI of a
    fresh migration destination; `set_writer(wps)` sets the guest's rate."""
    replies = []
    for step in corpus(ring):
        replies.append(_one(client, step, start_destination, set_writer))
    return replies


def _execute(client, name, arguments):
    try:
        return {"return": client.execute(name, arguments)}
    except QmpError as e:
        return {"error": {"class": e.qmp_class, "desc": e.desc}}


def _one(client, step, start_destination, set_writer):
    if step.kind == "qmp":
        return _execute(client, step.name, step.arguments)
    if step.kind == "hmp":
        return _execute(client, "human-monitor-command", {"command-line": step.name})
    if step.kind == "migrate":
        return _execute(client, "migrate", {"uri": start_destination()})
    if step.kind == "writer":
        set_writer(int(step.name))
        return None
    if step.kind == "sleep":
        time.sleep(float(step.name))
        return None
    if step.name == "measured":
        client.wait_for("query-dirty-rate", lambda r: r.get("status") == "measured", 90, interval=0.02)
    elif step.name == "active":
        client.wait_for("query-migrate", lambda r: r.get("status") != "setup", 60, interval=0.01)
    else:
        client.wait_for("query-migrate", lambda r: r.get("status") not in ("setup", "active", "device"), 120,
                        interval=0.05)
    return None


# ---- comparing ---------------------------------------------------------------------------------------------------

def shape(value):
    """A return value with what may differ masked: x- keys dropped, numbers
    as "#" (bools and strings kept: they are QEMU's enums and flags)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if not k.startswith("x-")}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "#"
    return value


def hmp_lines(text):
    """HMP text as lines with numbers masked; each keeps its line end."""
    return NUMBER.sub("#", text).splitlines(keepends=True)


def difference(step, theirs, ours):
    """Why our reply to `step` does not agree with QEMU's, or None."""
    if theirs is None or ours is None:
        return None if theirs is ours else "one side did not reply"
    if "error" in theirs or "error" in ours:
        return None if theirs == ours else f"QEMU {theirs} / ours {ours}"
    if step.kind == "hmp":
        q, o = hmp_lines(theirs["return"]), hmp_lines(ours["return"])
        if o[:len(q)] != q:
            return f"HMP QEMU {theirs['return']!r} / ours {ours['return']!r}"
        return None
    if shape(theirs["return"]) != shape(ours["return"]):
        return f"QEMU {shape(theirs['return'])} / ours {shape(ours['return'])}"
    return None


def differences(ring, theirs, ours):
    """[(step, why)] for every compared step where the replies disagree."""
    steps = corpus(ring)
    assert len(theirs) == len(ours) == len(steps)
    out = []
    for step, t, o in zip(steps, theirs, ours):
        if step.kind in ("qmp", "hmp", "migrate") and step.divergence is None:
            why = difference(step, t, o)
            if why:
                out.append((step, why))
    return out
