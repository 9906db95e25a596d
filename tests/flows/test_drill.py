"""The drill against the sandbox world: scenarios, RTO accuracy, safety, evidence in the backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.variables import Variable

from chalkdr.clients import AwsClients
from chalkdr.report import DrillReport
from chalkdr.report import PhaseStatus
from sandbox.metrics import recent_datapoints
from tasks.locks import KILL_SWITCH_VARIABLE
from tasks.locks import ensure_lock
from tasks.probes import ProbeSet
from tasks.probes import take_observation
from tasks.route53 import discover_routing

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(240)]
INTERVAL = 0.5  # the probe interval run_drill uses


def primary_state(world: Any) -> dict[str, Any]:
    return dict(world_regions(world)["us-east-1"])


def health_checks_inverted() -> list[bool]:
    r53 = boto3.client("route53", region_name="us-east-1")
    checks = r53.list_health_checks()["HealthChecks"]
    return [bool(c["HealthCheckConfig"].get("Inverted")) for c in checks]


def world_regions(world: Any) -> dict[str, Any]:
    body = httpx.get(f"{world.aws_endpoint}/_sandbox/world", timeout=10, trust_env=False).json()
    return dict(body["regions"])


def test_query_servers_down_measures_rto_against_ground_truth(
    world: Any, run_drill: Callable[..., DrillReport]
) -> None:
    started = time.time()
    report = run_drill(world, scenario="query-servers-down")
    assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
    assert report.passed, report.slos
    assert report.failover is not None and report.failback is not None
    inject_wall = next(e.wall for e in report.timeline if e.event == "fault injected")
    regions = world_regions(world)
    secondary = sorted(regions["us-west-2"]["alb_addresses"])
    record = world.topology.route53.failover_record
    # Ground truth: when Route 53's name server first answered the failover name with the
    # secondary ALB's addresses (an alias is answered with addresses, never the ALB's name).
    flips = [
        e
        for e in world.truth("route53.dns_answer", since=started)
        if e["record"] == record and sorted(e["answer"]) == secondary
    ]
    assert flips, "Route 53 never answered the failover name with the secondary's addresses"
    truth_rto = flips[0]["ts"] - inject_wall
    assert report.rto_s is not None
    # The probe resolves uncached, on a fresh connection: it sees the flip when Route 53 makes it.
    # Adaptive probing polls every 0.1 s around the expected flip, whatever the interval.
    assert abs(report.rto_s - truth_rto) <= 0.25, (report.rto_s, truth_rto)
    # Failover cannot beat the configured detection time (interval x threshold, scaled): not in
    # Route 53's ground truth, and not in what the drill saw of Route 53's verdict (read at most
    # once a second per account, so the loop may end before it reads the primary's check again).
    checks = {
        c["Id"]: c["CallerReference"]
        for c in boto3.client("route53", region_name="us-east-1").list_health_checks()["HealthChecks"]
    }
    primary_check = next(i for i, ref in checks.items() if "-us-east-1-" in ref)
    unhealthy = [
        e
        for e in world.truth("route53.health_check", since=started)
        if e["health_check_id"] == primary_check and e["healthy"] is False
    ]
    assert unhealthy and unhealthy[0]["ts"] - inject_wall >= 1.0
    assert report.failover.health_flip_s is None or report.failover.health_flip_s >= 1.0
    assert report.rpo.canary_replication_lag_s is not None
    assert primary_state(world)["query_ready_replicas"] == 2  # restored

    # The canary went through Chalk (upload -> the primary's persistence topic -> its workers ->
    # the online store) and stays there, replicated, like any feature row: nothing deletes it.
    key = f"chalkdr_canary.{report.drill_id}"
    persisted = [e for e in world.truth("chalk.persisted", since=started) if e["key"] == key]
    assert [e["region"] for e in persisted] == ["us-east-1"]
    for region in ("us-east-1", "us-west-2"):
        item = boto3.client("dynamodb", region_name=region).get_item(
            TableName="chalk-online-store", Key={"pk": {"S": key}}, ConsistentRead=True
        )["Item"]
        assert item["chalkdr_canary.value"]["S"].startswith(f"{report.drill_id}@"), region


def test_the_failover_probe_attributes_answers_by_address(world: Any) -> None:
    """The drill's failover probe resolves the name itself, connects to an address it got, and
    maps that address to a region by the ALB addresses discovered for each region."""
    t = world.topology
    alb = {r: sorted(v["alb_addresses"]) for r, v in world_regions(world).items()}
    clients = AwsClients.for_topology(t)
    probes = ProbeSet.for_topology(t, clients)
    try:
        routing = discover_routing(t, clients, probes.resolver)
        assert {r: sorted(a) for r, a in routing.addresses.items()} == alb
        answer = probes.query(probes.failover)
        assert answer.ok and answer.address in alb["us-east-1"]
        assert sorted(answer.resolved) == alb["us-east-1"]
        seen = take_observation(probes, routing, canary_id=None)
    finally:
        probes.close()
    assert seen.dns_answer == "us-east-1"
    assert seen.query.ok and seen.query.region == "us-east-1"
    assert seen.query.deployment_id == world_regions(world)["us-east-1"]["deployment_id"]


def test_health_check_inverted_flips_dns_and_restores(
    world: Any, run_drill: Callable[..., DrillReport]
) -> None:
    report = run_drill(world, scenario="health-check-inverted")
    assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
    assert report.failover is not None and report.failover.dns_flip_s is not None
    assert report.failover.failed_probes == 0  # the primary kept serving until DNS moved
    assert health_checks_inverted() == [False, False]


def test_replication_paused_measures_rpo_exposure(world: Any, run_drill: Callable[..., DrillReport]) -> None:
    started = time.time()
    report = run_drill(world, scenario="replication-paused", hold_seconds=1.5)
    assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
    rpo = report.rpo
    assert rpo.writes_held_back
    assert rpo.exposure_s is not None and rpo.exposure_s >= 1.5
    assert [s.name for s in report.slos] == ["RPO"]
    # The pause is not instant (FIS: replication may continue for a while after the action
    # begins): the drill wrote canaries until one was held back, and says when that was.
    assert rpo.pause_effective_after_s is not None and rpo.pause_effective_after_s > 0
    assert rpo.pause_probe_writes >= 1
    written = [e for e in world.truth("chalk.persisted", since=started) if "-held-" in e["key"]]
    assert len({e["key"] for e in written}) == rpo.pause_probe_writes
    # ...and not before the pause really took hold (ground truth), give or take one of the
    # windows the drill waits for a canary to replicate.
    (effective,) = world.truth("fis.pause_effective", since=started)
    inject_wall = next(e.wall for e in report.timeline if e.event == "fault injected")
    assert rpo.canary_replication_lag_s is not None
    window = max(3 * rpo.canary_replication_lag_s, INTERVAL)
    assert inject_wall + rpo.pause_effective_after_s >= effective["ts"] - window - INTERVAL


def test_kill_switch_aborts_a_running_drill_and_restores(
    world: Any, run_drill: Callable[..., DrillReport]
) -> None:
    def engage_when_injected() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if primary_state(world)["query_ready_replicas"] == 0:
                Variable.set(KILL_SWITCH_VARIABLE, {"engaged": True, "reason": "test abort"}, overwrite=True)
                return
            time.sleep(0.05)

    t = threading.Thread(target=engage_when_injected, daemon=True)
    t.start()
    try:
        report = run_drill(world, scenario="query-servers-down", hold_seconds=30)
        t.join(5)
        assert report.outcome is PhaseStatus.ABORTED
        assert "test abort" in (report.outcome_reason or "")
        (restored,) = report.phases["failback"].detail["restored"]
        assert restored.startswith("deployment us-east-1/chalk/chalk-query-server: replicas restored to 2")
        assert primary_state(world)["query_ready_replicas"] == 2
        refused = run_drill(world)
        assert refused.outcome is PhaseStatus.ABORTED and "refused" in (refused.outcome_reason or "")
    finally:
        Variable.set(KILL_SWITCH_VARIABLE, {"engaged": False}, overwrite=True)


def test_second_drill_on_the_environment_is_refused(
    world: Any, run_drill: Callable[..., DrillReport]
) -> None:
    name = ensure_lock(f"drill-{world.topology.environment}")
    with concurrency(name, occupy=1, strict=True):
        report = run_drill(world, wait_for_lock_seconds=2.0)
    assert report.outcome is PhaseStatus.ABORTED
    assert report.outcome_reason == (
        "another drill, failover, failback, sweep or provision apply of demo holds the lock drill-demo"
    )
    assert report.phases["lock"].status is PhaseStatus.ABORTED


def test_evidence_is_in_the_backend(world: Any, run_drill: Callable[..., DrillReport]) -> None:
    report = run_drill(world, scenario="health-check-inverted", dry_run=True)
    assert report.outcome is PhaseStatus.COMPLETED and report.phases["inject"].status is PhaseStatus.SKIPPED

    async def read() -> tuple[list[Any], list[Any]]:
        from prefect.client.schemas.filters import ArtifactFilter
        from prefect.client.schemas.filters import ArtifactFilterKey
        from prefect.events.filters import EventFilter
        from prefect.events.filters import EventNameFilter
        from prefect.events.filters import EventResourceFilter

        async with get_client() as client:
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"drill-{report.environment}"]))
            )
            events = await client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(prefix=["chalkdr.drill.phase."]),
                    resource=EventResourceFilter(id=[f"chalkdr.drill.{report.drill_id}"]),
                ),
                limit=50,
            )
        return list(artifacts), list(events.events)

    import asyncio

    deadline = time.monotonic() + 30
    while True:
        artifacts, events = asyncio.run(read())
        names = {e.event for e in events}
        if {
            "chalkdr.drill.phase.preflight",
            "chalkdr.drill.phase.postflight",
        } <= names or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert any(report.drill_id in (a.description or "") for a in artifacts)
    assert {
        "chalkdr.drill.phase.preflight",
        "chalkdr.drill.phase.canary",
        "chalkdr.drill.phase.postflight",
    } <= names


def _paused_run_id(deadline_s: float = 60) -> Any:
    from prefect.client.schemas.filters import FlowRunFilter
    from prefect.client.schemas.filters import FlowRunFilterState
    from prefect.client.schemas.filters import FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + deadline_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            if runs:
                return runs[0].id
            time.sleep(0.2)
    raise AssertionError("the drill never paused for approval")


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "rejected"])
def test_approval_form_gates_the_injection(
    world: Any, approve: bool, run_drill: Callable[..., DrillReport]
) -> None:
    from prefect.flow_runs import resume_flow_run

    result: dict[str, DrillReport] = {}
    worker = threading.Thread(
        target=lambda: result.setdefault(
            "r", run_drill(world, scenario="health-check-inverted", require_approval=True)
        ),
        daemon=True,
    )
    worker.start()
    run_id = _paused_run_id()
    assert health_checks_inverted() == [False, False]  # nothing injected while waiting
    resume_flow_run(run_id, run_input={"approve": approve, "approver": "sre-oncall", "comment": "game day"})
    worker.join(120)
    report = result["r"]
    assert report.approver == "sre-oncall" and report.approval_comment == "game day"
    if approve:
        assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
        assert report.phases["inject"].status is PhaseStatus.COMPLETED
    else:
        assert report.outcome is PhaseStatus.ABORTED and "not approved" in (report.outcome_reason or "")
        assert report.phases["inject"].status is PhaseStatus.PENDING


@pytest.fixture
def own_world(own_world_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A world of the test's own: a lag spike stays in CloudWatch's current period, so it must not
    reach the worlds other tests drill in."""
    world = own_world_factory("--environment", "lagspike").provision()
    for key, value in world.env.items():
        monkeypatch.setenv(key, value)
    return world


