"""Tasks for observing Chalk's data plane from outside: steady state, failover, canaries.

Read-only by construction: nothing here mutates AWS or Kubernetes; the one write is the canary,
a feature row uploaded through Chalk (its primary key is the drill id), which Chalk's online
store keeps like any row: chalk-dr has no way to delete through Chalk, and does not reach into
the online store behind Chalk's back to do it. One task is one meaningful step (a steady-state check, a
whole observation loop); individual probes are plain functions polled inside those tasks so
the Prefect UI shows the runbook, not thousands of probe runs.
"""

from __future__ import annotations

import threading
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
from chalkdr.dns import Resolver
from chalkdr.drill import LagReading
from chalkdr.drill import Routing
from chalkdr.drill import SteadyState
from chalkdr.drill import steady_state_problems
from chalkdr.observe import Observation
from chalkdr.observe import QueryProbe
from chalkdr.observe import TokenProbe
from chalkdr.plan import replicator_names
from chalkdr.query import ChalkQueryClient
from chalkdr.query import QueryAnswer
from chalkdr.query import healthz
from chalkdr.topology import RegionConfig
from chalkdr.topology import RoutingMode
from chalkdr.topology import Topology
from tasks.chalk import chalk_secret
from tasks.route53 import read_route53_health

__all__ = [
    "ProbeSet",
    "aurora_dimensions",
    "await_steady_state",
    "canary_served",
    "gather_steady_state",
    "latest_datapoint",
    "measure_canary_replication",
    "observe_until",
    "read_dns_answer",
    "read_replication_lags",
    "write_canary",
]

# How far back a lag reading looks, in metric periods: replication metrics are sparse (no writes,
# no datapoint), so "no datapoint in this window" is reported as no data, never as zero lag.
LAG_PERIOD_S = 60
LAG_WINDOW_PERIODS = 5
# GetHealthCheckStatus refills at 1 per second per account (chalkdr.ratelimit): during a
# transition the drill reads one check a second; otherwise one every few seconds, so a drill's
# Route 53 calls stay near one a second in all (the account's budget is shared).
HEALTH_READ_INTERVAL_S = 1.0
HEALTH_READ_IDLE_S = 3.0
CLIENT_VIEW_QUERIES = 3  # consecutive queries through the failover name that make the client view
TOKEN_PROBE_INTERVAL_S = 0.5  # token exchanges at the API server, at most this often


