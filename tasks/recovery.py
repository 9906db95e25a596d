"""Tasks for incident recovery: read a region, scale its Deployments, move the Aurora writer, steer Route 53.

Every change is an "ensure": it reads first and changes only what differs, so a failover or a
failback run again after any phase repeats nothing it finished. Each change first leaves a
durable record of what it changes (an annotation on the Deployment with its previous replica
count; tags on the health check it inverts, naming the recovery), so the failback knows what the
failover did even when the failover ran in another process long ago. Every mutating call is an
audit event (tasks/audit.py) naming the resource it touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect import get_run_logger
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Cancelling

from chalkdr.audit import AuditRecord
from chalkdr.classify import aws_call
from chalkdr.classify import classify_kube_error
from chalkdr.clients import ROUTE53_CONTROL_REGION
from chalkdr.clients import AwsClients
from chalkdr.drill import LagReading
from chalkdr.drill import Routing
from chalkdr.errors import AwsCallError
from chalkdr.errors import DrillAborted
from chalkdr.plan import RECOVERY_TAG
from chalkdr.query import healthz
from chalkdr.recovery import Assessment
from chalkdr.recovery import AuroraSwitch
from chalkdr.recovery import CapacityChange
from chalkdr.recovery import RecoveryMode
from chalkdr.recovery import RegionReading
from chalkdr.recovery import TrafficChange
from chalkdr.recovery import region_of_arn
from chalkdr.topology import RegionConfig
from chalkdr.topology import Topology
from tasks.audit import emit_audit_event
from tasks.aurora import read_db_cluster
from tasks.locks import RunRef
from tasks.locks import read_lock_record
from tasks.probes import ProbeSet
from tasks.probes import aurora_dimensions
from tasks.probes import latest_datapoint
from tasks.probes import read_capacity
from tasks.probes import read_replication_lags

__all__ = [
    "ANNOTATION_PREVIOUS_REPLICAS",
    "RECOVERY_TAG",
    "GlobalWriter",
    "await_ready",
    "cancel_running_drill",
    "ensure_capacity",
    "find_hpa",
    "invert_health_check",
    "move_aurora_writer",
    "read_aurora_lag",
    "read_global_writer",
    "read_lags",
    "read_region",
    "remove_inversion",
    "restore_capacity",
]

# The durable record of a recovery's changes. Deliberately not the drill's keys
# (chalk-dr/original-replicas, chalk-dr:drill-id): a drill's sweep restores those, and a recovery's
# capacity must stay until its failback.
ANNOTATION_RECOVERY = "chalk-dr/recovery-id"
ANNOTATION_RECOVERY_FLOW_RUN = "chalk-dr/recovery-flow-run-id"
ANNOTATION_PREVIOUS_REPLICAS = "chalk-dr/recovery-previous-replicas"
ANNOTATION_PREVIOUS_MIN_REPLICAS = "chalk-dr/recovery-previous-min-replicas"  # on an HPA
ANNOTATION_PREVIOUS_MAX_REPLICAS = "chalk-dr/recovery-previous-max-replicas"  # on an HPA
RECOVERY_FLOW_RUN_TAG = "chalk-dr:recovery-flow-run-id"
SWITCHING = {"switching-over", "failing-over"}
POLL_S = 0.2


def _audit(system: str, action: str, resource: str, region: str, api_call: str, **detail: Any) -> None:
    emit_audit_event(
        AuditRecord(
            system=system, action=action, resource=resource, region=region, api_call=api_call, detail=detail
        )
    )


def _poll(what: str, read: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float) -> Any:
    """Read until `done` or the deadline (monotonic); the last reading, or DrillAborted naming it."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = read()
        if done(seen):
            return seen
        if time.monotonic() >= deadline:
            raise DrillAborted(f"{what}: not reached within {timeout_s:.0f} s (last seen: {seen})")
        time.sleep(POLL_S)


# -- reading a region -----------------------------------------------------------------------------


def _counts(clients: AwsClients, region: RegionConfig, deployment: str) -> tuple[int, int]:
    kube = clients.kube(region.eks.cluster_name, region.aws_region)
    dep = kube.apps().read_namespaced_deployment(
        deployment, region.eks.namespace, _request_timeout=kube.request_timeout
    )
    ready = dep.status.ready_replicas if dep.status else 0  # the API omits zero counts
    return int(ready or 0), int(dep.spec.replicas or 0)


