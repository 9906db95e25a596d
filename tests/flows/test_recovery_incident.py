"""Incident failover when a region is really gone: its AWS API unreachable (us-east-1's, and with
it Route 53's control plane), through ARC routing controls or Route 53's own health checks; an
HPA-managed Deployment scaled through its HPA; readiness evaluated and repaired by provision.

Two worlds: the session's default one (no ARC) and one of this module with ARC routing controls
and failback readiness, provisioned here. Every test leaves its world as it found it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import httpx
import pytest

from chalkdr.clients import AwsClients
from chalkdr.readiness import ReadinessReport
from chalkdr.readiness import ReadinessStatus
from chalkdr.recovery import FailbackReport
from chalkdr.recovery import FailoverReport
from chalkdr.report import PhaseStatus
from sandbox.harness import poll
from tasks.probes import ProbeSet
from tasks.probes import take_observation
from tasks.route53 import discover_routing

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(900)]
EAST, WEST = "us-east-1", "us-west-2"
INTERVAL = 0.5


# -- helpers ------------------------------------------------------------------------------------


def _run(flow_fn: Any, world: Any, **params: Any) -> Any:
    params.setdefault("require_approval", False)
    params.setdefault("probe_interval_seconds", INTERVAL)
    with world.environment():
        state = flow_fn(topology=str(world.topology_path), return_state=True, **params)
        return state.result(raise_on_failure=False)


def failover(world: Any, **params: Any) -> FailoverReport:
    from flows.recovery import failover as flow

    report = _run(flow, world, **{"from_region": EAST, **params})
    assert isinstance(report, FailoverReport), report
    return report


def failback(world: Any, settled: Any, **params: Any) -> FailbackReport:
    """A failback once the world's lags are within their guards (`settled`, the fixture)."""
    from flows.recovery import failback as flow

    settled(world)
    report = _run(flow, world, **{"to_region": EAST, **params})
    assert isinstance(report, FailbackReport), report
    return report


def readiness(world: Any) -> tuple[bool, ReadinessReport]:
    from flows.readiness import recovery_readiness

    with world.environment():
        state = recovery_readiness(topology=str(world.topology_path), return_state=True)
        report = state.result(raise_on_failure=False)
    assert isinstance(report, ReadinessReport), report
    return state.is_completed(), report


@contextmanager
def unreachable(world: Any, region: str) -> Iterator[None]:
    """`region`'s AWS API does not answer (Route 53's control plane too, for us-east-1)."""

    def post(flag: bool) -> None:
        httpx.post(
            f"{world.aws_endpoint}/_sandbox/aws/unreachable",
            json={"region": region, "unreachable": flag},
            timeout=10,
            trust_env=False,
        ).raise_for_status()

    post(True)
    try:
        yield
    finally:
        post(False)


def aws(world: Any, service: str, region: str) -> Any:
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=world.aws_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def writer_region(world: Any) -> str:
    gid = world.topology.aurora.global_cluster_id
    (gc,) = aws(world, "rds", WEST).describe_global_clusters(GlobalClusterIdentifier=gid)["GlobalClusters"]
    (writer,) = [m["DBClusterArn"] for m in gc["GlobalClusterMembers"] if m.get("IsWriter")]
    return str(writer.split(":")[3])


def kube(world: Any, region: str) -> Any:
    t = world.topology
    r = t.region(region)
    with world.environment():
        return AwsClients.for_topology(t).kube(r.eks.cluster_name, region)


def scale_query_servers(world: Any, region: str, replicas: int) -> None:
    r = world.topology.region(region)
    kube(world, region).apps().patch_namespaced_deployment_scale(
        r.eks.query_server_deployment, r.eks.namespace, {"spec": {"replicas": replicas}}
    )


def query_replicas(world: Any, region: str) -> tuple[int, int]:
    r = world.topology.region(region)
    dep = (
        kube(world, region).apps().read_namespaced_deployment(r.eks.query_server_deployment, r.eks.namespace)
    )
    return int(dep.status.ready_replicas or 0), int(dep.spec.replicas or 0)


def client_view(world: Any) -> str | None:
    t = world.topology
    with world.environment():
        clients = AwsClients.for_topology(t)
        probes = ProbeSet.for_topology(t, clients)
        try:
            routing = discover_routing(t, clients, probes.resolver)
            seen = take_observation(probes, routing, canary_id=None)
        finally:
            probes.close()
    return seen.query.region if seen.query.ok else None


