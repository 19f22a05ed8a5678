"""The selftest's checks: each builds a micro-VM, exercises one way this
host's KVM tracks dirty pages (or moves a guest), and judges the answer by
replay of the guest's writes (dirtyrate/verify.py, microvm/truth.py), the
same rules our test suite applies.

Each check names the KVM capabilities it needs: one the host lacks, or that
`--hide` hides (kvm.system.hidden_capabilities), makes it a skip that says
which.  A check returns a line of detail or raises CheckFailed.
"""

import contextlib
import os
import time
from dataclasses import dataclass

import numpy as np

from ..dirtyrate import DirtyRateMonitor
from ..dirtyrate.trackers.bitmap import DirtyBitmapTracker
from ..dirtyrate.verify import check_window
from ..errors import HarnessError
from ..kvm import backing
from ..microvm.dirty_ring import host_max_ring_entries
from ..microvm.running import running_vm
from ..microvm.truth import pacing_problem, tag_mismatches, written_since
from ..perf import PerfConfig, run_perf
from .loopback import migrate_loopback

MiB = 1 << 20
MANUAL = "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2"
RING = "KVM_CAP_DIRTY_LOG_RING"
ACQ_REL = "KVM_CAP_DIRTY_LOG_RING_ACQ_REL"
BIG_RING = 65536  # entries per vCPU, or the host's largest below that
SMALL_RING = 1024  # fills again and again against an unthrottled writer


class CheckFailed(HarnessError):
    """The host's answer disagrees with replay."""


@dataclass(frozen=True)
class Check:
    name: str
    what: str  # one line: what it proves
    needs: tuple  # (KVM_CAP name, least value) all of which the host must offer
    run: object  # run(quick) -> detail; raises CheckFailed
    hide_while_running: tuple = ()  # capabilities hidden while it runs (to take a fallback)
    unavailable: object = None  # () -> why the host cannot run it beyond KVM capabilities (None: it can)


def _judge(vm, result, wps):
    verdict = check_window(vm, result)
    if not verdict.ok:
        raise CheckFailed(verdict.describe())
    problem = pacing_problem(result.edges, wps, result.window_us / 1e6)
    if problem:
        raise CheckFailed(f"the writer misbehaved: {problem}")
    return verdict


def _windows(vm, mode, windows_ms, wps, poll_seconds=None):
    """Measure each window, judge it; the details joined."""
    monitor = DirtyRateMonitor(vm) if poll_seconds is None else DirtyRateMonitor(vm, poll_seconds=poll_seconds)
    details = []
    for ms in windows_ms:
        result = monitor.measure(ms, "millisecond", mode=mode)
        verdict = _judge(vm, result, wps)
        details.append(f"{ms} ms: {verdict.dirty_pages:.0f} in {verdict.narrow}..{verdict.wide}")
    return "; ".join(details)


def _mem(quick):
    return 256 * MiB if quick else 1024 * MiB


def _windows_ms(quick):
    return (200,) if quick else (100, 500, 1000)


def _ring_entries():
    return min(BIG_RING, host_max_ring_entries())


def bitmap(manual):
    def run(quick):
        wps = 1_000_000
        with running_vm(mem=_mem(quick), seed=61, manual_protect=manual) as vm:
            if bool(vm.manual_protect) != manual:
                raise CheckFailed(f"asked for manual protect {manual}, the VM has {vm.manual_protect}")
            vm.run_writer(wps)
            detail = _windows(vm, "dirty-bitmap", _windows_ms(quick), wps)
            vm.hold()
        return detail
    return run


