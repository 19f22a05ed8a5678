"""The working-set model that carries a short dirty(t) to a long first pass
(issue 24): pure logic, on curves whose law is known."""

import math

import pytest

from kvmharness.migration import working_set
from kvmharness.migration.model import DirtyCurve

N = 262_144
WINDOWS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.2)
LAWS = {
    "uniform": lambda t: N * -math.expm1(-36_600 * t / N),
    "sweep": lambda t: min(36_600 * t, N),
    "hot-cold": lambda t: 5_000 * -math.expm1(-36_000 * t / 5_000) - (N - 5_000) * math.expm1(-600 * t / (N - 5_000)),
    "small set": lambda t: 30_000 * -math.expm1(-36_600 * t / 30_000),
}


def points(law, windows=WINDOWS):
    return [(t, law(t)) for t in windows]


@pytest.mark.parametrize("name", sorted(LAWS))
def test_the_fit_carries_a_known_law_to_nine_seconds(name):
    """Fitted on 1.2 s, dirty(9 s) within 10 % of the law, never more than
    5 % under it (an ambiguous curve leans pessimistic, never optimistic)."""
    law = LAWS[name]
    model = working_set.fit(points(law), N, 9.0)
    curve = DirtyCurve(tuple(points(law)), N, model)
    print(name, model.describe(), curve.at(9.0), law(9.0))
    assert model.rms < 0.01
    assert -0.05 <= curve.at(9.0) / law(9.0) - 1 <= 0.10


def test_a_sweep_is_told_from_a_uniform_writer():
    sweep = working_set.fit(points(LAWS["sweep"]), N, 9.0)
    uniform = working_set.fit(points(LAWS["uniform"]), N, 9.0)
    assert sweep.family == "working-set" and sweep.shape == 1.0
    assert uniform.shape > 1.0


def test_a_hot_set_is_found():
    model = working_set.fit(points(LAWS["hot-cold"]), N, 9.0)
    assert model.family == "hot-cold"
    assert abs(model.pages / 5_000 - 1) < 0.1 and abs(model.cold_rate / 600 - 1) < 0.3


def test_an_ambiguous_curve_gives_the_pessimistic_answer():
    """Linear for 0.2 s: a sweep over the whole guest and a uniform writer
    over a set several times larger both match; the one dirtying most at
    the target wins, and the tangent bound keeps it honest."""
    short = points(LAWS["sweep"], (0.05, 0.1, 0.15, 0.2))
    model = working_set.fit(short, N, 9.0)
    assert model.at(9.0) >= 0.95 * N
    low, high = working_set.bounds(short, 9.0)
    assert low == short[-1][1] and high == pytest.approx(36_600 * 9.0)


def test_the_extrapolation_stays_within_a_concave_curve_s_bounds():
    pts = points(LAWS["uniform"])
    low, high = working_set.bounds(pts, 5.0)
    curve = DirtyCurve(tuple(pts), N, working_set.fit(pts, N, 5.0))
    assert low <= curve.at(5.0) <= high
    assert curve.at(1.0) == pytest.approx(LAWS["uniform"](1.0))  # inside the points: interpolated


def test_no_fit_without_three_points_or_without_writes():
    assert working_set.fit([(0.05, 10), (0.1, 20)], N, 9.0) is None
    assert working_set.fit([(0.05, 0), (0.1, 0), (0.2, 0)], N, 9.0) is None


def test_a_fitted_model_reports_itself():
    model = working_set.fit(points(LAWS["hot-cold"]), N, 9.0)
    out = model.to_json()
    assert out["family"] == "hot-cold" and "cold-pages-per-second" in out and out["rms-error"] < 0.01
    assert "hot set of" in model.describe()


