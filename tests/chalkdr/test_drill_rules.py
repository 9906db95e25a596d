"""Drill rules without I/O: milestones from observations, steady state, SLOs, RPO, the report."""

from __future__ import annotations

import pytest

from chalkdr.drill import LagReading
from chalkdr.drill import RegionRoute
from chalkdr.drill import Routing
from chalkdr.drill import SteadyState
from chalkdr.drill import abort_reason
from chalkdr.drill import evaluate_slos
from chalkdr.drill import health_verdict
from chalkdr.drill import rpo_estimate
from chalkdr.drill import rpo_exposure_s
from chalkdr.drill import steady_state_notes
from chalkdr.drill import steady_state_problems
from chalkdr.observe import Direction
from chalkdr.observe import Milestones
from chalkdr.observe import Observation
from chalkdr.observe import QueryProbe
from chalkdr.observe import milestones
from chalkdr.query import QueryAnswer
from chalkdr.report import DrillReport
from chalkdr.report import Journal
from chalkdr.report import LagAtInjection
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


def failover_milestones(observations: list[Observation], start_mono: float) -> Milestones:
    """The milestones of a failover from EAST to WEST injected at `start_mono`."""
    return milestones(
        observations,
        start_mono=start_mono,
        direction=Direction.FAILOVER,
        faulted_region=EAST,
        target_regions=[WEST],
    )


class TestMilestones:
    def test_failover_milestones_are_relative_to_injection(self) -> None:
        m = failover_milestones(FAILOVER, start_mono=100.0)
        assert (m.health_flip_s, m.dns_flip_s, m.first_good_answer_s, m.canary_served_s) == (
            2.0,
            3.0,
            4.0,
            5.0,
        )
        assert m.failed_probes == 3 and m.error_window_s == (1.0, 3.0)
        assert m.observations == 6

    def test_observations_before_the_reference_are_ignored(self) -> None:
        m = failover_milestones(FAILOVER, start_mono=102.5)
        assert m.health_flip_s == 0.5 and m.failed_probes == 1

    def test_never_reached_is_none(self) -> None:
        m = failover_milestones(FAILOVER[:3], start_mono=100.0)
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
            region: RegionRoute(
                region=region,
                alb_dns=f"{alb}.{region}.elb.amazonaws.com",
                health_check_id=check,
                role=role,
                set_identifier=set_id,
            )
            for region, alb, check, role, set_id in (
                (EAST, "a", "h1", "PRIMARY", "e"),
                (WEST, "b", "h2", "SECONDARY", "w"),
            )
        },
        addresses={EAST: ("127.0.10.1", "127.0.10.2"), WEST: ("127.0.11.1",)},
    )
    # An alias to an ALB is answered with addresses; they, not names, say which region answered.
    assert routing.region_of_answer(["127.0.11.1"]) == WEST
    assert routing.region_of_answer(["127.0.10.2", "127.0.10.1"]) == EAST
    assert routing.region_of_answer(["127.0.10.1", "127.0.11.1"]) is None  # spans regions
    assert routing.region_of_answer(["10.9.9.9"]) is None and routing.region_of_answer([]) is None
    assert routing.region_of("127.0.10.2") == EAST and routing.region_of(None) is None


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
        assert "us-west-2: query-server capacity 1/2 ready" in problems
        # Chalk gives each region's deployment its own id: different ids are not a problem by
        # themselves, and without a proven apply pre-flight says it could not judge parity.
        assert not any("different deployments" in p for p in problems)
        (note,) = steady_state_notes(s)
        assert note.startswith("deployment parity not checked") and "us-east-1=c1, us-west-2=c2" in note

    def test_parity_is_judged_against_the_last_proven_apply(self) -> None:
        served = {
            EAST: QueryAnswer(ok=True, status_code=200, latency_s=0.01, deployment_id="c1"),
            WEST: QueryAnswer(ok=True, status_code=200, latency_s=0.01, deployment_id="c9"),
        }
        s = _steady(served=served, expected_deployments={EAST: "c1", WEST: "c2"}, expected_sha="abc123")
        (problem,) = [p for p in steady_state_problems(s) if "parity" in p]
        assert problem.startswith("us-west-2 serves deployment c9, but the last proven apply (sha abc123)")
        assert steady_state_notes(s) == []

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