@dataclass
class ProbeSet:
    """What a runbook probes with: the resolvers clients use (uncached: what the authority
    answers now; cached for each answer's TTL, as a recursive resolver does), one Chalk client
    per region's own hostname, and two through the failover name — one per resolver — that open
    a fresh connection per query to the address resolved for it."""

    topology: Topology
    clients: AwsClients
    resolver: Resolver
    regional: dict[str, ChalkQueryClient]
    failover: ChalkQueryClient
    cached_resolver: Resolver | None = None
    failover_cached: ChalkQueryClient | None = None
    # Route 53 health verdicts as last read, and when (monotonic); see `route53_health`.
    health: dict[str, bool | None] = field(default_factory=dict)
    health_read_at: dict[str, float] = field(default_factory=dict)
    last_token: TokenProbe | None = None
    last_token_at: float | None = None

    @classmethod
    def for_topology(cls, topology: Topology, clients: AwsClients) -> ProbeSet:
        chalk = topology.chalk
        resolver = Resolver(topology.dns.nameservers)  # uncached: what the authority answers now
        secret = chalk_secret(chalk)
        regional = {
            r.aws_region: ChalkQueryClient(
                base_url=r.url,
                api_server=r.metadata_url(chalk),
                client_id=chalk.client_id,
                client_secret=secret,
                environment_id=chalk.environment_id,
                resolver=resolver,
            )
            for r in topology.regions
        }
        cached = Resolver(topology.dns.nameservers, cache=True)

        def through_failover_name(with_resolver: Resolver) -> ChalkQueryClient:
            return ChalkQueryClient(
                base_url=topology.route53.url,
                api_server=str(chalk.api_server),
                client_id=chalk.client_id,
                client_secret=secret,
                environment_id=chalk.environment_id,
                resolver=with_resolver,
                fresh_connections=True,  # a pooled connection would stay on the old ALB after the flip
            )

        return cls(
            topology=topology,
            clients=clients,
            resolver=resolver,
            regional=regional,
            failover=through_failover_name(resolver),
            cached_resolver=cached,
            failover_cached=through_failover_name(cached),
        )

    def close(self) -> None:
        for c in [*self.regional.values(), self.failover, self.failover_cached]:
            if c is not None:
                c.close()

    def token(self) -> TokenProbe:
        """A token exchange at the configured API server, at most every TOKEN_PROBE_INTERVAL_S
        (between two, the last result stands)."""
        now = time.monotonic()
        if (
            self.last_token is None
            or self.last_token_at is None
            or now - self.last_token_at >= TOKEN_PROBE_INTERVAL_S
        ):
            self.last_token, self.last_token_at = self.failover.probe_token(), now
        return self.last_token

    def answer_shares(self, routing: Routing, first: tuple[str, ...]) -> dict[str, float]:
        """The authoritative answer set as shares: the regions seen in uncached resolutions
        (Route 53 answers one record set of a weighted or latency name per query), each weighted
        by its record's weight. Failover routing answers one region: one lookup.

        Resolution goes on until every routed region was seen or `8 x regions` lookups were made
        (DNS is free; the Route 53 API is not involved). A region in the answer set with weight
        share w is missed with probability (1 - w)^n: for three equal regions, 24 lookups miss
        one with about 2e-4 — with 9 lookups it was 8%, enough for a third of a drill's samples
        to say "half the clients" where a third failed."""
        seen = {routing.region_of_answer(first)}
        if self.topology.active_active:
            routed = set(routing.routes)
            for _ in range(8 * len(routing.routes) - 1):
                if routed <= seen:
                    break
                seen.add(routing.region_of_answer(self.resolver.resolve(routing.record).addresses))
        seen.discard(None)
        weights = {r: _route_weight(routing, r) for r in seen if r is not None}
        total = sum(weights.values()) or 1.0
        return {r: w / total for r, w in weights.items()}

    def query(self, client: ChalkQueryClient) -> QueryAnswer:
        probe = self.topology.probe
        return client.query(probe.inputs, probe.outputs)

    def seed_health(self, verdicts: dict[str, bool | None]) -> dict[str, bool | None]:
        """Record verdicts read elsewhere (a full read in steady state) as the latest ones."""
        now = time.monotonic()
        self.health.update(verdicts)
        self.health_read_at.update({r: now for r in verdicts})
        return verdicts

    def route53_health(
        self, routing: Routing, *, focus: str | None = None, every_s: float = HEALTH_READ_INTERVAL_S
    ) -> dict[str, bool | None]:
        """Route 53's verdict per region, refreshing at most one health check per call and only
        when `every_s` has passed since the last read.

        GetHealthCheckStatus is limited to one request per second per account (chalkdr.ratelimit),
        so an observation loop cannot read every check on every poll; it reads the stalest one
        when a read is due (the `focus` region's counting twice as stale: the faulted region's
        flip is the milestone) and carries the others' last verdicts. The client-side evidence
        (DNS answers, queries) is read on every poll; this is the server-side explanation beside it.
        """
        now = time.monotonic()
        last = max(self.health_read_at.values(), default=None)
        if last is None or now - last >= every_s:

            def staleness(r: str) -> float:
                at = self.health_read_at.get(r)
                age = float("inf") if at is None else now - at
                return age * (2 if r == focus else 1)

            stalest = max(routing.routes, key=staleness, default=None)
            if stalest is not None:
                one = Routing(record=routing.record, routes={stalest: routing.routes[stalest]})
                try:
                    self.health.update(read_route53_health(self.clients, one))
                except Exception:  # noqa: BLE001 - a failed read is an observation too (None)
                    self.health[stalest] = None
                self.health_read_at[stalest] = now
        return {r: self.health.get(r) for r in routing.routes}


