"""Tasks for observing Chalk's data plane from outside: steady state, failover, canaries.

Read-only by construction: nothing here mutates AWS or Kubernetes except the canary write,
which is tagged with the drill id. One task is one meaningful step (a steady-state check, a
whole observation loop); individual probes are plain functions polled inside those tasks so
the Prefect UI shows the runbook, not thousands of probe runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from datetime import timedelta

from prefect import get_run_logger
from prefect import task
from prefect.cache_policies import NO_CACHE

from chalkdr.classify import aws_call
from chalkdr.clients import AwsClients
from chalkdr.drill import CANARY_FEATURE
from chalkdr.drill import CANARY_INPUT
from chalkdr.drill import LagReading
from chalkdr.drill import Routing
from chalkdr.drill import SteadyState
from chalkdr.drill import canary_item
from chalkdr.drill import steady_state_problems
from chalkdr.observe import Observation
from chalkdr.observe import QueryProbe
from chalkdr.plan import replicator_names
from chalkdr.query import ChalkQueryClient
from chalkdr.query import QueryAnswer
from chalkdr.query import healthz
from chalkdr.topology import RegionConfig
from chalkdr.topology import RoutingMode
from chalkdr.topology import Topology
from tasks.chalk import region_secret
from tasks.route53 import read_dns_region
from tasks.route53 import read_route53_health

__all__ = [
    "ProbeSet",
    "await_steady_state",
    "delete_canaries",
    "gather_steady_state",
    "measure_canary_replication",
    "observe_until",
    "read_canary",
    "read_replication_lags",
]

PROBE_INPUTS = {"user.id": 1}
PROBE_OUTPUTS = ["user.name"]


@dataclass
class ProbeSet:
    """Clients a drill probes with: one query client per region and one for the failover URL."""

    topology: Topology
    clients: AwsClients
    regional: dict[str, ChalkQueryClient]
    failover: ChalkQueryClient
    fingerprints: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    @classmethod
    def for_topology(cls, topology: Topology, clients: AwsClients) -> ProbeSet:
        """One client per region's own hostname, and one through the failover name."""
        regional = {
            r.aws_region: ChalkQueryClient(
                base_url=r.url,
                api_server=str(r.chalk.api_server),
                client_id=r.chalk.client_id,
                client_secret=region_secret(r),
                environment_id=r.chalk.environment_id,
            )
            for r in topology.regions
        }
        p = topology.primary
        failover = ChalkQueryClient(
            base_url=topology.route53.url,
            client_id=p.chalk.client_id,
            client_secret=region_secret(p),
            environment_id=p.chalk.environment_id,
        )
        return cls(topology=topology, clients=clients, regional=regional, failover=failover)

    def close(self) -> None:
        for c in [*self.regional.values(), self.failover]:
            c.close()

    def region_of(self, answer: QueryAnswer) -> str | None:
        """Which region answered: the region whose own hostname gives the same (env name, deployment)."""
        key = (answer.environment_name, answer.deployment_id)
        matches = [r for r, fp in self.fingerprints.items() if fp == key]
        if len(matches) == 1:
            return matches[0]
        by_name = [r for r, fp in self.fingerprints.items() if fp[0] == answer.environment_name]
        return by_name[0] if len(by_name) == 1 else None


def _latest(
    clients: AwsClients, region: str, namespace: str, metric: str, dims: dict[str, str], window_s: float
) -> float | None:
    now = datetime.now(UTC)
    with aws_call("monitoring", "GetMetricStatistics", f"{namespace}/{metric}"):
        points = clients.cloudwatch(region).get_metric_statistics(
            Namespace=namespace,
            MetricName=metric,
            Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
            StartTime=now - timedelta(seconds=window_s),
            EndTime=now + timedelta(seconds=60),
            Period=60,
            Statistics=["Maximum"],
        )["Datapoints"]
    if not points:
        return None
    return float(max(points, key=lambda p: p["Timestamp"])["Maximum"])


