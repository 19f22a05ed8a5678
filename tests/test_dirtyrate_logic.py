"""Pure logic of the engine: QEMU's argument checks and messages, in QEMU's
order; statistics; the native harvester and hash on synthetic input."""

import math
import os

import numpy as np
import pytest
import xxhash

from kvmharness._native import ffi, lib
from kvmharness.dirtyrate.modes import enabled_modes
from kvmharness.dirtyrate.monitor import validate_calc_dirty_rate
from kvmharness.errors import DirtyRateError
from kvmharness.dirtyrate.trackers.sampling import sample_count, wilson_interval
from kvmharness.dirtyrate.theory import expected_unique_pages, theoretical_rate

BITMAP_VM, RING_VM = enabled_modes(False), enabled_modes(True)


def _check(calc_time, unit="second", sample_pages=None, mode="page-sampling", modes=BITMAP_VM):
    return validate_calc_dirty_rate(calc_time, unit, sample_pages, mode, modes)


@pytest.mark.parametrize("calc_time,unit", [
    (49, "millisecond"), (60001, "millisecond"), (0, "second"), (61, "second"),
    (-1, "second"), (2**63, "second"), (2**62, "millisecond"),
])
def test_calc_time_out_of_range(calc_time, unit):
    with pytest.raises(DirtyRateError) as e:
        _check(calc_time, unit)
    assert str(e.value) == "Calculation time is out of range [50ms, 60000ms]."


@pytest.mark.parametrize("calc_time,unit,ms", [(50, "millisecond", 50), (60, "second", 60000),
                                               (1, "second", 1000), (60000, "millisecond", 60000)])
def test_calc_time_bounds_are_inclusive(calc_time, unit, ms):
    assert _check(calc_time, unit) == (ms, 512)


def test_sample_pages_only_in_sampling_mode():
    with pytest.raises(DirtyRateError) as e:
        _check(1, sample_pages=512, mode="dirty-bitmap")
    assert str(e.value) == "sample-pages is used only in page-sampling mode"


@pytest.mark.parametrize("pages", [127, 16385, 0])
def test_sample_pages_out_of_range(pages):
    with pytest.raises(DirtyRateError) as e:
        _check(1, sample_pages=pages)
    assert str(e.value) == "sample-pages is out of range[128, 16384]."


@pytest.mark.parametrize("mode,modes", [("dirty-ring", BITMAP_VM), ("dirty-bitmap", RING_VM)])
def test_mode_not_enabled(mode, modes):
    with pytest.raises(DirtyRateError) as e:
        _check(1, mode=mode, modes=modes)
    assert str(e.value) == f"mode {mode} is not enabled, use other method instead."


def test_qemu_order_of_checks():
    # range before sample-pages, sample-pages mode before its range, all before mode support
    with pytest.raises(DirtyRateError, match="Calculation time"):
        _check(0, sample_pages=1, mode="dirty-ring", modes=BITMAP_VM)
    with pytest.raises(DirtyRateError, match="used only in page-sampling"):
        _check(1, sample_pages=1, mode="dirty-ring", modes=BITMAP_VM)
    with pytest.raises(DirtyRateError, match="out of range\\[128"):
        _check(1, sample_pages=1, mode="page-sampling", modes=RING_VM)


def test_bad_enum_values():
    with pytest.raises(DirtyRateError, match="^Parameter 'mode' does not accept value 'foo'$"):
        _check(1, mode="foo")
    with pytest.raises(DirtyRateError, match="^Parameter 'calc-time-unit' does not accept value 'hour'$"):
        _check(1, unit="hour")


def test_wilson_interval_matches_newcombe_and_tightens():
    # Newcombe (1998), table I, method 4 (score interval with continuity correction)
    for (x, n), want in [((81, 263), (0.2535, 0.3682)), ((0, 20), (0.0, 0.2005)), ((1, 29), (0.0018, 0.1963))]:
        lo, hi = wilson_interval(x, n)
        assert (round(lo, 4), round(hi, 4)) == want
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi and hi - lo < 0.21
    lo2, hi2 = wilson_interval(500, 1000)
    assert hi2 - lo2 < hi - lo
    assert wilson_interval(0, 512)[0] == 0.0 and wilson_interval(512, 512)[1] == pytest.approx(1.0)


@pytest.mark.parametrize("p", [0.02, 0.3, 0.68, 0.97])
def test_wilson_coverage_is_at_least_nominal(p):
    rng = np.random.default_rng(1)
    n, hits = 512, 0
    for _ in range(4000):
        lo, hi = wilson_interval(int(rng.binomial(n, p)), n)
        hits += lo <= p <= hi
    assert 0.95 <= hits / 4000 <= 0.99