def read_aurora_lag(clients: AwsClients, region: str, cluster_id: str) -> float | None:
    """A secondary's latest AuroraGlobalDBReplicationLag (ms), under the dimension set it is
    published with (found with ListMetrics, as the drill's probes do); None: no datapoint."""
    dims = aurora_dimensions(clients, region, cluster_id)
    return latest_datapoint(clients, region, "AWS/RDS", "AuroraGlobalDBReplicationLag", dims)


def read_region(probes: ProbeSet, region: RegionConfig) -> RegionReading:
    """The region as far as it answers: /healthz and the probe query through its own hostname,
    its query servers and persistence workers, its Aurora cluster (and its lag when a secondary).
    A read that fails is recorded in `errors`; nothing here raises for an unreachable region."""
    clients, name = probes.clients, region.aws_region
    r = RegionReading(region=name)

    def attempt(what: str, read: Callable[[], None]) -> None:
        try:
            read()
        except Exception as exc:  # noqa: BLE001 - a region that does not answer is an observation
            r.errors.append(f"{what}: {type(exc).__name__}: {exc}")

    def health() -> None:
        r.healthz, r.healthz_detail = healthz(region.url, resolver=probes.resolver)

    def query() -> None:
        answer = probes.query(probes.regional[name])
        r.query_ok, r.query_error, r.deployment_id = answer.ok, answer.error, answer.deployment_id

    def query_servers() -> None:
        r.query_servers = read_capacity(clients, region)

    def persistence() -> None:
        r.persistence_workers = _counts(clients, region, region.eks.persistence_deployment)

    def aurora() -> None:
        cluster = read_db_cluster.fn(clients, name, region.aurora_cluster_id)
        if cluster is None:
            r.errors.append(f"aurora: cluster {region.aurora_cluster_id} not found in {name}")
            return
        r.aurora_cluster_arn, r.aurora_status, r.aurora_instances = (
            cluster.arn,
            cluster.status,
            cluster.instances,
        )

    attempt("healthz", health)
    attempt("query", query)
    attempt("query servers", query_servers)
    attempt("persistence workers", persistence)
    attempt("aurora", aurora)
    return r


