"""Backing sources and memslots of the data region (kvm/backing.py,
microvm/machine.py): every source this host offers, with 1 and several
memslots, tracked exactly by every tracker (bitmap per slot, ring entries
by slot id, page sampling), migrated with its RAM equal to replay; hugetlb
pools reserved by the tests and put back on every way out."""

import contextlib
import os

import numpy as np
import pytest

from kvmharness.commands import args as cli_args
from kvmharness._native import ffi, lib
from kvmharness.errors import HostMemoryError
from kvmharness.kvm import backing
from kvmharness.microvm.machine import DataSlot, data_slots
from kvmharness.microvm.truth import tag_mismatches
from kvmharness.pytest_plugin import running_vm
from kvmharness.perf import PerfConfig, run_perf
from kvmharness.probe import probe
from kvmharness.selftest.loopback import migrate_loopback

MiB, GiB = 1 << 20, 1 << 30


@pytest.fixture
def huge_pages():
    """reserve(page_size, count): the pages stay reserved until the test
    ends, then every pool is put back as it was (even if the test failed)."""
    with contextlib.ExitStack() as stack:
        def reserve(page_size, count):
            try:
                stack.enter_context(backing.reserve_huge_pages(page_size, count))
            except HostMemoryError as e:
                pytest.skip(f"this host cannot give {count} huge pages of {page_size >> 20} MiB: {e}")
        yield reserve


def _pools():
    return {size: backing.huge_pool(size).total for size in (backing.SIZE_2M, backing.SIZE_1G)}


def test_the_cli_knows_every_backing_source():
    assert cli_args.BACKING_NAMES == tuple(backing.SOURCES)


@pytest.mark.parametrize("selftest, ours", [
    ("anonymous", "anonymous"), ("anonymous_thp", "anonymous-thp"), ("anonymous_hugetlb_2mb", "anonymous-hugetlb-2mb"),
    ("anonymous_hugetlb_1gb", "anonymous-hugetlb-1gb"), ("shmem", "shmem"), ("shared_hugetlb", "shared-hugetlb")])
def test_the_cli_takes_the_selftests_spelling_of_each_backing_source(selftest, ours):
    assert cli_args.parse_backing(selftest) == ours == cli_args.parse_backing(ours)


def test_an_unknown_backing_source_is_one_line_listing_ours():
    from kvmharness.pytest_plugin import run_cli

    out = run_cli("perf", "--backing", "anonymous_hugetlb_16kb")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "one of anonymous, anonymous-thp, anonymous-hugetlb-2mb" in out.stderr


def test_slots_cut_the_region_at_2mib_boundaries_without_gap_or_overlap():
    for mem, n in ((64 * MiB, 1), (64 * MiB, 4), (70 * MiB, 3), (GiB, 7)):
        slots = data_slots(mem, n)
        assert len(slots) == n and slots[0].first_page == 0
        assert [s.id for s in slots] == list(range(2, 2 + n))
        assert sum(s.pages for s in slots) == mem // 4096
        for a, b in zip(slots, slots[1:]):
            assert a.first_page + a.pages == b.first_page
        assert all(s.first_page % 512 == 0 for s in slots)