class HealthWatcher:
    """Reads Route 53's verdicts in the background, one health check per `every_s`, while the
    observation loop measures the client side on its own clock.

    GetHealthCheckStatus is paced at one per second per account (chalkdr.ratelimit); a read that
    waits for its token must not hold up (or mis-date) the DNS answers and queries of a poll, so
    the reads run on their own thread and each observation takes the latest verdicts as they
    stand. `every_s` can be changed while it runs (1 s around the expected flip, slower elsewhere).
    """

    def __init__(self, probes: ProbeSet, routing: Routing, *, focus: str | None, every_s: float) -> None:
        self._probes, self._routing, self._focus = probes, routing, focus
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="route53-health-watcher", daemon=True)

    def __enter__(self) -> HealthWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def snapshot(self) -> dict[str, bool | None]:
        """The verdicts read so far (a region not read yet is absent; None: its read failed)."""
        health = dict(self._probes.health)
        return {r: health[r] for r in self._routing.routes if r in health}

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._probes.route53_health(self._routing, focus=self._focus, every_s=0.0)
            self._stop.wait(max(0.0, self.every_s - (time.monotonic() - started)))


def _route_weight(routing: Routing, region: str) -> float:
    role = routing.routes[region].role if region in routing.routes else ""
    if role.startswith("weight="):
        return float(role.removeprefix("weight=") or 0) or 0.0
    return 1.0


def read_dns_answer(probes: ProbeSet, routing: Routing) -> tuple[str | None, tuple[str, ...]]:
    """The region the failover name resolves to now, and the addresses it resolved to."""
    found = probes.resolver.resolve(routing.record)
    return routing.region_of_answer(found.addresses), found.addresses


def latest_datapoint(
    clients: AwsClients, region: str, namespace: str, metric: str, dims: dict[str, str]
) -> float | None:
    """The newest datapoint of the last LAG_WINDOW_PERIODS periods (Maximum), or None."""
    now = datetime.now(UTC)
    with aws_call("monitoring", "GetMetricStatistics", f"{namespace}/{metric}"):
        points = clients.cloudwatch(region).get_metric_statistics(
            Namespace=namespace,
            MetricName=metric,
            Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
            StartTime=now - timedelta(seconds=LAG_PERIOD_S * LAG_WINDOW_PERIODS),
            EndTime=now + timedelta(seconds=LAG_PERIOD_S),
            Period=LAG_PERIOD_S,
            Statistics=["Maximum"],
        )["Datapoints"]
    if not points:
        return None
    return float(max(points, key=lambda p: p["Timestamp"])["Maximum"])


def aurora_dimensions(clients: AwsClients, region: str, cluster_id: str) -> dict[str, str]:
    """The dimension set AuroraGlobalDBReplicationLag is published under for this cluster (AWS:
    DBClusterIdentifier and SourceRegion), found with ListMetrics rather than assumed."""
    with aws_call("monitoring", "ListMetrics", f"AWS/RDS/AuroraGlobalDBReplicationLag/{cluster_id}"):
        metrics = clients.cloudwatch(region).list_metrics(
            Namespace="AWS/RDS",
            MetricName="AuroraGlobalDBReplicationLag",
            Dimensions=[{"Name": "DBClusterIdentifier", "Value": cluster_id}],
        )["Metrics"]
    if not metrics:
        return {"DBClusterIdentifier": cluster_id}
    widest = max(metrics, key=lambda m: len(m.get("Dimensions") or []))
    return {d["Name"]: d["Value"] for d in widest.get("Dimensions") or []}