class GlobalWriter:
    """The Aurora global cluster as DescribeGlobalClusters shows it: its writer member, status,
    and the switchover/failover in flight (FailoverState), if any."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.status = str(raw.get("Status", "unknown"))
        self.writer_arn = next(
            (m["DBClusterArn"] for m in raw.get("GlobalClusterMembers", []) if m.get("IsWriter")), None
        )
        self.failover_state: dict[str, Any] = dict(raw.get("FailoverState") or {})

    @property
    def writer_region(self) -> str | None:
        return region_of_arn(self.writer_arn)

    @property
    def moving_to(self) -> str | None:
        """The cluster ARN a switchover or failover in flight promotes, or None."""
        if self.status not in SWITCHING and not self.failover_state:
            return None
        return self.failover_state.get("ToDbClusterArn")

    def __repr__(self) -> str:
        return f"writer {self.writer_arn} ({self.status})"


def read_global_writer(clients: AwsClients, topology: Topology, regions: Sequence[str]) -> GlobalWriter:
    """The global cluster, read from the first of `regions` whose RDS API answers (a global
    cluster is visible from every region of its members: a failed region is skipped)."""
    gid = topology.aurora.global_cluster_id
    errors = []
    for region in regions:
        try:
            with aws_call("rds", "DescribeGlobalClusters", gid):
                found = clients.rds(region).describe_global_clusters(GlobalClusterIdentifier=gid)[
                    "GlobalClusters"
                ]
        except AwsCallError as exc:
            errors.append(f"{region}: {exc}")
            continue
        raw = next((g for g in found if g.get("GlobalClusterIdentifier") == gid), None)
        if raw is None:
            raise DrillAborted(f"Aurora global cluster {gid} not found (run provision)")
        return GlobalWriter(dict(raw))
    raise DrillAborted(f"Aurora global cluster {gid} could not be read from any region: {'; '.join(errors)}")


def read_lags(probes: ProbeSet, readings: Sequence[RegionReading], notes: list[str]) -> dict[str, LagReading]:
    """The drill's replication lags (DynamoDB, MSK Replicator, Aurora by the topology's roles),
    plus the Aurora lag of every region whose cluster is a secondary now (after a failover the
    configured primary's cluster is the one replicating). What cannot be read goes to `notes`."""
    t = probes.topology
    try:
        lags = read_replication_lags(t, probes.clients)
    except Exception as exc:  # noqa: BLE001 - the failed region's CloudWatch may not answer
        lags = {}
        notes.append(f"replication lags unreadable: {type(exc).__name__}: {exc}")
    for r in readings:
        cluster = t.region(r.region).aurora_cluster_id
        if r.aurora_is_writer:
            lags.pop(f"aurora:{cluster}", None)  # a writer publishes none: what is there is stale
            continue
        if r.aurora_cluster_arn is None:
            continue
        try:
            r.aurora_lag_ms = read_aurora_lag(probes.clients, r.region, cluster)
        except Exception as exc:  # noqa: BLE001 - a failed region's metrics may be unreadable
            r.errors.append(f"aurora lag: {type(exc).__name__}: {exc}")
            continue
        lags[f"aurora:{cluster}"] = LagReading(
            value=r.aurora_lag_ms, limit=t.guards.max_aurora_replication_lag_ms, unit="ms"
        )
    return lags


@task(name="assess-regions", cache_policy=NO_CACHE)
def assess_regions(probes: ProbeSet, target: RegionConfig, others: Sequence[RegionConfig]) -> Assessment:
    """Read the target and the other regions (as far as they answer), the Aurora writer and the
    replication lags. Conclusions are drawn by the caller (chalkdr.recovery)."""
    t = probes.topology
    readings = [read_region(probes, r) for r in [target, *others]]
    writer: GlobalWriter | None = None
    notes: list[str] = []
    try:
        writer = read_global_writer(probes.clients, t, [target.aws_region, *(o.aws_region for o in others)])
    except DrillAborted as exc:
        notes.append(str(exc))
    for r in readings:
        r.aurora_is_writer = writer is not None and r.aurora_cluster_arn == writer.writer_arn
    lags = read_lags(probes, readings, notes)
    return Assessment(
        target=readings[0],
        others=readings[1:],
        writer_region=writer.writer_region if writer else None,
        global_cluster_status=writer.status if writer else None,
        lags=lags,
        notes=notes,
    )


# -- capacity ------------------------------------------------------------------------------------


def _target(region: RegionConfig, deployment: str) -> str:
    e = region.eks
    return f"eks:{region.aws_region}/{e.cluster_name}/{e.namespace}/deployment/{deployment}"


def _annotations_patch(recovery_id: str, previous: dict[str, int]) -> dict[str, Any]:
    return {
        "metadata": {
            "annotations": {
                ANNOTATION_RECOVERY: recovery_id,
                ANNOTATION_RECOVERY_FLOW_RUN: flow_run.get_id() or "",
                **{key: str(value) for key, value in previous.items()},
            }
        }
    }


_CLEARED = {
    "metadata": {
        "annotations": {
            ANNOTATION_RECOVERY: None,
            ANNOTATION_RECOVERY_FLOW_RUN: None,
            ANNOTATION_PREVIOUS_REPLICAS: None,
            ANNOTATION_PREVIOUS_MIN_REPLICAS: None,
            ANNOTATION_PREVIOUS_MAX_REPLICAS: None,
        }
    }
}


def find_hpa(clients: AwsClients, region: RegionConfig, deployment: str) -> Any | None:
    """The HorizontalPodAutoscaler (autoscaling/v2) whose scaleTargetRef is `deployment`, or None.

    Kubernetes: an HPA "automatically updates a workload resource (such as a Deployment)" and
    scales spec.replicas between its minReplicas and maxReplicas; a replicas patch below
    minReplicas is put back by its controller. So a failover raises the HPA's floor instead.
    """
    e = region.eks
    kube = clients.kube(e.cluster_name, region.aws_region)
    found = kube.autoscaling().list_namespaced_horizontal_pod_autoscaler(
        e.namespace, _request_timeout=kube.request_timeout
    )
    for hpa in found.items or []:
        ref = hpa.spec.scale_target_ref
        if ref is not None and ref.kind == "Deployment" and ref.name == deployment:
            return hpa
    return None


def _ensure_hpa_floor(
    clients: AwsClients, region: RegionConfig, deployment: str, hpa: Any, at_least: int, recovery_id: str
) -> CapacityChange:
    e = region.eks
    kube = clients.kube(e.cluster_name, region.aws_region)
    api = kube.autoscaling()
    name = hpa.metadata.name
    resource = f"eks:{region.aws_region}/{e.cluster_name}/{e.namespace}/horizontalpodautoscaler/{name}"
    annotations = dict(hpa.metadata.annotations or {})
    current_min = int(hpa.spec.min_replicas or 1)  # Kubernetes' default minReplicas is 1
    current_max = int(hpa.spec.max_replicas)
    recorded_min = annotations.get(ANNOTATION_PREVIOUS_MIN_REPLICAS)
    recorded_max = annotations.get(ANNOTATION_PREVIOUS_MAX_REPLICAS)
    previous_min = int(recorded_min) if recorded_min is not None else current_min
    previous_max = int(recorded_max) if recorded_max is not None else current_max
    change = CapacityChange(
        region=region.aws_region,
        deployment=deployment,
        previous=previous_min,
        desired=max(current_min, at_least),
        hpa=name,
        hpa_max_previous=previous_max,
        hpa_max_desired=max(current_max, at_least),
    )
    if current_min >= at_least:
        return change
    if recorded_min is None:
        api.patch_namespaced_horizontal_pod_autoscaler(
            name,
            e.namespace,
            _annotations_patch(
                recovery_id,
                {
                    ANNOTATION_PREVIOUS_MIN_REPLICAS: previous_min,
                    ANNOTATION_PREVIOUS_MAX_REPLICAS: previous_max,
                },
            ),
            _request_timeout=kube.request_timeout,
        )
        _audit(
            "eks",
            "annotate-hpa",
            resource,
            region.aws_region,
            "autoscaling/v2:patch",
            min_replicas=previous_min,
            max_replicas=previous_max,
        )
    spec: dict[str, int] = {"minReplicas": at_least}
    if current_max < at_least:
        spec["maxReplicas"] = at_least  # the API refuses minReplicas above maxReplicas
    api.patch_namespaced_horizontal_pod_autoscaler(
        name, e.namespace, {"spec": spec}, _request_timeout=kube.request_timeout
    )
    _audit(
        "eks",
        "raise-hpa-min-replicas",
        resource,
        region.aws_region,
        "autoscaling/v2:patch",
        recovery_id=recovery_id,
        deployment=deployment,
        **{k: v for k, v in spec.items()},
        previous_min=current_min,
    )
    get_run_logger().info("%s minReplicas %d -> %d (HPA of %s)", resource, current_min, at_least, deployment)
    change.changed = True
    return change


@task(task_run_name="ensure-capacity-{region.aws_region}-{deployment}", cache_policy=NO_CACHE)
def ensure_capacity(
    clients: AwsClients, region: RegionConfig, deployment: str, at_least: int, recovery_id: str
) -> CapacityChange:
    """At least `at_least` replicas of `deployment`. The previous count is written to the object's
    annotations first (kept when an earlier run of this recovery wrote it), then it is changed:
    the Deployment's scale, or, when a HorizontalPodAutoscaler manages the Deployment, the HPA's
    minReplicas (and maxReplicas when it is below), so the HPA scales it rather than fighting a
    patched spec.replicas. Already at least `at_least`: nothing is changed.
    """
    e = region.eks
    kube = clients.kube(e.cluster_name, region.aws_region)
    apps = kube.apps()
    resource = _target(region, deployment)
    try:
        hpa = find_hpa(clients, region, deployment)
        if hpa is not None:
            return _ensure_hpa_floor(clients, region, deployment, hpa, at_least, recovery_id)
        dep = apps.read_namespaced_deployment(deployment, e.namespace, _request_timeout=kube.request_timeout)
        current = int(dep.spec.replicas or 0)
        annotations = dict(dep.metadata.annotations or {})
        recorded = annotations.get(ANNOTATION_PREVIOUS_REPLICAS)
        previous = int(recorded) if recorded is not None else current
        if current >= at_least:
            return CapacityChange(
                region=region.aws_region, deployment=deployment, previous=previous, desired=current
            )
        if recorded is None:
            apps.patch_namespaced_deployment(
                deployment,
                e.namespace,
                _annotations_patch(recovery_id, {ANNOTATION_PREVIOUS_REPLICAS: previous}),
                _request_timeout=kube.request_timeout,
            )
            _audit(
                "eks",
                "annotate-deployment",
                resource,
                region.aws_region,
                "apps/v1:patch",
                annotation=ANNOTATION_PREVIOUS_REPLICAS,
                value=previous,
            )
        apps.patch_namespaced_deployment_scale(
            deployment, e.namespace, {"spec": {"replicas": at_least}}, _request_timeout=kube.request_timeout
        )
    except (DrillAborted, AwsCallError):
        raise
    except Exception as exc:
        raise classify_kube_error(exc, operation="scale", resource=resource) from exc
    _audit(
        "eks",
        "scale-deployment",
        resource,
        region.aws_region,
        "apps/v1:patch scale",
        replicas=at_least,
        previous=current,
        recovery_id=recovery_id,
    )
    get_run_logger().info("%s scaled %d -> %d (recorded previous %d)", resource, current, at_least, previous)
    return CapacityChange(
        region=region.aws_region, deployment=deployment, previous=previous, desired=at_least, changed=True
    )


@task(task_run_name="await-ready-{region.aws_region}-{deployment}", cache_policy=NO_CACHE)
def await_ready(
    clients: AwsClients, region: RegionConfig, deployment: str, timeout_s: float, at_least: int = 0
) -> int:
    """Until the Deployment asks for at least `at_least` replicas (an HPA raises spec.replicas
    after its floor moved) and its ready replicas reach its desired count; the ready count."""
    counts = _poll(
        f"{region.aws_region}/{deployment} ready",
        lambda: _counts(clients, region, deployment),
        lambda c: c[1] >= at_least and c[0] >= c[1],
        timeout_s,
    )
    return int(counts[0])


def _restore_hpa(
    clients: AwsClients, region: RegionConfig, deployment: str, hpa: Any
) -> CapacityChange | None:
    e = region.eks
    kube = clients.kube(e.cluster_name, region.aws_region)
    api = kube.autoscaling()
    name = hpa.metadata.name
    resource = f"eks:{region.aws_region}/{e.cluster_name}/{e.namespace}/horizontalpodautoscaler/{name}"
    annotations = dict(hpa.metadata.annotations or {})
    if ANNOTATION_PREVIOUS_MIN_REPLICAS not in annotations:
        return None
    previous_min = int(annotations[ANNOTATION_PREVIOUS_MIN_REPLICAS])
    previous_max = int(annotations.get(ANNOTATION_PREVIOUS_MAX_REPLICAS) or hpa.spec.max_replicas)
    current_min, current_max = int(hpa.spec.min_replicas or 1), int(hpa.spec.max_replicas)
    changed = (current_min, current_max) != (previous_min, previous_max)
    if changed:
        api.patch_namespaced_horizontal_pod_autoscaler(
            name,
            e.namespace,
            {"spec": {"minReplicas": previous_min, "maxReplicas": previous_max}},
            _request_timeout=kube.request_timeout,
        )
        _audit(
            "eks",
            "restore-hpa",
            resource,
            region.aws_region,
            "autoscaling/v2:patch",
            min_replicas=previous_min,
            max_replicas=previous_max,
            was_min=current_min,
        )
    api.patch_namespaced_horizontal_pod_autoscaler(
        name, e.namespace, _CLEARED, _request_timeout=kube.request_timeout
    )
    _audit("eks", "unannotate-hpa", resource, region.aws_region, "autoscaling/v2:patch")
    return CapacityChange(
        region=region.aws_region,
        deployment=deployment,
        previous=current_min,
        desired=previous_min,
        changed=changed,
        hpa=name,
        hpa_max_previous=current_max,
        hpa_max_desired=previous_max,
    )


@task(task_run_name="restore-capacity-{region.aws_region}-{deployment}", cache_policy=NO_CACHE)
def restore_capacity(clients: AwsClients, region: RegionConfig, deployment: str) -> CapacityChange | None:
    """Back to what a failover recorded in the annotations, then the record removed: the
    Deployment's replica count, or its HPA's minReplicas/maxReplicas (the HPA then decides the
    replicas from its metrics, as before the failover). None when no failover recorded one."""
    e = region.eks
    kube = clients.kube(e.cluster_name, region.aws_region)
    apps = kube.apps()
    resource = _target(region, deployment)
    try:
        hpa = find_hpa(clients, region, deployment)
        if hpa is not None:
            return _restore_hpa(clients, region, deployment, hpa)
        dep = apps.read_namespaced_deployment(deployment, e.namespace, _request_timeout=kube.request_timeout)
        annotations = dict(dep.metadata.annotations or {})
        if ANNOTATION_PREVIOUS_REPLICAS not in annotations:
            return None
        previous = int(annotations[ANNOTATION_PREVIOUS_REPLICAS])
        current = int(dep.spec.replicas or 0)
        if current != previous:
            apps.patch_namespaced_deployment_scale(
                deployment,
                e.namespace,
                {"spec": {"replicas": previous}},
                _request_timeout=kube.request_timeout,
            )
            _audit(
                "eks",
                "restore-deployment",
                resource,
                region.aws_region,
                "apps/v1:patch scale",
                replicas=previous,
                was=current,
            )
        apps.patch_namespaced_deployment(
            deployment, e.namespace, _CLEARED, _request_timeout=kube.request_timeout
        )
        _audit("eks", "unannotate-deployment", resource, region.aws_region, "apps/v1:patch")
    except Exception as exc:
        raise classify_kube_error(exc, operation="restore", resource=resource) from exc
    return CapacityChange(
        region=region.aws_region,
        deployment=deployment,
        previous=current,
        desired=previous,
        changed=current != previous,
    )


# -- a drill in the way ---------------------------------------------------------------------------


def cancel_running_drill(environment: str, recovery_id: str) -> RunRef | None:
    """Ask Prefect to cancel the drill holding the environment's lock, if one does.

    A failover must not wait for a rehearsal to finish, nor run beside one (both hold the same
    lock). The drill's flow run is set Cancelling: its worker (or runner) stops the process, and
    its own undo runs if it gets the chance; whatever it leaves is undone by the failover's sweep
    once the lock is free. Not a drill, or no live holder: nothing is done.
    """
    holder = read_lock_record(environment).holder
    if holder is None or holder.kind != "drill" or not holder.flow_run_id:
        return None
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(holder.flow_run_id))
        if run.state is None or run.state.is_final() or run.state.is_cancelling():
            return None
        client.set_flow_run_state(
            run.id,
            Cancelling(message=f"cancelled by recovery {recovery_id}: an incident failover"),
            force=True,
        )
    _audit(
        "prefect",
        "cancel-drill",
        f"prefect:flow-run/{holder.flow_run_id}",
        "-",
        "prefect:set_flow_run_state Cancelling",
        drill_id=holder.run_id,
        recovery_id=recovery_id,
    )
    get_run_logger().warning("cancelled %s for recovery %s", holder.describe(), recovery_id)
    return holder


