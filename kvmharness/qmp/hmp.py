"""The human monitor commands we offer through human-monitor-command, in
QEMU 10's words.

QEMU is the judge (tests/test_qemu_contract.py): every line QEMU prints, we
print, with its labels, its quirks and "\\r\\n" line ends (QEMU's monitor
turns each "\\n" into "\\r\\n", human-monitor-command included), so a script
that parses QEMU's HMP parses ours.  What we know beyond QEMU comes only
after QEMU's lines.  The quirks kept for that reason (docs/qemu-contract.md):
`info dirty_rate` labels the start time "(ms)" although it is in seconds,
gives the period in whole seconds ("Period: 0 (sec)" after a 500 ms window:
our "Actual window" line below it has the truth), and calls MiB/s "MB/s".

The arguments are parsed as QEMU's monitor parses these commands' types
(hmp-commands.hx: "-r"/"-b" flags, then "l" integers, the last optional):
its messages for a missing, malformed or extra argument and an unknown
option, each followed by its "Try "help CMD"" line.  One extension:
calc_dirty_rate's period may carry a unit, `500ms` or `2s` (QEMU's HMP takes
whole seconds and refuses the suffix as an invalid character).  Numbers are
ASCII digits only; QEMU's full expression syntax (1+1, registers) is not
evaluated.
"""

import re

from ..dirtyrate import modes
from ..convergence.dirty_limit import DirtyLimitError
from ..errors import DirtyRateError
from .qapi import dirty_rate_info

_TIMED = re.compile(r"^([0-9]{1,9})(ms|s)$", re.ASCII)  # our extension: a period with its unit
_NUMBER = re.compile(r"^(-?)(0[xX][0-9a-fA-F]+|[0-9]+)", re.ASCII)
_INT64 = 1 << 63
MEASURE_HINT = "[Please use 'info dirty_rate' to check results]\n"
LIMIT_HINT = "[Please use 'info vcpu_dirty_limit' to query dirty limit for virtual CPU]\n"


class _Refused(Exception):
    """An argument QEMU's monitor refuses before the command runs."""


def _parse(name, words, flags, ints, required):
    """QEMU's argument parsing for `flags` (letters) then `ints` integer
    arguments, the first `required` of them required: (set of flags given,
    [values])."""
    given, words = set(), list(words)
    while flags and words and words[0].startswith("-") and len(words[0]) > 1:
        letter = words[0][1]
        if letter not in flags:
            raise _Refused(f"{name}: unsupported option -{letter}")
        given.add(letter)
        words[0] = words[0][2:]
        if not words[0]:
            words.pop(0)
        else:
            words[0] = "-" + words[0]
    values = []
    for k in range(ints):
        if not words:
            if k < required:
                raise _Refused("unexpected end of expression")
            break
        m = _NUMBER.match(words[0])
        if not m:
            bad = words[0][1] if words[0].startswith("-") and len(words[0]) > 1 else words[0][0]
            raise _Refused(f"invalid char '{bad}' in expression")
        digits = m.group(2)
        if len(digits) > 20 or int(digits, 0) >= 1 << 64:  # bounded before int() reads it
            raise _Refused("number too large")
        value = int(digits, 0)
        value = -value if m.group(1) else value
        values.append(value - (1 << 64) if value >= _INT64 else value)
        rest = words[0][m.end():]
        words = ([rest] if rest else []) + words[1:]
    if words:
        raise _Refused(f"{name}: extraneous characters at the end of line")
    return given, values


def _calc_dirty_rate(monitor, words):
    unit, timed = "second", [w for w in words if _TIMED.match(w)]
    if timed:  # our extension: the unit is taken off, the number parsed as QEMU parses it
        m = _TIMED.match(timed[0])
        unit = "millisecond" if m.group(2) == "ms" else "second"
        words = [m.group(1) if w is timed[0] else w for w in words]
    given, values = _parse("calc_dirty_rate", words, "rb", 2, 1)
    if given == {"r", "b"}:
        return "Either dirty ring or dirty bitmap can be specified!\n"
    period = values[0]
    if period <= 0:
        return "Incorrect period length specified!\n"
    mode = next((m.name for m in modes.MODES if m.hmp_flag and m.hmp_flag[1] in given), modes.DEFAULT)
    try:
        monitor.calc_dirty_rate(period, unit, values[1] if len(values) > 1 else None, mode)
    except DirtyRateError as e:
        return f"Error: {e}\n"
    return f"Starting dirty rate measurement with period {period} {unit}s\n{MEASURE_HINT}"


def _info_dirty_rate(monitor):
    return format_dirty_rate_info(dirty_rate_info(monitor.state(), "second")) + "\n"