def test_expected_unique_pages_matches_simulation_and_the_seed():
    rng = np.random.default_rng(2)
    n, w = 10_000, 15_000
    simulated = np.mean([len(np.unique(rng.integers(0, n, w))) for _ in range(20)])
    assert abs(expected_unique_pages(w, n) / simulated - 1) < 0.005
    # The seed's table, theoretical column (1/4/24 GiB at 3 M writes/s).  Its
    # printed values run up to 0.45 % above its own formula at short windows.
    for gib, ms, mib_s in [(1, 100, 6996), (1, 500, 2041), (1, 2000, 512), (4, 100, 10232),
                           (4, 1000, 3865), (24, 100, 11495), (24, 2000, 7574)]:
        assert theoretical_rate(gib << 30, 3_000_000, ms / 1000) == pytest.approx(mib_s, rel=0.005)
    assert expected_unique_pages(5, 100, "sequential") == 5


def test_sample_count_is_per_gib_pro_rata():
    assert sample_count(512, 1 << 30) == 512
    assert sample_count(512, 64 << 20) == 32
    assert sample_count(128, 1 << 20) == 1


def test_xxh64_matches_reference():
    for n in (0, 1, 3, 4, 7, 8, 31, 32, 33, 100, 4096):
        data = os.urandom(n)
        assert lib.kvmh_xxh64(data, n, 1) == xxhash.xxh64_intdigest(data, seed=1)


def test_hash_pages_hashes_each_sampled_page():
    pages = np.frombuffer(os.urandom(16 * 4096), dtype=np.uint8).copy()
    sample = np.array([3, 0, 15, 3], dtype=np.uint64)
    out = np.zeros(4, dtype=np.uint64)
    lib.kvmh_hash_pages(ffi.cast("const unsigned char *", pages.ctypes.data),
                        ffi.cast("const uint64_t *", sample.ctypes.data), 4, 4096,
                        ffi.cast("uint64_t *", out.ctypes.data))
    want = [xxhash.xxh64_intdigest(pages[p * 4096:(p + 1) * 4096].tobytes(), seed=1) for p in sample]
    assert out.tolist() == want


def _ring(entries):
    ring = ffi.new("struct kvm_dirty_gfn[]", entries)
    return ring


def test_ring_harvest_stops_at_the_first_clean_entry_and_resets_what_it_took():
    ring = _ring(8)
    for i, (slot, offset) in enumerate([(1, 5), (1, 9), (1, 5), (0, 3), (1, 70)]):
        ring[i].flags, ring[i].slot, ring[i].offset = 1, slot, offset  # KVM_DIRTY_GFN_F_DIRTY
    fetch = ffi.new("uint32_t *", 0)
    bitmap = np.zeros(2, dtype=np.uint64)
    counts = ffi.new("uint64_t[2]")
    bounds = ffi.new("uint64_t[]", [0, 128])  # one data slot (id 1) of 128 pages
    n = lib.kvmh_ring_harvest(ring, 8, fetch, 1, 1, bounds, ffi.cast("uint64_t *", bitmap.ctypes.data),
                              counts, counts + 1)
    assert n == 5 and fetch[0] == 5
    assert counts[0] == 3  # pages 5, 9, 70: page 5 twice
    assert counts[1] == 1  # the slot 0 entry
    assert [ring[i].flags for i in range(8)] == [2] * 5 + [0] * 3  # KVM_DIRTY_GFN_F_RESET
    assert bitmap[0] == (1 << 5) | (1 << 9) and bitmap[1] == 1 << (70 - 64)


def test_ring_harvest_wraps_around():
    ring = _ring(4)
    fetch = ffi.new("uint32_t *", 6)  # next entry is index 6 & 3 = 2
    for i in (2, 3, 0):
        ring[i].flags, ring[i].slot, ring[i].offset = 1, 1, i
    counts = ffi.new("uint64_t[2]")
    bounds = ffi.new("uint64_t[]", [0, 64])
    assert lib.kvmh_ring_harvest(ring, 4, fetch, 1, 1, bounds, ffi.NULL, counts, counts + 1) == 3
    assert fetch[0] == 9 and ring[1].flags == 0


def test_theory_is_exact_for_tiny_regions():
    assert expected_unique_pages(1, 1) == 1.0
    assert math.isclose(expected_unique_pages(2, 2), 1.5)
