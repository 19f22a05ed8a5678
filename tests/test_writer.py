"""The guest writer on real /dev/kvm: native speed, pacing, exact replay."""

import time

import numpy as np
import pytest

from kvmharness import guest, replay
from conftest import running_vm
from kvmharness.machine import MicroVm, VmConfig
from kvmharness.writer_run import measure_writer

pytestmark = pytest.mark.kvm
MiB, GiB = 1 << 20, 1 << 30


@pytest.fixture(scope="module")
def vm_1g():
    with running_vm(mem=GiB, seed=11) as vm:
        yield vm


def test_unthrottled_writer_runs_natively():
    """>= 50 M writes/s over 64 MiB: an emulated guest manages ~0.07 M/s."""
    with running_vm(mem=64 * MiB) as vm:
        seconds, per = measure_writer(vm, 0.5, wps=0)
    rate = per[0].writes_per_second
    print(f"unthrottled: {rate / 1e6:.1f} M writes/s")
    assert rate >= 50e6


@pytest.mark.parametrize("wps", [1_000_000, 3_000_000])
def test_rate_limit_holds_within_2_percent(vm_1g, wps):
    seconds, per = measure_writer(vm_1g, 1.0, wps=wps)
    rate = per[0].writes_per_second
    print(f"target {wps}: {rate:.0f} writes/s over {seconds:.4f} s")
    assert abs(rate / wps - 1) <= 0.02


def test_rate_change_while_running(vm_1g):
    vm_1g.run_writer(200_000)
    time.sleep(0.1)
    vm_1g.set_writer(wps=2_000_000)
    c0, t0 = vm_1g.counter_total(), time.perf_counter()
    time.sleep(0.5)
    c1, t1 = vm_1g.counter_total(), time.perf_counter()
    vm_1g.hold()
    assert abs((c1 - c0) / (t1 - t0) / 2e6 - 1) <= 0.02


def test_hold_freezes_the_counter(vm_1g):
    vm_1g.run_writer(0)
    time.sleep(0.05)
    vm_1g.hold()
    frozen = vm_1g.counters()
    time.sleep(0.1)
    assert vm_1g.counters() == frozen and frozen[0] > 0


def _assert_tags_match_replay(vm):
    counters = vm.counters()
    tags = vm.page_tags()
    want = replay.last_tags([(vm.logs[k], 0, c) for k, c in enumerate(counters)], vm.slot_pages)
    written = want != 0
    assert written.sum() > 0
    np.testing.assert_array_equal(tags[written], want[written])
    # every page no counted write reached still holds the warm-up tag
    assert np.all(tags[~written] == guest.WARM_TAG)
    return int(written.sum())


def test_replay_is_exact_page_for_page():
    """Each page's tag is the number of the last write that hit it: the set
    of written pages and the order of writes both match replay exactly."""
    with running_vm(mem=64 * MiB, seed=2024) as vm:
        vm.run_writer(100_000)
        time.sleep(0.1)
        vm.hold()
        pages = _assert_tags_match_replay(vm)
    assert 0 < pages < 16384  # a partial cover, so a wrong page set would show


def test_replay_exact_across_vcpus_and_pattern_changes():
    with running_vm(mem=96 * MiB, vcpus=2, seed=5) as vm:
        vm.run_writer(1_000_000)
        time.sleep(0.1)
        vm.set_writer(pattern="sequential", vcpu=1)
        time.sleep(0.1)
        vm.set_writer(wps=0, pattern="random")
        time.sleep(0.05)
        vm.hold()
        assert [len(log.segments) for log in vm.logs] == [1, 3]
        _assert_tags_match_replay(vm)
        # the two vCPUs' slices are disjoint and cover the slot
        regions = [(s.first_page, s.npages) for s in (log.segments[0][1] for log in vm.logs)]
        assert regions == [(0, 12288), (12288, 12288)]


def test_warmup_touches_every_page_and_is_reported():
    with MicroVm(VmConfig(mem=64 * MiB, prefault=False)) as vm:
        vm.start()
        warm = vm.wait_ready()
        assert np.all(vm.page_tags() == guest.WARM_TAG)
        assert vm.counters() == [0]
    assert 0 < warm < 10
