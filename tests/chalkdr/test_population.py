"""The client-population model (chalkdr.population) on timelines whose answer is known by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from chalkdr.population import Sample
from chalkdr.population import population_outage

STEP = 0.05


def _timeline(
    *, until: float, flip_at: float, before: dict[str, float], after: dict[str, float], down: set[str]
) -> list[Sample]:
    """Regions in `down` stop answering at t=0; Route 53's answer moves at `flip_at`."""
    out = []
    t = -1.0
    regions = set(before) | set(after) | down
    while t <= until:
        out.append(
            Sample(
                t=round(t, 3),
                answer=before if t < flip_at else after,
                available={r: not (r in down and t >= 0) for r in regions},
            )
        )
        t += STEP
    return out


def test_failover_clients_move_at_their_next_refresh() -> None:
    # Primary down at 0, the answer moves at 2 s, TTL 6 s: each client fails from 0 until its
    # first refresh after 2 s, which is spread uniformly over [2, 8).
    samples = _timeline(until=12, flip_at=2.0, before={"east": 1.0}, after={"west": 1.0}, down={"east"})
    p = population_outage(samples, ttl_s=6.0, clients=600)
    assert p.peak_share == 1.0 and p.affected_share == 1.0
    assert p.first_failure_s == pytest.approx(0.0, abs=STEP)
    assert p.mean_outage_s == pytest.approx(5.0, abs=0.1)
    assert p.max_outage_s == pytest.approx(8.0, abs=0.1)
    assert p.p95_outage_s == pytest.approx(2 + 0.95 * 6, abs=0.15)
    assert p.recovered_s == pytest.approx(8.0, abs=0.1)
    shares = dict(p.curve)
    assert shares[1.0] == 1.0 and shares[5.0] == pytest.approx(0.5, abs=0.02) and shares[9.0] == 0.0


def test_one_of_three_active_active_regions_fails_a_third_of_the_clients() -> None:
    even = {"a": 1.0, "b": 1.0, "c": 1.0}
    samples = _timeline(until=12, flip_at=2.0, before=even, after={"b": 1.0, "c": 1.0}, down={"a"})
    p = population_outage(samples, ttl_s=6.0, clients=900)
    assert p.peak_share == pytest.approx(1 / 3, abs=0.02)
    # A third were on "a" when it failed; of those that refreshed during [0, 2) (a third of all)
    # while "a" was still in the answer, another third moved onto it: 1/3 + 1/3 * 2/3 * 1/3.
    assert p.affected_share == pytest.approx(1 / 3 + 2 / 27, abs=0.03)
    assert p.recovered_s == pytest.approx(8.0, abs=0.1)
    assert p.mean_outage_s == pytest.approx(5.0 / 3, abs=0.1)


def test_weights_split_the_population() -> None:
    weighted = {"a": 3.0, "b": 1.0}
    samples = _timeline(until=10, flip_at=1.0, before=weighted, after={"b": 1.0}, down={"a"})
    assert population_outage(samples, ttl_s=4.0, clients=800).peak_share == pytest.approx(0.75, abs=0.04)


def test_a_fault_route53_routes_around_at_once_fails_nobody_with_a_fresh_cache() -> None:
    # health-check-inverted: the region still answers, only DNS moves.
    samples = _timeline(until=10, flip_at=0.0, before={"east": 1.0}, after={"west": 1.0}, down=set())
    p = population_outage(samples, ttl_s=6.0)
    assert p.peak_share == 0.0 and p.recovered_s is None and p.mean_outage_s == 0.0


def test_an_empty_answer_fails_everyone_who_refreshes_into_it() -> None:
    samples = _timeline(until=12, flip_at=0.0, before={"east": 1.0}, after={}, down=set())
    p = population_outage(samples, ttl_s=4.0, clients=400)
    assert p.peak_share == 1.0 and p.recovered_s is None  # never recovered within the timeline


@pytest.mark.parametrize(("ttl", "clients"), [(0.0, 10), (-1.0, 10), (1.0, 0)])
def test_nonsense_parameters_are_refused(ttl: float, clients: int) -> None:
    with pytest.raises(ValueError):
        population_outage([], ttl_s=ttl, clients=clients)


@settings(max_examples=40, deadline=None)
@given(
    flip=st.floats(min_value=0.0, max_value=5.0),
    ttl=st.floats(min_value=0.5, max_value=8.0),
    regions=st.integers(min_value=1, max_value=4),
)
def test_properties(flip: float, ttl: float, regions: int) -> None:
    """Shares are fractions, the peak is the curve's maximum, outages are ordered and bounded by
    the span, and nobody fails before the fault."""
    names = [f"r{i}" for i in range(regions)]
    before = {n: 1.0 for n in names}
    after = {n: 1.0 for n in names[1:]} or {"spare": 1.0}
    samples = _timeline(until=flip + ttl + 2, flip_at=flip, before=before, after=after, down={"r0"})
    p = population_outage(samples, ttl_s=ttl, clients=200)
    assert all(0.0 <= share <= 1.0 for _, share in p.curve)
    assert p.peak_share == max(share for _, share in p.curve)
    assert all(share == 0.0 for t, share in p.curve if t < 0)
    assert 0.0 <= p.mean_outage_s <= p.p95_outage_s <= p.max_outage_s <= samples[-1].t - samples[0].t
    assert p.max_outage_s <= flip + ttl + 2 * STEP


def test_a_change_between_two_samples_is_placed_at_their_midpoint() -> None:
    """Sparse samples: up at 0, down at 1 and 2, up at 4. The outage began somewhere in (0, 1) and
    ended in (2, 4); each sample stands for half the gap on either side, so every client (their
    caches never matter: one region) is out from 0.5 to 3.0."""
    up, down = {"a": True}, {"a": False}
    samples = [
        Sample(t=t, answer={"a": 1.0}, available=v) for t, v in ((0, up), (1, down), (2, down), (4, up))
    ]
    p = population_outage(samples, ttl_s=6.0, clients=10)
    assert p.mean_outage_s == 2.5 and p.max_outage_s == 2.5
    assert p.first_failure_s == 1.0 and p.recovered_s == 4.0  # as observed: the samples themselves