def test_failing_preflight_touches_nothing(own_world: Any, run_drill: Callable[..., DrillReport]) -> None:
    world = own_world
    set_lag = f"{world.aws_endpoint}/_sandbox/msk/lag"
    name = world.topology.msk.replicator_name
    httpx.post(
        set_lag,
        json={"replicator_name": name, "latency_ms": 999_999, "message_lag": 5},
        timeout=10,
        trust_env=False,
    )
    try:
        # Wait until the spike is in CloudWatch (the replicator publishes about once a second).
        cloudwatch = boto3.client("cloudwatch", region_name="us-west-2")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            points = recent_datapoints(
                cloudwatch, "AWS/Kafka", "ReplicationLatency", {"ReplicatorName": name}, minutes=5
            )
            if any(p["Maximum"] >= 999_999 for p in points):
                break
            time.sleep(0.2)
        started = time.time()
        report = run_drill(world, scenario="query-servers-down", steady_state_wait_seconds=0)
        assert report.outcome is PhaseStatus.ABORTED, report.outcome_reason
        assert "exceeds the guard" in (report.outcome_reason or "")
        assert report.phases["inject"].status is PhaseStatus.PENDING
        mutations = [
            e
            for e in world.truth(since=started)
            if e["kind"] in ("kube.ready", "fis.experiment", "route53.health_check")
        ]
        assert mutations == []
        assert primary_state(world)["query_ready_replicas"] == 2
    finally:
        httpx.post(
            set_lag,
            json={"replicator_name": name, "latency_ms": 50, "message_lag": 5},
            timeout=10,
            trust_env=False,
        )