def format_dirty_rate_info(info):
    """QEMU's `info dirty_rate` (hmp_info_dirty_rate) for a DirtyRateInfo
    queried in seconds, then our lines: the window and what replay expects."""
    lines = [f"Status: {info['status']}", f"Start Time: {info['start-time']} (ms)"]
    if info["mode"] == "page-sampling":
        lines.append(f"Sample Pages: {info['sample-pages']} (per GB)")
    lines += [f"Period: {info['calc-time']} (sec)", f"Mode: {info['mode']}"]
    if "dirty-rate" not in info:
        return "\n".join(lines + ["Dirty rate: (not ready)"])
    lines.append(f"Dirty rate: {info['dirty-rate']} (MB/s)")
    for vcpu in info.get("vcpu-dirty-rate", []):
        lines.append(f"vcpu[{vcpu['id']}], Dirty rate: {vcpu['dirty-rate']} (MB/s)")
    if "x-error" in info:
        lines.append(f"Error: {info['x-error']}")
        return "\n".join(lines)
    lines.append(f"Actual window: {info['x-window-us'] / 1000:.3f} ms (rates above in MiB/s, start time in "
                 "seconds since the epoch, period in whole seconds, as QEMU prints them)")
    lines.append(f"Expected from the guest's writes: {info['x-expected-rate']:.1f} MiB/s "
                 f"({info['x-guest-writes']} writes)")
    lines.append(_guest_rate_line(info["x-guest-rate"]))
    lines.append(f"Dirty pages: {info['x-dirty-pages']}")
    if info.get("x-dirty-events") is not None:
        lines.append(f"Dirty ring entries: {info['x-dirty-events']}")
    if info.get("x-confidence"):
        c = info["x-confidence"]
        lines.append(f"95% interval: {c['low']:.1f} .. {c['high']:.1f} MiB/s "
                     f"({info['x-dirty-samples']} of {info['x-samples']} samples changed)")
    if "x-zero-pages" in info:
        lines.append(f"Zero pages: {info['x-zero-pages']}")
    if len(info.get("x-periods", [])) > 1:
        lines.append("Dirty pages by period: " + ", ".join(
            f"{p['period']} ms: {p['dirty-pages']}" for p in info["x-periods"]))
    overhead = ", ".join(f"{k} {v:.2f}" for k, v in info["x-overhead"].items() if k != "total")
    lines.append(f"Overhead: {info['x-overhead']['total']:.2f} ms ({overhead})")
    return "\n".join(lines)


def _guest_rate_line(rate):
    if rate["asked-wps"] is None:
        return f"Guest rate in the window: {rate['wps']:.0f} writes/s (asked: unlimited)"
    return (f"Guest rate in the window: {rate['wps']:.0f} writes/s of {rate['asked-wps']} asked "
            f"({rate['ratio']:.1%})")


def _set_vcpu_dirty_limit(dirty_limit, words):
    _, values = _parse("set_vcpu_dirty_limit", words, "", 2, 1)
    if values[0] < 0:
        return f"Error: invalid dirty page limit {values[0]}\n"
    try:
        dirty_limit.set(values[0], values[1] if len(values) > 1 else None)
    except DirtyLimitError as e:
        return f"Error: {e}\n"
    return ""


def _cancel_vcpu_dirty_limit(dirty_limit, words):
    _, values = _parse("cancel_vcpu_dirty_limit", words, "", 1, 0)
    try:
        dirty_limit.cancel(values[0] if values else None)
    except DirtyLimitError as e:
        return f"Error: {e}\n"
    return LIMIT_HINT


def _info_vcpu_dirty_limit(dirty_limit):
    if not dirty_limit.in_service:
        return "Dirty page limit not enabled!\n"
    return "".join(f"vcpu[{v.cpu_index}], limit rate {v.limit_rate} (MB/s), current rate {v.current_rate} (MB/s)\n"
                   for v in dirty_limit.query())


def _dispatch(monitor, dirty_limit, words):
    name = words[0]
    if name == "calc_dirty_rate":
        return _calc_dirty_rate(monitor, words[1:])
    if words == ["info", "dirty_rate"]:
        return _info_dirty_rate(monitor)
    if dirty_limit is not None:
        if name == "set_vcpu_dirty_limit":
            return _set_vcpu_dirty_limit(dirty_limit, words[1:])
        if name == "cancel_vcpu_dirty_limit":
            return _cancel_vcpu_dirty_limit(dirty_limit, words[1:])
        if words == ["info", "vcpu_dirty_limit"]:
            return _info_vcpu_dirty_limit(dirty_limit)
    return f"unknown command: '{' '.join(words[:2]) if name == 'info' else name}'\n"


def human_monitor_command(monitor, command_line, dirty_limit=None):
    """HMP `command_line`'s output, with QEMU's "\\r\\n" line ends."""
    words = command_line.split()
    if not words:
        return ""
    try:
        text = _dispatch(monitor, dirty_limit, words)
    except _Refused as e:
        text = f"{e}\nTry \"help {words[0]}\" for more information\n"
    return text.replace("\n", "\r\n")