def test_ring_entries_become_region_pages_by_slot_id_and_foreign_ones_are_counted():
    """The harvester's slot table (native/dirty_ring.c) on a ring we fill
    ourselves: slot 3 offset 5 is page 4096 + 5 of a region whose second
    slot starts at page 4096; slot 1 (not a data slot), an offset beyond
    its slot, and another address space are foreign."""
    slots = (DataSlot(2, 0, 4096), DataSlot(3, 4096, 512))
    entries = [(2, 7), (3, 5), (3, 511), (1, 0), (3, 512), ((1 << 16) | 2, 0)]
    ring = ffi.new("struct kvm_dirty_gfn[]", 8)
    for k, (slot, offset) in enumerate(entries):
        ring[k].flags, ring[k].slot, ring[k].offset = 1, slot, offset  # KVM_DIRTY_GFN_F_DIRTY
    bounds = ffi.new("uint64_t[]", [0, 4096, 4608])
    bitmap = np.zeros(4608 // 64, dtype=np.uint64)
    fetch, unique, foreign = ffi.new("uint32_t *"), ffi.new("uint64_t *"), ffi.new("uint64_t *")
    n = lib.kvmh_ring_harvest(ring, 8, fetch, slots[0].id, 2, bounds, ffi.cast("uint64_t *", bitmap.ctypes.data),
                              unique, foreign)
    got = np.flatnonzero(np.unpackbits(bitmap.view(np.uint8), bitorder="little"))
    assert n == 6 and fetch[0] == 6 and foreign[0] == 3 and unique[0] == 3
    assert list(got) == [7, 4096 + 5, 4096 + 511]
    assert all(ring[k].flags == 2 for k in range(6))  # KVM_DIRTY_GFN_F_RESET


@pytest.mark.kvm
@pytest.mark.root
def test_hugetlb_without_free_pages_is_one_line_naming_nr_hugepages(cli):
    pool = backing.huge_pool(backing.SIZE_2M)
    mem = max(64 * MiB, (pool.free + 1) * backing.SIZE_2M)
    out = cli("run", "--mem", f"{mem >> 20}MiB", "--backing", "anonymous-hugetlb-2mb", "--duration", "100ms")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "nr_hugepages" in lines[0] and "Traceback" not in out.stderr, out.stderr


@pytest.mark.root
def test_reserving_huge_pages_puts_the_pool_back_on_every_way_out():
    before = _pools()
    with pytest.raises(RuntimeError):
        with backing.reserve_huge_pages(backing.SIZE_2M, 8) as pool:
            assert pool.free >= 8
            raise RuntimeError("the test failed half-way")
    assert _pools() == before


# Each backing source the host offers, exact per iteration against replay
# with 1 and 4 memslots: perf at a small size (its own exact check is the
# assertion), 2 vCPUs, random pages at 50 % writes so reads are in it too.
# 1 GiB pages need 1 GiB: one vCPU, 2 % writes, which keeps the passes short.
CASES = [(name, slots) for name in backing.SOURCES for slots in (1, 4)]


@pytest.mark.kvm
@pytest.mark.root
@pytest.mark.parametrize("name,slots", CASES, ids=[f"{n}-{s}slots" for n, s in CASES])
def test_every_backing_source_and_slot_count_is_tracked_exactly(name, slots, huge_pages):
    src = backing.source(name)
    one_gib = src.page_size == backing.SIZE_1G
    vcpus, per_vcpu = (1, GiB) if one_gib else (2, 32 * MiB)
    if src.hugetlb:
        huge_pages(src.page_size, vcpus * per_vcpu // src.page_size)
    config = PerfConfig(vcpus=vcpus, vcpu_bytes=per_vcpu, iterations=2, random_access=True, seed=slots,
                        write_percent=2 if one_gib else 50, backing=name, slots=slots,
                        mode="dirty-ring" if slots == 4 and not one_gib else "dirty-bitmap", ring_entries=1024)
    result = run_perf(config)
    for it in result.iterations:
        # every written page reported, none the pass did not touch; pages it
        # only read may be reported (a read fault maps them writable), apart
        assert (it.missing, it.extra) == (0, 0) and it.exact, it
        assert it.harvested_pages == it.expected_pages + it.read_reported and it.expected_pages > 0
    assert len(result.iterations) == len(result.baseline) == 2


@pytest.mark.kvm
@pytest.mark.parametrize("mode", ["dirty-bitmap", "page-sampling"])
def test_trackers_measure_a_window_over_several_slots_of_thp(mode, dirty_rate):
    """calc-dirty-rate's trackers on a region of 3 memslots backed by THP:
    the bitmap count within replay's bracket; sampling gives an interval."""
    with running_vm(mem=96 * MiB, slots=3, backing="anonymous-thp", seed=16) as vm:
        vm.run_writer(300_000)
        result, verdict = dirty_rate(vm, mode, ms=300)
        vm.hold()
    assert verdict.ok and result.dirty_pages > 0


@pytest.mark.kvm
def test_ring_window_over_four_slots_of_shmem(dirty_rate):
    with running_vm(mem=64 * MiB, slots=4, backing="shmem", dirty_ring_entries=4096, vcpus=2, seed=17) as vm:
        vm.run_writer(200_000)
        result, verdict = dirty_rate(vm, "dirty-ring", ms=300)
        vm.hold()
    assert verdict.ok and result.dirty_pages > 0


@pytest.mark.kvm
@pytest.mark.root
def test_migration_of_a_sliced_shared_hugetlb_region_arrives_equal_to_replay(huge_pages):
    huge_pages(backing.SIZE_2M, 2 * 64 * MiB // backing.SIZE_2M)  # source and destination on this host
    with running_vm(mem=64 * MiB, slots=3, backing="shared-hugetlb", seed=18) as vm:
        vm.run_writer(200_000)
        result = migrate_loopback(vm)
        assert "arrival" in result, result
        with result["arrival"].vm as moved:
            moved.hold()
            assert [s.pages for s in moved.data_slots] == [s.pages for s in vm.data_slots]
            assert moved.config.backing == "shared-hugetlb"
            assert tag_mismatches(moved) == (0, 0)
        assert result["report"].verified


@pytest.mark.kvm
def test_probe_reports_each_backing_source():
    offered = probe(calibrate=False).to_json()["backing-sources"]
    assert list(offered) == list(backing.SOURCES)
    assert offered["anonymous"]["offered"] is True
    thp = open("/sys/kernel/mm/transparent_hugepage/enabled").read() if os.path.exists(
        "/sys/kernel/mm/transparent_hugepage/enabled") else ""
    assert offered["anonymous-thp"]["offered"] == ("[always]" in thp or "[madvise]" in thp)
