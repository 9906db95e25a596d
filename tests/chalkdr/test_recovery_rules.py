"""Recovery and readiness rules without I/O: what a reading means for a failover."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalkdr.drill import LagReading
from chalkdr.readiness import MIN_ARC_ENDPOINTS
from chalkdr.readiness import ReadinessReport
from chalkdr.readiness import ReadinessStatus
from chalkdr.readiness import arc_checks
from chalkdr.readiness import aurora_check
from chalkdr.readiness import capacity_check
from chalkdr.readiness import dynamodb_checks
from chalkdr.readiness import record_checks
from chalkdr.readiness import render_readiness_markdown
from chalkdr.readiness import reverse_replicator_checks
from chalkdr.readiness import serving_check
from chalkdr.recovery import Assessment
from chalkdr.recovery import CapacityChange
from chalkdr.recovery import FailoverReport
from chalkdr.recovery import RecoveryMode
from chalkdr.recovery import RegionReading
from chalkdr.recovery import TrafficChange
from chalkdr.recovery import aurora_problems
from chalkdr.recovery import mode_problems
from chalkdr.recovery import new_recovery_id
from chalkdr.recovery import region_of_arn
from chalkdr.recovery import render_recovery_markdown
from chalkdr.recovery import target_problems

READY, WARNING, NOT_READY = ReadinessStatus.READY, ReadinessStatus.WARNING, ReadinessStatus.NOT_READY


def healthy(region: str = "us-west-2", **over: object) -> RegionReading:
    base: dict[str, object] = dict(
        region=region,
        healthz=True,
        query_ok=True,
        deployment_id="dep-1",
        query_servers=(2, 2),
        persistence_workers=(1, 1),
        aurora_cluster_arn=f"arn:aws:rds:{region}:123456789012:cluster:c",
        aurora_status="available",
        aurora_instances=1,
        aurora_is_writer=False,
        aurora_lag_ms=120.0,
    )
    return RegionReading.model_validate({**base, **over})


# -- failover's assessment -----------------------------------------------------------------------


def test_a_healthy_secondary_has_no_problem() -> None:
    assert target_problems(healthy()) == []


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"healthz": False, "healthz_detail": "503"}, "/healthz is not serving (503)"),
        ({"query_ok": False, "query_error": "timeout"}, "probe query"),
        ({"query_servers": None}, "could not be read"),
        ({"query_servers": (0, 2)}, "no query server is ready"),
        ({"aurora_status": None}, "could not be read"),
        ({"aurora_status": "modifying"}, "modifying, not available"),
        ({"aurora_instances": 0}, "no DB instance"),
    ],
)
def test_each_target_problem_is_named(over: dict[str, object], needle: str) -> None:
    problems = target_problems(healthy(**over))
    assert any(needle in p for p in problems), problems
    assert all(p.startswith("us-west-2: ") for p in problems)


def test_the_writer_needs_no_promotion_but_a_secondary_check_still_applies() -> None:
    writer = healthy(aurora_is_writer=True, aurora_instances=0)
    assert aurora_problems(writer, must_be_secondary=False) == []
    assert aurora_problems(writer, must_be_secondary=True)


def test_graceful_needs_the_failed_regions_aurora_and_ungraceful_does_not() -> None:
    gone = healthy("us-east-1", aurora_status=None)
    assert mode_problems(gone, RecoveryMode.UNGRACEFUL) == []
    (problem,) = mode_problems(gone, RecoveryMode.GRACEFUL)
    assert "us-east-1" in problem and "unreadable" in problem and "ungraceful" in problem
    assert mode_problems(healthy("us-east-1"), RecoveryMode.GRACEFUL) == []


@given(st.text(min_size=1, max_size=20))
def test_recovery_ids_are_tag_safe(suffix: str) -> None:
    rid = new_recovery_id("failover", 1_780_000_000, suffix)
    assert rid.startswith("f20")
    assert all(c.isalnum() or c == "-" for c in rid) and rid == rid.lower()
    assert new_recovery_id("failback", 0, suffix).startswith("b1970")


@pytest.mark.parametrize(
    ("arn", "region"),
    [
        ("arn:aws:rds:us-west-2:1:cluster:c", "us-west-2"),
        ("arn:aws:route53:::healthcheck/x", None),
        ("not-an-arn", None),
        (None, None),
        ("", None),
    ],
)
def test_region_of_arn(arn: str | None, region: str | None) -> None:
    assert region_of_arn(arn) == region


def test_the_report_says_how_traffic_moved_and_through_which_endpoint() -> None:
    report = FailoverReport(
        recovery_id="f1",
        environment="prod",
        to_region="us-west-2",
        from_regions=["us-east-1"],
        traffic_via="arc-routing-control",
        control_plane_used=False,
        traffic=[
            TrafficChange(
                region="us-east-1", via="arc-routing-control", action="set Off", endpoint="eu-west-1"
            )
        ],
        capacity=[
            CapacityChange(
                region="us-west-2", deployment="q", previous=1, desired=3, changed=True, hpa="q-hpa"
            )
        ],
        notes=["the ARC configuration API was unreachable"],
        assessment=Assessment(target=healthy(), others=[healthy("us-east-1")]),
    )
    md = render_recovery_markdown(report)
    assert "| traffic moved by | arc-routing-control |" in md
    assert "| Route 53 control plane used | no" in md
    assert "routing control via endpoint eu-west-1 | set Off" in md
    assert "HPA q-hpa minReplicas | 1 → 3" in md
    assert "## Notes" in md and "unreachable" in md


# -- readiness ------------------------------------------------------------------------------------


def test_serving_and_capacity_verdicts() -> None:
    assert serving_check(healthy()).status is READY
    assert serving_check(healthy(healthz=False)).status is NOT_READY
    primary = healthy("us-east-1", query_servers=(4, 4))
    assert capacity_check(healthy(query_servers=(4, 4)), primary).status is READY
    fewer = capacity_check(healthy(query_servers=(2, 2)), primary)
    assert fewer.status is WARNING and "primary serves with 4" in fewer.detail
    assert capacity_check(healthy(query_servers=(0, 2)), primary).status is NOT_READY
    assert capacity_check(healthy(query_servers=None), primary).status is NOT_READY
    unknown = capacity_check(healthy(query_servers=(2, 2)), healthy("us-east-1", query_servers=None))
    assert unknown.status is READY and "unreadable" in unknown.detail


@given(ready=st.integers(0, 50), serving=st.integers(0, 50))
def test_capacity_is_never_ready_with_nothing_ready_and_warns_only_below_the_primary(
    ready: int, serving: int
) -> None:
    verdict = capacity_check(
        healthy(query_servers=(ready, max(ready, 1))), healthy("us-east-1", query_servers=(serving, serving))
    ).status
    if ready == 0:
        assert verdict is NOT_READY
    elif ready < serving:
        assert verdict is WARNING
    else:
        assert verdict is READY


@pytest.mark.parametrize(
    ("over", "status", "needle"),
    [
        ({}, READY, "lag 120 ms"),
        ({"aurora_instances": 0}, NOT_READY, "headless secondary"),
        ({"aurora_lag_ms": None}, NOT_READY, "no AuroraGlobalDBReplicationLag"),
        ({"aurora_lag_ms": 9000.0}, NOT_READY, "above the guard"),
        ({"aurora_status": "failing-over"}, NOT_READY, "failing-over"),
        ({"aurora_status": None, "errors": ["aurora: gone"]}, NOT_READY, "aurora: gone"),
        ({"aurora_is_writer": True, "aurora_lag_ms": None}, READY, "the writer already"),
    ],
)
def test_aurora_verdicts(over: dict[str, object], status: ReadinessStatus, needle: str) -> None:
    check = aurora_check(healthy(**over), max_lag_ms=5000)
    assert check.status is status and needle in check.detail, check


def test_dynamodb_needs_an_active_replica_in_every_region() -> None:
    checks = dynamodb_checks(
        {"t": {"us-east-1": "ACTIVE", "us-west-2": "UPDATING"}}, ["us-east-1", "us-west-2", "eu-west-1"]
    )
    assert [c.status for c in checks] == [READY, NOT_READY, NOT_READY]
    assert "missing" in checks[2].detail


def test_a_missing_reverse_replicator_is_not_ready_only_when_the_topology_asks_for_it() -> None:
    statuses = {"us-west-2": None, "eu-west-1": "RUNNING"}
    required = reverse_replicator_checks(statuses, required=True, primary="us-east-1")
    assert [(c.region, c.status) for c in required] == [("eu-west-1", READY), ("us-west-2", NOT_READY)]
    optional = reverse_replicator_checks(statuses, required=False, primary="us-east-1")
    assert optional[1].status is WARNING and "would lose" in optional[1].detail


def test_arc_needs_enough_endpoints_and_every_control() -> None:
    regions = ["us-east-1", "us-west-2"]
    assert arc_checks(configured=False, endpoints={}, controls={}, regions=regions) == []
    ok = arc_checks(
        configured=True,
        endpoints={"us-east-1": False, "us-west-2": True, "eu-west-1": True},
        controls={"us-east-1": "On", "us-west-2": "On"},
        regions=regions,
    )
    assert [c.status for c in ok] == [READY, READY, READY]
    assert "2/3 cluster endpoints answer" in ok[0].detail
    one = arc_checks(
        configured=True, endpoints={"us-west-2": True, "eu-west-1": False}, controls={}, regions=regions
    )
    assert one[0].status is NOT_READY and MIN_ARC_ENDPOINTS == 2
    assert all(c.status is NOT_READY and "missing" in c.detail for c in one[1:])
    none = arc_checks(configured=True, endpoints={"us-west-2": False}, controls={}, regions=regions)
    assert "no cluster endpoint answered" in none[1].detail


def test_records_need_a_health_check_each() -> None:
    assert [c.status for c in record_checks({"a": "hc-1", "b": None}, ["a", "b", "c"])] == [
        READY,
        NOT_READY,
        NOT_READY,
    ]
    (unreadable,) = record_checks(None, ["a"])
    assert unreadable.status is NOT_READY


def test_the_report_is_ready_only_without_a_not_ready_check_and_says_why() -> None:
    report = ReadinessReport(
        environment="prod",
        evaluation_id="r1",
        evaluated_at="2026-12-02T00:00:00+00:00",
        targets=["us-west-2"],
        checks=[
            serving_check(healthy()),
            capacity_check(healthy(query_servers=(1, 1)), healthy("us-east-1")),
        ],
    )
    assert report.ready and len(report.warnings) == 1
    report.checks.append(aurora_check(healthy(aurora_instances=0), max_lag_ms=5000))
    assert not report.ready
    (reason,) = report.reasons()
    assert reason.startswith("aurora (us-west-2): headless secondary")
    md = render_readiness_markdown(report)
    assert "NOT READY" in md and "## Why not ready" in md and "## Warnings" in md


def test_lags_render_in_the_assessment() -> None:
    a = Assessment(
        target=healthy(),
        others=[healthy("us-east-1", errors=["aurora: ConnectionClosedError"])],
        lags={"msk:x:latency": LagReading(value=None, limit=10000, unit="ms")},
    )
    report = FailoverReport(
        recovery_id="f2", environment="prod", to_region="us-west-2", from_regions=["us-east-1"], assessment=a
    )
    md = render_recovery_markdown(report)
    assert "lag msk:x:latency: no data" in md and "ConnectionClosedError" in md
