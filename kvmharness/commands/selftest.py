"""`selftest`: run the host self-test (kvmharness/selftest/), print the
table or JSON, write JUnit XML for CI; exit 0 only if every check that
could run passed."""

import os
import sys

from .. import __version__
from ..errors import UsageError
from .args import add_json_argument, path


def add_arguments(p):
    """How long, where the reports go, and which capabilities to hide."""
    p.add_argument("--quick", action="store_true", help="smaller VMs and one window per check (seconds)")
    p.add_argument("--junit-xml", type=path, metavar="PATH", help="also write the results as JUnit XML, for CI")
    add_json_argument(p)
    p.add_argument("--hide", nargs="+", action="extend", default=[], metavar="CAP",
                   help="treat a capability as absent: dirty-ring, dirty-ring-acq-rel, manual-protect "
                        "(the checks needing it skip, the rest take the host's fallback)")


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
    import json
    import platform

    from ..probe import probe
    from ..selftest import check_hide, run_selftest
    from ..selftest.report import junit_xml, passed, table, to_json

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