def test_rpo_estimate_is_the_worst_evidence_of_every_store_and_names_it() -> None:
    lags = {
        "dynamodb:t->w": LagAtInjection(value=2500, unit="ms"),
        "msk:r:latency": LagAtInjection(value=3800, unit="ms"),
        "msk:r:message-lag": LagAtInjection(value=90000, unit="messages"),  # a count, not time
        "aurora:x": LagAtInjection(value=None, unit="ms"),  # no datapoint: not evidence
    }
    rpo = RpoEvidence(canary_replication_lag_s=0.4, lags_at_injection=lags)
    assert rpo_estimate(rpo) == (3.8, "msk:r:latency") and rpo_exposure_s(rpo) == 3.8
    aurora = {**lags, "aurora:x": LagAtInjection(value=9000, unit="ms")}
    assert rpo_estimate(RpoEvidence(lags_at_injection=aurora)) == (9.0, "aurora:x")
    only_canary = RpoEvidence(canary_replication_lag_s=0.4)
    assert rpo_estimate(only_canary) == (0.4, "canary write served by the secondaries")
    assert rpo_estimate(RpoEvidence()) == (None, None)


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


class TestClientViewAndRoutes:
    def test_clients_still_on_the_secondary_block_the_drill(self) -> None:
        s = _steady(client_view=[WEST, WEST, EAST], expected_client_regions=[EAST])
        (problem,) = steady_state_problems(s)
        assert problem == (
            "clients are not on us-east-1 yet: 2 of 3 queries through the failover name were answered by "
            "us-west-2"
        )

    def test_failed_client_queries_count_as_not_there(self) -> None:
        s = _steady(client_view=[None, EAST, EAST], expected_client_regions=[EAST])
        assert any("answered by no answer" in p for p in steady_state_problems(s))

    def test_clients_on_the_expected_regions_are_steady(self) -> None:
        s = _steady(client_view=[EAST, WEST, EAST], expected_client_regions=[EAST, WEST])
        assert steady_state_problems(s) == []

    def test_a_region_without_a_routed_health_check_is_named(self) -> None:
        (problem,) = steady_state_problems(_steady(unrouted=[WEST]))
        assert problem.startswith("us-west-2: the failover name has no record with a health check")


def _probe(t: float, *, ok: bool, west: bool | None = True) -> Observation:
    return Observation(
        mono=100 + t,
        wall=1_700_000_000 + t,
        health={EAST: False, WEST: west},
        query=QueryProbe(ok=ok, region=WEST if ok else None),
    )


class TestAbortReasons:
    def _reason(self, obs: list[Observation], **kw: object) -> str | None:
        args: dict[str, object] = {
            "secondaries": [WEST],
            "abort_after": 3,
            "failing_limit_s": 5.0,
            "since_mono": 100.0,
        }
        args.update(kw)
        return abort_reason(obs, **args)  # type: ignore[arg-type]

    def test_a_normal_failover_goes_on(self) -> None:
        obs = [_probe(t, ok=t >= 2) for t in (0, 1, 2, 3)]
        assert self._reason(obs) is None

    def test_route53_reporting_the_secondary_unhealthy_aborts(self) -> None:
        obs = [_probe(t, ok=False, west=False) for t in (0, 1, 2)]
        assert "secondary failing too" in (self._reason(obs) or "")
        assert self._reason(obs[:2]) is None  # not yet abort_after observations

    def test_an_unreadable_verdict_on_the_secondary_aborts(self) -> None:
        obs = [_probe(t, ok=True, west=None) for t in (0, 1, 2)]
        assert "unreadable for 3 consecutive probes" in (self._reason(obs) or "")
        mixed = [_probe(0, ok=True, west=None), _probe(1, ok=True), _probe(2, ok=True, west=None)]
        assert self._reason(mixed) is None

    def test_queries_failing_beyond_the_worst_case_abort_even_with_healthy_checks(self) -> None:
        obs = [_probe(t * 0.5, ok=False) for t in range(12)]  # 5.5 s of failures, limit 5 s
        reason = self._reason(obs) or ""
        assert reason.startswith("queries through the failover name have failed for 5.5 s")
        assert self._reason(obs[:10]) is None  # 4.5 s: within the limit

    def test_a_good_answer_restarts_the_failure_clock(self) -> None:
        obs = [_probe(t * 0.5, ok=t == 6) for t in range(12)]
        assert self._reason(obs) is None


def test_a_verdict_not_read_yet_is_not_an_unreadable_one() -> None:
    unread = [
        Observation(mono=100 + t, wall=1_700_000_000 + t, health={EAST: False}, query=QueryProbe(ok=True))
        for t in range(5)
    ]
    reason = abort_reason(unread, secondaries=[WEST], abort_after=3, failing_limit_s=9, since_mono=100)
    assert reason is None
