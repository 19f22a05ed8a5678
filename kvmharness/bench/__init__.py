"""`kvmharness bench`: the seed's measurement table, reproduced side by side
with dirty-ring, actual guest rates, expectations and plots; and
`bench --measuring-cost`, what one measurement costs the guest (cost.py)."""

import json
import os
import platform
import re
import time

from ..probe import probe
from . import cost, cost_report
from .plan import plan
from .plots import plot_rates, plot_ratios
from .report import aggregate, markdown
from .runner import run_bench

__all__ = ["bench", "plan", "measuring_cost"]


def _host_line(report):
    return f"{report.host_kind} KVM, {report.cpu_model}, {os.cpu_count()} CPUs, kernel {report.kernel}"


def _host_json(host_line):
    return {"description": host_line, "python": platform.python_version(),
            "memory-bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}


def bench(the_plan, out_dir):
    """Run the plan, write table.md, results.json and the PNGs; return paths."""
    os.makedirs(out_dir, exist_ok=True)
    report = probe(window_cost=False)
    records, baselines = run_bench(the_plan)
    cells = aggregate(records)
    host_line = _host_line(report)
    paths = {
        "table": os.path.join(out_dir, "table.md"),
        "json": os.path.join(out_dir, "results.json"),
        "rates": os.path.join(out_dir, "rates.png"),
        "ratios": os.path.join(out_dir, "ratios.png"),
    }
    with open(paths["table"], "w") as f:
        f.write(markdown(the_plan, cells, records, baselines, host_line))
    with open(paths["json"], "w") as f:
        json.dump({
            "plan": {"sizes": the_plan.sizes, "calc-times-ms": the_plan.calc_times, "runs": the_plan.runs,
                     "wps": the_plan.wps, "modes": the_plan.modes, "pattern": the_plan.pattern,
                     "backing": the_plan.backing, "slots": the_plan.slots},
            "host": _host_json(host_line),
            "probe": report.to_json(),
            "baselines": baselines,
            "cells": list(cells.values()),
            "windows": records,
        }, f, indent=1)
    plot_rates(the_plan, cells, paths["rates"])
    plot_ratios(the_plan, cells, paths["ratios"])
    return paths


def measuring_cost(the_plan, out_dir):
    """Run a cost.CostPlan, write table.md, results.json, recovery.png and
    curves.png; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    report = probe(calibrate=False)
    t0 = time.monotonic()
    records = cost.run_cost(the_plan)
    checks = cost.exactness(the_plan.sizes[0]) if the_plan.alternatives else []
    seconds = time.monotonic() - t0
    cells = cost.aggregate(records)
    host_line = f"{_host_line(report)}, {report.mmu} paging"
    paths = {name: os.path.join(out_dir, name) for name in ("table.md", "results.json", "recovery.png",
                                                             "curves.png")}
    with open(paths["table.md"], "w") as f:
        f.write(cost_report.markdown(the_plan, cells, host_line, seconds, checks))
    with open(paths["results.json"], "w") as f:
        write_json(f, {
            "plan": {"sizes": the_plan.sizes, "calc-times-ms": the_plan.calc_times, "runs": the_plan.runs,
                     "wps": the_plan.wps, "cap-seconds": the_plan.cap_seconds,
                     "alternatives": the_plan.alternatives},
            "host": _host_json(host_line), "probe": report.to_json(), "seconds": round(seconds),
            "cells": cells, "windows": records, "exactness": checks,
        })
    cost_report.plot_recovery(the_plan, cells, paths["recovery.png"])
    cost_report.plot_curves(the_plan, records, paths["curves.png"])
    return paths


NUMBER_LIST = re.compile(r"\[[-0-9.e,\s]*\]")
LIST_OF_NUMBER_LISTS = re.compile(r"\[\s*(\[[-0-9.e, ]*\],?\s*)+\]")


def _one_line(match):
    return re.sub(r"\s+", "", match.group(0)).replace(",", ", ")


def write_json(f, data):
    """JSON with one key per line, but a list of plain numbers, or of such
    lists (a curve's (t, writes/s) points), on one line: a results file a
    diff can read, a fraction of the size."""
    text = NUMBER_LIST.sub(_one_line, json.dumps(data, indent=1))
    f.write(LIST_OF_NUMBER_LISTS.sub(_one_line, text) + "\n")
