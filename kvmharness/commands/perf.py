"""`perf`: dirty_log_perf_test's numbers on our VM (kvmharness/perf/),
human-readable in the selftest's words or --json; exit 1 when a harvest
differs from replay."""

from .. import units
from .args import add_backing_arguments, add_json_argument, arg_type, positive_int, seed


def parse_cpu_list(text):
    """'0,1,2' -> (0, 1, 2): host CPU numbers."""
    return tuple(units.parse_count(t.strip(), "CPU number", 0, 1 << 16) for t in text.split(","))


def parse_write_percent_int(text):
    """The selftest's -w: a whole percentage."""
    return units.parse_count(text, "write percentage", 0, 100)


def add_arguments(p):
    """dirty_log_perf_test's options, in our words (its letters in each help)."""
    p.add_argument("--vcpus", type=positive_int, default=1, help="vCPUs (the selftest's -v; default 1)")
    p.add_argument("--vcpu-mem", type=arg_type(units.parse_size), default=units.parse_size("1GiB"),
                   help="memory each vCPU dirties per iteration (-b; default 1GiB)")
    p.add_argument("--iterations", type=positive_int, default=2,
                   help="iterations with dirty logging, and as many without it first (-i; default 2)")
    p.add_argument("--random-access", action="store_true",
                   help="each pass picks its pages at random instead of in order (-a)")
    p.add_argument("--seed", type=seed, default=1, help="PRNG seed of the guest (-r; default 1)")
    p.add_argument("--write-percent", type=arg_type(parse_write_percent_int), default=100,
                   help="percentage of accesses that write, the rest read (-w; default 100)")
    add_backing_arguments(p)  # -s, -x
    p.add_argument("--overlap", action="store_true",
                   help="every vCPU accesses all of the memory instead of its own part (-o)")
    p.add_argument("--no-manual-protect", dest="manual_protect", action="store_false",
                   help="plain KVM_GET_DIRTY_LOG: no KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, no INITIALLY_SET (-g)")
    p.add_argument("--mode", choices=("dirty-bitmap", "dirty-ring"), default="dirty-bitmap",
                   help="the dirty log harvested after each iteration (default dirty-bitmap)")
    p.add_argument("--dirty-ring-size", type=positive_int,
                   help="dirty ring entries per vCPU with --mode dirty-ring (default: the host's largest)")
    p.add_argument("--pin", type=arg_type(parse_cpu_list), metavar="CPU,CPU,...",
                   help="pin vCPU k's thread to the k-th CPU, the main thread to one more if given (-c)")
    p.add_argument("--prefault", action="store_true",
                   help="MADV_POPULATE_WRITE the memory first (the selftest does not: populate then pays host "
                        "page faults)")
    add_json_argument(p)


def config_from(args):
    from ..perf import PerfConfig

    return PerfConfig(vcpus=args.vcpus, vcpu_bytes=args.vcpu_mem, iterations=args.iterations,
                      random_access=args.random_access, seed=args.seed, write_percent=args.write_percent,
                      backing=args.backing, slots=args.slots, overlap=args.overlap,
                      manual_protect=args.manual_protect, mode=args.mode, ring_entries=args.dirty_ring_size or 0,
                      pin=tuple(args.pin or ()), prefault=args.prefault)


def main(args):
    import json

    from ..perf import run_perf

    result = run_perf(config_from(args))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print("\n".join(result.lines()))
    return 0 if result.exact else 1
