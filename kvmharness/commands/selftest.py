"""`selftest`: run the host self-test (kvmharness/selftest/), print the
table or JSON, write JUnit XML for CI; exit 0 only if every check that
could run passed."""

import json
import os
import platform
import sys

from .. import __version__
from ..errors import UsageError
from ..probe import probe
from ..selftest import check_hide, run_selftest
from ..selftest.report import junit_xml, passed, table, to_json


def _check_writable(path):
    """Before the checks run: can we write the report there?"""
    try:
        with open(path, "ab"):
            pass
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


def _progress(result):
    print(f"selftest: {result.status:<4} {result.name} ({result.seconds:.1f}s)", file=sys.stderr, flush=True)


def main(args):
    check_hide(args.hide)
    if args.junit_xml:
        _check_writable(args.junit_xml)
    report = probe(calibrate=False)
    host = {"host-kind": report.host_kind, "cpu-model": report.cpu_model, "kernel": report.kernel,
            "cpus": os.cpu_count(), "python": platform.python_version(), "kvmharness": __version__,
            "quick": args.quick, "hidden": ",".join(args.hide) or "none"}
    results = run_selftest(quick=args.quick, hide=tuple(args.hide), progress=_progress)
    if args.junit_xml:
        with open(args.junit_xml, "wb") as f:
            f.write(junit_xml(results, host))
    if args.json:
        print(json.dumps(to_json(results, host), indent=2))
    else:
        line = f"{report.host_kind} KVM, {report.cpu_model}, {os.cpu_count()} CPUs, kernel {report.kernel}"
        print(table(results, line), end="")
    return 0 if passed(results) else 1
