"""`probe`: describe this KVM host and calibrate the guest."""

from .. import units
from .args import add_json_argument


def add_arguments(p):
    """Only --json: probe measures what it finds."""
    add_json_argument(p)


def window_cost_text(report):
    """'back within 10 % in 1.09 s with recreate-slot, 7.13 s with clear-flag (QEMU's)', or why not measured."""
    if report.window_cost_skipped:
        return f"not measured ({report.window_cost_skipped})"
    parts = []
    for c in report.window_costs:
        back = (f"back within 10 % in {c.recovery_seconds:.2f} s" if c.recovery_seconds is not None
                else "not back within 10 % in 20 s")
        qemu = " (QEMU's, the default)" if c.log_stop == "clear-flag" else ""
        parts.append(f"{back} with {c.log_stop}{qemu}, {c.lost_seconds:.2f} s of its writes lost, "
                     f"{c.window_ratio:.1%} of its pace in the window")
    return "; ".join(parts)


def main(args):
    import json

    from ..probe import CALIBRATION_MEM, COST_CALC_TIME_MS, COST_MEM, probe
    from ..qemu.launch import find_qemus

    report = probe()
    qemus = find_qemus()
    if args.json:
        print(json.dumps({**report.to_json(), "qemu": [q.to_json() for q in qemus]}, indent=2))
        return 0
    print(f"host kind:        {report.host_kind} ({report.cpu_model})")
    print(f"kernel:           {report.kernel}")
    print(f"KVM API version:  {report.api_version}")
    print(f"TSC:              {report.tsc_khz} kHz")
    print(f"dirty ring max:   {report.dirty_ring_max_entries} entries per vCPU")
    for name, value in report.caps.items():
        print(f"  {name:<36} {value}")
    print("backing sources (--backing):")
    for offer in report.backing:
        print(f"  {offer.name:<24} {'yes' if offer.offered else 'no ':<4}{offer.detail}")
    print(f"guest loop rate:  {units.format_rate(report.loop_writes_per_second)}writes/s "
          f"(random, {CALIBRATION_MEM >> 20} MiB, unthrottled; {report.guest_to_host_loop:.2f}x the same "
          f"loop as a host process)")
    print(f"first write to a clean page under dirty logging: {report.first_write_us:.2f} us")
    print(f"after one {COST_CALC_TIME_MS} ms dirty-bitmap window on {COST_MEM >> 30} GiB ({report.mmu} paging): "
          + window_cost_text(report))
    print("QEMU (qemu-check, the qemu tests; --qemu PATH):" if qemus else
          "QEMU: none found (scripts/setup.sh brings Debian's and bookworm-backports')")
    for q in qemus:
        windows = "millisecond windows (calc-time-unit)" if q.millisecond else "whole-second windows only"
        print(f"  {q.version_text:<9} {windows:<38} {q.binary}")
    return 0
