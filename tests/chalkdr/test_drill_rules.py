"""Drill rules without I/O: milestones from observations, steady state, SLOs, RPO, the report."""

from __future__ import annotations

import pytest

from chalkdr.drill import LagReading
from chalkdr.drill import RegionRoute
from chalkdr.drill import Routing
from chalkdr.drill import SteadyState
from chalkdr.drill import evaluate_slos
from chalkdr.drill import health_verdict
from chalkdr.drill import rpo_exposure_s
from chalkdr.drill import steady_state_problems
from chalkdr.observe import Direction
from chalkdr.observe import Observation
from chalkdr.observe import QueryProbe
from chalkdr.observe import milestones
from chalkdr.query import QueryAnswer
from chalkdr.report import DrillReport
from chalkdr.report import Journal
from chalkdr.report import PhaseStatus
from chalkdr.report import RpoEvidence
from chalkdr.report import render_markdown
from chalkdr.report import timeline_rows

EAST, WEST = "us-east-1", "us-west-2"


def obs(
    t: float, *, east: bool | None, dns: str | None, ok: bool, region: str | None, canary: bool = False
) -> Observation:
    return Observation(
        mono=100 + t,
        wall=1_700_000_000 + t,
        health={EAST: east, WEST: True},
        dns_answer=dns,
        query=QueryProbe(ok=ok, region=region if ok else None, canary_value="d1" if canary else None),
    )


FAILOVER = [
    obs(0.0, east=True, dns=EAST, ok=True, region=EAST),
    obs(1.0, east=True, dns=EAST, ok=False, region=None),
    obs(2.0, east=False, dns=EAST, ok=False, region=None),
    obs(3.0, east=False, dns=WEST, ok=False, region=None),
    obs(4.0, east=False, dns=WEST, ok=True, region=WEST),
    obs(5.0, east=False, dns=WEST, ok=True, region=WEST, canary=True),
]


class TestMilestones:
    def test_failover_milestones_are_relative_to_injection(self) -> None:
        m = milestones(
            FAILOVER,
            start_mono=100.0,
            direction=Direction.FAILOVER,
            faulted_region=EAST,
            target_regions=[WEST],
        )
        assert (m.health_flip_s, m.dns_flip_s, m.first_good_answer_s, m.canary_served_s) == (
            2.0,
            3.0,
            4.0,
            5.0,
        )
        assert m.failed_probes == 3 and m.error_window_s == (1.0, 3.0)
        assert m.observations == 6

    def test_observations_before_the_reference_are_ignored(self) -> None:
        m = milestones(
            FAILOVER,
            start_mono=102.5,
            direction=Direction.FAILOVER,
            faulted_region=EAST,
            target_regions=[WEST],
        )
        assert m.health_flip_s == 0.5 and m.failed_probes == 1

    def test_never_reached_is_none(self) -> None:
        m = milestones(
            FAILOVER[:3],
            start_mono=100.0,
            direction=Direction.FAILOVER,
            faulted_region=EAST,
            target_regions=[WEST],
        )
        assert m.first_good_answer_s is None and m.dns_flip_s is None

    def test_failback_looks_for_the_region_becoming_healthy(self) -> None:
        back = [
            obs(0, east=False, dns=WEST, ok=True, region=WEST),
            obs(1, east=True, dns=EAST, ok=True, region=EAST),
        ]
        m = milestones(
            back, start_mono=100.0, direction=Direction.FAILBACK, faulted_region=EAST, target_regions=[EAST]
        )
        assert (m.health_flip_s, m.dns_flip_s, m.first_good_answer_s) == (1.0, 1.0, 1.0)


def test_route53_checker_rule_is_more_than_18_percent() -> None:
    assert health_verdict(["Success: HTTP Status Code 200, OK"] + ["Failure: x"] * 4) is True  # 20%
    assert health_verdict(["Success: ok"] + ["Failure: x"] * 7) is False  # 12.5%
    assert health_verdict([]) is None


def test_routing_maps_alias_answers_to_regions() -> None:
    routing = Routing(
        record="chalk-failover.example.com",
        routes={
            EAST: RegionRoute(
                region=EAST,
                alb_dns="a.us-east-1.elb.amazonaws.com",
                health_check_id="h1",
                role="PRIMARY",
                set_identifier="e",
            ),
            WEST: RegionRoute(
                region=WEST,
                alb_dns="b.us-west-2.elb.amazonaws.com",
                health_check_id="h2",
                role="SECONDARY",
                set_identifier="w",
            ),
        },
    )
    assert routing.region_of_answer("dualstack.B.us-west-2.elb.amazonaws.com.") == WEST
    assert routing.region_of_answer("unknown") is None and routing.region_of_answer(None) is None


