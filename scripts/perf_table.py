#!/usr/bin/env python3
"""Regenerate docs/results/perf/: `kvmharness perf` (dirty_log_perf_test's
numbers, every harvest checked against replay) for 1 and 2 vCPUs x 1 GiB,
every backing source this host offers, 1 and 4 memslots, and three dirty
logs: the bitmap with manual protect + initially set (the selftest's
default), the plain bitmap (its -g), and the dirty ring.

    .venv/bin/python scripts/perf_table.py [--out docs/results/perf] [--vcpus 1,2] [--vcpu-mem 1GiB]
    .venv/bin/python scripts/perf_table.py --table-only     # table.md from an existing results.json

hugetlb sources get their pages reserved for the run (as root) and the
pools put back as they were afterwards (kvm.backing.reserve_huge_pages).
Runs are sequential, unpinned, on whatever else the host is doing: the
load average before and after each run is recorded beside it, and a run
whose load average was above --max-load is redone (up to 3 times).

The published figures the table is compared with are at the bottom
(PUBLISHED), each with its source.
"""

import argparse
import contextlib
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvmharness import units  # noqa: E402
from kvmharness.errors import HarnessError  # noqa: E402
from kvmharness.kvm import backing  # noqa: E402
from kvmharness.perf import PerfConfig, run_perf  # noqa: E402
from kvmharness.probe import probe  # noqa: E402

GiB = 1 << 30
LOGS = (("bitmap+manual", "dirty-bitmap", True), ("bitmap -g", "dirty-bitmap", False), ("ring", "dirty-ring", True))

# Per-GiB figures published with dirty_log_perf_test runs (x86, TDP MMU unless said).
PUBLISHED = (
    {"source": "Keqian Zhu's runs quoted by Ben Gardon, Re: [RFC PATCH v2 2/2] KVM: x86: Not wr-protect huge page "
               "with init_all_set dirty log, kvm@vger.kernel.org, 27 Apr 2021 "
               "(Message-ID CANgfPd_xJbL388zmirbQW-pSw+o0csmNe=uLA1yV_Zk-QMvDfA@mail.gmail.com)",
     "config": "-i 5 -v 16 (16 GiB), anonymous, manual protect + initially set",
     "get-ms-per-gib": 0.119006 / 16, "clear-ms-per-gib": 142.642584 / 16},
    {"source": "same thread", "config": "-i 5 -v 16 (16 GiB), anonymous_hugetlb",
     "get-ms-per-gib": 0.097091 / 16, "clear-ms-per-gib": 120.749934 / 16},
    {"source": "Vipin Sharma, [PATCH v4 06/13] KVM: x86/mmu: Bypass __handle_changed_spte() when clearing TDP MMU "
               "dirty bits (Sean Christopherson's series, kvm@vger.kernel.org, Mar 2023)",
     "config": "160 vCPUs, 160 GB, before / after the patch",
     "clear-ms-per-gib": 3308.638897 / 160, "clear-ms-per-gib-after": 1968.375634 / 160},
    {"source": "David Matlack, [PATCH v6 00/22] KVM: Extend Eager Page Splitting to the shadow MMU, "
               "kvm@vger.kernel.org, May 2022 (v5: lore.kernel.org/kvm/20220513202819.829591-1-dmatlack@google.com)",
     "config": "nested (shadow MMU), 2 vCPUs x 1 GiB, 100 % writes",
     "enable-ms-per-gib": 1.330088 / 2, "enable-ms-per-gib-eager-split": 18.624938 / 2,
     "iteration-2-clear-ms-per-gib": 9.585296 / 2},
)


def _load():
    return round(os.getloadavg()[0], 2)


def offered_sources():
    return [o.name for o in backing.offers() if o.offered]


