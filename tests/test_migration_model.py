"""The convergence model on synthetic curves (no KVM)."""

import math

import pytest

from kvmharness.migration.model import PAGE_WIRE_BYTES, DirtyCurve, Link, seed_verdict, simulate_precopy


def uniform_curve(npages, pages_per_second, longest=2.0):
    """Measured points of an ideal uniform writer."""
    pts = tuple((t, -npages * math.expm1(-pages_per_second * t / npages)) for t in (0.05, 0.1, 0.5, longest))
    return DirtyCurve(pts, npages)


def test_curve_interpolates_and_extrapolates_with_the_fitted_law():
    c = uniform_curve(65536, 20_000)
    assert c.rate == pytest.approx(20_000, rel=1e-6)
    assert c.at(0.3) == pytest.approx((c.at(0.1) + c.at(0.5)) / 2, rel=1e-9)  # linear between points
    assert c.at(10.0) == pytest.approx(-65536 * math.expm1(-20_000 * 10 / 65536), rel=1e-6)
    assert c.at(1e6) == pytest.approx(65536)


def test_link_counts_tcp_framing():
    assert Link(1e9).goodput == pytest.approx(1e9 / 8 * 1448 / 1538)
    assert Link(1e9, tcp_overhead=False).goodput == 1e9 / 8


def test_seed_verdict():
    link = Link(8e9, tcp_overhead=False)  # 1 GB/s
    assert seed_verdict(1000, 0.3, link)["converges"]  # 4 MB in 4 ms
    assert not seed_verdict(100_000, 0.3, link)["converges"]  # 410 MB in 410 ms


def test_slow_writer_converges_in_a_few_iterations():
    p = simulate_precopy(uniform_curve(65536, 20_000), Link(1e9), 0.3)
    assert p.converges and 2 <= len(p.iterations) <= 8
    assert p.iterations[0].pages == 65536 and p.iterations[0].bytes == 65536 * PAGE_WIRE_BYTES
    assert all(a.pages > b.pages for a, b in zip(p.iterations, p.iterations[1:]))
    assert p.downtime_seconds <= 0.3
    assert p.total_seconds == pytest.approx(sum(i.seconds for i in p.iterations) + p.downtime_seconds)


def test_fast_writer_does_not_converge_and_says_why():
    p = simulate_precopy(uniform_curve(65536, 300_000), Link(1e8), 0.05)
    assert not p.converges and ("no progress" in p.reason or "after" in p.reason)


def test_iteration_limit():
    p = simulate_precopy(uniform_curve(65536, 20_000), Link(1e9), 0.3, max_iterations=1)
    assert not p.converges and len(p.iterations) == 1


def test_zero_pages_cost_their_index_in_the_first_pass():
    curve = DirtyCurve(((0.1, 100.0), (1.0, 500.0)), 262144)
    link = Link(1e9, tcp_overhead=False)
    full = simulate_precopy(curve, link, 0.3)
    sparse = simulate_precopy(curve, link, 0.3, zero_pages=200_000)
    assert full.iterations[0].bytes == 262144 * PAGE_WIRE_BYTES
    assert sparse.iterations[0].bytes == 62144 * PAGE_WIRE_BYTES + 200_000 * 8
    assert sparse.total_seconds < full.total_seconds


def test_the_authors_table_marks_what_does_not_converge():
    from kvmharness.commands.predict import prediction_table
    from kvmharness.migration.predict import verdict

    curve = DirtyCurve(((0.05, 5000.0), (0.3, 30000.0), (1.0, 90000.0)), 262144)
    links = [Link(b) for b in (100e6, 25e9)]
    downtimes = [0.05, 1.0, math.inf]
    verdicts = {(link, d): verdict(curve, link, d) for link in links for d in downtimes}
    lines = prediction_table(verdicts, links, downtimes, [100e6, 25e9]).splitlines()
    assert lines[0].split() == ["bandwidth", "|", "50", "ms", "|", "1000", "ms", "|", "unlimited"]
    slow, fast = lines[2], lines[3]
    assert slow.split("|")[1].strip() == "-" and slow.split("|")[3].strip().endswith("s")
    assert all(cell.strip().endswith("s") for cell in fast.split("|")[1:])
    assert verdicts[(links[0], math.inf)].seed["converges"] and verdicts[(links[0], math.inf)].model.converges