# -- the metadata plane ---------------------------------------------------------------------------


@task(task_run_name="move-aurora-writer-to-{target.aws_region}", cache_policy=NO_CACHE)
def move_aurora_writer(
    clients: AwsClients,
    topology: Topology,
    target: RegionConfig,
    *,
    mode: RecoveryMode,
    max_lag_ms: float,
    timeout_s: float,
    recovery_id: str,
    read_from: Sequence[str],
) -> AuroraSwitch:
    """Make the target's cluster the global cluster's writer, unless it is (or is becoming) one.

    graceful: wait until the target's replication lag is below `max_lag_ms`, then
    SwitchoverGlobalCluster (RPO 0). ungraceful: FailoverGlobalCluster with AllowDataLoss=True
    (RDS API reference: AllowDataLoss makes it a failover; Switchover must not be given with it).
    Either way the target is named by ARN (the reference: "so that Aurora can locate the cluster
    in its Amazon Web Services Region"), and the writer is awaited: the member with IsWriter.
    """
    logger = get_run_logger()
    gid = topology.aurora.global_cluster_id
    regions = [target.aws_region, *(r for r in read_from if r != target.aws_region)]
    cluster = read_db_cluster.fn(clients, target.aws_region, target.aurora_cluster_id)
    if cluster is None:
        raise DrillAborted(f"{target.aws_region}: Aurora cluster {target.aurora_cluster_id} not found")
    target_arn = cluster.arn
    state = read_global_writer(clients, topology, regions)
    switch = AuroraSwitch(from_writer=state.writer_arn, to_writer=target_arn)
    started = time.monotonic()
    if state.writer_arn == target_arn and state.moving_to is None:
        switch.skipped = f"{target.aurora_cluster_id} in {target.aws_region} is the writer already"
        return switch
    if state.moving_to == target_arn:
        switch.skipped = f"a {state.status} to {target.aurora_cluster_id} was already in progress: awaited"
    elif state.status != "available":
        raise DrillAborted(f"Aurora global cluster {gid} is {state.status}: another operation is in progress")
    else:
        if mode is RecoveryMode.GRACEFUL:
            t0 = time.monotonic()
            lag = _poll(
                f"Aurora replication lag of {target.aurora_cluster_id} below {max_lag_ms:.0f} ms",
                lambda: read_aurora_lag(clients, target.aws_region, target.aurora_cluster_id),
                lambda v: v is not None and v <= max_lag_ms,
                timeout_s,
            )
            switch.lag_at_decision_ms, switch.waited_for_lag_s = lag, round(time.monotonic() - t0, 3)
        else:
            try:
                switch.lag_at_decision_ms = read_aurora_lag(
                    clients, target.aws_region, target.aurora_cluster_id
                )
            except AwsCallError as exc:
                logger.warning(
                    "Aurora lag of %s unreadable at the decision: %s", target.aurora_cluster_id, exc
                )
        rds = clients.rds(target.aws_region)
        if mode is RecoveryMode.GRACEFUL:
            switch.operation = "switchover"
            with aws_call("rds", "SwitchoverGlobalCluster", gid):
                rds.switchover_global_cluster(
                    GlobalClusterIdentifier=gid, TargetDbClusterIdentifier=target_arn
                )
            api = "rds:SwitchoverGlobalCluster"
        else:
            switch.operation = "failover"
            with aws_call("rds", "FailoverGlobalCluster", gid):
                rds.failover_global_cluster(
                    GlobalClusterIdentifier=gid, TargetDbClusterIdentifier=target_arn, AllowDataLoss=True
                )
            api = "rds:FailoverGlobalCluster"
        _audit(
            "aurora",
            f"{switch.operation}-global-cluster",
            f"arn:aws:rds::{gid}"
            if not state.raw.get("GlobalClusterArn")
            else str(state.raw["GlobalClusterArn"]),
            target.aws_region,
            api,
            from_writer=state.writer_arn,
            to_writer=target_arn,
            recovery_id=recovery_id,
            lag_ms=switch.lag_at_decision_ms,
        )
        logger.info("Aurora %s of %s to %s requested", switch.operation, gid, target_arn)
    _poll(
        f"Aurora writer of {gid} in {target.aws_region}",
        lambda: read_global_writer(clients, topology, regions),
        lambda s: s.writer_arn == target_arn and s.status == "available",
        timeout_s,
    )
    switch.writer_moved_after_s = round(time.monotonic() - started, 3)
    return switch


