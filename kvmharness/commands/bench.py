"""`bench`: the seed's table, side by side in all three modes, with plots;
`bench --compare`: several hosts' results side by side (bench/compare.py);
`bench --measuring-cost`: what one window costs the guest (bench/cost.py)."""

import os

from .. import patterns, units
from ..errors import UsageError
from .args import add_backing_arguments, arg_type, path, positive_int


def parse_sizes(text):
    """'1GiB,4GiB' -> the slot sizes of the table's rows."""
    return tuple(units.parse_size(t) for t in text.split(","))


def add_arguments(p):
    """The table's shape (sizes, runs, pattern, backing), or --compare's files."""
    p.add_argument("--quick", action="store_true",
                   help="1 GiB, five calc-times: under two minutes (with --measuring-cost: 1 GiB, 100 and 500 ms, "
                        "no alternatives)")
    p.add_argument("--out", type=path, help="output folder (default results/bench, results/measuring-cost)")
    p.add_argument("--runs", type=positive_int, help="runs per cell (default 3; 1 with --measuring-cost)")
    p.add_argument("--sizes", type=arg_type(parse_sizes),
                   help="comma-separated sizes (default 1GiB,4GiB,16GiB or 24GiB; 1GiB,4GiB with --measuring-cost)")
    p.add_argument("--measuring-cost", action="store_true",
                   help="instead of the seed's table: what one window costs the guest, in it and after it, per "
                        "mode, window (50 ms..1 s) and log stop, and the alternatives at 500 ms")
    p.add_argument("--pattern", type=arg_type(patterns.parse_pattern), default="random",
                   help=f"the writer's pattern: {patterns.PATTERN_HELP} (default random, the seed's)")
    add_backing_arguments(p)
    p.add_argument("--compare", nargs="+", type=path, metavar="RESULTS_JSON",
                   help="instead of measuring: one table and plot of several hosts' bench results.json, into --out")


def check_out_dir(path):
    """Before minutes of measuring: can we write our results there?"""
    import tempfile

    if not path:
        raise UsageError("--out needs a folder")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"cannot write results to {path}: {e.strerror or e}") from None


def main(args):
    from ..bench import bench, plan
    from ..bench.compare import compare

    if args.out is None:
        args.out = "results/measuring-cost" if args.measuring_cost else "results/bench"
    check_out_dir(args.out)
    if args.measuring_cost:
        return measuring_cost(args)
    if args.compare:
        paths = compare(args.compare, args.out)
        with open(paths["table"]) as f:
            print(f.read())
        print("written: " + ", ".join(paths.values()))
        return 0
    the_plan = plan(quick=args.quick, sizes=args.sizes, runs=args.runs or 3, pattern=args.pattern,
                    backing=args.backing, slots=args.slots)
    paths = bench(the_plan, args.out)
    with open(paths["table"]) as f:
        print(f.read())
    print("written: " + ", ".join(paths.values()))
    return 0


def measuring_cost(args):
    from ..bench import measuring_cost as run
    from ..bench.cost import cost_plan

    if args.compare or args.pattern != "random" or args.backing != "anonymous" or args.slots != 1:
        raise UsageError("--measuring-cost takes --sizes, --runs, --quick and --out only (its alternatives "
                         "choose their own memory)")
    if args.quick:
        the_plan = cost_plan(sizes=args.sizes or (1 << 30,), calc_times=(100, 500), runs=args.runs or 1,
                             alternatives=False)
    else:
        the_plan = cost_plan(sizes=args.sizes, runs=args.runs or 1)
    paths = run(the_plan, args.out)
    with open(paths["table.md"]) as f:
        print(f.read())
    print("written: " + ", ".join(paths.values()))
    return 0
