"""`kvmharness selftest` on this host: every check that can run passes, the
JUnit XML parses as CI systems read it, and a hidden capability turns its
checks into skips that say why while the rest take the fallback."""

import json
import xml.etree.ElementTree as ET

import pytest

from kvmharness.kvm import Kvm
from kvmharness.kvm.system import hidden_capabilities
from kvmharness.selftest import HIDEABLE
from kvmharness.selftest.checks import CHECKS
from kvmharness.selftest.report import CheckResult, junit_xml, passed

NAMES = [c.name for c in CHECKS]


def _junit(path):
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == NAMES
    assert int(suite.get("tests")) == len(NAMES)
    for key in ("failures", "skipped"):
        tag = key.rstrip("s") if key == "failures" else key
        assert int(suite.get(key)) == sum(c.find(tag) is not None for c in cases.values())
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    return suite, cases, props


def _lacking():
    """The checks this host cannot run, by what its KVM lacks (none on our
    runners) or what memory it cannot offer (backing sources)."""
    with Kvm() as kvm:
        return {c.name for c in CHECKS if any(kvm.check_extension(cap) < least for cap, least in c.needs)
                or (c.unavailable and c.unavailable())}


@pytest.mark.kvm
def test_selftest_passes_here_and_its_junit_xml_parses(cli, tmp_path):
    xml = tmp_path / "selftest.xml"
    out = cli("selftest", "--quick", "--junit-xml", str(xml), timeout=300)
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    suite, cases, props = _junit(xml)
    assert int(suite.get("failures")) == 0 and int(suite.get("errors")) == 0
    skipped = {name for name, c in cases.items() if c.find("skipped") is not None}
    assert skipped == _lacking()
    for name in skipped:
        message = cases[name].find("skipped").get("message")
        assert "lacks KVM_CAP_" in message or (name.startswith("backing-") and "offer" in message), message
    assert props["host-kind"] in ("vmx", "svm", "nested") and props["hidden"] == "none"
    assert "in" in cases["dirty-bitmap"].find("system-out").text  # the count and its replay bracket
    for name in NAMES:
        assert f"{name}" in out.stdout


@pytest.mark.kvm
def test_hiding_the_ring_skips_its_checks_with_the_reason(cli, tmp_path):
    xml = tmp_path / "hidden.xml"
    out = cli("selftest", "--quick", "--hide", "dirty-ring", "--junit-xml", str(xml), "--json", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    _, cases, props = _junit(xml)
    assert props["hidden"] == "dirty-ring"
    ring_checks = {"dirty-ring-acq-rel", "dirty-ring", "dirty-ring-full"}
    for name, case in cases.items():
        skip = case.find("skipped")
        if name in ring_checks:
            assert skip is not None and "hidden by --hide dirty-ring" in skip.get("message"), name
        else:
            assert skip is None and case.find("failure") is None, name
    report = json.loads(out.stdout)
    assert report["passed"] is True
    # without a ring, two vCPUs are checked on the dirty bitmap
    two = next(c for c in report["checks"] if c["name"] == "two-vcpus")
    assert two["status"] == "pass" and two["detail"].startswith("dirty-bitmap")


@pytest.mark.kvm
def test_hidden_acq_rel_leaves_the_plain_ring():
    """What --hide dirty-ring-acq-rel does below the CLI: KVM_CHECK_EXTENSION
    reads 0 for it (so MicroVm enables KVM_CAP_DIRTY_LOG_RING), and only
    inside the block."""
    from kvmharness.microvm.dirty_ring import max_ring_bytes

    with Kvm() as kvm:
        if not kvm.check_extension("KVM_CAP_DIRTY_LOG_RING"):
            pytest.skip("this host has no plain dirty ring")
        with hidden_capabilities(HIDEABLE["dirty-ring-acq-rel"]):
            assert kvm.check_extension("KVM_CAP_DIRTY_LOG_RING_ACQ_REL") == 0
            with kvm.create_vm() as vm:
                assert max_ring_bytes(vm)[1] is False
        assert max_ring_bytes(kvm)[0] > 0


def test_unknown_capability_to_hide_is_one_line(cli):
    out = cli("selftest", "--hide", "warp-drive")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "cannot hide warp-drive" in out.stderr, out.stderr


def test_a_failed_check_fails_the_run_and_reads_as_a_failure_in_junit(tmp_path):
    results = (CheckResult("dirty-bitmap", "pass", 0.5, "200 ms: 10 in 9..11"),
               CheckResult("dirty-ring", "fail", 0.4, "dirty-ring: 12 pages, replay 9..11 (truth 10)"),
               CheckResult("two-vcpus", "skip", 0.0, "this host's KVM lacks KVM_CAP_MAX_VCPUS >= 2 (has 1)"))
    assert not passed(results) and passed(results[:1] + results[2:])
    path = tmp_path / "r.xml"
    path.write_bytes(junit_xml(results, {"host-kind": "vmx"}))
    suite = ET.parse(path).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    failure = suite.find("testcase[@name='dirty-ring']/failure")
    assert failure.get("message").startswith("dirty-ring: 12 pages")
