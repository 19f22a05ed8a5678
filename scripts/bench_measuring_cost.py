#!/usr/bin/env python3
"""What one measurement costs the guest: `kvmharness bench --measuring-cost`
into docs/results/measuring-cost (table.md, results.json, recovery.png,
curves.png), and its table into that folder's README.md (between the TABLE
markers).  --from-json writes the table, the plots and the README block
again from the committed results.json, measuring nothing.

    sudo .venv/bin/python scripts/bench_measuring_cost.py [--runs 1] [--sizes 1GiB,4GiB]
    .venv/bin/python scripts/bench_measuring_cost.py --from-json
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

from results_doc import replace_block

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results" / "measuring-cost"
EXE = os.path.join(os.path.dirname(sys.executable), "kvmharness")


def from_json(out_dir):
    """table.md and the plots again from results.json."""
    from kvmharness.bench import cost_report
    from kvmharness.bench.cost import CostPlan

    data = json.loads((out_dir / "results.json").read_text())
    p = data["plan"]
    plan = CostPlan(tuple(p["sizes"]), tuple(p["calc-times-ms"]), p["runs"], p["wps"], p["cap-seconds"],
                    p["alternatives"])
    (out_dir / "table.md").write_text(cost_report.markdown(plan, data["cells"], data["host"]["description"],
                                                           data["seconds"], data.get("exactness", ())))
    cost_report.plot_recovery(plan, data["cells"], out_dir / "recovery.png")
    cost_report.plot_curves(plan, data["windows"], out_dir / "curves.png")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="1")
    ap.add_argument("--sizes", default="1GiB,4GiB")
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    ap.add_argument("--from-json", action="store_true", help="no measuring: table and plots from results.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        from_json(args.out)
    else:
        run = subprocess.run([EXE, "bench", "--measuring-cost", "--runs", args.runs, "--sizes", args.sizes,
                              "--out", str(args.out)], stdout=subprocess.DEVNULL)
        if run.returncode != 0:
            sys.exit(f"bench --measuring-cost failed (exit {run.returncode})")
    table = (args.out / "table.md").read_text().split("\n", 2)[2].strip()  # without its title
    replace_block(args.out / "README.md", "TABLE", table, "# What one measurement costs the guest")
    print(table)


if __name__ == "__main__":
    main()