def await_clients_on(world: Any, region: str) -> None:
    poll(lambda: client_view(world) == region, timeout=120, what=f"clients on {region}", every=0.5)


def routing_control_states(world: Any) -> dict[str, str]:
    """Each region's routing-control state, through the ARC cluster's own endpoints."""
    from tasks.arc_routing import read_arc_directory
    from tasks.arc_routing import read_routing_control_states
    from tasks.arc_routing import region_states

    with world.environment():
        clients = AwsClients.for_topology(world.topology)
        directory = read_arc_directory(clients, world.topology)
        states = region_states(directory, read_routing_control_states(clients, directory))
    return {region: str(state) for region, state in states.items()}


def route53_calls_since(world: Any, since: float) -> list[dict[str, Any]]:
    return [e for e in world.truth("route53.call", since=since)]


# -- worlds ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arc_world(session_world_factory: Any, prefect_backend: None) -> Any:
    """A world whose topology asks for ARC routing controls and reverse replication, provisioned."""
    return session_world_factory("arc", "--arc", "--failback-readiness").provision()


# -- ARC ----------------------------------------------------------------------------------------


def test_provisioned_arc_world_is_ready_and_routes_by_the_failover_records(arc_world: Any) -> None:
    assert routing_control_states(arc_world) == {EAST: "On", WEST: "On"}
    assert client_view(arc_world) == EAST
    ready, report = readiness(arc_world)
    assert ready, report.reasons()
    checks = {(c.check, c.region) for c in report.checks}
    assert ("arc", None) in checks and ("reverse-replicator", WEST) in checks
    assert ("aurora", WEST) in checks and ("dynamodb", WEST) in checks


def test_failover_with_us_east_1_unreachable_goes_through_arc_and_fails_back(
    arc_world: Any, settled: Any
) -> None:
    """us-east-1's AWS API (so Route 53's control plane) does not answer, while its query servers
    still do (/healthz passes: Route 53's health checks would never move the traffic): only the
    routing controls, set through a cluster endpoint outside us-east-1, can."""
    assert writer_region(arc_world) == EAST and client_view(arc_world) == EAST
    started = time.time()
    with unreachable(arc_world, EAST):
        refused = failover(arc_world, mode="graceful")
        assert refused.outcome is PhaseStatus.ABORTED
        assert "graceful switchover needs it available" in (refused.outcome_reason or ""), (
            refused.outcome_reason
        )
        assert refused.changes == []

        report = failover(arc_world, mode="ungraceful")
        assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
        assert report.traffic_via == "arc-routing-control" and report.control_plane_used is False
        assert {(t.region, t.action) for t in report.traffic} == {(EAST, "set Off"), (WEST, "already On")}
        (endpoint,) = {t.endpoint for t in report.traffic}
        assert endpoint is not None and endpoint != EAST
        assert report.aurora is not None and report.aurora.operation == "failover"
        assert report.rto_s is not None
        # No Route 53 control-plane request reached Route 53 while us-east-1 was unreachable.
        assert route53_calls_since(arc_world, started) == []
        assert writer_region(arc_world) == WEST
        assert report.client_view is not None and report.client_view.first_good_answer_s is not None
    await_clients_on(arc_world, WEST)  # (reads the records: Route 53's control plane is back)
    assert routing_control_states(arc_world) == {EAST: "Off", WEST: "On"}

    back = failback(arc_world, settled)
    assert back.outcome is PhaseStatus.COMPLETED, back.outcome_reason
    assert routing_control_states(arc_world) == {EAST: "On", WEST: "On"}
    assert writer_region(arc_world) == EAST
    await_clients_on(arc_world, EAST)


