"""The `kvmharness` command: its arguments (argparse), and the exit status
of whatever the handler in kvmharness/commands/ does with them.

Every user mistake and every fault ends in one line on stderr and a non-zero
exit: 2 for bad arguments (argparse's convention), 1 for errors met while
running, 130 / 143 / 129 after SIGINT / SIGTERM / SIGHUP (the VM torn down
first).
"""

import argparse
import importlib
import signal
import sys

from . import patterns, units
from .errors import HarnessError, Signalled, UsageError

# The names of dirtyrate/modes.py's table (importing it would load the
# engine and the native extension for every command, --help included);
# tests/test_cli_errors.py checks that the two agree.
MODE_NAMES = ("page-sampling", "dirty-ring", "dirty-bitmap")


def _command(module, name="main"):
    """The handler kvmharness.commands.<module>.<name>, imported only when its
    command runs (keeps start-up light)."""

    def handler(args):
        return getattr(importlib.import_module(f"kvmharness.commands.{module}"), name)(args)

    return handler


def _arg(parser):
    """Wrap a units parser so argparse reports its message as a usage error."""

    def convert(text):
        try:
            return parser(text)
        except UsageError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parser.__name__.replace("parse_", "")
    return convert


def parse_sizes(text):
    return tuple(units.parse_size(t) for t in text.split(","))


def parse_periods(text):
    """'125,250,500' -> [125, 250, 500]: whole milliseconds."""
    return [units.parse_count(t.strip(), "period (ms)", 1, 10**6) for t in text.split(",")]


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


_positive_int = _arg(units.parse_count)
_port = _arg(units.parse_port)
_tcp_address = _arg(units.parse_tcp_address)
_seed = _arg(parse_seed)


