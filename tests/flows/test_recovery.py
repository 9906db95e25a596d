"""Failover and failback against the sandbox world: the writer, the traffic and the capacity move
and come back; a re-run repeats nothing; an unhealthy target is refused with nothing changed.

The world is shared by the module: every test leaves it as it found it (a failback, or its own
restore, in a `finally`), and checks that against the layout read before it started.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any
from typing import TypeVar

import boto3
import httpx
import pytest
from prefect.variables import Variable

from chalkdr.clients import AwsClients
from chalkdr.recovery import FailbackReport
from chalkdr.recovery import FailoverReport
from chalkdr.report import PhaseStatus
from sandbox.harness import poll
from tasks.locks import KILL_SWITCH_VARIABLE
from tasks.probes import ProbeSet
from tasks.probes import canary_served
from tasks.probes import take_observation
from tasks.probes import write_canary
from tasks.route53 import discover_routing

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(600)]
EAST, WEST = "us-east-1", "us-west-2"
_R = TypeVar("_R")
INTERVAL = 0.5


def _run(flow_fn: Any, report_type: type[_R], world: Any, **params: Any) -> _R:
    params.setdefault("require_approval", False)
    params.setdefault("probe_interval_seconds", INTERVAL)
    state = flow_fn(topology=str(world.topology_path), return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, report_type), report
    return report


def run_failover(world: Any, **params: Any) -> FailoverReport:
    from flows.recovery import failover

    return _run(failover, FailoverReport, world, **{"from_region": EAST, **params})


def run_failback(world: Any, **params: Any) -> FailbackReport:
    from flows.recovery import failback

    return _run(failback, FailbackReport, world, **{"to_region": EAST, **params})


def writer_region(world: Any) -> str:
    gid = world.topology.aurora.global_cluster_id
    (gc,) = boto3.client("rds", region_name=EAST).describe_global_clusters(GlobalClusterIdentifier=gid)[
        "GlobalClusters"
    ]
    (writer,) = [m["DBClusterArn"] for m in gc["GlobalClusterMembers"] if m.get("IsWriter")]
    return str(writer.split(":")[3])


def inverted_checks() -> list[bool]:
    checks = boto3.client("route53", region_name=EAST).list_health_checks()["HealthChecks"]
    return sorted(bool(c["HealthCheckConfig"].get("Inverted")) for c in checks)


def replicas(world: Any) -> dict[str, tuple[int, int]]:
    """spec.replicas of (query servers, persistence workers) per region, through each EKS API."""
    t = world.topology
    clients = AwsClients.for_topology(t)
    out = {}
    for r in t.regions:
        kube = clients.kube(r.eks.cluster_name, r.aws_region)
        apps = kube.apps()
        out[r.aws_region] = tuple(
            int(apps.read_namespaced_deployment(d, r.eks.namespace).spec.replicas or 0)
            for d in (r.eks.query_server_deployment, r.eks.persistence_deployment)
        )
    return out  # type: ignore[return-value]


def client_view(world: Any) -> str | None:
    """The region a query through the failover name is answered by (a fresh connection)."""
    t = world.topology
    clients = AwsClients.for_topology(t)
    probes = ProbeSet.for_topology(t, clients)
    try:
        routing = discover_routing(t, clients, probes.resolver)
        seen = take_observation(probes, routing, canary_id=None)
    finally:
        probes.close()
    return seen.query.region if seen.query.ok else None


def layout(world: Any) -> dict[str, Any]:
    return {
        "writer": writer_region(world),
        "inverted": inverted_checks(),
        "replicas": replicas(world),
        "clients": client_view(world),
    }


def mutations_since(world: Any, since: float) -> list[dict[str, Any]]:
    """Ground truth of every change to Aurora's writer, Kubernetes readiness and Route 53's
    configuration (a POST naming a resource) since `since`."""
    return [
        e
        for e in world.truth(since=since)
        if e["kind"] in ("aurora.operation", "aurora.writer", "kube.ready")
        or (e["kind"] == "route53.call" and e["operation"].startswith("POST") and "{id}" in e["operation"])
    ]


def backend_evidence(names: list[str], keys: list[str], since: float) -> tuple[set[str], dict[str, str]]:
    """The names of those events that occurred since `since`, and the latest description of each
    keyed artifact, read from the Prefect backend (events are written asynchronously)."""
    import asyncio
    from datetime import UTC
    from datetime import datetime

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter
    from prefect.client.schemas.filters import ArtifactFilterKey
    from prefect.events.filters import EventFilter
    from prefect.events.filters import EventNameFilter
    from prefect.events.filters import EventOccurredFilter

    async def read() -> tuple[set[str], dict[str, str]]:
        async with get_client() as client:
            events = await client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=names),
                    occurred=EventOccurredFilter(since=datetime.fromtimestamp(since, UTC)),
                ),
                limit=50,
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
            )
        latest: dict[str, Any] = {}
        for a in artifacts:
            if a.key not in latest or a.created > latest[a.key].created:
                latest[a.key] = a
        return {e.event for e in events.events}, {k: a.description or "" for k, a in latest.items()}

    seen: tuple[set[str], dict[str, str]] = (set(), {})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = asyncio.run(read())
        if set(names) <= seen[0] and set(keys) <= set(seen[1]):
            break
        time.sleep(0.5)
    return seen


def fail_back_to_the_original(world: Any, original: dict[str, Any]) -> FailbackReport:
    back = run_failback(world)
    assert back.outcome is PhaseStatus.COMPLETED, back.outcome_reason
    assert layout(world) == original
    return back


def test_graceful_failover_moves_writer_traffic_and_capacity_and_failback_restores(world: Any) -> None:
    original = layout(world)
    assert original["writer"] == EAST and original["clients"] == EAST
    assert original["replicas"] == {EAST: (2, 1), WEST: (2, 0)}
    started = time.time()
    t = world.topology
    probes = ProbeSet.for_topology(t, AwsClients.for_topology(t))
    try:
        # A feature row written through Chalk just before the decision is not lost (RPO 0).
        canary = f"recovery-{uuid.uuid4().hex[:8]}"
        write_canary(probes, canary)
        report = run_failover(world, mode="graceful", min_replicas=3)
        assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
        assert writer_region(world) == WEST
        assert client_view(world) == WEST
        assert canary_served(probes, canary, WEST)
        assert replicas(world)[WEST] == (3, 1)  # capacity before traffic: 2 -> 3, workers 0 -> 1
        assert report.aurora is not None and report.aurora.operation == "switchover"
        assert report.aurora.lag_at_decision_ms is not None
        assert report.aurora.lag_at_decision_ms <= 1000
        assert report.msk_drained is True
        assert [(t.region, t.action) for t in report.traffic] == [(EAST, "inverted")]
        assert report.rto_s is not None and report.client_view is not None
        assert report.client_view.first_good_answer_s is not None
        (operation,) = world.truth("aurora.operation", since=started)
        assert operation["operation"] == "switchover" and operation["to_arn"].split(":")[3] == WEST
        assert {p: report.phases[p].status for p in report.PHASES} == dict.fromkeys(
            report.PHASES, PhaseStatus.COMPLETED
        ) | {"approval": PhaseStatus.SKIPPED}
        assert len(report.changes) == 4, report.changes  # two scales, the switchover, the inversion
    finally:
        probes.close()
        back = fail_back_to_the_original(world, original)
    assert back.aurora is not None and back.aurora.operation == "switchover"
    assert {(c.region, c.deployment, c.desired) for c in back.capacity} == {
        (WEST, "chalk-query-server", 2),
        (WEST, "chalk-persistence-worker", 0),
    }
    assert [(t.region, t.action) for t in back.traffic] == [(EAST, "inversion removed")]
    assert back.rto_s is not None

    # The evidence is in the backend: an audit event per mutation, the closing events, and the
    # keyed markdown artifacts naming each run.
    names = [
        "chalkdr.eks.scale-deployment",
        "chalkdr.aurora.switchover-global-cluster",
        "chalkdr.route53.invert-health-check",
        "chalkdr.route53.restore-health-check",
        "chalkdr.eks.restore-deployment",
        "chalkdr.failover.finished",
        "chalkdr.failback.finished",
        "chalkdr.failover.phase.verify",
    ]
    env = world.topology.environment
    events, artifacts = backend_evidence(names, [f"failover-{env}", f"failback-{env}"], started)
    assert set(names) <= events, set(names) - events
    assert report.recovery_id in artifacts[f"failover-{env}"]
    assert back.recovery_id in artifacts[f"failback-{env}"]


def test_a_failover_in_effect_is_left_alone_by_the_sweep_and_provision_and_refuses_drills(
    world: Any, run_drill: Any
) -> None:
    """The inversion a failover made is the incident's decision: the hourly sweep and a provision
    apply leave it (a reset would send traffic back to the failed region), and a drill refuses to
    rehearse on a layout mid-incident. Only the failback restores it."""
    from flows.provision import provision
    from flows.sweep import sweep

    original = layout(world)
    try:
        report = run_failover(world, mode="graceful")
        assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
        swept = sweep(topology=str(world.topology_path), return_state=True).result(raise_on_failure=False)
        assert swept.swept == [] and inverted_checks() == [False, True]
        state = provision(
            topology=str(world.topology_path), mode="apply", require_approval=False, return_state=True
        )
        applied = state.result(raise_on_failure=False)
        assert state.is_completed(), state.message
        assert any("left inverted until failback" in w for w in applied.plan.warnings), applied.plan.warnings
        assert inverted_checks() == [False, True] and client_view(world) == WEST
        refused = run_drill(world, steady_state_wait_seconds=0)
        assert refused.outcome is PhaseStatus.ABORTED
        assert f"recovery {report.run_id} is in effect" in (refused.outcome_reason or ""), (
            refused.outcome_reason
        )
        assert refused.phases["inject"].status is PhaseStatus.PENDING
    finally:
        fail_back_to_the_original(world, original)


def test_ungraceful_failover_reports_the_lags_it_accepted(world: Any) -> None:
    original = layout(world)
    started = time.time()
    try:
        report = run_failover(world, mode="ungraceful")
        assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
        assert writer_region(world) == WEST and client_view(world) == WEST
        assert report.aurora is not None and report.aurora.operation == "failover"
        (operation,) = world.truth("aurora.operation", since=started)
        assert operation["operation"] == "failover"
        lags = report.lags_at_decision
        assert any(k.startswith("dynamodb:") for k in lags), lags
        assert any(k.endswith(":message-lag") for k in lags), lags
        assert any(k.endswith(":latency") for k in lags), lags
        assert lags[f"aurora:{world.topology.region(WEST).aurora_cluster_id}"].value is not None
        assert report.msk_drained is not None
        assert report.phases["persistence"].detail["accepted_message_lag"]
        # no capacity was needed for the query servers (2 already), only the workers were started
        assert [(c.deployment, c.changed) for c in report.capacity] == [
            ("chalk-query-server", False),
            ("chalk-persistence-worker", True),
        ]
    finally:
        fail_back_to_the_original(world, original)


def test_a_rerun_after_the_aurora_phase_does_not_switch_over_again(world: Any) -> None:
    original = layout(world)
    gid = world.topology.aurora.global_cluster_id
    rds = boto3.client("rds", region_name=WEST)
    try:
        # A failover that died right after its Aurora phase: the writer is in the target already.
        west_arn = rds.describe_db_clusters(
            DBClusterIdentifier=world.topology.region(WEST).aurora_cluster_id
        )["DBClusters"][0]["DBClusterArn"]
        rds.switchover_global_cluster(GlobalClusterIdentifier=gid, TargetDbClusterIdentifier=west_arn)
        poll(lambda: writer_region(world) == WEST, timeout=60, what="the writer in us-west-2", every=0.2)
        poll(
            lambda: (
                rds.describe_global_clusters(GlobalClusterIdentifier=gid)["GlobalClusters"][0]["Status"]
                == "available"
            ),
            timeout=60,
            what="the global cluster available",
            every=0.2,
        )
        started = time.time()
        resumed = run_failover(world)
        assert resumed.outcome is PhaseStatus.COMPLETED, resumed.outcome_reason
        assert resumed.phases["metadata"].status is PhaseStatus.SKIPPED
        assert resumed.aurora is not None and resumed.aurora.operation is None
        assert world.truth("aurora.operation", since=started) == []
        assert client_view(world) == WEST

        # ...and once it completed, a third run changes nothing at all. The kill switch, engaged
        # as operators do during an incident, stops drills, never a recovery.
        Variable.set(KILL_SWITCH_VARIABLE, {"engaged": True, "reason": "incident"}, overwrite=True)
        again_at = time.time()
        again = run_failover(world)
        assert again.outcome is PhaseStatus.COMPLETED, again.outcome_reason
        assert again.changes == []
        assert again.phases["metadata"].status is PhaseStatus.SKIPPED
        assert [t.action for t in again.traffic] == ["already inverted"]
        assert mutations_since(world, again_at) == []
    finally:
        Variable.set(KILL_SWITCH_VARIABLE, {"engaged": False}, overwrite=True)
        fail_back_to_the_original(world, original)


def scale_west_query_servers(world: Any, n: int) -> None:
    """Through us-west-2's EKS API, as an operator (or a failing node group) would; until ready."""
    t = world.topology
    west = t.region(WEST)
    kube = AwsClients.for_topology(t).kube(west.eks.cluster_name, WEST)
    kube.apps().patch_namespaced_deployment_scale(
        west.eks.query_server_deployment, west.eks.namespace, {"spec": {"replicas": n}}
    )

    def west_ready() -> int:
        body = httpx.get(f"{world.aws_endpoint}/_sandbox/world", timeout=10, trust_env=False).json()
        return int(body["regions"][WEST]["query_ready_replicas"])

    poll(lambda: west_ready() == n, timeout=60, what=f"us-west-2's query servers at {n} ready", every=0.2)


