"""`bench`: the seed's table, side by side in all three modes, with plots;
`bench --compare`: several hosts' results side by side (bench/compare.py)."""

import os
import tempfile

from ..bench import bench, plan
from ..bench.compare import compare
from ..errors import UsageError


def check_out_dir(path):
    """Before minutes of measuring: can we write our results there?"""
    if not path:
        raise UsageError("--out needs a folder")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"cannot write results to {path}: {e.strerror or e}") from None


def main(args):
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
