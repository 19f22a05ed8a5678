"""The QMP commands we serve: their QAPI schemas and handlers.

Handlers are plain functions of (context, arguments), some run off the event
loop (they wait for the guest to take a command up).  A handler that fails
raises: a QmpError replies with its class, any other HarnessError as
GenericError (server.py).  Names without a prefix are
QEMU's commands with QEMU's semantics; ours carry the x- prefix.
"""

from dataclasses import dataclass
from fractions import Fraction

from .. import __version__
from ..dirtyrate import log_stop, modes
from ..dirtyrate.monitor import TIME_UNITS, DirtyRateStatus
from ..errors import QmpError
from ..microvm.guest import PAGE_SIZE
from .hmp import human_monitor_command
from ..migration.parameters import PARAMETERS, QEMU_ONLY_PARAMETERS, parse_capabilities, query_capabilities, \
    query_parameters
from .qapi import dirty_rate_info, migration_info, vcpu_dirty_limit_info
from .schema import Arg
from .. import patterns

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


def _migrating(ctx):
    return ctx.migration.running


def _exact_measurement_running(ctx):
    state = ctx.monitor.state()
    return state.status is DirtyRateStatus.MEASURING and modes.BY_NAME[state.request.mode].exact


def _calc_dirty_rate(ctx, a):
    # Migration and the exact modes both consume the VM's one dirty log (each
    # sync clears what the other needs): one at a time.  page-sampling reads
    # memory only and may run beside a migration.
    if _migrating(ctx) and modes.BY_NAME[a.get("mode", modes.DEFAULT)].exact:
        raise QmpError(f"mode {a['mode']} cannot measure while a migration is in progress; "
                       "use page-sampling or wait for the migration to end")
    ctx.monitor.calc_dirty_rate(a["calc-time"], a.get("calc-time-unit", "second"),
                                a.get("sample-pages"), a.get("mode", modes.DEFAULT), a.get("x-periods"),
                                a.get("x-log-stop"))
    return {}


def _query_dirty_rate(ctx, a):
    return dirty_rate_info(ctx.monitor.state(), a.get("calc-time-unit", "second"))


def _write_percent(value):
    if not 0 <= value <= 100:
        raise QmpError("Parameter 'write-percent' must be between 0 and 100")
    return Fraction(str(value))


def _guest_here(ctx):
    """Refuse at once what needs the guest running here: after a migration
    it waited 10 s for a guest that had gone (issue 25)."""
    if (why := ctx.migration.away()) is not None:
        raise QmpError(why)


def _set_writer(ctx, a):
    _guest_here(ctx)
    vm = ctx.vm
    vcpu = a.get("vcpu")
    if vcpu is not None and not 0 <= vcpu < len(vm.vcpus):
        raise QmpError(f"Parameter 'vcpu' must be a vCPU index from 0 to {len(vm.vcpus) - 1}")
    wps = a.get("wps")
    if wps is not None and wps < 0:
        raise QmpError("Parameter 'wps' must be 0 (unlimited) or more")
    vm.set_writer(wps=wps, pattern=a.get("pattern"), vcpu=vcpu, write_percent=a.get("write-percent"),
                  burst=a.get("burst"), shared_region=a.get("shared-region"))
    return {}


def _query_writer(ctx, a):
    return [
        {"vcpu": w.vcpu, "state": w.state, "wps": w.wps, "pattern": w.pattern, "writes": w.writes,
         "reads": w.reads, "accesses": w.accesses, "write-percent": w.write_percent, "burst": str(w.burst),
         "seed": w.stream.seed, "first-page": w.stream.first_page, "pages": w.stream.npages}
        for w in ctx.vm.writer.states()
    ]


def _migrate(ctx, a):
    if "uri" not in a:  # QEMU 10 also takes "channels", which we do not
        raise QmpError("need either 'uri' or 'channels' argument")
    if _exact_measurement_running(ctx):
        raise QmpError("a dirty-bitmap or dirty-ring measurement is running; migrate when it has ended")
    ctx.migration.start(a["uri"])
    return {}


def _set_migrate_parameters(ctx, a):
    ctx.migration.set_parameters(a)
    return {}


def _set_migrate_capabilities(ctx, a):
    ctx.migration.set_capabilities(parse_capabilities(a["capabilities"]))
    return {}


def _query_migrate_capabilities(ctx, a):
    return query_capabilities(ctx.migration.capabilities)


def _set_vcpu_dirty_limit(ctx, a):
    ctx.dirty_limit.set(a["dirty-rate"], a.get("cpu-index"))
    return {}


def _cancel_vcpu_dirty_limit(ctx, a):
    ctx.dirty_limit.cancel(a.get("cpu-index"))
    return {}


