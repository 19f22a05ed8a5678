"""The argument types and argument groups that several commands share.

Every command module declares its own arguments beside its handler; what
more than one of them takes (a VM's options, the backing source, the
convergence aids, the mode names) lives here, so that each is spelled, and
reports its mistakes, the same way everywhere.  Every command imports it to
parse its arguments, before it knows whether it will run, so it stays
light: the standard library and the cross-cutting parsers only.
"""

import argparse

from .. import patterns, units
from ..errors import UsageError

# The names of dirtyrate/modes.py's table (importing it would load the
# engine and the native extension for every command, --help included);
# tests/test_cli_errors.py checks that the two agree.
MODE_NAMES = ("page-sampling", "dirty-ring", "dirty-bitmap")


def arg_type(parser):
    """Wrap a parser that raises UsageError (units, patterns, ours) as an
    argparse type, so argparse reports its message as a usage error."""

    def convert(text):
        try:
            return parser(text)
        except UsageError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parser.__name__.replace("parse_", "")
    return convert


def parse_seed(text):
    """Decimal or 0x..., ASCII digits, no digit separators: 0 .. 2^64 - 1."""
    if not text.strip().isascii() or "_" in text:
        raise UsageError(f"invalid seed {text[:40]!r}: use a whole number")
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"invalid seed {text[:40]!r}: use a whole number") from None
    if not 0 <= value < 1 << 64:
        raise UsageError("invalid seed: it must fit in 64 bits")
    return value


def parse_path(text):
    """A file or socket path a user typed.  Empty is an error, never "not
    given": an unset $SECRET in a script gave `--secret-file ''`, which
    read as no secret and migrated unauthenticated."""
    if not text.strip():
        raise UsageError("an empty path (an unset variable?): give a file name")
    if "\0" in text:
        raise UsageError("a path cannot contain a NUL byte")
    return text


def parse_whole(text):
    """A whole number of QEMU's calc-dirty-rate (calc-time, sample-pages):
    ASCII digits only (int() took '٣'); the range is QEMU's to check."""
    return units.parse_count(text, "number", 0, 1 << 63)


positive_int = arg_type(units.parse_count)
path = arg_type(parse_path)
whole = arg_type(parse_whole)
tcp_address = arg_type(units.parse_tcp_address)
seed = arg_type(parse_seed)


def parse_limit_period(text):
    """The dirty limit's period, within QEMU's range for it."""
    return units.parse_count(text, "dirty limit period (ms)", 1, 1000)


def parse_percent(text):
    """A CPU throttle percentage, within auto-converge's range."""
    return units.parse_count(text, "CPU throttle (%)", 1, 99)


def add_aid_arguments(p, throttle=True):
    """The convergence aids outside a migration: a dirty limit, CPU throttling."""
    p.add_argument("--dirty-limit", type=positive_int, metavar="MB/S",
                   help="limit every vCPU's dirty page rate to this many MB/s (QEMU's set-vcpu-dirty-limit; "
                        "needs a dirty ring: --dirty-ring-size, default 1024 entries here)")
    p.add_argument("--dirty-limit-period", type=arg_type(parse_limit_period), default=1000, metavar="MS",
                   help="how often the dirty limit measures and adjusts, 1..1000 ms (default 1000, QEMU's)")
    if throttle:
        p.add_argument("--cpu-throttle", type=arg_type(parse_percent), metavar="PCT",
                       help="throttle every vCPU to (100 - PCT) %% of its time, as auto-converge does (1..99)")
        p.add_argument("--dirty-ring-size", type=positive_int,
                       help="dirty ring entries per vCPU (with --dirty-limit; default 1024)")


BACKING_NAMES = ("anonymous", "anonymous-thp", "anonymous-hugetlb-2mb", "anonymous-hugetlb-1gb", "shmem",
                 "shared-hugetlb")
BACKING_HELP = ("host memory behind the data region: " + ", ".join(BACKING_NAMES) + " (default anonymous; "
                "hugetlb sources need pages reserved in /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages)")


def parse_backing(text):
    """A backing source's name (kvm/backing.py's table, copied here so that
    --help does not load the KVM layer; tests/test_backing.py checks them),
    or the KVM selftests' spelling of it (dirty_log_perf_test -s
    anonymous_thp, anonymous_hugetlb_2mb, ...: underscores for our hyphens)."""
    name = text.replace("_", "-")
    if name not in BACKING_NAMES:
        raise UsageError(f"unknown backing source {text[:40]!r}: one of {', '.join(BACKING_NAMES)} (or the "
                         f"selftests' spelling with underscores)")
    return name