def read_replication_lags(
    topology: Topology, clients: AwsClients, window_s: float = 300
) -> dict[str, LagReading]:
    """DynamoDB, MSK and Aurora replication lag, latest datapoints, each with its guard."""
    g, primary = topology.guards, topology.primary
    lags: dict[str, LagReading] = {}
    for table in primary.online_store_tables:
        for sec in topology.secondaries:
            v = _latest(
                clients,
                primary.aws_region,
                "AWS/DynamoDB",
                "ReplicationLatency",
                {"TableName": table, "ReceivingRegion": sec.aws_region},
                window_s,
            )
            lags[f"dynamodb:{table}->{sec.aws_region}"] = LagReading(
                value=v, limit=g.max_dynamodb_replication_lag_ms, unit="ms"
            )
    for region, name in replicator_names(topology).items():
        dims = {"ReplicatorName": name}
        lags[f"msk:{name}:latency"] = LagReading(
            value=_latest(clients, region, "AWS/Kafka", "ReplicationLatency", dims, window_s),
            limit=g.max_msk_replication_lag_ms,
            unit="ms",
        )
        lags[f"msk:{name}:message-lag"] = LagReading(
            value=_latest(clients, region, "AWS/Kafka", "MessageLag", dims, window_s),
            limit=g.max_msk_message_lag,
            unit="messages",
        )
    for sec in topology.secondaries:
        lags[f"aurora:{sec.aurora_cluster_id}"] = LagReading(
            value=_latest(
                clients,
                sec.aws_region,
                "AWS/RDS",
                "AuroraGlobalDBReplicationLag",
                {"DBClusterIdentifier": sec.aurora_cluster_id},
                window_s,
            ),
            limit=g.max_aurora_replication_lag_ms,
            unit="ms",
        )
    return lags


def read_capacity(clients: AwsClients, region: RegionConfig) -> tuple[int, int]:
    kube = clients.kube(region.eks.cluster_name, region.aws_region)
    dep = kube.apps().read_namespaced_deployment(
        region.eks.query_server_deployment, region.eks.namespace, _request_timeout=kube.request_timeout
    )
    ready = dep.status.ready_replicas if dep.status else 0  # the API omits zero counts
    return int(ready or 0), int(dep.spec.replicas or 0)


def gather_steady_state(
    probes: ProbeSet,
    routing: Routing,
    *,
    expected_deployments: dict[str, str] | None = None,
    expected_sha: str | None = None,
) -> SteadyState:
    """Every region's /healthz, Route 53's verdicts, DNS, lags, served deployments, capacity."""
    t, clients = probes.topology, probes.clients
    served = {r: c.query(PROBE_INPUTS, PROBE_OUTPUTS) for r, c in probes.regional.items()}
    probes.fingerprints.update({r: (a.environment_name, a.deployment_id) for r, a in served.items() if a.ok})
    failover_mode = t.routing is RoutingMode.FAILOVER
    expected = [t.primary.aws_region] if failover_mode else [r.aws_region for r in t.regions]
    return SteadyState(
        healthz={r.aws_region: healthz(r.url)[0] for r in t.regions},
        route53_health=read_route53_health(clients, routing),
        dns_region=read_dns_region(t, clients, routing),
        expected_dns_regions=expected,
        lags=read_replication_lags(t, clients),
        served=served,
        capacity={r.aws_region: read_capacity(clients, r) for r in t.regions},
        expected_deployments=expected_deployments or {},
        expected_sha=expected_sha,
    )


