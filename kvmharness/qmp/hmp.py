"""The human monitor commands we offer through human-monitor-command.

`calc_dirty_rate [-r|-b] TIME [SAMPLE_PAGES]` as QEMU's HMP command, except
that TIME may carry a unit (`500ms`, `2s`; a bare number is seconds, as in
QEMU), which QEMU's HMP cannot express; `info dirty_rate` prints the period
in the unit of the request and labels every number truthfully.
"""

import re

from ..dirtyrate.monitor import DirtyRateError
from ..dirtyrate.report import format_dirty_rate_info

_TIME = re.compile(r"^(\d+)(ms|s)?$")


def _calc_dirty_rate(monitor, words):
    flags = [w for w in words if w.startswith("-")]
    rest = [w for w in words if not w.startswith("-")]
    unknown = [f for f in flags if f not in ("-r", "-b")]
    if unknown:
        return f"Error: unknown option '{unknown[0]}'\n"
    if "-r" in flags and "-b" in flags:
        return "Error: Either dirty ring or dirty bitmap can be specified!\n"
    mode = "dirty-ring" if "-r" in flags else "dirty-bitmap" if "-b" in flags else "page-sampling"
    if not rest or len(rest) > 2:
        return "Error: usage: calc_dirty_rate [-r|-b] TIME[ms|s] [SAMPLE_PAGES]\n"
    m = _TIME.match(rest[0])
    if not m:
        return f"Error: invalid calc time '{rest[0]}': use e.g. 500ms, 2s or 2\n"
    unit = "millisecond" if m.group(2) == "ms" else "second"
    sample_pages = None
    if len(rest) == 2:
        if not rest[1].isdigit():
            return f"Error: invalid sample pages '{rest[1]}'\n"
        sample_pages = int(rest[1])
    try:
        monitor.calc_dirty_rate(int(m.group(1)), unit, sample_pages, mode)
    except DirtyRateError as e:
        return f"Error: {e}\n"
    return (f"Starting dirty rate measurement with calc time {m.group(1)} {unit}s\n"
            "Use 'info dirty_rate' to see the result\n")


def _info_dirty_rate(monitor):
    return format_dirty_rate_info(monitor.query_dirty_rate(monitor.requested_unit)) + "\n"


def human_monitor_command(monitor, command_line):
    words = command_line.split()
    if not words:
        return ""
    if words[0] == "calc_dirty_rate":
        return _calc_dirty_rate(monitor, words[1:])
    if words[:2] == ["info", "dirty_rate"] and len(words) == 2:
        return _info_dirty_rate(monitor)
    if words[0] == "info":
        return f"unknown info command: '{' '.join(words[1:])}'\n"
    return f"unknown command: '{words[0]}'\n"