def parse_slots(text):
    """How many memslots the data region is cut into."""
    return units.parse_count(text, "memslots", 1, 512)


def add_backing_arguments(p):
    """Where the data region lives: its backing source and its memslots."""
    p.add_argument("--backing", type=arg_type(parse_backing), default="anonymous", help=BACKING_HELP)
    p.add_argument("--slots", type=arg_type(parse_slots), default=1,
                   help="memslots the data region is split into, at 2 MiB boundaries (default 1)")


def add_json_argument(p):
    """--json, as every command that reports a result takes it."""
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_vm_arguments(p, wps_default="3M"):
    """Arguments every command that builds a VM takes."""
    p.add_argument("--mem", type=arg_type(units.parse_size), default=units.parse_size("1GiB"),
                   help="data slot size, e.g. 512MiB, 1GiB, 4G (default 1GiB)")
    p.add_argument("--wps", type=arg_type(units.parse_rate), default=units.parse_rate(wps_default),
                   help=f"writes per second per vCPU, e.g. 3M, 250k, 0 = unlimited (default {wps_default})")
    p.add_argument("--vcpus", type=positive_int, default=1,
                   help="vCPUs, each writing its own slice (or all the slot with --shared-region)")
    p.add_argument("--pattern", type=arg_type(patterns.parse_pattern), default="random",
                   help=f"which pages the writer picks: {patterns.PATTERN_HELP} (default random)")
    p.add_argument("--write-percent", type=arg_type(patterns.parse_write_percent), default=100,
                   help="percentage of accesses that write; the rest read the page they picked (default 100); "
                        "--wps then counts accesses")
    p.add_argument("--burst", type=arg_type(patterns.parse_burst),
                   help="write for ON, idle for OFF, repeating, e.g. 200ms/800ms (default: no bursts)")
    p.add_argument("--shared-region", action="store_true",
                   help="every vCPU writes the whole data slot (default: disjoint slices)")
    p.add_argument("--seed", type=seed, default=1, help="PRNG seed of the writer (default 1)")
    p.add_argument("--no-prefault", dest="prefault", action="store_false",
                   help="do not populate the data slot (MADV_POPULATE_WRITE) before boot; "
                        "the warm-up then pays for host page allocation")
    add_backing_arguments(p)
    add_json_argument(p)


def add_fleet_arguments(p):
    """What `watch` and `exporter` watch: the VMs, the links, the downtime,
    the mode and how often."""
    p.add_argument("--qmp", type=path, action="append", required=True, metavar="SOCKET|HOST:PORT",
                   help="a VM's QMP (any QEMU, or kvmharness qmp); repeat for each VM")
    p.add_argument("--bandwidth", type=arg_type(units.parse_bandwidth), action="append",
                   help="a migration link, e.g. 10Gbit/s; repeat for several (default 10Gbit/s)")
    p.add_argument("--downtime", type=arg_type(units.parse_duration), default=0.3,
                   help="the allowed downtime (default 300ms)")
    p.add_argument("--mode", choices=MODE_NAMES, default="page-sampling",
                   help="page-sampling (default: it costs the guest nothing after the window); an exact mode "
                        "measures a VM again only once its after-effect is over (about 7.5 s per GiB)")
    p.add_argument("--every", type=arg_type(units.parse_duration), default=10.0,
                   help="how often each VM is measured (default 10s)")
    p.add_argument("--concurrency", type=positive_int, default=8, help="VMs measured at once, at most (default 8)")
    p.add_argument("--max-iterations", type=positive_int, default=30)
    p.add_argument("--duration", type=arg_type(units.parse_duration),
                   help="stop after this long (default: until SIGINT or SIGTERM)")


def check_downtime(seconds):
    """A downtime is measured as one calc-dirty-rate window (the seed's
    rule), so it must be one: 50 ms .. 60 s."""
    if not 0.05 <= seconds <= 60:
        raise UsageError("the downtime must be between 50ms and 60s (the windows calc-dirty-rate can measure)")


def fleet_links(args):
    """The links `--bandwidth` named (10 Gbit/s if none), and the checks
    the measurement's windows need."""
    check_downtime(args.downtime)
    if args.every < 1:
        raise UsageError("--every must be at least 1s: each measurement takes a few windows")
    return sorted(set(args.bandwidth or [10e9]))


def fleet_of(args, on_reading=None):
    """The Fleet add_fleet_arguments' options describe (not started)."""
    from ..migration.model import Link
    from ..watch.fleet import Fleet

    return Fleet(args.qmp, [Link(b) for b in fleet_links(args)], args.downtime, args.mode, args.every,
                 args.concurrency, on_reading=on_reading, max_iterations=args.max_iterations)