def read_replication_lags(topology: Topology, clients: AwsClients) -> dict[str, LagReading]:
    """DynamoDB, MSK and Aurora replication lag, latest datapoints, each with its guard."""
    g, primary = topology.guards, topology.primary
    lags: dict[str, LagReading] = {}
    for table in primary.online_store_tables:
        for sec in topology.secondaries:
            v = latest_datapoint(
                clients,
                primary.aws_region,
                "AWS/DynamoDB",
                "ReplicationLatency",
                {"TableName": table, "ReceivingRegion": sec.aws_region},
            )
            lags[f"dynamodb:{table}->{sec.aws_region}"] = LagReading(
                value=v, limit=g.max_dynamodb_replication_lag_ms, unit="ms"
            )
    for region, name in replicator_names(topology).items():
        dims = {"ReplicatorName": name}
        lags[f"msk:{name}:latency"] = LagReading(
            value=latest_datapoint(clients, region, "AWS/Kafka", "ReplicationLatency", dims),
            limit=g.max_msk_replication_lag_ms,
            unit="ms",
        )
        lags[f"msk:{name}:message-lag"] = LagReading(
            value=latest_datapoint(clients, region, "AWS/Kafka", "MessageLag", dims),
            limit=g.max_msk_message_lag,
            unit="messages",
        )
    for sec in topology.secondaries:
        dims = aurora_dimensions(clients, sec.aws_region, sec.aurora_cluster_id)
        lags[f"aurora:{sec.aurora_cluster_id}"] = LagReading(
            value=latest_datapoint(clients, sec.aws_region, "AWS/RDS", "AuroraGlobalDBReplicationLag", dims),
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
    served = {r: probes.query(c) for r, c in probes.regional.items()}
    failover_mode = t.routing is RoutingMode.FAILOVER
    expected = [t.primary.aws_region] if failover_mode else [r.aws_region for r in t.regions]
    region, _addresses = read_dns_answer(probes, routing)
    # The client's view: consecutive queries through the failover name, as a client makes them.
    view = [probes.query(probes.failover) for _ in range(CLIENT_VIEW_QUERIES)]
    client_view = [routing.region_of(a.address) if a.ok else None for a in view]
    unrouted = [
        r.aws_region
        for r in t.regions
        if r.aws_region in _routed_regions(t)
        and (routing.routes.get(r.aws_region) is None or routing.routes[r.aws_region].health_check_id is None)
    ]
    return SteadyState(
        client_view=client_view,
        expected_client_regions=expected,
        unrouted=unrouted,
        healthz={r.aws_region: healthz(r.url, resolver=probes.resolver)[0] for r in t.regions},
        route53_health=probes.seed_health(read_route53_health(clients, routing)),
        dns_region=region,
        expected_dns_regions=expected,
        lags=read_replication_lags(t, clients),
        served=served,
        capacity={r.aws_region: read_capacity(clients, r) for r in t.regions},
        expected_deployments=expected_deployments or {},
        expected_sha=expected_sha,
    )


def _routed_regions(t: Topology) -> set[str]:
    """The regions the failover name should route to: failover routing has one PRIMARY and one
    SECONDARY record (a third region is not behind the name); weighted and latency route all."""
    if t.routing is RoutingMode.FAILOVER:
        return {t.primary.aws_region, *(r.aws_region for r in t.secondaries[:1])}
    return {r.aws_region for r in t.regions}


@task(name="await-steady-state", cache_policy=NO_CACHE)
def await_steady_state(
    probes: ProbeSet,
    routing: Routing,
    *,
    timeout_s: float,
    interval_s: float,
    expected_deployments: dict[str, str] | None = None,
    expected_sha: str | None = None,
    stable_for_s: float = 0.0,
) -> tuple[SteadyState, list[str]]:
    """Read steady state until it has held for `stable_for_s` or the deadline passes (timeout 0:
    read once). Missing replication-lag data is a problem: a guard without data is not a pass.

    After a repair (`stable_for_s` = the record's TTL), resolvers that cached the answer from
    before it still send clients to the other region until the TTL has passed; steady state is
    then only proven once it has held for a whole TTL.
    """
    deadline = time.monotonic() + timeout_s
    held_since: float | None = None
    while True:
        state = gather_steady_state(
            probes, routing, expected_deployments=expected_deployments, expected_sha=expected_sha
        )
        problems = steady_state_problems(state, require_lag_data=True)
        now = time.monotonic()
        if problems:
            held_since = None
        elif held_since is None:
            held_since = now
        if held_since is not None and now - held_since >= stable_for_s:
            return state, problems
        if now >= deadline:
            if not problems:
                problems = [
                    f"steady state held for {now - held_since:.1f} s, not the {stable_for_s:.1f} s required"
                ]
            return state, problems
        time.sleep(interval_s)


def write_canary(probes: ProbeSet, canary_id: str) -> float:
    """Write the canary through Chalk (upload_features at the primary's API server, as
    ChalkClient.upload_features does); returns when it was written (epoch seconds).

    The canary then travels Chalk's write path: the primary's persistence topic, its persistence
    workers, its online store, and Global Tables replication to the other regions.
    """
    probe = probes.topology.probe
    written = time.time()
    errors = probes.regional[probes.topology.primary.aws_region].upload_features(
        {probe.canary_id_feature: canary_id, probe.canary_value_feature: f"{canary_id}@{written:.3f}"}
    )
    if errors:
        raise RuntimeError(f"Chalk refused the canary upload: {'; '.join(errors)}")
    return written


def canary_served(probes: ProbeSet, canary_id: str, region: str) -> bool:
    """Whether `region`'s own hostname serves the canary (a query through Chalk)."""
    probe = probes.topology.probe
    answer = probes.regional[region].query({probe.canary_id_feature: canary_id}, [probe.canary_value_feature])
    value = answer.values.get(probe.canary_value_feature)
    return answer.ok and isinstance(value, str) and value.startswith(f"{canary_id}@")


@task(name="measure-canary-replication", cache_policy=NO_CACHE)
def measure_canary_replication(
    probes: ProbeSet, canary_id: str, *, timeout_s: float, poll_s: float = 0.05, write: bool = True
) -> tuple[float | None, list[str]]:
    """Write the canary in the primary; seconds until every secondary serves it through Chalk."""
    t = probes.topology
    start = time.monotonic()
    if write:
        write_canary(probes, canary_id)
    pending = [r.aws_region for r in t.secondaries]
    deadline = start + timeout_s
    while True:
        pending = [r for r in pending if not canary_served(probes, canary_id, r)]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    lag = None if pending else round(time.monotonic() - start, 3)
    return lag, pending


def _query_probe(
    probes: ProbeSet, client: ChalkQueryClient, routing: Routing, canary_id: str | None
) -> QueryProbe:
    probe = probes.topology.probe
    if canary_id:
        answer = client.query({probe.canary_id_feature: canary_id}, [probe.canary_value_feature])
        value = answer.values.get(probe.canary_value_feature)
        canary = str(value) if isinstance(value, str) and value.startswith(f"{canary_id}@") else None
    else:
        answer, canary = probes.query(client), None
    return QueryProbe(
        ok=answer.ok,
        status_code=answer.status_code,
        deployment_id=answer.deployment_id,
        region=routing.region_of(answer.address) if answer.ok else None,
        latency_s=round(answer.latency_s, 4),
        error=answer.error if not answer.ok else None,
        canary_value=canary,
    )


def take_observation(
    probes: ProbeSet,
    routing: Routing,
    canary_id: str | None,
    *,
    focus: str | None = None,
    health_every_s: float = HEALTH_READ_INTERVAL_S,
    watcher: HealthWatcher | None = None,
) -> Observation:
    """One poll of what clients see: DNS (uncached and TTL-cached), a query through the failover
    name with each, every region through its own hostname, a token exchange at the API server,
    and Route 53's verdicts at the rate its API allows (from `watcher` when one runs)."""
    # Route 53's verdicts first (a watcher's snapshot, or a read): they were made before `mono`,
    # so a health milestone can only be observed late, never before Route 53 decided.
    health = (
        watcher.snapshot()
        if watcher is not None
        else probes.route53_health(routing, focus=focus, every_s=health_every_s)
    )
    mono, wall = time.monotonic(), time.time()
    found = probes.resolver.resolve(routing.record)
    dns = routing.region_of_answer(found.addresses)
    cached = probes.cached_resolver.resolve(routing.record) if probes.cached_resolver else None
    query = _query_probe(probes, probes.failover, routing, canary_id)
    query_cached = (
        _query_probe(probes, probes.failover_cached, routing, canary_id) if probes.failover_cached else None
    )
    regional_from = time.monotonic()
    available = {r: probes.query(c).ok for r, c in probes.regional.items()}
    available_mono = (regional_from + time.monotonic()) / 2
    return Observation(
        mono=mono,
        wall=wall,
        health=health,
        dns_answer=dns,
        query=query,
        token=probes.token(),  # metadata-plane availability: can a client get a token now?
        dns_answer_cached=routing.region_of_answer(cached.addresses) if cached is not None else None,
        query_cached=query_cached,
        answer=probes.answer_shares(routing, found.addresses),
        available=available,
        available_mono=available_mono,
    )


def observe_until(
    probes: ProbeSet,
    routing: Routing,
    *,
    interval_s: float,
    timeout_s: float,
    done: Callable[[Sequence[Observation]], bool],
    abort: Callable[[Sequence[Observation]], str | None],
    canary_id: str | None,
    fast: tuple[float, float] | None = None,
    fast_interval_s: float = 0.1,
    focus: str | None = None,
) -> tuple[list[Observation], str | None]:
    """Poll every `interval_s` on the monotonic clock until `done`, `abort` or the deadline.

    Adaptive: within `fast` (seconds after the start: where the flip is expected) it polls every
    `fast_interval_s` and reads Route 53 once a second (the faulted `focus` region first), so the
    milestones' error does not grow with the configured interval; elsewhere it polls every
    `interval_s` and reads Route 53 every HEALTH_READ_IDLE_S. DNS and queries cost no API budget.
    Returns the observations and the abort reason (None when done or timed out). The loop is
    paced to the start of each poll, so a slow probe does not stretch the interval.
    """
    logger = get_run_logger()
    obs: list[Observation] = []
    start = time.monotonic()
    deadline = start + timeout_s
    next_at = start

    def in_window(at: float) -> bool:
        return fast is not None and fast[0] <= at - start <= fast[1]

    idle = HEALTH_READ_INTERVAL_S if in_window(start) else HEALTH_READ_IDLE_S
    with HealthWatcher(probes, routing, focus=focus, every_s=idle) as watcher:
        while True:
            now = time.monotonic()
            if now < next_at:
                time.sleep(next_at - now)
            watcher.every_s = HEALTH_READ_INTERVAL_S if in_window(time.monotonic()) else HEALTH_READ_IDLE_S
            o = take_observation(probes, routing, canary_id, watcher=watcher)
            obs.append(o)
            reason = abort(obs)
            if reason:
                logger.warning("observation aborted: %s", reason)
                return obs, reason
            if done(obs):
                return obs, None
            if time.monotonic() >= deadline:
                return obs, None
            # Fast polls from one interval before the window until its end.
            soon = fast is not None and fast[0] <= next_at - start + interval_s and next_at - start <= fast[1]
            next_at += min(fast_interval_s, interval_s) if soon else interval_s
