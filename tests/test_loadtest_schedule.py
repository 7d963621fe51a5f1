"""Open-loop schedules: seeded, reproducible, with the arrival statistics they claim."""

import numpy as np
import pytest

from tasks.loadtest.schedule import arrival_offsets


def test_constant_schedule_is_evenly_spaced_from_zero():
    assert arrival_offsets(4, "constant", count=5) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("arrival", ["poisson", "gamma"])
def test_same_seed_same_schedule_other_seed_other_schedule(arrival):
    a = arrival_offsets(20, arrival, count=200, burstiness=0.5, seed=7)
    assert a == arrival_offsets(20, arrival, count=200, burstiness=0.5, seed=7)
    assert a != arrival_offsets(20, arrival, count=200, burstiness=0.5, seed=8)
    assert a[0] == 0.0 and all(b >= x for x, b in zip(a, a[1:]))


def test_a_duration_schedule_is_the_prefix_of_a_longer_one():
    assert arrival_offsets(10, "poisson", duration_s=30, seed=3) == [
        t for t in arrival_offsets(10, "poisson", duration_s=300, seed=3) if t < 30]


def test_a_count_schedule_offers_exactly_the_rate_and_keeps_the_gap_shape():
    raw = arrival_offsets(20, "poisson", duration_s=10_000, seed=5)[:200]  # unscaled draw
    scaled = arrival_offsets(20, "poisson", count=200, seed=5)
    assert scaled[-1] == pytest.approx(199 / 20)  # (n - 1) / rate
    assert np.allclose(np.array(scaled[1:]) / np.array(raw[1:]), scaled[-1] / raw[-1])  # one factor for all gaps


def test_poisson_gaps_have_the_asked_mean_and_unit_coefficient_of_variation():
    gaps = np.diff(arrival_offsets(50, "poisson", duration_s=400, seed=1))
    assert gaps.mean() == pytest.approx(1 / 50, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("burstiness", [0.25, 4.0])
def test_gamma_burstiness_sets_the_coefficient_of_variation(burstiness):
    gaps = np.diff(arrival_offsets(50, "gamma", count=20_000, burstiness=burstiness, seed=2))
    assert gaps.mean() == pytest.approx(1 / 50, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1 / np.sqrt(burstiness), rel=0.08)


def test_count_and_duration_bound_together_whichever_ends_first():
    assert len(arrival_offsets(10, "constant", count=5, duration_s=100)) == 5
    assert arrival_offsets(10, "constant", count=500, duration_s=1.0)[-1] == pytest.approx(0.9)
    assert all(t < 2.0 for t in arrival_offsets(10, "poisson", duration_s=2.0))


@pytest.mark.parametrize("kwargs", [
    {"rate": 0, "count": 3}, {"rate": 5, "count": 3, "burstiness": 0, "arrival": "gamma"},
    {"rate": 5, "count": 3, "arrival": "uniform"}, {"rate": 5},
])
def test_bad_schedules_are_refused(kwargs):
    rate = kwargs.pop("rate")
    with pytest.raises(ValueError):
        arrival_offsets(rate, **kwargs)
