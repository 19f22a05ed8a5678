"""`bench`: the seed's table, side by side in all three modes, with plots."""

from ..bench import bench, plan


def main(args):
    the_plan = plan(quick=args.quick, sizes=args.sizes, runs=args.runs)
    paths = bench(the_plan, args.out)
    with open(paths["table"]) as f:
        print(f.read())
    print("written: " + ", ".join(paths.values()))
    return 0
