"""`calc-dirty-rate`: build a VM, measure one window as QEMU's calc-dirty-rate
would, print query-dirty-rate's answer (HMP's text, or QMP's JSON)."""

from .. import units
from ..errors import DirtyRateError, UsageError
from .args import MODE_NAMES, add_vm_arguments, arg_type, positive_int, whole

# dirtyrate/log_stop.py's names (importing it would load the engine for
# --help); tests/test_measuring_cost.py checks that the two agree.
LOG_STOP_NAMES = ("clear-flag", "recreate-slot")


def parse_periods(text):
    """'125,250,500' -> [125, 250, 500]: whole milliseconds."""
    return [units.parse_count(t.strip(), "period (ms)", 1, 10**6) for t in text.split(",")]


def add_arguments(p):
    """A VM's arguments, then QEMU's calc-dirty-rate's (and our settling time and x-periods)."""
    add_vm_arguments(p)
    p.add_argument("--calc-time", type=whole, required=True, help="window length, in --calc-time-unit")
    p.add_argument("--calc-time-unit", choices=["second", "millisecond"], default="second")
    p.add_argument("--mode", choices=MODE_NAMES, default="page-sampling")
    p.add_argument("--sample-pages", type=whole, help="pages sampled per GiB (page-sampling; default 512)")
    p.add_argument("--dirty-ring-size", type=positive_int,
                   help="dirty ring entries per vCPU (default: the host's maximum, in dirty-ring mode)")
    p.add_argument("--settle", type=arg_type(units.parse_duration), default=0.2,
                   help="how long the writer runs before the window opens (default 200ms)")
    p.add_argument("--periods", type=arg_type(parse_periods),
                   help="x-periods: comma-separated ms from the same clean start, e.g. 125,250,500 "
                        "(default 125, 250, 375, 500, 750, then every 500 up to calc-time)")
    p.add_argument("--log-stop", choices=LOG_STOP_NAMES, default="clear-flag",
                   help="x-log-stop: how dirty-bitmap and dirty-ring stop logging after the window: clear-flag "
                        "(QEMU's, the default) or recreate-slot (delete and re-add the memslots: under shadow "
                        "paging the guest is back at its pace several times sooner, but a next window that "
                        "starts before it has touched every page again counts pages it only read)")


def main(args):
    import json

    from ..dirtyrate import modes
    from ..dirtyrate.monitor import validate_calc_dirty_rate, validate_periods
    from ..qmp.hmp import format_dirty_rate_info
    from ..qmp.qapi import dirty_rate_info
    from .measuring import measurement_vm

    ring = args.dirty_ring_size
    if ring is None and modes.needs_ring(args.mode):
        ring = 0  # the host's maximum
    try:
        calc_time_ms, _ = validate_calc_dirty_rate(args.calc_time, args.calc_time_unit, args.sample_pages,
                                                   args.mode, modes.enabled_modes(ring is not None))
        validate_periods(args.periods, calc_time_ms)
    except DirtyRateError as e:
        raise UsageError(str(e)) from None
    with measurement_vm(args, ring) as (vm, monitor):
        monitor.measure(args.calc_time, args.calc_time_unit, args.sample_pages, args.mode, args.periods,
                        args.log_stop)
        info = dirty_rate_info(monitor.state(), args.calc_time_unit)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_dirty_rate_info(info))
    return 0
