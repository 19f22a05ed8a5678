"""`bench`: the seed's table, side by side in all three modes, with plots;
`bench --compare`: several hosts' results side by side (bench/compare.py)."""

import os

from .. import patterns, units
from ..errors import UsageError
from .args import add_backing_arguments, arg_type, positive_int


def parse_sizes(text):
    """'1GiB,4GiB' -> the slot sizes of the table's rows."""
    return tuple(units.parse_size(t) for t in text.split(","))


def add_arguments(p):
    """The table's shape (sizes, runs, pattern, backing), or --compare's files."""
    p.add_argument("--quick", action="store_true", help="1 GiB, five calc-times: under two minutes")
    p.add_argument("--out", default="results/bench", help="output folder (default results/bench)")
    p.add_argument("--runs", type=positive_int, default=3, help="runs per cell (default 3)")
    p.add_argument("--sizes", type=arg_type(parse_sizes),
                   help="comma-separated sizes (default 1GiB,4GiB,16GiB or 24GiB)")
    p.add_argument("--pattern", type=arg_type(patterns.parse_pattern), default="random",
                   help=f"the writer's pattern: {patterns.PATTERN_HELP} (default random, the seed's)")
    add_backing_arguments(p)
    p.add_argument("--compare", nargs="+", metavar="RESULTS_JSON",
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

    check_out_dir(args.out)
    if args.compare:
        paths = compare(args.compare, args.out)
        with open(paths["table"]) as f:
            print(f.read())
        print("written: " + ", ".join(paths.values()))
        return 0
    the_plan = plan(quick=args.quick, sizes=args.sizes, runs=args.runs, pattern=args.pattern, backing=args.backing,
                    slots=args.slots)
    paths = bench(the_plan, args.out)
    with open(paths["table"]) as f:
        print(f.read())
    print("written: " + ", ".join(paths.values()))
    return 0