def _query_vcpu_dirty_limit(ctx, a):
    return vcpu_dirty_limit_info(ctx.dirty_limit.query())


def _hmp(ctx, a):
    return human_monitor_command(ctx.monitor, a["command-line"], ctx.dirty_limit)


def _query_commands(ctx, a):
    return [{"name": name} for name in COMMANDS]


def _query_memory_size_summary(ctx, a):
    """QEMU's: the guest's RAM (here the data slot: what dirties and migrates)."""
    return {"base-memory": ctx.vm.slot_pages * PAGE_SIZE, "plugged-memory": 0}


def _query_cpus_fast(ctx, a):
    """QEMU's CpuInfoFast for each vCPU; thread-id the vCPU thread's."""
    threads = list(getattr(ctx.vm, "threads", ()))
    return [{"cpu-index": k, "qom-path": f"/machine/unattached/device[{k}]",
             "thread-id": (getattr(threads[k], "native_id", 0) or 0) if k < len(threads) else 0,
             "props": {"core-id": 0, "thread-id": 0, "socket-id": k}, "target": "x86_64"}
            for k in range(len(ctx.vm.vcpus))]


def _query_status(ctx, a):
    if ctx.migration.status == "completed":
        return {"running": False, "singlestep": False, "status": "postmigrate", "x-writing": False}
    if ctx.vm.paused:  # a switch-over the destination never confirmed (migration/source.py)
        return {"running": False, "singlestep": False, "status": "paused", "x-writing": False}
    writing = any(w.state == "running" for w in ctx.vm.writer.states())
    return {"running": True, "singlestep": False, "status": "running", "x-writing": writing}


def _cont(ctx, a):
    """QEMU's cont: resume a paused guest.  Ours pauses only when a
    switch-over went unconfirmed; resuming it is the operator's call (the
    guest may be running at the destination: check there first)."""
    if (why := ctx.migration.away(paused_too=False)) is not None:
        raise QmpError(why)
    if ctx.vm.paused:
        ctx.vm.resume_retired()
    return {}


COMMANDS = {
    c.name: c
    for c in [
        Command("qmp_capabilities", (Arg("enable", "array"),), None),
        Command("query-version", (), lambda ctx, a: version()),
        Command("query-status", (), _query_status),
        Command("cont", (), _cont),
        Command("query-memory-size-summary", (), _query_memory_size_summary),
        Command("query-cpus-fast", (), _query_cpus_fast),
        Command("query-commands", (), _query_commands),
        Command("quit", (), None),
        Command("calc-dirty-rate", (
            Arg("calc-time", "int", required=True),
            UNIT,
            Arg("sample-pages", "int"),
            Arg("mode", "enum", values=modes.NAMES),
            Arg("x-periods", "array"),
            Arg("x-log-stop", "enum", values=log_stop.NAMES),
        ), _calc_dirty_rate),
        Command("query-dirty-rate", (UNIT,), _query_dirty_rate),
        Command("human-monitor-command", (Arg("command-line", "str", required=True),
                                          Arg("cpu-index", "int")), _hmp),
        Command("x-set-writer", (
            Arg("vcpu", "int"),
            Arg("wps", "int"),
            Arg("pattern", "str", parse=patterns.parse_pattern),
            Arg("write-percent", "number", parse=_write_percent),
            Arg("burst", "str", parse=patterns.parse_burst),
            Arg("shared-region", "bool"),
        ), _set_writer, blocking=True),
        Command("x-query-writer", (), _query_writer),
        Command("migrate", (Arg("uri", "str"),), _migrate),
        Command("query-migrate", (), lambda ctx, a: migration_info(ctx.migration)),
        # Types are checked by the migration's parameter table (QEMU's widths and messages).
        Command("migrate-set-parameters", tuple(Arg(name, "any") for name in PARAMETERS | QEMU_ONLY_PARAMETERS),
                _set_migrate_parameters),
        Command("query-migrate-parameters", (), lambda ctx, a: query_parameters(ctx.migration.parameters)),
        Command("migrate-set-capabilities", (Arg("capabilities", "any", required=True),),
                _set_migrate_capabilities),
        Command("query-migrate-capabilities", (), _query_migrate_capabilities),
        Command("set-vcpu-dirty-limit", (Arg("cpu-index", "int"), Arg("dirty-rate", "uint64", required=True)),
                _set_vcpu_dirty_limit),
        Command("cancel-vcpu-dirty-limit", (Arg("cpu-index", "int"),), _cancel_vcpu_dirty_limit),
        Command("query-vcpu-dirty-limit", (), _query_vcpu_dirty_limit),
    ]
}
