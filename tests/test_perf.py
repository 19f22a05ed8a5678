"""`kvmharness perf`: dirty_log_perf_test's procedure and numbers
(kvmharness/perf/), every harvest equal to replay; the guest's counted
runs it stands on (guest/writer.S "Limit"); its output, human and JSON."""

import json
import os

import pytest

from kvmharness.kvm import uapi
from kvmharness.perf import PerfConfig, PerfIteration, run_perf
from kvmharness.pytest_plugin import running_vm

MiB = 1 << 20
SELFTEST_LINES = ("Populate memory time:", "Enabling dirty logging time:", "Iteration 1 dirty memory time:",
                  "Iteration 1 get dirty log time:", "Disabling dirty logging time:",
                  "Get dirty log over 2 iterations took")


def test_an_iteration_is_exact_only_when_nothing_is_missing_or_extra():
    base = dict(number=1, logged=True, dirty_memory_seconds=1.0, vcpu_seconds=(1.0,), accesses=10,
                get_seconds=0.1, harvested_pages=5, expected_pages=5)
    assert PerfIteration(**base, missing=0, extra=0).exact
    assert not PerfIteration(**base, missing=1, extra=0).exact
    assert not PerfIteration(**base, missing=0, extra=1).exact
    assert PerfIteration(2, False, 1.0, (1.0,), 10).exact  # unlogged: nothing to check


@pytest.mark.kvm
def test_a_counted_run_stops_at_exactly_its_accesses_and_stamps_its_time():
    with running_vm(mem=64 * MiB, vcpus=2, seed=21) as vm:
        for accesses in (1, 1000, 4321):
            start = vm.counters()
            vm.writer.run_accesses(accesses, "random")
            vm.writer.wait_done(30)
            assert vm.counters() == [c + accesses for c in start]
            assert all(t > 0 for t in vm.writer.run_seconds())
        vm.run_writer(0, "random")  # a plain run afterwards has no limit
        vm.hold()
        assert all(c > s + 4321 for c, s in zip(vm.counters(), start))


@pytest.mark.kvm
def test_pinned_vcpu_threads_run_where_they_were_pinned():
    cpus = sorted(os.sched_getaffinity(0))
    with running_vm(mem=64 * MiB, vcpus=2, seed=22) as vm:
        want = [cpus[k % len(cpus)] for k in range(2)]
        vm.pin_vcpus(want)
        assert [os.sched_getaffinity(t.native_id) for t in vm.threads] == [{c} for c in want]


@pytest.mark.kvm
def test_perf_cli_reports_the_selftests_numbers_and_every_harvest_is_exact(cli):
    out = cli("perf", "--vcpus", "2", "--vcpu-mem", "32MiB", "--slots", "2", "--json", timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    pages = 32 * MiB // 4096
    assert len(r["iterations"]) == len(r["without-logging"]) == 2
    for it in r["iterations"]:
        assert it["exact"] and it["missing-pages"] == it["extra-pages"] == 0
        assert it["accesses-per-vcpu"] == pages and len(it["vcpu-seconds"]) == 2
        assert it["get-dirty-log-seconds"] > 0 and it["clear-dirty-log-seconds"] > 0
        # one sequential pass per vCPU writes every page of the region
        assert it["harvested-pages"] == 2 * pages
    assert r["summary"]["exact"] and r["populate-seconds"] > 0 and r["enable-dirty-logging-seconds"] > 0
    assert r["manual-protect-caps"] & uapi.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
    human = cli("perf", "--vcpu-mem", "64MiB", timeout=120)
    assert human.returncode == 0, human.stderr
    for line in SELFTEST_LINES + ("Clear dirty log over 2 iterations took", "every harvest equals replay"):
        assert line in human.stdout, human.stdout


@pytest.mark.kvm
def test_plain_get_has_no_clear_and_its_first_harvest_is_only_what_was_written():
    """-g: no manual protect, so no initially-set bitmap: iteration 1
    harvests the pages its random pass wrote (fewer than all), exactly."""
    r = run_perf(PerfConfig(vcpu_bytes=64 * MiB, manual_protect=False, random_access=True, write_percent=30, seed=3))
    assert r.manual_caps == 0 and r.clear_total is None
    first = r.iterations[0]
    assert first.clear_seconds is None and first.exact
    assert 0 < first.expected_pages <= first.harvested_pages < 64 * MiB // 4096


@pytest.mark.kvm
def test_initially_set_reports_every_page_first_then_only_the_written():
    r = run_perf(PerfConfig(vcpu_bytes=64 * MiB, random_access=True, write_percent=30, seed=4))
    if not r.manual_caps & uapi.KVM_DIRTY_LOG_INITIALLY_SET:
        pytest.skip("this host's KVM has no KVM_DIRTY_LOG_INITIALLY_SET")
    first, second = r.iterations
    assert first.harvested_pages == first.expected_pages == 64 * MiB // 4096 and first.exact
    assert 0 < second.expected_pages <= second.harvested_pages < first.harvested_pages and second.exact


@pytest.mark.kvm
def test_ring_that_fills_during_the_pass_loses_nothing():
    r = run_perf(PerfConfig(vcpu_bytes=64 * MiB, mode="dirty-ring", ring_entries=1024))
    assert r.exact and r.config.ring_entries == 1024
    assert all(it.ring_full_exits >= 64 * MiB // 4096 // 1024 - 1 for it in r.iterations)
    assert all(it.clear_seconds > 0 for it in r.iterations)  # KVM_RESET_DIRTY_RINGS


@pytest.mark.kvm
def test_overlapping_vcpus_each_pass_over_all_the_memory():
    r = run_perf(PerfConfig(vcpus=2, vcpu_bytes=32 * MiB, overlap=True, random_access=True, slots=3, seed=5))
    assert r.exact
    assert all(it.accesses == 2 * 32 * MiB // 4096 for it in r.iterations + r.baseline)


@pytest.mark.kvm
def test_perf_refuses_bad_options_in_one_line(cli):
    for args in (["--pin", "0,1,2,3"], ["--write-percent", "101"], ["--slots", "0"], ["--backing", "nvdimm"],
                 ["--vcpu-mem", "65MiB", "--slots", "40"]):
        out = cli("perf", *args, "--vcpu-mem", "64MiB", timeout=60) if "--vcpu-mem" not in args else \
            cli("perf", *args, timeout=60)
        assert out.returncode == 2, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