# -- traffic --------------------------------------------------------------------------------------


def _hc_arn(hc_id: str) -> str:
    return f"arn:aws:route53:::healthcheck/{hc_id}"


def _tags(clients: AwsClients, hc_id: str) -> dict[str, str]:
    with aws_call("route53", "ListTagsForResource", hc_id):
        tag_set = clients.route53().list_tags_for_resource(ResourceType="healthcheck", ResourceId=hc_id)
    return {t["Key"]: t["Value"] for t in tag_set["ResourceTagSet"].get("Tags", [])}


def _inverted(clients: AwsClients, hc_id: str) -> tuple[bool, int]:
    with aws_call("route53", "GetHealthCheck", hc_id):
        hc = clients.route53().get_health_check(HealthCheckId=hc_id)["HealthCheck"]
    return bool(hc["HealthCheckConfig"].get("Inverted")), int(hc["HealthCheckVersion"])


def _set_inverted(clients: AwsClients, hc_id: str, inverted: bool, version: int) -> None:
    with aws_call("route53", "UpdateHealthCheck", hc_id):
        clients.route53().update_health_check(
            HealthCheckId=hc_id, HealthCheckVersion=version, Inverted=inverted
        )


@task(task_run_name="invert-health-check-{region}", cache_policy=NO_CACHE)
def invert_health_check(
    clients: AwsClients, routing: Routing, region: str, recovery_id: str
) -> TrafficChange:
    """Route 53 then reports `region` unhealthy and answers the failover name with the other
    record. The check is tagged with the recovery first (so failback knows it set it). When the
    control plane does not answer (it lives in us-east-1), nothing is changed and the change says
    so: health-check-driven failover is what moves traffic from a region that is really down."""
    route = routing.routes.get(region)
    if route is None or route.health_check_id is None:
        return TrafficChange(
            region=region,
            action="none",
            note="the failover record of this region has no health check: nothing to invert (run provision)",
        )
    hc_id = route.health_check_id
    try:
        inverted, version = _inverted(clients, hc_id)
        tags = _tags(clients, hc_id)
        if inverted and RECOVERY_TAG in tags:
            return TrafficChange(region=region, health_check_id=hc_id, action="already inverted")
        with aws_call("route53", "ChangeTagsForResource", hc_id):
            clients.route53().change_tags_for_resource(
                ResourceType="healthcheck",
                ResourceId=hc_id,
                AddTags=[
                    {"Key": RECOVERY_TAG, "Value": recovery_id},
                    {"Key": RECOVERY_FLOW_RUN_TAG, "Value": flow_run.get_id() or "-"},
                ],
            )
        _audit(
            "route53",
            "tag-health-check",
            _hc_arn(hc_id),
            ROUTE53_CONTROL_REGION,
            "route53:ChangeTagsForResource",
            recovery_id=recovery_id,
        )
        if inverted:
            return TrafficChange(
                region=region,
                health_check_id=hc_id,
                action="already inverted",
                note="it was inverted without a recovery marker; now marked, so failback restores it",
            )
        _set_inverted(clients, hc_id, True, version)
    except AwsCallError as exc:
        return TrafficChange(
            region=region,
            health_check_id=hc_id,
            action="control plane unavailable",
            note=f"not inverted ({exc}); only health-check failover can move traffic",
        )
    _audit(
        "route53",
        "invert-health-check",
        _hc_arn(hc_id),
        ROUTE53_CONTROL_REGION,
        "route53:UpdateHealthCheck",
        inverted=True,
        recovery_id=recovery_id,
        region_checked=region,
    )
    return TrafficChange(region=region, health_check_id=hc_id, action="inverted")


