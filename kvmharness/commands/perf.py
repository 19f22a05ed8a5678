"""`perf`: dirty_log_perf_test's numbers on our VM (kvmharness/perf/),
human-readable in the selftest's words or --json; exit 1 when a harvest
differs from replay."""

import json

from ..perf import PerfConfig, run_perf


def config_from(args):
    return PerfConfig(vcpus=args.vcpus, vcpu_bytes=args.vcpu_mem, iterations=args.iterations,
                      random_access=args.random_access, seed=args.seed, write_percent=args.write_percent,
                      backing=args.backing, slots=args.slots, overlap=args.overlap,
                      manual_protect=args.manual_protect, mode=args.mode, ring_entries=args.dirty_ring_size or 0,
                      pin=tuple(args.pin or ()), prefault=args.prefault)


def main(args):
    result = run_perf(config_from(args))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print("\n".join(result.lines()))
    return 0 if result.exact else 1