def clear_rounds(quick):
    """GET then CLEAR, round after round with the writer held between them:
    each GET must report exactly the pages written since the last CLEAR.  A
    CLEAR that failed to re-protect a page would hide its next write."""
    rounds = 3 if quick else 6
    with running_vm(mem=64 * MiB, seed=62) as vm:
        if not vm.manual_protect:
            raise CheckFailed("the VM did not get manual dirty-log protection")
        log = DirtyBitmapTracker(vm)
        log.enable()
        try:
            log.sync()  # INITIALLY_SET: every page reported once, then protected
            log.sync()
            if len(log.dirty_pages()):
                raise CheckFailed(f"{len(log.dirty_pages())} pages dirty with the writer held")
            pages = 0
            for k in range(rounds):
                before = vm.counters()
                vm.run_writer(500_000)
                time.sleep(0.05)
                vm.hold()
                after = vm.counters()
                log.sync()
                want = np.flatnonzero(written_since(vm, before, after))
                got = log.dirty_pages()
                if not np.array_equal(want, got):
                    extra, missed = len(np.setdiff1d(got, want)), len(np.setdiff1d(want, got))
                    raise CheckFailed(f"round {k}: {missed} written pages not reported, {extra} reported "
                                      "but not written")
                pages += len(got)
        finally:
            log.close()
    return f"{rounds} rounds, {pages} pages, each GET exactly the pages written since the CLEAR"


def ring(quick):
    wps = 1_000_000
    with running_vm(mem=_mem(quick), seed=63, dirty_ring_entries=_ring_entries()) as vm:
        vm.run_writer(wps)
        detail = _windows(vm, "dirty-ring", _windows_ms(quick), wps)
        vm.hold()
    return detail


RING_FULL_POLL = 0.25


def ring_full(quick):
    """A small ring, an unthrottled writer and a slow reaper: the ring fills
    (KVM_EXIT_DIRTY_RING_FULL) and still no page is lost.  The reaper waits
    RING_FULL_POLL between harvests: any host whose guest dirties 4 k new
    pages/s under logging fills the ring in that time (with a 20 ms poll a
    loaded runner at ~36 k pages/s harvested ~720 entries each time, and
    the ring never filled)."""
    with running_vm(mem=64 * MiB, seed=64, dirty_ring_entries=SMALL_RING) as vm:
        vm.run_writer(0)
        before = vm.ring.full_exits
        result = DirtyRateMonitor(vm, poll_seconds=RING_FULL_POLL).measure(300 if quick else 1000, "millisecond",
                                                                            mode="dirty-ring")
        full = vm.ring.full_exits - before
        vm.hold()
        verdict = check_window(vm, result)
    if not verdict.ok:
        raise CheckFailed(verdict.describe())
    if full == 0:
        raise CheckFailed(f"the {SMALL_RING}-entry ring never filled")
    return f"ring full {full} times; {verdict.dirty_pages:.0f} pages in {verdict.narrow}..{verdict.wide}"


def two_vcpus(quick):
    """Two vCPUs at different rates, each counted on its own (per-vCPU counts
    come from the ring; without one, the bitmap's total is checked)."""
    rates = [100_000, 300_000]
    entries = _ring_entries()
    mode = "dirty-ring" if entries else "dirty-bitmap"
    with running_vm(mem=_mem(quick), vcpus=2, seed=65, dirty_ring_entries=entries) as vm:
        vm.run_writer(rates[0])
        vm.set_writer(wps=rates[1], vcpu=1)
        detail = _windows(vm, mode, (500,), rates)
        vm.hold()
    return f"{mode}, {detail}"


def live_migration(quick):
    """A loopback live migration of a writing guest with every page hashed
    at the switch-over (verify=full); the arrived guest's RAM must be what
    replay says it wrote, and it must go on from the very write it stopped at."""
    with running_vm(mem=64 * MiB if quick else 256 * MiB, seed=66) as vm:
        vm.run_writer(20_000)
        time.sleep(0.1)
        result = migrate_loopback(vm, verify="full")
    if "source-error" in result or "error" in result:
        arrival = result.get("arrival")
        if arrival:
            arrival.vm.close()
        raise CheckFailed(f"migration failed: {result.get('source-error') or result.get('error')}")
    report, arrival = result["report"], result["arrival"]
    with arrival.vm as moved:
        time.sleep(0.2)
        moved.hold()
        if not (report.converged and report.verified and arrival.verified):
            raise CheckFailed(f"not converged or not verified: {report.reason}")
        if arrival.resume_counters != report.switch_counters:
            raise CheckFailed(f"resumed at {arrival.resume_counters}, stopped at {report.switch_counters}")
        if moved.counter_total() <= sum(arrival.resume_counters):
            raise CheckFailed("the guest did not run after the migration")
        bad = tag_mismatches(moved)
        if bad != (0, 0):
            raise CheckFailed(f"{bad[0]} written and {bad[1]} unwritten pages differ from replay after arrival")
    return (f"{len(report.iterations)} iterations, downtime {report.downtime_seconds * 1e3:.1f} ms, "
            "RAM verified and equal to replay")


