"""The human monitor commands we offer through human-monitor-command.

`calc_dirty_rate [-r|-b] TIME [SAMPLE_PAGES]` as QEMU's HMP command, except
that TIME may carry a unit (`500ms`, `2s`; a bare number is seconds, as in
QEMU), which QEMU's HMP cannot express; `info dirty_rate` prints the period
in the unit of the request and labels every number truthfully (without HMP's
quirks: never "0 (sec)" for a 500 ms window, the start time labelled as the
seconds it is, MiB/s called MiB/s), followed by our x- fields.  The CLI's
calc-dirty-rate prints the same text.
"""

import re

from ..dirtyrate import modes
from ..convergence.dirty_limit import DirtyLimitError
from ..errors import DirtyRateError
from .qapi import dirty_rate_info

_TIME = re.compile(r"^([0-9]{1,9})(ms|s)?$", re.ASCII)  # ASCII digits, and a number int() takes
_COUNT = re.compile(r"^[0-9]{1,9}$", re.ASCII)
HMP_FLAGS = tuple(m.hmp_flag for m in modes.MODES if m.hmp_flag)


def _calc_dirty_rate(monitor, words):
    flags = [w for w in words if w.startswith("-")]
    rest = [w for w in words if not w.startswith("-")]
    unknown = [f for f in flags if f not in HMP_FLAGS]
    if unknown:
        return f"Error: unknown option '{unknown[0]}'\n"
    if "-r" in flags and "-b" in flags:
        return "Error: Either dirty ring or dirty bitmap can be specified!\n"
    mode = next((m.name for m in modes.MODES if m.hmp_flag in flags), modes.DEFAULT)
    if not rest or len(rest) > 2:
        return "Error: usage: calc_dirty_rate [-r|-b] TIME[ms|s] [SAMPLE_PAGES]\n"
    m = _TIME.match(rest[0])
    if not m:
        return f"Error: invalid calc time '{rest[0]}': use e.g. 500ms, 2s or 2\n"
    unit = "millisecond" if m.group(2) == "ms" else "second"
    sample_pages = None
    if len(rest) == 2:
        if not _COUNT.match(rest[1]):
            return f"Error: invalid sample pages '{rest[1]}'\n"
        sample_pages = int(rest[1])
    try:
        monitor.calc_dirty_rate(int(m.group(1)), unit, sample_pages, mode)
    except DirtyRateError as e:
        return f"Error: {e}\n"
    return (f"Starting dirty rate measurement with calc time {m.group(1)} {unit}s\n"
            "Use 'info dirty_rate' to see the result\n")


def _info_dirty_rate(monitor):
    return format_dirty_rate_info(dirty_rate_info(monitor.state(), monitor.requested_unit)) + "\n"


def format_dirty_rate_info(info):
    unit = "ms" if info["calc-time-unit"] == "millisecond" else "s"
    lines = [
        f"Status: {info['status']}",
        f"Start Time: {info['start-time']} (s since the epoch)",
        f"Sample Pages: {info['sample-pages']} (per GiB)",
        f"Period: {info['calc-time']} ({unit})",
        f"Mode: {info['mode']}",
    ]
    if "dirty-rate" not in info:
        return "\n".join(lines)
    lines.append(f"Dirty rate: {info['dirty-rate']} (MiB/s)")
    for vcpu in info.get("vcpu-dirty-rate", []):
        lines.append(f"vcpu[{vcpu['id']}], Dirty rate: {vcpu['dirty-rate']} (MiB/s)")
    if "x-error" in info:
        lines.append(f"Error: {info['x-error']}")
        return "\n".join(lines)
    lines.append(f"Actual window: {info['x-window-us'] / 1000:.3f} ms")
    lines.append(f"Expected from the guest's writes: {info['x-expected-rate']:.1f} MiB/s "
                 f"({info['x-guest-writes']} writes)")
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


_INT = re.compile(r"^-?[0-9]{1,19}$", re.ASCII)
LIMIT_HINT = "[Please use 'info vcpu_dirty_limit' to query dirty limit for virtual CPU]\n"


def _ints(words, names):
    """HMP's 'l' arguments: whole numbers, the last ones optional."""
    if len(words) > len(names):
        return None, f"Error: too many arguments: {' '.join(words[len(names):])[:64]}\n"
    for word, name in zip(words, names):
        if not _INT.match(word):
            return None, f"Error: invalid {name} '{word[:40]}'\n"
    return [int(w) for w in words], None


def _set_vcpu_dirty_limit(dirty_limit, words):
    if not words:
        return "Error: usage: set_vcpu_dirty_limit dirty_rate [cpu_index]\n"
    values, error = _ints(words, ("dirty_rate", "cpu_index"))
    if error:
        return error
    if values[0] < 0:
        return f"Error: invalid dirty page limit {values[0]}\n"
    try:
        dirty_limit.set(values[0], values[1] if len(values) > 1 else None)
    except DirtyLimitError as e:
        return f"Error: {e}\n"
    return LIMIT_HINT


def _cancel_vcpu_dirty_limit(dirty_limit, words):
    values, error = _ints(words, ("cpu_index",))
    if error:
        return error
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


def human_monitor_command(monitor, command_line, dirty_limit=None):
    words = command_line.split()
    if not words:
        return ""
    if words[0] == "calc_dirty_rate":
        return _calc_dirty_rate(monitor, words[1:])
    if words[:2] == ["info", "dirty_rate"] and len(words) == 2:
        return _info_dirty_rate(monitor)
    if dirty_limit is not None:
        if words[0] == "set_vcpu_dirty_limit":
            return _set_vcpu_dirty_limit(dirty_limit, words[1:])
        if words[0] == "cancel_vcpu_dirty_limit":
            return _cancel_vcpu_dirty_limit(dirty_limit, words[1:])
        if words[:2] == ["info", "vcpu_dirty_limit"] and len(words) == 2:
            return _info_vcpu_dirty_limit(dirty_limit)
    if words[0] == "info":
        return f"unknown info command: '{' '.join(words[1:])}'\n"
    return f"unknown command: '{words[0]}'\n"