def test_an_unhealthy_target_is_refused_with_nothing_changed(world: Any) -> None:
    original = layout(world)
    try:
        scale_west_query_servers(world, 0)
        started = time.time()
        report = run_failover(world)
        assert report.outcome is PhaseStatus.ABORTED
        assert (report.outcome_reason or "").startswith("refused, nothing changed:"), report.outcome_reason
        assert "us-west-2: /healthz is not serving" in (report.outcome_reason or "")
        assert report.phases["assess"].status is PhaseStatus.ABORTED
        assert report.phases["capacity"].status is PhaseStatus.PENDING
        assert report.changes == []
        assert mutations_since(world, started) == []
        assert writer_region(world) == EAST and inverted_checks() == original["inverted"]
        assert replicas(world) == {**original["replicas"], WEST: (0, 0)}
    finally:
        scale_west_query_servers(world, 2)
    assert layout(world) == original


def test_force_goes_past_an_unhealthy_target_and_says_so(world: Any) -> None:
    """Forced, the capacity phase brings the target's query servers up before traffic moves."""
    original = layout(world)
    try:
        scale_west_query_servers(world, 0)
        report = run_failover(world, force=True)
        assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
        assert any(p.startswith("us-west-2: /healthz is not serving") for p in report.forced_past), (
            report.forced_past
        )
        assert any(e.event == "forced past" for e in report.timeline)
        (qs, _workers) = report.capacity
        assert (qs.previous, qs.desired, qs.ready, qs.changed) == (0, 2, 2, True)  # east's count
        assert writer_region(world) == WEST and client_view(world) == WEST
    finally:
        try:
            back = run_failback(world)
            assert back.outcome is PhaseStatus.COMPLETED, back.outcome_reason
            # failback restores the count recorded before the failover: the 0 this test set
            assert replicas(world)[WEST] == (0, 0)
        finally:
            scale_west_query_servers(world, 2)
    assert layout(world) == original