def test_readiness_fails_for_a_headless_secondary_and_a_missing_reverse_replicator_until_provision(
    arc_world: Any,
) -> None:
    t = arc_world.topology
    west = t.region(WEST)
    rds = aws(arc_world, "rds", WEST)
    (instance,) = rds.describe_db_clusters(DBClusterIdentifier=west.aurora_cluster_id)["DBClusters"][0][
        "DBClusterMembers"
    ]
    rds.delete_db_instance(DBInstanceIdentifier=instance["DBInstanceIdentifier"], SkipFinalSnapshot=True)
    from chalkdr.plan.msk import reverse_replicator_name

    kafka = aws(arc_world, "kafka", EAST)
    name = reverse_replicator_name(t, WEST)
    (rep,) = [r for r in kafka.list_replicators()["Replicators"] if r["ReplicatorName"] == name]
    kafka.delete_replicator(ReplicatorArn=rep["ReplicatorArn"])
    poll(
        lambda: not [r for r in kafka.list_replicators()["Replicators"] if r["ReplicatorName"] == name],
        timeout=60,
        what="the reverse replicator deleted",
        every=0.2,
    )

    ready, report = readiness(arc_world)
    assert not ready
    bad = {(c.check, c.region): c.detail for c in report.not_ready}
    assert "headless secondary" in bad[("aurora", WEST)], bad
    assert "missing" in bad[("reverse-replicator", WEST)], bad

    arc_world.provision()
    # The new instance and the new replicator (from LATEST) need a moment to publish their lags.
    last: list[ReadinessReport] = []

    def ready_now() -> bool:
        ok, rep = readiness(arc_world)
        last[:] = [rep]
        return ok

    poll(ready_now, timeout=180, what="readiness after provision", every=1.0)
    report = last[0]
    assert all(c.status is not ReadinessStatus.NOT_READY for c in report.checks)


# -- no routing controls -------------------------------------------------------------------------


def test_without_routing_controls_a_region_really_down_fails_over_by_its_health_checks(
    world: Any, settled: Any
) -> None:
    """us-east-1 down: its query servers gone and its AWS API (with Route 53's control plane)
    unreachable. The failover cannot invert anything; Route 53's health checks move the traffic,
    and the report says the control plane was not used."""
    assert writer_region(world) == EAST and client_view(world) == EAST
    before = query_replicas(world, EAST)
    try:
        scale_query_servers(world, EAST, 0)  # through EKS's API, which is about to be unreachable too
        with unreachable(world, EAST):
            report = failover(world, mode="ungraceful")
            assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
            assert report.traffic_via == "health-check-failover"
            assert report.control_plane_used is False
            assert any("control plane" in n for n in report.notes), report.notes
            assert writer_region(world) == WEST
            assert report.client_view is not None and report.rto_s is not None
    finally:
        scale_query_servers(world, EAST, before[1])
        poll(lambda: query_replicas(world, EAST)[0] == before[1], timeout=60, what="east ready", every=0.2)
    back = failback(world, settled)
    assert back.outcome is PhaseStatus.COMPLETED, back.outcome_reason
    assert writer_region(world) == EAST
    await_clients_on(world, EAST)


# -- HPA ------------------------------------------------------------------------------------------


def test_an_hpa_managed_deployment_is_scaled_through_its_hpa(world: Any, settled: Any) -> None:
    t = world.topology
    west = t.region(WEST)
    api = kube(world, WEST).autoscaling()
    name = f"{west.eks.query_server_deployment}-hpa"
    api.create_namespaced_horizontal_pod_autoscaler(
        west.eks.namespace,
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name},
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": west.eks.query_server_deployment,
                },
                "minReplicas": 2,
                "maxReplicas": 3,
            },
        },
    )
    try:
        report = failover(world, mode="graceful", min_replicas=4)
        assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
        (qs,) = [c for c in report.capacity if c.deployment == west.eks.query_server_deployment]
        assert (qs.hpa, qs.previous, qs.desired, qs.changed) == (name, 2, 4, True)
        assert (qs.hpa_max_previous, qs.hpa_max_desired) == (3, 4)
        hpa = api.read_namespaced_horizontal_pod_autoscaler(name, west.eks.namespace)
        assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (4, 4)
        assert query_replicas(world, WEST) == (4, 4)  # the HPA scaled it; nothing patched replicas
        back = failback(world, settled)
        assert back.outcome is PhaseStatus.COMPLETED, back.outcome_reason
        hpa = api.read_namespaced_horizontal_pod_autoscaler(name, west.eks.namespace)
        assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 3)
        assert not any(k.startswith("chalk-dr/") for k in (hpa.metadata.annotations or {}))
        # Within its bounds again, the HPA (no metrics here) brings it to its max: 4 > 3.
        poll(lambda: query_replicas(world, WEST) == (3, 3), timeout=60, what="the HPA's max", every=0.2)
    finally:
        api.delete_namespaced_horizontal_pod_autoscaler(name, west.eks.namespace)
        scale_query_servers(world, WEST, 2)
        poll(lambda: query_replicas(world, WEST) == (2, 2), timeout=60, what="west back to 2", every=0.2)