@task(task_run_name="remove-inversion-{region}", cache_policy=NO_CACHE)
def remove_inversion(clients: AwsClients, routing: Routing, region: str) -> TrafficChange:
    """Undo a recovery's inversion of `region`'s health check (only one a recovery marked)."""
    route = routing.routes.get(region)
    if route is None or route.health_check_id is None:
        return TrafficChange(
            region=region, action="none", note="the failover record of this region has no health check"
        )
    hc_id = route.health_check_id
    inverted, version = _inverted(clients, hc_id)
    tags = _tags(clients, hc_id)
    if RECOVERY_TAG not in tags:
        note = "inverted without a recovery marker: left as it is" if inverted else None
        return TrafficChange(region=region, health_check_id=hc_id, action="nothing to remove", note=note)
    if inverted:
        _set_inverted(clients, hc_id, False, version)
        _audit(
            "route53",
            "restore-health-check",
            _hc_arn(hc_id),
            ROUTE53_CONTROL_REGION,
            "route53:UpdateHealthCheck",
            inverted=False,
            region_checked=region,
        )
    with aws_call("route53", "ChangeTagsForResource", hc_id):
        clients.route53().change_tags_for_resource(
            ResourceType="healthcheck", ResourceId=hc_id, RemoveTagKeys=[RECOVERY_TAG, RECOVERY_FLOW_RUN_TAG]
        )
    _audit(
        "route53",
        "untag-health-check",
        _hc_arn(hc_id),
        ROUTE53_CONTROL_REGION,
        "route53:ChangeTagsForResource",
    )
    return TrafficChange(
        region=region, health_check_id=hc_id, action="inversion removed" if inverted else "marker removed"
    )
