"""The QMP commands we serve: their QAPI schemas and handlers.

Handlers are plain functions of (context, arguments) run off the event loop
(some wait for the guest to take a command up).  Names without a prefix are
QEMU's commands with QEMU's semantics; ours carry the x- prefix.
"""

from dataclasses import dataclass

from .. import __version__, guest
from ..dirtyrate.monitor import MODES, TIME_UNITS, DirtyRateError
from ..errors import HarnessError
from .hmp import human_monitor_command
from .schema import Arg, QmpError

QEMU_VERSION = {"major": 8, "minor": 2, "micro": 0}  # the QMP contract we implement (calc-time-unit)
UNIT = Arg("calc-time-unit", "enum", values=tuple(TIME_UNITS))


@dataclass(frozen=True)
class Command:
    name: str
    schema: tuple
    handler: object
    blocking: bool = False  # run in a worker thread


def version():
    return {"qemu": dict(QEMU_VERSION), "package": f"kvmharness-{__version__}"}


def _calc_dirty_rate(ctx, a):
    try:
        ctx.monitor.calc_dirty_rate(a["calc-time"], a.get("calc-time-unit", "second"),
                                    a.get("sample-pages"), a.get("mode", "page-sampling"))
    except DirtyRateError as e:
        raise QmpError(str(e)) from None
    return {}


def _query_dirty_rate(ctx, a):
    return ctx.monitor.query_dirty_rate(a.get("calc-time-unit", "second"))


def _set_writer(ctx, a):
    vm = ctx.vm
    vcpu = a.get("vcpu")
    if vcpu is not None and not 0 <= vcpu < len(vm.vcpus):
        raise QmpError(f"Parameter 'vcpu' must be a vCPU index from 0 to {len(vm.vcpus) - 1}")
    wps = a.get("wps")
    if wps is not None and wps < 0:
        raise QmpError("Parameter 'wps' must be 0 (unlimited) or more")
    try:
        vm.set_writer(wps=wps, pattern=a.get("pattern"), vcpu=vcpu)
    except HarnessError as e:
        raise QmpError(str(e)) from None
    return {}


def _query_writer(ctx, a):
    out = []
    for k, ctl in enumerate(ctx.vm.controls):
        stream = ctx.vm.logs[k].segments[-1][1]
        out.append({
            "vcpu": k,
            "state": guest.STATES.get(ctl.state, "unknown"),
            "wps": ctl.wps,
            "pattern": guest.PATTERN_NAMES[ctl.pattern],
            "writes": ctl.counter,
            "seed": stream.seed,
            "first-page": stream.first_page,
            "pages": stream.npages,
        })
    return out


def _migrate(ctx, a):
    try:
        ctx.migration.start(a["uri"])
    except HarnessError as e:
        raise QmpError(str(e)) from None
    return {}


def _set_migrate_parameters(ctx, a):
    for name, value in a.items():
        if value < 0 or (name == "x-max-iterations" and value < 1):
            raise QmpError(f"Parameter '{name}' expects a positive value")
    ctx.migration.parameters.update(a)
    return {}


def _hmp(ctx, a):
    return human_monitor_command(ctx.monitor, a["command-line"])


def _query_commands(ctx, a):
    return [{"name": name} for name in COMMANDS]


def _query_status(ctx, a):
    if ctx.migration.status == "completed":
        return {"running": False, "singlestep": False, "status": "postmigrate", "x-writing": False}
    writing = any(guest.STATES.get(c.state) == "running" for c in ctx.vm.controls)
    return {"running": True, "singlestep": False, "status": "running", "x-writing": writing}


COMMANDS = {
    c.name: c
    for c in [
        Command("qmp_capabilities", (Arg("enable", "array"),), None),
        Command("query-version", (), lambda ctx, a: version()),
        Command("query-status", (), _query_status),
        Command("query-commands", (), _query_commands),
        Command("quit", (), None),
        Command("calc-dirty-rate", (
            Arg("calc-time", "int", required=True),
            UNIT,
            Arg("sample-pages", "int"),
            Arg("mode", "enum", values=MODES),
        ), _calc_dirty_rate),
        Command("query-dirty-rate", (UNIT,), _query_dirty_rate),
        Command("human-monitor-command", (Arg("command-line", "str", required=True),
                                          Arg("cpu-index", "int")), _hmp),
        Command("x-set-writer", (
            Arg("vcpu", "int"),
            Arg("wps", "int"),
            Arg("pattern", "enum", values=tuple(guest.PATTERNS)),
        ), _set_writer, blocking=True),
        Command("x-query-writer", (), _query_writer),
        Command("migrate", (Arg("uri", "str", required=True),), _migrate),
        Command("query-migrate", (), lambda ctx, a: ctx.migration.query()),
        Command("migrate-set-parameters", (Arg("downtime-limit", "int"), Arg("max-bandwidth", "int"),
                                           Arg("x-max-iterations", "int")), _set_migrate_parameters),
        Command("query-migrate-parameters", (), lambda ctx, a: dict(ctx.migration.parameters)),
    ]
}
