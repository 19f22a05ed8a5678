#!/usr/bin/env python3
"""`predict` wall time: dirty(t) from one window with x-periods against one
window per point (what `predict` did before), side by side on the same VM,
for 1 GiB and 4 GiB; with the predictions each gives, which should agree.

Usage: scripts/bench_predict.py [--sizes 1GiB,4GiB] [--wps 200k] [--bandwidth 1Gbit/s] [--downtime 300ms]
"""

import argparse
import sys
import time

from kvmharness import units
from kvmharness.migration.model import Link
from kvmharness.migration.predict import TABLE_BANDWIDTHS, TABLE_DOWNTIMES, predict_for
from kvmharness.pytest_plugin import running_vm


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1GiB,4GiB")
    ap.add_argument("--wps", type=units.parse_rate, default=200_000)
    ap.add_argument("--pattern", default="random")
    args = ap.parse_args()
    links = [Link(b) for b in TABLE_BANDWIDTHS]
    print(f"{'size':>6} {'curve':>9} {'measure s':>10} {'whole s':>8}  verdicts (bandwidth x downtime, model)")
    for size in (units.parse_size(s) for s in args.sizes.split(",")):
        with running_vm(mem=size, seed=5) as vm:
            vm.run_writer(args.wps, args.pattern)
            time.sleep(0.2)
            rows = {}
            for how in ("separate", "one-run"):
                t0 = time.perf_counter()
                measured, verdicts = predict_for(vm, links, list(TABLE_DOWNTIMES), one_run=how == "one-run")
                whole = time.perf_counter() - t0
                calls = "".join("y" if verdicts[(link, d)].model.converges else "n"
                                for link in links for d in TABLE_DOWNTIMES)
                rows[how] = (measured.seconds, whole, calls)
                print(f"{size >> 30:>4}Gi {how:>9} {measured.seconds:>10.2f} {whole:>8.2f}  {calls}", flush=True)
            vm.hold()
        print(f"       one run takes {rows['one-run'][1] / rows['separate'][1]:.2f}x the time; "
              f"verdicts {'identical' if rows['one-run'][2] == rows['separate'][2] else 'differ'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
