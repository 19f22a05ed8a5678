"""`probe`: describe this KVM host and calibrate the guest."""

from .. import units
from .args import add_json_argument


def add_arguments(p):
    """Only --json: probe measures what it finds."""
    add_json_argument(p)


def main(args):
    import json

    from ..probe import CALIBRATION_MEM, probe
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
    print("QEMU (qemu-check, the qemu tests; --qemu PATH):" if qemus else
          "QEMU: none found (scripts/setup.sh brings Debian's and bookworm-backports')")
    for q in qemus:
        windows = "millisecond windows (calc-time-unit)" if q.millisecond else "whole-second windows only"
        print(f"  {q.version_text:<9} {windows:<38} {q.binary}")
    return 0