def _steady(**overrides: object) -> SteadyState:
    base: dict[str, object] = {
        "healthz": {EAST: True, WEST: True},
        "route53_health": {EAST: True, WEST: True},
        "dns_region": EAST,
        "expected_dns_regions": [EAST],
        "lags": {"dynamodb:t->us-west-2": LagReading(value=300, limit=5000, unit="ms")},
        "served": {
            EAST: QueryAnswer(ok=True, status_code=200, latency_s=0.01, deployment_id="c1"),
            WEST: QueryAnswer(ok=True, status_code=200, latency_s=0.01, deployment_id="c1"),
        },
        "capacity": {EAST: (2, 2), WEST: (2, 2)},
    }
    base.update(overrides)
    return SteadyState.model_validate(base)


class TestSteadyState:
    def test_steady(self) -> None:
        assert steady_state_problems(_steady()) == []

    def test_each_deviation_is_named(self) -> None:
        s = _steady(
            route53_health={EAST: True, WEST: False},
            dns_region=WEST,
            lags={"dynamodb:t->us-west-2": LagReading(value=9000, limit=5000, unit="ms")},
            served={
                EAST: QueryAnswer(ok=True, status_code=200, latency_s=0.01, deployment_id="c1"),
                WEST: QueryAnswer(ok=True, status_code=200, latency_s=0.01, deployment_id="c2"),
            },
            capacity={EAST: (2, 2), WEST: (1, 2)},
        )
        problems = steady_state_problems(s)
        assert "us-west-2: Route 53 health check is unhealthy" in problems
        assert "failover name resolves to us-west-2, expected us-east-1" in problems
        assert any("replication lag 9000 ms exceeds the guard 5000" in p for p in problems)
        assert "regions serve different deployments: us-east-1=c1, us-west-2=c2" in problems
        assert "us-west-2: query-server capacity 1/2 ready" in problems

    def test_missing_lag_data_only_matters_when_required(self) -> None:
        s = _steady(lags={"aurora:x": LagReading(value=None, limit=5000, unit="ms")})
        assert steady_state_problems(s) == []
        assert steady_state_problems(s, require_lag_data=True) == [
            "aurora:x: no replication-lag data in CloudWatch"
        ]


def test_slo_verdicts() -> None:
    v = evaluate_slos(
        rto_target_s=60, rpo_target_s=5, rto_measured_s=61, rpo_measured_s=1, traffic_moved=True
    )
    assert [(s.name, s.passed) for s in v] == [("RTO", False), ("RPO", True)]
    v = evaluate_slos(
        rto_target_s=60, rpo_target_s=5, rto_measured_s=None, rpo_measured_s=None, traffic_moved=False
    )
    assert [(s.name, s.passed) for s in v] == [("RPO", False)]


def test_rpo_exposure_is_the_worst_evidence() -> None:
    rpo = RpoEvidence(
        canary_replication_lag_s=0.4, replication_lag_at_injection_ms={"dynamodb:t->w": 2500, "aurora:x": 9e9}
    )
    assert rpo_exposure_s(rpo) == 2.5
    assert rpo_exposure_s(RpoEvidence()) is None


def test_journal_records_phase_outcomes_and_renders() -> None:
    report = DrillReport(
        drill_id="d1",
        environment="demo",
        scenario="query-servers-down",
        routing="failover",
        primary_region=EAST,
        secondary_regions=[WEST],
        probe_interval_s=1,
        time_scale=10,
    )
    seen: list[tuple[str, PhaseStatus]] = []
    j = Journal(report, on_phase_end=lambda n, r: seen.append((n, r.status)))
    with j.phase("lock"):
        pass
    with pytest.raises(RuntimeError, match=r"^boom$"), j.phase("sweep"):
        raise RuntimeError("boom")
    j.skip("approval", "not required")
    assert seen == [
        ("lock", PhaseStatus.COMPLETED),
        ("sweep", PhaseStatus.FAILED),
        ("approval", PhaseStatus.SKIPPED),
    ]
    assert report.phases["sweep"].reason == "RuntimeError: boom"
    md = render_markdown(report)
    assert "time was scaled x10" in md and "| sweep | failed |" in md
    assert [r["event"] for r in timeline_rows(report)] == ["start", "completed", "start", "failed"]


def test_parity_follows_the_last_proven_apply_when_there_is_one() -> None:
    served = {
        EAST: QueryAnswer(ok=True, status_code=200, latency_s=0.01, deployment_id="c-east"),
        WEST: QueryAnswer(ok=True, status_code=200, latency_s=0.01, deployment_id="c-west"),
    }
    recorded = {EAST: "c-east", WEST: "c-west"}
    assert (
        steady_state_problems(_steady(served=served, expected_deployments=recorded, expected_sha="abc")) == []
    )
    moved = {**recorded, WEST: "c-older"}
    problems = steady_state_problems(_steady(served=served, expected_deployments=moved, expected_sha="abc"))
    assert problems == [
        "us-west-2 serves deployment c-west, but the last proven apply (sha abc) deployed c-older there: "
        "regions out of parity"
    ]