GiB = 1 << 30
BACKING_SLOTS = 4


def _backing_size(src, quick):
    """(vCPUs, bytes per vCPU) of a backing check: 1 GiB pages need 1 GiB."""
    if src.page_size == backing.SIZE_1G:
        return 1, GiB
    return 2, (32 if quick else 128) * MiB


def backing_unavailable(name):
    """Why this host cannot back the data region with `name` now: the kernel
    lacks it, or a hugetlb pool is short and we are not root to reserve."""
    def why():
        offer = next(o for o in backing.offers() if o.name == name)
        if not offer.offered:
            return f"this host does not offer {name}: {offer.detail}"
        src = backing.source(name)
        if src.hugetlb and os.geteuid() != 0:
            vcpus, per = _backing_size(src, True)
            need = vcpus * per // src.page_size
            free = backing.huge_pool(src.page_size).free
            if free < need:
                return (f"this host offers {free} free huge pages for {name}, which needs {need}, and reserving "
                        f"them needs root ({offer.detail})")
        return None
    return why


def backing_source(name):
    """dirty_log_perf_test's passes (kvmharness perf) on memory from `name`,
    2 vCPUs over 4 memslots: every harvest equal to replay.  hugetlb pages
    are reserved for the check (root) and the pool put back after it."""
    def run(quick):
        src = backing.source(name)
        vcpus, per = _backing_size(src, quick)
        one_gib = src.page_size == backing.SIZE_1G
        with contextlib.ExitStack() as stack:
            if src.hugetlb and backing.huge_pool(src.page_size).free < vcpus * per // src.page_size:
                stack.enter_context(backing.reserve_huge_pages(src.page_size, vcpus * per // src.page_size))
            result = run_perf(PerfConfig(vcpus=vcpus, vcpu_bytes=per, iterations=2, random_access=True,
                                         write_percent=2 if one_gib else 50, backing=name, slots=BACKING_SLOTS))
        for it in result.iterations:
            if not it.exact:
                raise CheckFailed(f"iteration {it.number}: {it.harvested_pages} pages harvested, replay says "
                                  f"{it.expected_pages} ({it.missing} missing, {it.extra} extra)")
        return (f"{vcpus} vCPU x {per >> 20} MiB over {BACKING_SLOTS} memslots: "
                + ", ".join(f"{it.harvested_pages}" for it in result.iterations) + " pages harvested = replay")
    return run


CHECKS = (
    Check("dirty-bitmap", "KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG windows count exactly the pages written",
          ((MANUAL, 1),), bitmap(True)),
    Check("dirty-bitmap-get-only", "KVM_GET_DIRTY_LOG alone (no manual protect) counts exactly", (),
          bitmap(False)),
    Check("clear-dirty-log", "each GET after a CLEAR reports exactly the pages written since", ((MANUAL, 1),),
          clear_rounds),
    Check("dirty-ring-acq-rel", "the ACQ_REL dirty ring counts exactly", ((ACQ_REL, 1),), ring),
    Check("dirty-ring", "the plain (non-ACQ_REL) dirty ring counts exactly", ((RING, 1),), ring,
          hide_while_running=(ACQ_REL,)),
    Check("dirty-ring-full", "a ring that fills (KVM_EXIT_DIRTY_RING_FULL) loses no page", ((RING, 1),),
          ring_full),
    Check("two-vcpus", "two vCPUs at different rates, each counted exactly", (("KVM_CAP_MAX_VCPUS", 2),),
          two_vcpus),
    Check("live-migration", "a loopback live migration with all RAM verified against replay", (),
          live_migration),
) + tuple(
    Check(f"backing-{name}", f"guest RAM from {name}, over {BACKING_SLOTS} memslots, is tracked exactly",
          ((MANUAL, 1),), backing_source(name), unavailable=backing_unavailable(name))
    for name in backing.SOURCES
)
