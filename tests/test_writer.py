"""The guest writer on real /dev/kvm: native speed, pacing, exact replay."""

import threading
import time

import numpy as np
import pytest

from kvmharness.microvm import guest, replay
from kvmharness.pytest_plugin import running_vm
from kvmharness.microvm.host_loop import host_loop_rate
from kvmharness.microvm.machine import MicroVm, VmConfig
from kvmharness.microvm.writer import CATCH_UP_SECONDS
from kvmharness.microvm.writer import measure_writer

pytestmark = pytest.mark.kvm
MiB, GiB = 1 << 20, 1 << 30
# writes against what the schedule owes: within 0.03 % on a quiet host; up
# to 0.9 % was seen with a busy process pinned to one of two cores (a
# residual not yet explained: the guest's accounting predicts 0.025 %)
PACING_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def vm_1g():
    with running_vm(mem=GiB, seed=11) as vm:
        yield vm


def test_unthrottled_writer_runs_natively():
    """The guest loop against the very same loop as a host process: ~1x when
    KVM runs the guest on the hardware, ~0.0005x when it emulates it
    (docs/platform.md), on any host whatever its speed."""
    with running_vm(mem=64 * MiB) as vm:
        seconds, per = measure_writer(vm, 0.5, wps=0)
        host = host_loop_rate(64 * MiB, 0.5, 0, vm.tsc_khz * 1000, CATCH_UP_SECONDS)
    rate = per[0].writes_per_second
    print(f"unthrottled: {rate / 1e6:.1f} M writes/s, host loop {host / 1e6:.1f} M: {rate / host:.2f}x")
    assert rate / host > 0.25


def _assert_pacing_exact(rate, wps, seconds):
    """A paced writer's writes are wps * (seconds - schedule it gave up to
    host stalls), to within wps * catch-up + 1 (guest/writer.S): exact pacing
    that any host can check, however much time it stole from the guest."""
    owed = rate.expected_writes(wps, seconds)
    print(f"target {wps}: {rate.writes} writes over {seconds:.4f} s, {rate.schedule_resets} restarts gave up "
          f"{rate.dropped_seconds * 1e3:.2f} ms: {rate.writes / owed:.5f} of what the schedule owes")
    assert abs(rate.writes / owed - 1) <= PACING_TOLERANCE
    assert rate.writes <= wps * (seconds + CATCH_UP_SECONDS) + 1


@pytest.mark.parametrize("wps", [1_000_000, 3_000_000])
def test_rate_limit_holds(vm_1g, wps):
    seconds, per = measure_writer(vm_1g, 1.0, wps=wps)
    _assert_pacing_exact(per[0], wps, seconds)


def test_rate_change_while_running(vm_1g):
    vm_1g.run_writer(200_000)
    time.sleep(0.1)
    seconds, per = measure_writer(vm_1g, 0.5, wps=2_000_000)
    _assert_pacing_exact(per[0], 2_000_000, seconds)


def test_writer_never_bursts_to_catch_up(vm_1g):
    """Over any window of 50 ms or more the writer stays within 1 % of its
    rate, also right after stalls (the vCPU held out of the guest for 2-8 ms,
    as a preempted vCPU thread is): it catches up at most CATCH_UP_SECONDS of
    its schedule and gives the rest up.  The guest's own counters, sampled
    every millisecond, are the evidence, and replay proves them honest."""
    wps = 1_000_000
    vm_1g.run_writer(wps)
    samples = []  # (host time before the read, counter, host time after it)
    done = threading.Event()

    def sample():
        while not done.is_set():
            t0 = time.perf_counter()
            counter = vm_1g.counters()[0]
            samples.append((t0, counter, time.perf_counter()))
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    earlier, first = _progress(vm_1g)
    sampler.start()
    try:
        for stall in (0.002, 0.004, 0.006, 0.008) * 3:
            time.sleep(0.06)
            with vm_1g.vcpus_stopped():
                time.sleep(stall)
        time.sleep(0.06)
    finally:
        done.set()
        sampler.join()
    last, later = _progress(vm_1g)
    vm_1g.hold()
    _assert_tags_match_replay(vm_1g)

    before, counts, after = (np.array(x) for x in zip(*samples))
    # writes between samples i < j all happened within (before[i], after[j])
    span = after[None, :] - before[:, None]
    writes = counts[None, :] - counts[:, None]
    window = (before[None, :] - after[:, None]) >= 0.050
    ratio = writes[window] / (wps * span[window])
    s0, s1 = first.schedules[0], last.schedules[0]
    print(f"{len(samples)} samples, {window.sum()} windows >= 50 ms: at most {ratio.max():.5f} of the rate; "
          f"{s1.resets - s0.resets} restarts gave up {(s1.dropped - s0.dropped) * 1e3:.1f} ms")
    assert ratio.max() <= 1.01
    assert s1.dropped - s0.dropped > 0.020  # the stalls were given up, not caught up
    # A vCPU thread the host preempts gives the time up only when it runs
    # again and sees how late it is, so the host's readings alone do not say
    # what was owed (a 36 ms preemption under way at `last` once made this
    # 4 % short).  The guest wrote between `earlier` and `first`, so a stall
    # under way at `first` (written off in the interval) began after
    # `earlier`; it wrote after `last` before `later` was read, so a stall
    # under way at `last` is written off by `later`.
    elapsed, written = last.time - first.time, last.counters[0] - first.counters[0]
    most = wps * (elapsed - (s1.dropped - s0.dropped) + (first.time - earlier.time))
    least = wps * (elapsed - (later.schedules[0].dropped - s0.dropped))
    assert least * (1 - PACING_TOLERANCE) <= written <= most * (1 + PACING_TOLERANCE)


def _progress(vm):
    """Two snapshots, the second the first one read after the writer's
    counter moved: the guest ran between them."""
    before = vm.snapshot()
    while True:
        time.sleep(0.001)
        after = vm.snapshot()
        if after.counters[0] > before.counters[0]:
            return before, after
        before = after


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


def test_options_changed_while_the_writer_runs_are_attributed_to_the_exact_access():
    """The control block is a seqlock (guest/writer.S, "Control"): options
    changed under a writer running flat out, hundreds of times (pattern,
    table, read share), must each take effect at the access the guest
    reports, or replay and RAM part.  Before the seqlock, a guest could read
    new options with the old GEN and make one access the host attributed to
    the old ones."""
    shapes = ["hotcold:0.02:0.98", "random", "zipf:1.1", "sequential", "hotcold:0.2:0.8"]
    with running_vm(mem=64 * MiB, seed=77) as vm:
        vm.run_writer(0, "random")
        for k in range(300):
            vm.set_writer(pattern=shapes[k % len(shapes)], write_percent=(100, 60)[k % 2])
        vm.hold()
        assert len(vm.logs[0].segments) > 250
        _assert_tags_match_replay(vm)