def test_a_stall_in_the_last_window_is_not_read_as_saturation():
    """The fresh-clone CI failure of 2026-12 (zipf, 256 MiB): the vCPU thread
    lost ~16 ms in the last 200 ms, the last point read 1.5 % under the line,
    and a sweep saturating just before it fitted best: dirty(4 s) predicted
    42.5 k against 65.4 k measured.  One point cannot show a plateau: the
    fit without the last point is weighed too, and the one dirtying most
    wins."""
    law = LAWS["sweep"]
    stalled = points(law)
    stalled[-1] = (stalled[-1][0], law(stalled[-1][0] - 0.016))
    model = working_set.fit(stalled, N, 4.0)
    curve = DirtyCurve(tuple(stalled), N, model)
    print(model.describe(), curve.at(4.0), law(4.0))
    assert curve.at(4.0) >= 0.95 * law(4.0)


def test_a_plateau_seen_on_several_points_is_kept():
    """A working set the short curve saw fill (flat over its last windows)
    stays a working set: leaving out the last point changes nothing."""
    law = LAWS["small set"]
    model = working_set.fit(points(law), N, 9.0)
    assert model.at(9.0) <= 1.05 * 30_000


def test_a_set_filling_where_the_measuring_ends_is_not_believed():
    """The second fresh-clone failure (zipf, 256 MiB): the fit chosen was a
    sweep of 45474 pages at 38092 pages/s, full at 1.194 s, the window's
    own end (the window counted 65.4 k at 4 s).  No point could show that
    plateau: such rows are out of the running now, while a sweep full long
    after the points (the sweep law here, at 7.2 s), a uniform set and a
    hot set stay in."""
    import numpy as np

    t = np.array(WINDOWS)
    rows = np.array([[45474, 38092, 1.0, 0.0], [N, 36600, 1.0, 0.0], [30000, 36600, math.inf, 0.0],
                     [45474, 38092, 2.0, 0.0]])
    d = np.array([min(36_600 * x, 36_600) for x in WINDOWS])  # flat over the last interval: the rule below is out
    assert working_set._unevidenced("working-set", rows, N, t, d).tolist() == [True, False, False, False]
    assert not working_set._unevidenced("hot-cold", rows, N, t, d).any()


# dirty(t) of one 4 s dirty-bitmap window, 256 MiB, zipf:0.99 at 1 M writes/s
# asked, on the AMD runner (a first write under dirty logging ~14 us): the
# host's faults hold the line at ~65 k pages/s until the set's tail thins
# it out late.  Series run 7 of 10 at 8281d89 failed on such a curve.
ZIPF_BENDING_LATE = [(0.05008, 3332), (0.100092, 6435), (0.200089, 12843), (0.300074, 19153),
                     (0.500074, 31878), (0.750098, 46267), (1.000074, 54290), (1.200097, 58059)]
ZIPF_AT_4S = 65476


def test_a_set_the_points_still_climb_past_is_not_believed():
    """Fitted on the first 1.2 s of that window, a sweep of 58.4 k pages
    full at 0.93 s matched the points as well as any fit (the line bends
    between the last three points) and predicted 58.4 k at 4 s: 11 %
    under what the window counted.  The points still gained 3.8 k pages
    (6.5 %) over the last 200 ms where that set gains none: such a set is
    out of the running, and the slot's own size stays in."""
    import numpy as np

    model = working_set.fit(ZIPF_BENDING_LATE, 65_536, 4.0)
    print(model.describe(), model.at(4.0), ZIPF_AT_4S)
    assert -0.05 <= model.at(4.0) / ZIPF_AT_4S - 1 <= 0.25
    t = np.array([p[0] for p in ZIPF_BENDING_LATE])
    d = np.array([p[1] for p in ZIPF_BENDING_LATE], dtype=float)
    rows = np.array([[58_421, 62_569, 1.0, 0.0], [65_536, 82_038, 3.0, 0.0], [60_000, 60_000, math.inf, 0.0]])
    assert working_set._unevidenced("working-set", rows, 65_536, t, d).tolist() == [True, False, False]

