"""`calc-dirty-rate`: build a VM, measure one window as QEMU's calc-dirty-rate
would, print query-dirty-rate's answer (HMP's text, or QMP's JSON)."""

import json

from ..dirtyrate import modes
from ..dirtyrate.monitor import validate_calc_dirty_rate, validate_periods
from ..errors import DirtyRateError, UsageError
from ..qmp.hmp import format_dirty_rate_info
from ..qmp.qapi import dirty_rate_info
from .measuring import measurement_vm


def main(args):
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
        monitor.measure(args.calc_time, args.calc_time_unit, args.sample_pages, args.mode, args.periods)
        info = dirty_rate_info(monitor.state(), args.calc_time_unit)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_dirty_rate_info(info))
    return 0