def parse_parameter(text):
    """'NAME=VALUE' -> (name, int or bool), as migrate-set-parameters takes it."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise UsageError(f"invalid parameter {text[:60]!r}: use NAME=VALUE")
    if value in ("true", "false"):
        return name, value == "true"
    if not value.isascii() or not value.isdigit():
        raise UsageError(f"invalid value for {name[:40]}: {value[:40]!r} (a whole number, or true/false)")
    return name, int(value)


def add_aid_arguments(p, throttle=True):
    """The convergence aids outside a migration: a dirty limit, CPU throttling."""
    p.add_argument("--dirty-limit", type=_positive_int, metavar="MB/S",
                   help="limit every vCPU's dirty page rate to this many MB/s (QEMU's set-vcpu-dirty-limit; "
                        "needs a dirty ring: --dirty-ring-size, default 1024 entries here)")
    p.add_argument("--dirty-limit-period", type=_arg(parse_limit_period), default=1000, metavar="MS",
                   help="how often the dirty limit measures and adjusts, 1..1000 ms (default 1000, QEMU's)")
    if throttle:
        p.add_argument("--cpu-throttle", type=_arg(parse_percent), metavar="PCT",
                       help="throttle every vCPU to (100 - PCT) %% of its time, as auto-converge does (1..99)")
        p.add_argument("--dirty-ring-size", type=_positive_int,
                       help="dirty ring entries per vCPU (with --dirty-limit; default 1024)")


def parse_limit_period(text):
    return units.parse_count(text, "dirty limit period (ms)", 1, 1000)


def parse_percent(text):
    return units.parse_count(text, "CPU throttle (%)", 1, 99)


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


def parse_cpu_list(text):
    """'0,1,2' -> (0, 1, 2): host CPU numbers."""
    return tuple(units.parse_count(t.strip(), "CPU number", 0, 1 << 16) for t in text.split(","))


def parse_write_percent_int(text):
    return units.parse_count(text, "write percentage", 0, 100)


def parse_modes(text):
    """'dirty-bitmap,page-sampling' -> a tuple of calc-dirty-rate modes."""
    names = tuple(t.strip() for t in text.split(","))
    for name in names:
        if name not in MODE_NAMES:
            raise UsageError(f"unknown mode {name[:40]!r}: one of {', '.join(MODE_NAMES)}")
    return names


def parse_durations(text):
    """'1s,2s' or '200ms,1s' -> seconds, each 50 ms .. 60 s (calc-dirty-rate's range)."""
    out = tuple(units.parse_duration(t.strip()) for t in text.split(","))
    for d in out:
        if not 0.05 <= d <= 60:
            raise UsageError(f"a window of {d * 1e3:g} ms is outside calc-dirty-rate's 50ms..60s")
    return out


def parse_slots(text):
    return units.parse_count(text, "memslots", 1, 512)


BACKING_NAMES = ("anonymous", "anonymous-thp", "anonymous-hugetlb-2mb", "anonymous-hugetlb-1gb", "shmem",
                 "shared-hugetlb")
BACKING_HELP = ("host memory behind the data region: " + ", ".join(BACKING_NAMES) + " (default anonymous; "
                "hugetlb sources need pages reserved in /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages)")


def add_backing_arguments(p):
    """Where the data region lives: its backing source and its memslots."""
    p.add_argument("--backing", type=_arg(parse_backing), default="anonymous", help=BACKING_HELP)
    p.add_argument("--slots", type=_arg(parse_slots), default=1,
                   help="memslots the data region is split into, at 2 MiB boundaries (default 1)")


def add_vm_arguments(p, wps_default="3M"):
    """Arguments every command that builds a VM takes."""
    p.add_argument("--mem", type=_arg(units.parse_size), default=units.parse_size("1GiB"),
                   help="data slot size, e.g. 512MiB, 1GiB, 4G (default 1GiB)")
    p.add_argument("--wps", type=_arg(units.parse_rate), default=units.parse_rate(wps_default),
                   help=f"writes per second per vCPU, e.g. 3M, 250k, 0 = unlimited (default {wps_default})")
    p.add_argument("--vcpus", type=_positive_int, default=1,
                   help="vCPUs, each writing its own slice (or all the slot with --shared-region)")
    p.add_argument("--pattern", type=_arg(patterns.parse_pattern), default="random",
                   help=f"which pages the writer picks: {patterns.PATTERN_HELP} (default random)")
    p.add_argument("--write-percent", type=_arg(patterns.parse_write_percent), default=100,
                   help="percentage of accesses that write; the rest read the page they picked (default 100); "
                        "--wps then counts accesses")
    p.add_argument("--burst", type=_arg(patterns.parse_burst),
                   help="write for ON, idle for OFF, repeating, e.g. 200ms/800ms (default: no bursts)")
    p.add_argument("--shared-region", action="store_true",
                   help="every vCPU writes the whole data slot (default: disjoint slices)")
    p.add_argument("--seed", type=_seed, default=1, help="PRNG seed of the writer (default 1)")
    p.add_argument("--no-prefault", dest="prefault", action="store_false",
                   help="do not populate the data slot (MADV_POPULATE_WRITE) before boot; "
                        "the warm-up then pays for host page allocation")
    add_backing_arguments(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (argparse prints the usage too)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _Parser(
        prog="kvmharness",
        description="Measure how fast a KVM guest dirties its memory, straight on /dev/kvm.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("probe", help="describe this KVM host and calibrate the guest")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_command("probe"))

    p = sub.add_parser("run", help="run the guest writer and report writes/s per vCPU")
    add_vm_arguments(p)
    p.add_argument("--duration", type=_arg(units.parse_duration), default=2.0,
                   help="how long to write after the warm-up, e.g. 500ms, 2s (default 2s)")
    add_aid_arguments(p)
    p.set_defaults(handler=_command("run"))

    p = sub.add_parser("calc-dirty-rate", help="measure the guest's dirty page rate, as QEMU's calc-dirty-rate")
    add_vm_arguments(p)
    p.add_argument("--calc-time", type=int, required=True, help="window length, in --calc-time-unit")
    p.add_argument("--calc-time-unit", choices=["second", "millisecond"], default="second")
    p.add_argument("--mode", choices=MODE_NAMES, default="page-sampling")
    p.add_argument("--sample-pages", type=int, help="pages sampled per GiB (page-sampling; default 512)")
    p.add_argument("--dirty-ring-size", type=_positive_int,
                   help="dirty ring entries per vCPU (default: the host's maximum, in dirty-ring mode)")
    p.add_argument("--settle", type=_arg(units.parse_duration), default=0.2,
                   help="how long the writer runs before the window opens (default 200ms)")
    p.add_argument("--periods", type=_arg(parse_periods),
                   help="x-periods: comma-separated ms from the same clean start, e.g. 125,250,500 "
                        "(default 125, 250, 375, 500, 750, then every 500 up to calc-time)")
    p.set_defaults(handler=_command("calc"))

    p = sub.add_parser("qmp", help="run the VM and serve QMP (and HMP commands) to QEMU clients")
    add_vm_arguments(p)
    p.add_argument("--socket", help="unix socket path to serve on (created with mode 0600)")
    p.add_argument("--tcp", type=_tcp_address, help="also serve on TCP, [HOST:]PORT (host defaults to 127.0.0.1)")
    p.add_argument("--dirty-ring-size", type=_positive_int,
                   help="create the VM with a dirty ring of this many entries per vCPU "
                        "(offers mode dirty-ring instead of dirty-bitmap, as in QEMU)")
    p.add_argument("--secret-file", help="shared secret that QMP migrate's destinations must prove")
    add_aid_arguments(p, throttle=False)
    p.set_defaults(handler=_command("qmp"), settle=0.0)

    p = sub.add_parser("bench", help="reproduce the seed's dirty-rate table side by side, with plots")
    p.add_argument("--quick", action="store_true", help="1 GiB, five calc-times: under two minutes")
    p.add_argument("--out", default="results/bench", help="output folder (default results/bench)")
    p.add_argument("--runs", type=_positive_int, default=3, help="runs per cell (default 3)")
    p.add_argument("--sizes", type=_arg(parse_sizes), help="comma-separated sizes (default 1GiB,4GiB,16GiB or 24GiB)")
    p.add_argument("--pattern", type=_arg(patterns.parse_pattern), default="random",
                   help=f"the writer's pattern: {patterns.PATTERN_HELP} (default random, the seed's)")
    add_backing_arguments(p)
    p.set_defaults(handler=_command("bench"))

    p = sub.add_parser("predict", help="predict whether pre-copy migration converges, from measured dirty(t)")
    add_vm_arguments(p)
    p.add_argument("--downtime", type=_arg(units.parse_duration), required=True, help="allowed downtime, e.g. 300ms")
    p.add_argument("--bandwidth", type=_arg(units.parse_bandwidth), required=True,
                   help="link bandwidth, e.g. 1Gbit/s, 10Gbps, 125MB/s")
    p.add_argument("--mode", choices=MODE_NAMES, default="dirty-bitmap",
                   help="how dirty(t) is measured (default dirty-bitmap: it slows the guest as migration's "
                        "own dirty logging will)")
    p.add_argument("--max-iterations", type=_positive_int, default=30)
    p.add_argument("--table", action="store_true", help="verdicts over several bandwidths x downtimes")
    p.add_argument("--no-tcp-overhead", dest="tcp_overhead", action="store_false",
                   help="do not count TCP/IP framing on the link")
    p.add_argument("--curve", choices=["one-run", "separate"], default="one-run",
                   help="measure dirty(t) in one window with x-periods (default), or one window per point")
    p.add_argument("--qmp", metavar="SOCKET|HOST:PORT",
                   help="predict a running QEMU VM (or a kvmharness qmp server) instead: dirty(t) from its "
                        "calc-dirty-rate over QMP alone (VM options are then not used)")
    p.set_defaults(handler=_command("predict"), settle=0.2)

    p = sub.add_parser("migrate", help="start a VM with the writer and live-migrate it (source side)")
    add_vm_arguments(p)
    p.add_argument("--to", type=_tcp_address, required=True, help="destination HOST:PORT")
    p.add_argument("--downtime", type=_arg(units.parse_duration), default=0.3, help="allowed downtime (default 300ms)")
    p.add_argument("--max-iterations", type=_positive_int, default=30)
    p.add_argument("--bandwidth", type=_arg(units.parse_bandwidth),
                   help="cap the migration's own sending rate (default: as fast as the link goes)")
    p.add_argument("--secret-file", help="shared secret the destination must prove (see migrate-listen)")
    p.add_argument("--verify", choices=["sent", "full"], default="sent",
                   help="sent (default): every page hashed as it is sent and received, nothing added to the "
                        "downtime; full: all of RAM hashed with the vCPUs stopped, which also proves the "
                        "dirty log missed no page")
    p.add_argument("--capability", choices=["auto-converge", "dirty-limit"],
                   help="QEMU's convergence aid: auto-converge (CPU throttling) or dirty-limit (needs the dirty "
                        "ring: --dirty-ring-size); QEMU's trigger turns it on")
    p.add_argument("--parameter", action="append", default=[], type=_arg(parse_parameter), metavar="NAME=VALUE",
                   help="a QEMU migration parameter, e.g. cpu-throttle-initial=30, cpu-throttle-tailslow=true, "
                        "vcpu-dirty-limit=50, x-vcpu-dirty-limit-period=100 (repeatable)")
    p.add_argument("--dirty-ring-size", type=_positive_int,
                   help="create the VM with a dirty ring of this many entries per vCPU (migration then reads "
                        "the ring, as QEMU does with one)")
    p.add_argument("--timeline", metavar="PNG", help="plot the guest's writes per 10 ms over the migration")
    p.add_argument("--predict-link", type=_arg(units.parse_bandwidth),
                   help="first predict the migration over a link of this bandwidth (dirty-bitmap dirty(t)), "
                        "then migrate and report both")
    p.set_defaults(handler=_command("migrate"), settle=0.2)

    p = sub.add_parser("migrate-listen", help="receive a live-migrated VM and resume it (destination side)")
    p.add_argument("--port", type=_port, required=True)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; beyond loopback --secret-file is required)")
    p.add_argument("--secret-file",
                   help="file holding a shared secret (16+ bytes, mode 600) that the source must prove by "
                        "HMAC-SHA256 challenge-response; peers without it are refused and the listener goes on")
    p.add_argument("--run-after", type=_arg(units.parse_duration), default=1.0,
                   help="how long the resumed guest runs before the report (default 1s)")
    p.add_argument("--backing", type=_arg(parse_backing), default="anonymous",
                   help=BACKING_HELP + "; the memslots are the source's")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_command("migrate", "listen"))

    p = sub.add_parser("perf", help="dirty_log_perf_test's numbers: what dirty logging costs, checked against replay")
    p.add_argument("--vcpus", type=_positive_int, default=1, help="vCPUs (the selftest's -v; default 1)")
    p.add_argument("--vcpu-mem", type=_arg(units.parse_size), default=units.parse_size("1GiB"),
                   help="memory each vCPU dirties per iteration (-b; default 1GiB)")
    p.add_argument("--iterations", type=_positive_int, default=2,
                   help="iterations with dirty logging, and as many without it first (-i; default 2)")
    p.add_argument("--random-access", action="store_true",
                   help="each pass picks its pages at random instead of in order (-a)")
    p.add_argument("--seed", type=_seed, default=1, help="PRNG seed of the guest (-r; default 1)")
    p.add_argument("--write-percent", type=_arg(parse_write_percent_int), default=100,
                   help="percentage of accesses that write, the rest read (-w; default 100)")
    add_backing_arguments(p)  # -s, -x
    p.add_argument("--overlap", action="store_true",
                   help="every vCPU accesses all of the memory instead of its own part (-o)")
    p.add_argument("--no-manual-protect", dest="manual_protect", action="store_false",
                   help="plain KVM_GET_DIRTY_LOG: no KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, no INITIALLY_SET (-g)")
    p.add_argument("--mode", choices=("dirty-bitmap", "dirty-ring"), default="dirty-bitmap",
                   help="the dirty log harvested after each iteration (default dirty-bitmap)")
    p.add_argument("--dirty-ring-size", type=_positive_int,
                   help="dirty ring entries per vCPU with --mode dirty-ring (default: the host's largest)")
    p.add_argument("--pin", type=_arg(parse_cpu_list), metavar="CPU,CPU,...",
                   help="pin vCPU k's thread to the k-th CPU, the main thread to one more if given (-c)")
    p.add_argument("--prefault", action="store_true",
                   help="MADV_POPULATE_WRITE the memory first (the selftest does not: populate then pays host "
                        "page faults)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_command("perf"))

    # issue 17: the host self-test, and bench results of several hosts side by side
    p = sub.add_parser("qemu-check", help="boot our writer in QEMU and check QEMU's calc-dirty-rate against "
                                          "exact ground truth (and against kvmharness on its own VM)")
    p.add_argument("--qemu", metavar="PATH",
                   help="the QEMU binary (default: the newest QEMU found: on PATH, or unpacked by scripts/setup.sh "
                        "into .venv/qemu; `probe` lists them)")
    p.add_argument("--mem", type=_arg(units.parse_size), default=units.parse_size("1GiB"),
                   help="the writer's region in the QEMU guest, e.g. 1GiB, 4GiB (default 1GiB)")
    p.add_argument("--wps", type=_arg(units.parse_rate), default=units.parse_rate("3M"),
                   help="writes per second (default 3M)")
    p.add_argument("--pattern", type=_arg(patterns.parse_pattern), default="random",
                   help=f"which pages the writer picks: {patterns.PATTERN_HELP} (default random)")
    p.add_argument("--modes", type=_arg(parse_modes), default=tuple(MODE_NAMES),
                   help="comma-separated calc-dirty-rate modes (default: all three)")
    p.add_argument("--calc-times", type=_arg(parse_durations), default=(1.0,),
                   help="comma-separated windows, e.g. 1s,2s or 200ms,1s (default 1s); a QEMU without "
                        "calc-time-unit (before 8.2) measures whole seconds only")
    p.add_argument("--dirty-ring-size", type=_positive_int, default=65536,
                   help="QEMU's dirty-ring-size for the dirty-ring mode (default 65536)")
    p.add_argument("--repeat", type=_positive_int, default=1, help="measurements per mode and window (default 1)")
    p.add_argument("--seed", type=_seed, default=1, help="PRNG seed of the writer (default 1)")
    p.add_argument("--no-ours", dest="ours", action="store_false",
                   help="do not also measure the workload on kvmharness's own VM")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_command("qemu_check"))

    p = sub.add_parser("selftest", help="check that this host's KVM dirty tracking tells the truth (vs replay)")
    p.add_argument("--quick", action="store_true", help="smaller VMs and one window per check (seconds)")
    p.add_argument("--junit-xml", metavar="PATH", help="also write the results as JUnit XML, for CI")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--hide", nargs="+", action="extend", default=[], metavar="CAP",
                   help="treat a capability as absent: dirty-ring, dirty-ring-acq-rel, manual-protect "
                        "(the checks needing it skip, the rest take the host's fallback)")
    p.set_defaults(handler=_command("selftest"))
    sub.choices["bench"].add_argument(
        "--compare", nargs="+", metavar="RESULTS_JSON",
        help="instead of measuring: one table and plot of several hosts' bench results.json, into --out")
    return parser


def _raise_signalled(signo, frame):
    raise Signalled(signo)


EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # SIGINT is Python's KeyboardInterrupt


def main(argv=None):
    """The process's entry point: it owns the signal dispositions.  Once the
    command has finished, a late signal is ignored rather than allowed to
    turn a finished run into one killed on its way out (the soak script
    caught SIGHUP landing between the end of a run and the exit)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for signo in EXIT_SIGNALS:
        signal.signal(signo, _raise_signalled)
    try:
        return args.handler(args)
    except UsageError as e:
        parser.exit(2, f"kvmharness: error: {e}\n")
    except HarnessError as e:
        print(f"kvmharness: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kvmharness: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Signalled as e:
        print(f"kvmharness: {signal.Signals(e.signo).name}, the VM torn down", file=sys.stderr)
        return 128 + e.signo
    finally:
        for signo in (*EXIT_SIGNALS, signal.SIGINT):
            signal.signal(signo, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