@task(name="await-steady-state", cache_policy=NO_CACHE)
def await_steady_state(
    probes: ProbeSet,
    routing: Routing,
    *,
    timeout_s: float,
    interval_s: float,
    expected_deployments: dict[str, str] | None = None,
    expected_sha: str | None = None,
) -> tuple[SteadyState, list[str]]:
    """Read steady state until it holds or the deadline passes (timeout 0: read once)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = gather_steady_state(
            probes, routing, expected_deployments=expected_deployments, expected_sha=expected_sha
        )
        problems = steady_state_problems(state)
        if not problems or time.monotonic() >= deadline:
            return state, problems
        time.sleep(interval_s)


def _canary_key(drill_id: str) -> dict[str, dict[str, str]]:
    return {"pk": canary_item(drill_id, 0.0)["pk"]}


def read_canary(probes: ProbeSet, drill_id: str, regions: Sequence[str]) -> bool:
    """Whether every one of `regions` can read the canary (strongly consistent read)."""
    table = probes.topology.primary.online_store_tables[0]
    for region in regions:
        with aws_call("dynamodb", "GetItem", f"{region}/{table}"):
            got = probes.clients.dynamodb(region).get_item(
                TableName=table, Key=_canary_key(drill_id), ConsistentRead=True
            )
        if "Item" not in got:
            return False
    return True


def delete_canaries(probes: ProbeSet, canary_ids: Sequence[str]) -> None:
    """Remove a drill's canary rows from the primary; the global table deletes the replicas."""
    t = probes.topology
    table = t.primary.online_store_tables[0]
    for canary_id in canary_ids:
        with aws_call("dynamodb", "DeleteItem", f"{t.primary.aws_region}/{table}"):
            probes.clients.dynamodb(t.primary.aws_region).delete_item(
                TableName=table, Key=_canary_key(canary_id)
            )


@task(name="measure-canary-replication", cache_policy=NO_CACHE)
def measure_canary_replication(
    probes: ProbeSet, drill_id: str, *, timeout_s: float, poll_s: float = 0.05, write: bool = True
) -> tuple[float | None, list[str]]:
    """Write the canary in the primary; seconds until every secondary replica can read it."""
    t, clients = probes.topology, probes.clients
    table = t.primary.online_store_tables[0]
    if write:
        with aws_call("dynamodb", "PutItem", f"{t.primary.aws_region}/{table}"):
            clients.dynamodb(t.primary.aws_region).put_item(
                TableName=table, Item=canary_item(drill_id, time.time())
            )
    start = time.monotonic()
    pending = [r.aws_region for r in t.secondaries]
    deadline = start + timeout_s
    while True:
        pending = [r for r in pending if not read_canary(probes, drill_id, [r])]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    lag = None if pending else round(time.monotonic() - start, 3)
    return lag, pending


def take_observation(probes: ProbeSet, routing: Routing, drill_id: str | None) -> Observation:
    mono, wall = time.monotonic(), time.time()
    t, clients = probes.topology, probes.clients
    try:
        health = read_route53_health(clients, routing)
    except Exception:  # noqa: BLE001 - a failed read is an observation too (None)
        health = {r: None for r in routing.routes}
    try:
        dns = read_dns_region(t, clients, routing)
    except Exception:  # noqa: BLE001
        dns = None
    inputs = {CANARY_INPUT: drill_id} if drill_id else PROBE_INPUTS
    outputs = [CANARY_FEATURE] if drill_id else PROBE_OUTPUTS
    answer = probes.failover.query(inputs, outputs)
    canary = answer.values.get(CANARY_FEATURE) if drill_id else None
    probe = QueryProbe(
        ok=answer.ok,
        status_code=answer.status_code,
        deployment_id=answer.deployment_id,
        region=probes.region_of(answer) if answer.ok else None,
        latency_s=round(answer.latency_s, 4),
        error=answer.error if not answer.ok else None,
        canary_value=str(canary) if canary == drill_id else None,
    )
    return Observation(mono=mono, wall=wall, health=health, dns_answer=dns, query=probe)


def observe_until(
    probes: ProbeSet,
    routing: Routing,
    *,
    interval_s: float,
    timeout_s: float,
    done: Callable[[Sequence[Observation]], bool],
    abort: Callable[[Sequence[Observation]], str | None],
    drill_id: str | None,
) -> tuple[list[Observation], str | None]:
    """Poll every `interval_s` on the monotonic clock until `done`, `abort` or the deadline.

    Returns the observations and the abort reason (None when done or timed out). The loop is
    paced to the start of each poll, so a slow probe does not stretch the interval.
    """
    logger = get_run_logger()
    obs: list[Observation] = []
    start = time.monotonic()
    deadline = start + timeout_s
    next_at = start
    while True:
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)
        o = take_observation(probes, routing, drill_id)
        obs.append(o)
        reason = abort(obs)
        if reason:
            logger.warning("observation aborted: %s", reason)
            return obs, reason
        if done(obs):
            return obs, None
        if time.monotonic() >= deadline:
            return obs, None
        next_at += interval_s