@contextlib.contextmanager
def pages_for(name, mem):
    """Reserve the huge pages a hugetlb source needs for `mem`, if any."""
    src = backing.source(name)
    if not src.hugetlb:
        yield
        return
    with backing.reserve_huge_pages(src.page_size, mem // src.page_size):
        yield


def run_one(config, max_load, tries=3):
    for attempt in range(tries):
        before = _load()
        result = run_perf(config)
        after = _load()
        record = {"result": result.to_json(), "load-before": before, "load-after": after, "attempt": attempt + 1}
        if max(before, after) <= max_load:
            break
        print(f"  load {before}/{after} above {max_load}: again", file=sys.stderr)
        time.sleep(10)
    return record


def measure(args):
    runs = []
    sources = args.backing or offered_sources()
    skipped = []
    for vcpus in args.vcpus:
        mem = vcpus * args.vcpu_mem
        for name in sources:
            try:
                with pages_for(name, mem):
                    for slots in (1, 4):
                        for label, mode, manual in LOGS:
                            config = PerfConfig(vcpus=vcpus, vcpu_bytes=args.vcpu_mem, iterations=args.iterations,
                                                backing=name, slots=slots, manual_protect=manual, mode=mode)
                            t0 = time.monotonic()
                            record = run_one(config, args.max_load)
                            record["log"] = label
                            runs.append(record)
                            print(f"{vcpus} vCPU {name} {slots} slots {label}: "
                                  f"{time.monotonic() - t0:.1f} s, exact {record['result']['summary']['exact']}",
                                  file=sys.stderr, flush=True)
            except HarnessError as e:
                skipped.append({"vcpus": vcpus, "backing": name, "why": str(e)})
                print(f"{vcpus} vCPU {name}: skipped: {e}", file=sys.stderr)
    report = probe(calibrate=False)
    return {"host": {"description": f"{report.host_kind} KVM, {report.cpu_model}, {os.cpu_count()} CPUs, "
                                    f"kernel {report.kernel}",
                     "memory-bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
                     "python": platform.python_version(), "backing-sources": report.backing_json()},
            "vcpu-mem": args.vcpu_mem, "iterations": args.iterations, "runs": runs, "skipped": skipped,
            "published": PUBLISHED}


def _ms(x):
    return "-" if x is None else f"{x * 1e3:.2f}"


def table(data):
    gib = data["vcpu-mem"] / GiB
    out = [f"# kvmharness perf: what dirty tracking costs ({data['host']['description']})", "",
           f"dirty_log_perf_test's numbers from `kvmharness perf` (each vCPU {gib:g} GiB, "
           f"{data['iterations']} iterations with dirty logging after as many without, sequential 100 % writes, "
           "no pinning, no prefault: populate pays the host's page faults as the selftest's does). "
           "Regenerate: `.venv/bin/python scripts/perf_table.py` (as root: it reserves the huge pages and puts the "
           "pools back). Times are the host's (CLOCK_MONOTONIC) except vCPU time, the guest's TSC over its pass. "
           "`exact`: every harvest equalled replay. Load: the 1-minute load average before/after each run "
           "(2 CPUs; another engineer's work shared them).", "",
           "| vCPUs | backing | slots | log | populate s | enable ms | dirty memory s (it 1 / it 2) | GET ms/it | "
           "CLEAR ms/it | disable ms | vCPU s/it without / with logging | writer M acc/s without -> with | "
           "ring-full exits | exact | load |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in data["runs"]:
        r, c, s = run["result"], run["result"]["config"], run["result"]["summary"]
        its = r["iterations"]
        out.append(
            f"| {c['vcpus']} | {c['backing']} | {c['slots']} | {run['log']} | {r['populate-seconds']:.3f} | "
            f"{_ms(r['enable-dirty-logging-seconds'])} | "
            + " / ".join(f"{i['dirty-memory-seconds']:.3f}" for i in its) + " | "
            f"{_ms(s['get-dirty-log-avg-seconds'])} | {_ms(s['clear-dirty-log-avg-seconds'])} | "
            f"{_ms(r['disable-dirty-logging-seconds'])} | {s['vcpu-seconds-per-iteration-without-logging']:.4f} / "
            f"{s['vcpu-seconds-per-iteration-with-logging']:.3f} | {s['writer-rate-without-logging'] / 1e6:.2f} -> "
            f"{s['writer-rate-with-logging'] / 1e6:.3f} | {sum(i['ring-full-exits'] for i in its)} | "
            f"{'yes' if s['exact'] else 'NO'} | {run['load-before']}/{run['load-after']} |")
    out += ["", "## GET / CLEAR per GiB beside published dirty_log_perf_test figures", "",
            "Ours: averaged over the runs of each log with 1 memslot (ms per GiB of guest memory per iteration; "
            "for the ring, GET = harvesting the entries left after the pass, CLEAR = KVM_RESET_DIRTY_RINGS).", "",
            "| where | config | GET ms/GiB | CLEAR ms/GiB | enable ms/GiB |", "|---|---|---|---|---|"]
    for label, _, _ in LOGS:
        for vcpus in sorted({run["result"]["config"]["vcpus"] for run in data["runs"]}):
            sel = [run["result"] for run in data["runs"] if run["log"] == label
                   and run["result"]["config"]["slots"] == 1 and run["result"]["config"]["vcpus"] == vcpus]
            if not sel:
                continue
            total = vcpus * gib
            get = sum(x["summary"]["get-dirty-log-avg-seconds"] for x in sel) / len(sel) / total
            clears = [x["summary"]["clear-dirty-log-avg-seconds"] for x in sel]
            clear = None if None in clears else sum(clears) / len(clears) / total
            enable = sum(x["enable-dirty-logging-seconds"] for x in sel) / len(sel) / total
            out.append(f"| this host | {label}, {vcpus} vCPU, mean of {len(sel)} backing sources | {_ms(get)} | "
                       f"{_ms(clear)} | {_ms(enable)} |")
    for p in data["published"]:
        out.append(f"| {p['source']} | {p['config']} | {_ms_pub(p, 'get-ms-per-gib')} | "
                   f"{_ms_pub(p, 'clear-ms-per-gib')}"
                   + (f" (after: {p['clear-ms-per-gib-after']:.2f})" if "clear-ms-per-gib-after" in p else "")
                   + (f" (iteration 2: {p['iteration-2-clear-ms-per-gib']:.2f})"
                      if "iteration-2-clear-ms-per-gib" in p else "")
                   + f" | {_ms_pub(p, 'enable-ms-per-gib')}"
                   + (f" (eager split: {p['enable-ms-per-gib-eager-split']:.2f})"
                      if "enable-ms-per-gib-eager-split" in p else "") + " |")
    out += ["", "## Huge pages: enabling logging (splitting) and the tracked writer", "",
            "Per backing source, 1 memslot, mean over the vCPU counts: enable-logging time, the first and second "
            "logged pass (vCPU time), CLEAR of iteration 1 (with initially set KVM write-protects, and splits, "
            "there), and the writer's rate untracked and tracked.", "",
            "| backing | log | enable ms | it 1 vCPU s | it 2 vCPU s | it 1 CLEAR ms | writer M acc/s untracked | "
            "tracked |", "|---|---|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(run["result"]["config"]["backing"] for run in data["runs"]))
    for name in names:
        for label, _, _ in LOGS:
            sel = [run["result"] for run in data["runs"] if run["log"] == label
                   and run["result"]["config"]["backing"] == name and run["result"]["config"]["slots"] == 1]
            if not sel:
                continue
            mean = lambda f: sum(f(x) for x in sel) / len(sel)  # noqa: E731
            it = lambda x, k: sum(x["iterations"][k]["vcpu-seconds"]) / len(x["iterations"][k]["vcpu-seconds"])  # noqa: E731
            clear1 = [x["iterations"][0]["clear-dirty-log-seconds"] for x in sel]
            out.append(f"| {name} | {label} | {_ms(mean(lambda x: x['enable-dirty-logging-seconds']))} | "
                       f"{mean(lambda x: it(x, 0)):.3f} | {mean(lambda x: it(x, 1)):.3f} | "
                       f"{'-' if None in clear1 else _ms(sum(clear1) / len(clear1))} | "
                       f"{mean(lambda x: x['summary']['writer-rate-without-logging']) / 1e6:.2f} | "
                       f"{mean(lambda x: x['summary']['writer-rate-with-logging']) / 1e6:.3f} |")
    if data["skipped"]:
        out += ["", "Not measured: " + "; ".join(f"{s['vcpus']} vCPU {s['backing']}: {s['why']}"
                                                 for s in data["skipped"])]
    return "\n".join(out) + "\n"


def _ms_pub(p, key):
    return f"{p[key]:.3f}" if key in p else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/results/perf")
    parser.add_argument("--vcpus", default="1,2", type=lambda t: [int(x) for x in t.split(",")])
    parser.add_argument("--vcpu-mem", default=GiB, type=units.parse_size)
    parser.add_argument("--iterations", default=2, type=int)
    parser.add_argument("--backing", action="append", help="only these sources (default: all the host offers)")
    parser.add_argument("--max-load", default=4.0, type=float,
                        help="redo a run whose 1-minute load average was above this (default 4 on 2 CPUs; our own run makes about 2)")
    parser.add_argument("--table-only", action="store_true", help="rewrite table.md from results.json")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    if args.table_only:
        with open(path) as f:
            data = json.load(f)
    else:
        data = measure(args)
        with open(path, "w") as f:
            json.dump(data, f, indent=1)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table(data))
    print(f"written: {path}, {os.path.join(args.out, 'table.md')}")


if __name__ == "__main__":
    main()