def _paused_failover(deadline_s: float = 60) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter
    from prefect.client.schemas.filters import FlowFilterName
    from prefect.client.schemas.filters import FlowRunFilter
    from prefect.client.schemas.filters import FlowRunFilterState
    from prefect.client.schemas.filters import FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    def paused() -> Any:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["failover"])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                ),
            )
        return runs[0] if runs else None

    return poll(paused, timeout=deadline_s, what="a failover paused for approval", every=0.2)


def test_the_approval_form_shows_the_assessment_and_a_rejection_changes_nothing(world: Any) -> None:
    from prefect.flow_runs import resume_flow_run

    original = layout(world)
    result: dict[str, FailoverReport] = {}
    worker = threading.Thread(
        target=lambda: result.setdefault("r", run_failover(world, require_approval=True)), daemon=True
    )
    started = time.time()
    worker.start()
    run = _paused_failover()
    assert writer_region(world) == EAST  # nothing changed while it waits
    from prefect.input.actions import read_flow_run_input
    from prefect.input.run_input import keyset_from_paused_state

    description = read_flow_run_input(keyset_from_paused_state(run.state)["description"], flow_run_id=run.id)
    assert "us-east-1 -> us-west-2, mode graceful" in description
    assert "**us-west-2** (target): /healthz ok" in description
    assert "Aurora writer now in us-east-1" in description
    resume_flow_run(run.id, run_input={"approve": False, "approver": "sre-oncall", "comment": "not yet"})
    worker.join(120)
    report = result["r"]
    assert report.outcome is PhaseStatus.ABORTED
    assert report.outcome_reason == "not approved by sre-oncall"
    assert report.approver == "sre-oncall" and report.approval_comment == "not yet"
    assert report.phases["capacity"].status is PhaseStatus.PENDING
    assert mutations_since(world, started) == []
    assert layout(world) == original
