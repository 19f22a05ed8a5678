#!/usr/bin/env python3
"""Run the whole suite N times, each from a fresh clone, as CI does, and say
which tests ever failed: the check that the suite passes every time, not
just once.

Each run clones the repository and checks out the commit that was HEAD when
the series began (committed work only, as CI sees it) in a new temporary folder and runs `.ci/run` there (CI=true: set-up, then
every test; a skipped KVM test fails), with a JUnit report to read the
failures from.  --hog-cpu C keeps one busy process pinned to CPU C for the
whole series: a noisy CI neighbour.

Usage: scripts/suite_runs.py --runs 10 [--hog-cpu 1] [--keep]
"""

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def cpu_hog(cpu):
    """A process that spins on `cpu` until the block ends (None: no hog)."""
    if cpu is None:
        yield
        return
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                           preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    try:
        yield
    finally:
        hog.kill()
        hog.wait()


def failures(junit_path):
    """(counts, names of failed or errored tests) from a JUnit XML report."""
    try:
        root = ET.parse(junit_path).getroot()
    except (OSError, ET.ParseError):
        return None, []
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    names = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
             if case.find("failure") is not None or case.find("error") is not None]
    return counts, names


def one_run(index, total, commit, keep):
    work = tempfile.mkdtemp(prefix=f"kvmh-run{index}-")
    rc = None
    clone = os.path.join(work, "repo")
    junit = os.path.join(work, "junit.xml")
    log = os.path.join(work, "ci.log")
    try:
        subprocess.run(["git", "clone", "-q", ROOT, clone], check=True)
        subprocess.run(["git", "-C", clone, "checkout", "-q", commit], check=True)
        t0 = time.monotonic()
        with open(log, "w") as out:
            rc = subprocess.run([os.path.join(clone, ".ci", "run"), f"--junit-xml={junit}"], cwd=clone,
                                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, CI="true")).returncode
        seconds = time.monotonic() - t0
        counts, failed = failures(junit)
        if counts is None:
            summary = f"no test report (set-up failed?), log {log}"
            keep = True
        else:
            passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
            summary = (f"{passed} passed, {counts['failures'] + counts['errors']} failed, "
                       f"{counts['skipped']} skipped")
        verdict = "PASS" if rc == 0 else "FAIL"
        print(f"run {index}/{total}: {verdict} (exit {rc}) {summary} in {seconds:.0f} s"
              + (f": {', '.join(failed)}" if failed else ""), flush=True)
        return rc == 0, failed
    finally:
        if rc != 0:
            keep = True  # a failed run's clone and log are the evidence
        if keep or not os.path.exists(junit):
            print(f"  kept {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--hog-cpu", type=int, default=None, help="keep a busy process pinned to this CPU")
    ap.add_argument("--keep", action="store_true", help="keep every clone and log")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if args.hog_cpu is not None and args.hog_cpu not in os.sched_getaffinity(0):
        ap.error(f"no CPU {args.hog_cpu} here")
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()  # every run tests this commit
    hog = f", a CPU hog on CPU {args.hog_cpu}" if args.hog_cpu is not None else ""
    print(f"{args.runs} fresh-clone runs of .ci/run at {head[:12]}{hog}", flush=True)
    ever_failed, green = {}, 0
    with cpu_hog(args.hog_cpu):
        for i in range(1, args.runs + 1):
            ok, failed = one_run(i, args.runs, head, args.keep)
            green += ok
            for name in failed:
                ever_failed[name] = ever_failed.get(name, 0) + 1
    print(f"{green} of {args.runs} runs green")
    for name, n in sorted(ever_failed.items(), key=lambda kv: -kv[1]):
        print(f"  failed {n}x: {name}")
    if not ever_failed:
        print("no test ever failed")
    return 0 if green == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
