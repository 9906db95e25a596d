"""The provision plan: what AWS should look like for a topology, what it looks like, and the difference.

Pure functions only. `desired_state(topology, observed)` says what the failover plumbing must be
(it needs a few observed facts the topology cannot know: ALB DNS names, cluster ARNs, subnets);
`compute_plan(desired, observed)` compares resource by resource and field by field. The flow
reads AWS, calls these, shows the plan, and applies only the changes it lists, in the order
`apply_stages` gives, so that a second run against a converged world is an empty plan and makes
no mutating call at all.

Identity rules (what makes a re-run find what an earlier run made):
- a health check is ours by its CallerReference, `chalkdr-<env>-<region>-<hash>`, where the hash
  covers the settings Route 53 cannot change in place (Type, RequestInterval): a new hash means a
  new check (replace), and an interrupted replace leaves a check with the old hash to clean up;
- a record is (name, type, SetIdentifier); failover/weighted/latency records use `<env>-<region>`
  so that every SetIdentifier in the zone is unique;
- alarms are ours by the `chalkdr-<env>-` name prefix; replicators, global tables and Aurora
  clusters by the names the topology gives.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from chalkdr.audit import AuditRecord
from chalkdr.errors import ChalkDrError
from chalkdr.failover import FailoverEstimate, failover_estimate
from chalkdr.topology import RegionConfig, RoutingMode, Topology

_T = TypeVar("_T")

__all__ = [
    "ALARM_DATAPOINTS_TO_ALARM",
    "ALARM_EVALUATION_PERIODS",
    "ALARM_PERIOD_S",
    "MANAGED_TAGS",
    "MANAGED_TAG_KEY",
    "Action",
    "AlarmSpec",
    "AliasTarget",
    "Change",
    "ChangeResult",
    "Check",
    "DesiredState",
    "EksSpec",
    "FieldDiff",
    "GlobalClusterSpec",
    "GlobalTableSpec",
    "HealthCheckSpec",
    "ObservedAlarm",
    "ObservedAlb",
    "ObservedDbCluster",
    "ObservedDeployment",
    "ObservedEks",
    "ObservedGlobalCluster",
    "ObservedHealthCheck",
    "ObservedMskCluster",
    "ObservedRecord",
    "ObservedRegion",
    "ObservedReplicator",
    "ObservedRoute53",
    "ObservedState",
    "ObservedTable",
    "Plan",
    "PlanError",
    "RecordSpec",
    "ReplicatorSpec",
    "ResourceKind",
    "SecondaryClusterSpec",
    "Stage",
    "WaitPolicy",
    "alarm_prefix",
    "apply_stages",
    "caller_reference",
    "caller_reference_prefix",
    "compute_plan",
    "desired_state",
    "health_check_name",
    "normalize_dns",
    "plan_for",
    "plan_table_rows",
    "render_plan_markdown",
    "replicator_name",
    "set_identifier",
]

MANAGED_TAG_KEY = "chalk-dr:managed"
MANAGED_TAGS: dict[str, str] = {MANAGED_TAG_KEY: "true"}
# Replication lag alarms: one-minute maxima, three in a row above the guard.
ALARM_PERIOD_S = 60
ALARM_EVALUATION_PERIODS = 3
ALARM_DATAPOINTS_TO_ALARM = 3
_CALLER_REFERENCE_MAX = 64  # Route 53's limit
_HASH_LEN = 10


class PlanError(ChalkDrError):
    """The plan has errors (a prerequisite is missing or AWS cannot do what the topology asks)."""

    def __init__(self, environment: str, errors: Sequence[str]) -> None:
        self.environment = environment
        self.errors = list(errors)
        super().__init__(
            f"provision plan for {environment} has {len(self.errors)} error(s); nothing was changed:\n"
            + "\n".join(f"- {e}" for e in self.errors)
        )


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ResourceKind(StrEnum):
    HEALTH_CHECK = "route53-health-check"
    RECORD = "route53-record"
    GLOBAL_TABLE = "dynamodb-global-table"
    REPLICATOR = "msk-replicator"
    GLOBAL_CLUSTER = "aurora-global-cluster"
    SECONDARY_CLUSTER = "aurora-secondary-cluster"
    ALARM = "cloudwatch-alarm"


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    NOOP = "no-op"


# -- names ------------------------------------------------------------------------------------


def normalize_dns(name: str) -> str:
    """Route 53 answers names lower-case with a trailing dot; ALB alias targets may carry `dualstack.`."""
    return name.strip().lower().rstrip(".").removeprefix("dualstack.")


def health_check_name(environment: str, region: str) -> str:
    return f"chalkdr-{environment}-{region}"


def caller_reference_prefix(environment: str, region: str) -> str:
    prefix = f"chalkdr-{environment}-{region}-"
    if len(prefix) + _HASH_LEN + 3 > _CALLER_REFERENCE_MAX:  # room for a ".NN" retry suffix
        prefix = f"chalkdr-{hashlib.sha256(f'{environment}|{region}'.encode()).hexdigest()[:16]}-"
    return prefix


def caller_reference(environment: str, region: str, *, check_type: str, request_interval: int) -> str:
    """Deterministic: a retried create returns the same check; a new immutable setting, a new check."""
    digest = hashlib.sha256(f"{check_type}|{request_interval}".encode()).hexdigest()[:_HASH_LEN]
    return caller_reference_prefix(environment, region) + digest


def set_identifier(environment: str, region: str) -> str:
    return f"{environment}-{region}"


def replicator_name(topology: Topology, target_region: str) -> str:
    """The topology's name; suffixed with the target region when there is more than one target."""
    base = topology.msk.replicator_name
    return base if len(topology.secondaries) <= 1 else f"{base}-{target_region}"[:128]


def alarm_prefix(environment: str) -> str:
    return f"chalkdr-{environment}-"


# -- desired resources --------------------------------------------------------------------------


class HealthCheckSpec(_Model):
    kind: Literal["route53-health-check"] = "route53-health-check"
    region: str  # the region whose ALB is checked
    name: str
    caller_reference: str
    type: str
    fqdn: str
    port: int
    resource_path: str
    request_interval: int
    failure_threshold: int
    regions: tuple[str, ...]
    tags: dict[str, str]

    def mutable(self) -> dict[str, Any]:
        return {
            "fqdn": self.fqdn,
            "port": self.port,
            "resource_path": self.resource_path,
            "failure_threshold": self.failure_threshold,
            "regions": sorted(self.regions),
            "inverted": False,
            "disabled": False,
        }


class AliasTarget(_Model):
    dns_name: str
    hosted_zone_id: str
    evaluate_target_health: bool = False


class RecordSpec(_Model):
    kind: Literal["route53-record"] = "route53-record"
    zone_id: str
    name: str
    type: str = "A"
    set_identifier: str | None = None
    failover: Literal["PRIMARY", "SECONDARY"] | None = None
    weight: int | None = None
    latency_region: str | None = None
    alias: AliasTarget
    region: str  # the region the record points at
    health_check_region: str | None = None  # whose health check it carries

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.name, self.type, self.set_identifier)

    @property
    def routing(self) -> str:
        if self.failover:
            return "failover"
        if self.weight is not None:
            return "weighted"
        if self.latency_region:
            return "latency"
        return "simple"


class GlobalTableSpec(_Model):
    kind: Literal["dynamodb-global-table"] = "dynamodb-global-table"
    table: str
    source_region: str
    regions: tuple[str, ...]  # every region that must hold a replica, the source included
    tags: dict[str, str]


class ReplicatorSpec(_Model):
    kind: Literal["msk-replicator"] = "msk-replicator"
    name: str
    region: str  # the target cluster's region: AWS creates a replicator there
    source_cluster_arn: str
    target_cluster_arn: str
    source_subnet_ids: tuple[str, ...]
    source_security_group_ids: tuple[str, ...]
    target_subnet_ids: tuple[str, ...]
    target_security_group_ids: tuple[str, ...]
    topics: tuple[str, ...]
    consumer_groups: tuple[str, ...] = (".*",)
    sync_consumer_group_offsets: bool = True
    service_execution_role_arn: str
    tags: dict[str, str]


class GlobalClusterSpec(_Model):
    kind: Literal["aurora-global-cluster"] = "aurora-global-cluster"
    id: str
    region: str  # the primary region (where the writer is)
    writer_cluster_id: str
    writer_cluster_arn: str
    engine: str
    engine_version: str | None
    tags: dict[str, str]


class SecondaryClusterSpec(_Model):
    kind: Literal["aurora-secondary-cluster"] = "aurora-secondary-cluster"
    id: str
    region: str
    global_cluster_id: str
    engine: str
    engine_version: str | None
    tags: dict[str, str]


class AlarmSpec(_Model):
    kind: Literal["cloudwatch-alarm"] = "cloudwatch-alarm"
    name: str
    region: str
    namespace: str
    metric_name: str
    dimensions: dict[str, str]
    statistic: str = "Maximum"
    period: int = ALARM_PERIOD_S
    evaluation_periods: int = ALARM_EVALUATION_PERIODS
    datapoints_to_alarm: int = ALARM_DATAPOINTS_TO_ALARM
    threshold: float
    comparison_operator: str = "GreaterThanThreshold"
    treat_missing_data: str = "notBreaching"  # no writes, no lag: replication metrics are sparse
    description: str
    account_id: str  # for the alarm's ARN (the audit names it before AWS has answered)
    tags: dict[str, str]

    @property
    def arn(self) -> str:
        return f"arn:aws:cloudwatch:{self.region}:{self.account_id}:alarm:{self.name}"

    def settings(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "metric_name": self.metric_name,
            "dimensions": dict(sorted(self.dimensions.items())),
            "statistic": self.statistic,
            "period": self.period,
            "evaluation_periods": self.evaluation_periods,
            "datapoints_to_alarm": self.datapoints_to_alarm,
            "threshold": float(self.threshold),
            "comparison_operator": self.comparison_operator,
            "treat_missing_data": self.treat_missing_data,
        }


class EksSpec(_Model):
    cluster: str
    region: str
    namespace: str
    deployments: tuple[str, ...]


Spec = Annotated[
    HealthCheckSpec
    | RecordSpec
    | GlobalTableSpec
    | ReplicatorSpec
    | GlobalClusterSpec
    | SecondaryClusterSpec
    | AlarmSpec,
    Field(discriminator="kind"),
]


class DesiredState(_Model):
    environment: str
    routing: RoutingMode
    health_checks: tuple[HealthCheckSpec, ...] = ()
    records: tuple[RecordSpec, ...] = ()
    global_tables: tuple[GlobalTableSpec, ...] = ()
    replicators: tuple[ReplicatorSpec, ...] = ()
    global_cluster: GlobalClusterSpec | None = None
    secondary_clusters: tuple[SecondaryClusterSpec, ...] = ()
    alarms: tuple[AlarmSpec, ...] = ()
    eks: tuple[EksSpec, ...] = ()
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    failover: FailoverEstimate


# -- observed resources -------------------------------------------------------------------------


class ObservedAlb(_Model):
    region: str
    name: str
    arn: str
    dns_name: str
    canonical_hosted_zone_id: str


class ObservedHealthCheck(_Model):
    id: str
    caller_reference: str
    version: int
    type: str
    fqdn: str | None = None
    port: int | None = None
    resource_path: str | None = None
    request_interval: int | None = None
    failure_threshold: int | None = None
    regions: tuple[str, ...] = ()
    inverted: bool = False
    disabled: bool = False
    tags: dict[str, str] = Field(default_factory=dict)

    def mutable(self) -> dict[str, Any]:
        return {
            "fqdn": normalize_dns(self.fqdn) if self.fqdn else None,
            "port": self.port,
            "resource_path": self.resource_path,
            "failure_threshold": self.failure_threshold,
            "regions": sorted(self.regions),
            "inverted": self.inverted,
            "disabled": self.disabled,
        }


class ObservedRecord(_Model):
    name: str
    type: str
    set_identifier: str | None = None
    failover: str | None = None
    weight: int | None = None
    latency_region: str | None = None
    alias: AliasTarget | None = None
    ttl: int | None = None
    values: tuple[str, ...] = ()
    health_check_id: str | None = None

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (normalize_dns(self.name), self.type, self.set_identifier)

    @property
    def routing(self) -> str:
        if self.failover:
            return "failover"
        if self.weight is not None:
            return "weighted"
        if self.latency_region:
            return "latency"
        return "simple"


class ObservedRoute53(_Model):
    zone_id: str
    zone_name: str | None  # None: the hosted zone does not exist
    health_checks: tuple[ObservedHealthCheck, ...] = ()  # those with this environment's reference
    records: tuple[ObservedRecord, ...] = ()  # every A record under the names the topology uses


class ObservedTable(_Model):
    table: str
    region: str
    status: str
    arn: str
    replica_regions: tuple[str, ...] = ()  # the OTHER regions, as DescribeTable lists them
    replica_status: dict[str, str] = Field(default_factory=dict)
    global_table_version: str | None = None


class ObservedMskCluster(_Model):
    arn: str
    region: str
    state: str
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()


class ObservedReplicator(_Model):
    name: str
    arn: str
    region: str
    state: str
    current_version: str
    source_cluster_arn: str | None
    target_cluster_arn: str | None
    topics: tuple[str, ...] = ()
    consumer_groups: tuple[str, ...] = ()
    sync_consumer_group_offsets: bool = False
    service_execution_role_arn: str | None = None


class ObservedDbCluster(_Model):
    id: str
    arn: str
    region: str
    engine: str
    engine_version: str | None = None
    status: str
    global_cluster_id: str | None = None


class ObservedGlobalCluster(_Model):
    id: str
    arn: str
    engine: str | None = None
    engine_version: str | None = None
    status: str
    members: dict[str, bool] = Field(default_factory=dict)  # cluster ARN -> is writer


class ObservedAlarm(_Model):
    name: str
    region: str
    namespace: str | None = None
    metric_name: str | None = None
    dimensions: dict[str, str] = Field(default_factory=dict)
    statistic: str | None = None
    period: int | None = None
    evaluation_periods: int | None = None
    datapoints_to_alarm: int | None = None
    threshold: float | None = None
    comparison_operator: str | None = None
    treat_missing_data: str | None = None

    def settings(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "metric_name": self.metric_name,
            "dimensions": dict(sorted(self.dimensions.items())),
            "statistic": self.statistic,
            "period": self.period,
            "evaluation_periods": self.evaluation_periods,
            "datapoints_to_alarm": self.datapoints_to_alarm,
            "threshold": None if self.threshold is None else float(self.threshold),
            "comparison_operator": self.comparison_operator,
            "treat_missing_data": self.treat_missing_data or "missing",
        }


class ObservedDeployment(_Model):
    name: str
    found: bool
    replicas: int = 0
    ready_replicas: int = 0


class ObservedEks(_Model):
    cluster: str
    region: str
    status: str | None = None  # None: the cluster was not found
    deployments: tuple[ObservedDeployment, ...] = ()
    error: str | None = None


class ObservedRegion(_Model):
    region: str
    alb: ObservedAlb | None = None
    tables: tuple[ObservedTable, ...] = ()  # only the tables that exist here
    msk_cluster: ObservedMskCluster | None = None
    replicators: tuple[ObservedReplicator, ...] = ()
    db_cluster: ObservedDbCluster | None = None
    alarms: tuple[ObservedAlarm, ...] = ()
    eks: ObservedEks | None = None

    def table(self, name: str) -> ObservedTable | None:
        return next((t for t in self.tables if t.table == name), None)


class ObservedState(_Model):
    route53: ObservedRoute53
    regions: dict[str, ObservedRegion]
    global_cluster: ObservedGlobalCluster | None = None

    def region(self, name: str) -> ObservedRegion:
        return self.regions.get(name) or ObservedRegion(region=name)


# -- the plan -----------------------------------------------------------------------------------


class FieldDiff(_Model):
    field: str
    old: Any = None
    new: Any = None


class Change(_Model):
    kind: ResourceKind
    id: str
    region: str
    action: Action
    diffs: tuple[FieldDiff, ...] = ()
    spec: Spec
    current_id: str | None = None  # the live resource to update (health check id, replicator ARN)
    current_version: str | None = None  # HealthCheckVersion / replicator CurrentVersion
    stale_ids: tuple[str, ...] = ()  # health checks to delete once no record points at them
    replaces_record: ObservedRecord | None = None  # a record whose routing policy changes

    def result(
        self,
        audit: Sequence[AuditRecord],
        *,
        resource_id: str | None = None,
        action: Action | None = None,
    ) -> ChangeResult:
        """The outcome of applying this change: its audit trail and the id it produced."""
        return ChangeResult(
            kind=self.kind,
            id=self.id,
            region=self.region,
            action=action or self.action,
            audit=tuple(audit),
            resource_id=resource_id,
        )


class Check(_Model):
    """A verify-only result (EKS): reported, never changed."""

    kind: str
    id: str
    region: str
    ok: bool
    detail: str


class Plan(_Model):
    environment: str
    routing: RoutingMode
    changes: tuple[Change, ...] = ()
    checks: tuple[Check, ...] = ()
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    failover: FailoverEstimate

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action is not Action.NOOP]

    @property
    def empty(self) -> bool:
        return not self.pending

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    def summary(self) -> str:
        head = (
            f"{self.environment}: {self.count(Action.CREATE)} to create, {self.count(Action.UPDATE)} to "
            f"update, {self.count(Action.REPLACE)} to replace, {self.count(Action.NOOP)} unchanged"
        )
        parts = [head, f"expected failover {self.failover.formula}"]
        if self.errors:
            parts.append(f"{len(self.errors)} error(s)")
        if self.failover.warning:
            parts.append("SLO WARNING: " + self.failover.warning)
        failing = [c for c in self.checks if not c.ok]
        if failing:
            parts.append(f"{len(failing)} EKS check(s) failing")
        return "; ".join(parts)


class ChangeResult(_Model):
    """What applying one Change did: the audit of its mutating calls, and the id it produced."""

    kind: ResourceKind
    id: str
    region: str
    action: Action
    audit: tuple[AuditRecord, ...] = ()
    resource_id: str | None = None  # e.g. the health check a create made, for the records after it


class WaitPolicy(_Model):
    """How long to wait for AWS's asynchronous work (replica ACTIVE, replicator RUNNING, INSYNC).

    Numbers are configured (AWS) seconds; a time-scaled environment waits proportionally less
    real time, so the same policy serves AWS and the sandbox.
    """

    time_scale: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=3600.0, gt=0)
    first_poll_s: float = Field(default=1.0, gt=0)
    poll_s: float = Field(default=10.0, gt=0)

    @property
    def timeout_real_s(self) -> float:
        return self.timeout_s / self.time_scale

    def delay_real_s(self, attempt: int) -> float:
        """Real seconds before poll `attempt + 1`: quick at first (most waits are short), then
        doubling up to `poll_s` so that a long wait does not hammer the control plane."""
        aws_s: float = min(self.poll_s, self.first_poll_s * float(2 ** min(attempt, 16)))
        return max(0.02, aws_s / self.time_scale)

    def poll(self, read: Callable[[], _T], done: Callable[[_T], bool], describe: Callable[[_T], str]) -> _T:
        """Read until `done` (a read may raise to give up); at the deadline raise TimeoutError
        saying what was last seen, e.g. `describe(seen)` = "replicator x still CREATING"."""
        deadline = time.monotonic() + self.timeout_real_s
        attempt = 0
        while True:
            seen = read()
            if done(seen):
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"{describe(seen)} after {self.timeout_s:g} s")
            time.sleep(self.delay_real_s(attempt))
            attempt += 1


class Stage(_Model):
    """One step of the apply: its changes are independent of each other, so may run concurrently."""

    name: str
    kind: ResourceKind
    changes: tuple[Change, ...]
    concurrent: bool
    cleanup: bool = False  # the second half of a health-check replace: delete what was replaced


# -- desired state --------------------------------------------------------------------------------


def _within_zone(name: str, zone: str) -> bool:
    zone = normalize_dns(zone)
    return name == zone or name.endswith("." + zone)


def _health_checks(topology: Topology, observed: ObservedState, errors: list[str]) -> list[HealthCheckSpec]:
    hc = topology.route53.health_check
    specs = []
    for r in topology.regions:
        alb = observed.region(r.aws_region).alb
        if alb is None:
            errors.append(
                f"{r.aws_region}: ALB {r.alb!r} not found (elasticloadbalancing:DescribeLoadBalancers): "
                "the health check and alias records need its DNS name"
            )
            continue
        name = health_check_name(topology.environment, r.aws_region)
        specs.append(
            HealthCheckSpec(
                region=r.aws_region,
                name=name,
                caller_reference=caller_reference(
                    topology.environment,
                    r.aws_region,
                    check_type=hc.protocol,
                    request_interval=hc.request_interval,
                ),
                type=hc.protocol,
                fqdn=normalize_dns(alb.dns_name),
                port=hc.port,
                resource_path=hc.path,
                request_interval=hc.request_interval,
                failure_threshold=hc.failure_threshold,
                regions=tuple(sorted(hc.regions)),
                tags={**MANAGED_TAGS, "Name": name},
            )
        )
    return specs


def _alias(alb: ObservedAlb) -> AliasTarget:
    return AliasTarget(
        dns_name=normalize_dns(alb.dns_name),
        hosted_zone_id=alb.canonical_hosted_zone_id,
        evaluate_target_health=False,
    )


def _records(
    topology: Topology, observed: ObservedState, errors: list[str], warnings: list[str]
) -> list[RecordSpec]:
    r53 = topology.route53
    zone = observed.route53.zone_name
    if zone is None:
        errors.append(f"route53: hosted zone {r53.zone_id} not found (route53:GetHostedZone)")
        return []
    names = [r53.failover_record, *(r.query_hostname for r in topology.regions)]
    outside = [n for n in names if not _within_zone(n, zone)]
    if outside:
        errors.append(f"route53: {', '.join(outside)} not within hosted zone {normalize_dns(zone)}")
        return []
    env = topology.environment
    albs = {r.aws_region: observed.region(r.aws_region).alb for r in topology.regions}
    specs: list[RecordSpec] = []

    def failover_name_record(r: RegionConfig, **routing: Any) -> None:
        alb = albs[r.aws_region]
        if alb is None:
            return
        specs.append(
            RecordSpec(
                zone_id=r53.zone_id,
                name=r53.failover_record,
                set_identifier=set_identifier(env, r.aws_region),
                alias=_alias(alb),
                region=r.aws_region,
                health_check_region=r.aws_region,
                **routing,
            )
        )

    if topology.routing is RoutingMode.FAILOVER:
        failover_name_record(topology.primary, failover="PRIMARY")
        if topology.secondaries:
            failover_name_record(topology.secondaries[0], failover="SECONDARY")
        if len(topology.secondaries) > 1:
            left = ", ".join(r.aws_region for r in topology.secondaries[1:])
            warnings.append(
                f"route53: failover routing has one PRIMARY and one SECONDARY record; {left} "
                f"not reachable through {r53.failover_record} (use weighted or latency routing)"
            )
    elif topology.routing is RoutingMode.WEIGHTED:
        for r in topology.regions:
            failover_name_record(r, weight=r.weight)
    else:
        for r in topology.regions:
            failover_name_record(r, latency_region=r.aws_region)

    for r in topology.regions:
        alb = albs[r.aws_region]
        if alb is not None:
            specs.append(
                RecordSpec(zone_id=r53.zone_id, name=r.query_hostname, alias=_alias(alb), region=r.aws_region)
            )
    return specs


def _global_tables(topology: Topology) -> list[GlobalTableSpec]:
    tables: dict[str, None] = {}
    for r in topology.regions:
        tables.update(dict.fromkeys(r.online_store_tables))
    regions = tuple(r.aws_region for r in topology.regions)
    return [
        GlobalTableSpec(
            table=t, source_region=topology.primary.aws_region, regions=regions, tags=MANAGED_TAGS
        )
        for t in tables
    ]


def _replicators(topology: Topology, observed: ObservedState, errors: list[str]) -> list[ReplicatorSpec]:
    source_cfg = topology.primary
    source = observed.region(source_cfg.aws_region).msk_cluster
    specs = []
    for target_cfg in topology.secondaries:
        target = observed.region(target_cfg.aws_region).msk_cluster
        problems = []
        for cfg, cluster in ((source_cfg, source), (target_cfg, target)):
            if cluster is None:
                problems.append(f"MSK cluster {cfg.msk_cluster_arn} not found (kafka:DescribeClusterV2)")
            elif cluster.state != "ACTIVE":
                problems.append(
                    f"MSK cluster {cfg.msk_cluster_arn} is {cluster.state}; "
                    "a replicator needs ACTIVE clusters"
                )
        name = replicator_name(topology, target_cfg.aws_region)
        if problems or source is None or target is None:
            errors.extend(f"{target_cfg.aws_region}: replicator {name}: {p}" for p in problems)
            continue
        specs.append(
            ReplicatorSpec(
                name=name,
                region=target_cfg.aws_region,
                source_cluster_arn=source.arn,
                target_cluster_arn=target.arn,
                source_subnet_ids=source.subnet_ids,
                source_security_group_ids=source.security_group_ids,
                target_subnet_ids=target.subnet_ids,
                target_security_group_ids=target.security_group_ids,
                topics=tuple(sorted(topology.msk.topics)),
                service_execution_role_arn=topology.msk.service_execution_role_arn,
                tags=MANAGED_TAGS,
            )
        )
    return specs


def _aurora(
    topology: Topology, observed: ObservedState, errors: list[str]
) -> tuple[GlobalClusterSpec | None, list[SecondaryClusterSpec]]:
    primary_cfg = topology.primary
    primary = observed.region(primary_cfg.aws_region).db_cluster
    gid = topology.aurora.global_cluster_id
    if primary is None:
        errors.append(
            f"{primary_cfg.aws_region}: Aurora cluster {primary_cfg.aurora_cluster_id} not found "
            "(rds:DescribeDBClusters): the global cluster is built from it"
        )
        return None, []
    spec = GlobalClusterSpec(
        id=gid,
        region=primary_cfg.aws_region,
        writer_cluster_id=primary.id,
        writer_cluster_arn=primary.arn,
        engine=primary.engine,
        engine_version=primary.engine_version,
        tags=MANAGED_TAGS,
    )
    secondaries = [
        SecondaryClusterSpec(
            id=r.aurora_cluster_id,
            region=r.aws_region,
            global_cluster_id=gid,
            engine=primary.engine,
            engine_version=primary.engine_version,
            tags=MANAGED_TAGS,
        )
        for r in topology.secondaries
    ]
    return spec, secondaries


def _alarms(topology: Topology, replicators: Sequence[ReplicatorSpec]) -> list[AlarmSpec]:
    env, guards = topology.environment, topology.guards
    prefix = alarm_prefix(env)
    regions = [r.aws_region for r in topology.regions]
    # Each region's account, from the ARN the topology already gives for it.
    account = {r.aws_region: r.msk_cluster_arn.split(":")[4] for r in topology.regions}
    specs: list[AlarmSpec] = []
    for table in _global_tables(topology):
        # ReplicationLatency is published in the region the writes come from, per receiving region;
        # after a failover the writes come from another region, so every direction is watched.
        for source in regions:
            for receiver in regions:
                if source == receiver:
                    continue
                specs.append(
                    AlarmSpec(
                        name=f"{prefix}dynamodb-{table.table}-{source}-to-{receiver}-replication-latency",
                        region=source,
                        namespace="AWS/DynamoDB",
                        metric_name="ReplicationLatency",
                        dimensions={"TableName": table.table, "ReceivingRegion": receiver},
                        threshold=guards.max_dynamodb_replication_lag_ms,
                        account_id=account[source],
                        description=(
                            f"chalk-dr {env}: DynamoDB {table.table} replication {source} -> {receiver} "
                            f"above {guards.max_dynamodb_replication_lag_ms:g} ms"
                        ),
                        tags=MANAGED_TAGS,
                    )
                )
    for rep in replicators:
        for metric, slug, threshold, unit in (
            ("ReplicationLatency", "replication-latency", guards.max_msk_replication_lag_ms, "ms"),
            ("MessageLag", "message-lag", guards.max_msk_message_lag, "messages"),
        ):
            specs.append(
                AlarmSpec(
                    name=f"{prefix}msk-{rep.name}-{slug}",
                    region=rep.region,
                    namespace="AWS/Kafka",
                    metric_name=metric,
                    dimensions={"ReplicatorName": rep.name},
                    threshold=threshold,
                    account_id=account[rep.region],
                    description=(
                        f"chalk-dr {env}: MSK replicator {rep.name} {metric} above {threshold:g} {unit}"
                    ),
                    tags=MANAGED_TAGS,
                )
            )
    for r in topology.secondaries:
        specs.append(
            AlarmSpec(
                name=f"{prefix}aurora-{r.aurora_cluster_id}-replication-lag",
                region=r.aws_region,
                namespace="AWS/RDS",
                metric_name="AuroraGlobalDBReplicationLag",
                dimensions={"DBClusterIdentifier": r.aurora_cluster_id},
                threshold=guards.max_aurora_replication_lag_ms,
                account_id=account[r.aws_region],
                description=(
                    f"chalk-dr {env}: Aurora secondary {r.aurora_cluster_id} replication lag above "
                    f"{guards.max_aurora_replication_lag_ms:g} ms"
                ),
                tags=MANAGED_TAGS,
            )
        )
    return specs


def desired_state(topology: Topology, observed: ObservedState) -> DesiredState:
    """What AWS must hold for this topology; `observed` supplies only facts (ALB DNS, ARNs, subnets)."""
    errors: list[str] = []
    warnings: list[str] = []
    replicators = _replicators(topology, observed, errors)
    global_cluster, secondaries = _aurora(topology, observed, errors)
    return DesiredState(
        environment=topology.environment,
        routing=topology.routing,
        health_checks=tuple(_health_checks(topology, observed, errors)),
        records=tuple(_records(topology, observed, errors, warnings)),
        global_tables=tuple(_global_tables(topology)),
        replicators=tuple(replicators),
        global_cluster=global_cluster,
        secondary_clusters=tuple(secondaries),
        alarms=tuple(_alarms(topology, replicators)),
        eks=tuple(
            EksSpec(
                cluster=r.eks.cluster_name,
                region=r.aws_region,
                namespace=r.eks.namespace,
                deployments=(r.eks.query_server_deployment, r.eks.persistence_deployment),
            )
            for r in topology.regions
        ),
        errors=tuple(errors),
        warnings=tuple(warnings),
        failover=failover_estimate(topology),
    )


# -- comparison -----------------------------------------------------------------------------------


def _diffs(old: dict[str, Any], new: dict[str, Any]) -> list[FieldDiff]:
    return [FieldDiff(field=k, old=old.get(k), new=v) for k, v in new.items() if old.get(k) != v]


def _ours(check: ObservedHealthCheck, prefix: str) -> str | None:
    """The immutable-settings hash of one of our checks for this region, else None."""
    if not check.caller_reference.startswith(prefix):
        return None
    m = re.fullmatch(rf"([0-9a-f]{{{_HASH_LEN}}})(?:\.\d+)?", check.caller_reference[len(prefix) :])
    return m.group(1) if m else None


def _health_check_changes(
    desired: DesiredState, observed: ObservedState
) -> tuple[list[Change], dict[str, str]]:
    """Changes per region, and the health check id each region's records will carry."""
    changes: list[Change] = []
    ids: dict[str, str] = {}
    for spec in desired.health_checks:
        prefix = caller_reference_prefix(desired.environment, spec.region)
        want = spec.caller_reference[len(prefix) :]
        mine = [c for c in observed.route53.health_checks if _ours(c, prefix) is not None]
        keep = next(
            (
                c
                for c in mine
                if _ours(c, prefix) == want
                and c.type == spec.type
                and c.request_interval == spec.request_interval
            ),
            None,
        )
        stale = tuple(c for c in mine if c is not keep)
        diffs: list[FieldDiff] = []
        if keep is None:
            if stale:
                old = stale[0]
                diffs = [
                    FieldDiff(field=f, old=o, new=n)
                    for f, o, n in (
                        ("type", old.type, spec.type),
                        ("request_interval", old.request_interval, spec.request_interval),
                    )
                    if o != n
                ]
                diffs += _diffs(old.mutable(), spec.mutable())
                action = Action.REPLACE
            else:
                diffs = [
                    FieldDiff(field="health_check", old=None, new=f"{spec.type} {spec.fqdn}:{spec.port}")
                ]
                action = Action.CREATE
            ids[spec.region] = f"(new health check {spec.name})"
        else:
            ids[spec.region] = keep.id
            diffs = _diffs(keep.mutable(), spec.mutable())
            if keep.tags != spec.tags:
                diffs.append(FieldDiff(field="tags", old=dict(keep.tags), new=dict(spec.tags)))
            if stale:
                diffs.append(FieldDiff(field="stale_health_checks", old=[c.id for c in stale], new=[]))
                action = Action.REPLACE
            else:
                action = Action.UPDATE if diffs else Action.NOOP
        changes.append(
            Change(
                kind=ResourceKind.HEALTH_CHECK,
                id=spec.name,
                region=spec.region,
                action=action,
                diffs=tuple(diffs),
                spec=spec,
                current_id=keep.id if keep else None,
                current_version=str(keep.version) if keep else None,
                stale_ids=tuple(c.id for c in stale),
            )
        )
    return changes, ids


def _record_fields(
    alias: AliasTarget | None, health_check_id: str | None, routing: str, value: Any, values: Sequence[str]
) -> dict[str, Any]:
    return {
        "alias_target": normalize_dns(alias.dns_name) if alias else None,
        "alias_zone": alias.hosted_zone_id if alias else None,
        "evaluate_target_health": alias.evaluate_target_health if alias else None,
        "health_check_id": health_check_id,
        routing: value,
        "values": list(values),
    }


def _routing_value(r: RecordSpec | ObservedRecord) -> Any:
    return {"failover": r.failover, "weighted": r.weight, "latency": r.latency_region, "simple": None}[
        r.routing
    ]


def _record_changes(
    desired: DesiredState, observed: ObservedState, hc_ids: dict[str, str], warnings: list[str]
) -> list[Change]:
    by_key = {r.key: r for r in observed.route53.records}
    changes = []
    for spec in desired.records:
        name = normalize_dns(spec.name)
        hc = hc_ids.get(spec.health_check_region) if spec.health_check_region else None
        new = _record_fields(spec.alias, hc, spec.routing, _routing_value(spec), ())
        current = by_key.get((name, spec.type, spec.set_identifier))
        replaces = None
        if current is None:
            action = Action.CREATE
            diffs = [FieldDiff(field=k, new=v) for k, v in new.items() if v not in (None, [])]
        else:
            old = _record_fields(
                current.alias,
                current.health_check_id,
                current.routing,
                _routing_value(current),
                current.values,
            )
            if current.routing != spec.routing:
                # Route 53 cannot UPSERT a record set into another routing policy: delete + create.
                old_only = {k: v for k, v in old.items() if k not in new}
                diffs = _diffs(old, new) + [FieldDiff(field=k, old=v, new=None) for k, v in old_only.items()]
                action, replaces = Action.REPLACE, current
            else:
                diffs = _diffs(old, new)
                action = Action.UPDATE if diffs else Action.NOOP
        record_id = f"{name} {spec.type}" + (f" {spec.set_identifier}" if spec.set_identifier else "")
        changes.append(
            Change(
                kind=ResourceKind.RECORD,
                id=record_id,
                region=spec.region,
                action=action,
                diffs=tuple(d for d in diffs if d.old != d.new),
                spec=spec,
                replaces_record=replaces,
            )
        )
    wanted = {(normalize_dns(s.name), s.type, s.set_identifier) for s in desired.records}
    for rec in observed.route53.records:
        if rec.key not in wanted and rec.type == "A":
            ident = f" (SetIdentifier {rec.set_identifier})" if rec.set_identifier else ""
            warnings.append(
                f"route53: record {rec.key[0]} A{ident} is not in the topology and is left alone; "
                "Route 53 rejects mixing routing policies under one name, so remove it if it conflicts"
            )
    return changes


def _global_table_changes(desired: DesiredState, observed: ObservedState, errors: list[str]) -> list[Change]:
    changes = []
    for spec in desired.global_tables:
        source = observed.region(spec.source_region).table(spec.table)
        if source is None:
            errors.append(
                f"{spec.source_region}: DynamoDB table {spec.table} not found (dynamodb:DescribeTable); "
                "the online store is Chalk's to create, its replicas are ours"
            )
            continue
        present = [spec.source_region] + [
            r for r in source.replica_regions if source.replica_status.get(r) != "DELETING"
        ]
        missing = [r for r in spec.regions if r not in present]
        for r in missing:
            standalone = observed.region(r).table(spec.table)
            if standalone is not None and spec.source_region not in standalone.replica_regions:
                errors.append(
                    f"{r}: DynamoDB table {spec.table} exists there as a separate table; AWS adds a "
                    f"replica only where no table of that name exists (delete it or rename the table)"
                )
        new = sorted(set(spec.regions) | set(present))
        diffs = [FieldDiff(field="replica_regions", old=sorted(present), new=new)] if missing else []
        changes.append(
            Change(
                kind=ResourceKind.GLOBAL_TABLE,
                id=spec.table,
                region=spec.source_region,
                action=Action.UPDATE if missing else Action.NOOP,
                diffs=tuple(diffs),
                spec=spec,
                current_id=source.arn,
            )
        )
    return changes


def _replicator_changes(desired: DesiredState, observed: ObservedState, warnings: list[str]) -> list[Change]:
    changes = []
    for spec in desired.replicators:
        found = [
            r
            for r in observed.region(spec.region).replicators
            if r.name == spec.name and r.state != "DELETING"
        ]
        current = found[0] if found else None
        immutable_new = {
            "source_cluster_arn": spec.source_cluster_arn,
            "target_cluster_arn": spec.target_cluster_arn,
            "service_execution_role_arn": spec.service_execution_role_arn,
        }
        mutable_new = {
            "topics": sorted(spec.topics),
            "consumer_groups": sorted(spec.consumer_groups),
            "sync_consumer_group_offsets": spec.sync_consumer_group_offsets,
        }
        if current is None:
            action = Action.CREATE
            diffs = [FieldDiff(field=k, new=v) for k, v in {**immutable_new, **mutable_new}.items()]
        else:
            if current.state == "FAILED":
                warnings.append(f"{spec.region}: MSK replicator {spec.name} is FAILED; see its StateInfo")
            immutable_diffs = _diffs(
                {
                    "source_cluster_arn": current.source_cluster_arn,
                    "target_cluster_arn": current.target_cluster_arn,
                    "service_execution_role_arn": current.service_execution_role_arn,
                },
                immutable_new,
            )
            mutable_diffs = _diffs(
                {
                    "topics": sorted(current.topics),
                    "consumer_groups": sorted(current.consumer_groups),
                    "sync_consumer_group_offsets": current.sync_consumer_group_offsets,
                },
                mutable_new,
            )
            diffs = immutable_diffs + mutable_diffs
            action = Action.UPDATE if mutable_diffs else Action.NOOP
            if immutable_diffs:
                action = Action.REPLACE
        changes.append(
            Change(
                kind=ResourceKind.REPLICATOR,
                id=spec.name,
                region=spec.region,
                action=action,
                diffs=tuple(diffs),
                spec=spec,
                current_id=current.arn if current else None,
                current_version=current.current_version if current else None,
            )
        )
    return changes


def _aurora_changes(
    desired: DesiredState, observed: ObservedState, errors: list[str], warnings: list[str]
) -> list[Change]:
    spec = desired.global_cluster
    if spec is None:
        return []
    changes: list[Change] = []
    gc = observed.global_cluster
    primary = observed.region(spec.region).db_cluster
    ours = {spec.writer_cluster_arn} | {
        c.arn for s in desired.secondary_clusters if (c := observed.region(s.region).db_cluster) is not None
    }
    if gc is None:
        if primary is not None and primary.global_cluster_id and primary.global_cluster_id != spec.id:
            errors.append(
                f"{spec.region}: Aurora cluster {spec.writer_cluster_id} already belongs to global cluster "
                f"{primary.global_cluster_id}, not {spec.id}"
            )
            return []
        changes.append(
            Change(
                kind=ResourceKind.GLOBAL_CLUSTER,
                id=spec.id,
                region=spec.region,
                action=Action.CREATE,
                diffs=(
                    FieldDiff(field="writer", new=spec.writer_cluster_arn),
                    FieldDiff(field="engine", new=f"{spec.engine} {spec.engine_version or ''}".strip()),
                ),
                spec=spec,
            )
        )
    else:
        if spec.writer_cluster_arn not in gc.members:
            errors.append(
                f"{spec.region}: Aurora global cluster {spec.id} exists without {spec.writer_cluster_id}; an "
                "existing cluster cannot be attached to a global cluster (AWS adds only new secondaries)"
            )
            return []
        if gc.engine and gc.engine != spec.engine:
            errors.append(
                f"aurora: global cluster {spec.id} runs {gc.engine}, the primary runs {spec.engine}"
            )
        writer = next((arn for arn, is_writer in gc.members.items() if is_writer), None)
        if writer != spec.writer_cluster_arn:
            where = "a cluster of this topology" if writer in ours else "a cluster outside this topology"
            warnings.append(
                f"aurora: the writer of {spec.id} is {writer or 'nobody'} ({where}), not the topology's "
                f"primary {spec.writer_cluster_id}; provision does not move the writer (failback does)"
            )
        changes.append(
            Change(
                kind=ResourceKind.GLOBAL_CLUSTER,
                id=spec.id,
                region=spec.region,
                action=Action.NOOP,
                spec=spec,
                current_id=gc.arn,
            )
        )
    members = gc.members if gc is not None else {}
    for sec in desired.secondary_clusters:
        cluster = observed.region(sec.region).db_cluster
        if cluster is None:
            changes.append(
                Change(
                    kind=ResourceKind.SECONDARY_CLUSTER,
                    id=sec.id,
                    region=sec.region,
                    action=Action.CREATE,
                    diffs=(FieldDiff(field="global_cluster", new=sec.global_cluster_id),),
                    spec=sec,
                )
            )
        elif cluster.arn in members:
            changes.append(
                Change(
                    kind=ResourceKind.SECONDARY_CLUSTER,
                    id=sec.id,
                    region=sec.region,
                    action=Action.NOOP,
                    spec=sec,
                    current_id=cluster.arn,
                )
            )
        else:
            errors.append(
                f"{sec.region}: Aurora cluster {sec.id} exists as a standalone cluster; AWS cannot attach an "
                f"existing cluster to global cluster {sec.global_cluster_id} (a secondary is created by "
                "rds:CreateDBCluster with GlobalClusterIdentifier): delete or rename it"
            )
    return changes


def _alarm_changes(desired: DesiredState, observed: ObservedState, warnings: list[str]) -> list[Change]:
    changes = []
    wanted: set[tuple[str, str]] = set()
    for spec in desired.alarms:
        wanted.add((spec.region, spec.name))
        current = next((a for a in observed.region(spec.region).alarms if a.name == spec.name), None)
        if current is None:
            action = Action.CREATE
            diffs = [FieldDiff(field="metric", new=f"{spec.namespace} {spec.metric_name}")]
            diffs.append(FieldDiff(field="threshold", new=float(spec.threshold)))
        else:
            diffs = _diffs(current.settings(), spec.settings())
            action = Action.UPDATE if diffs else Action.NOOP
        changes.append(
            Change(
                kind=ResourceKind.ALARM,
                id=spec.name,
                region=spec.region,
                action=action,
                diffs=tuple(diffs),
                spec=spec,
            )
        )
    for region, obs in observed.regions.items():
        for alarm in obs.alarms:
            if (region, alarm.name) not in wanted:
                warnings.append(f"{region}: alarm {alarm.name} is no longer in the topology (left alone)")
    return changes


def _eks_checks(desired: DesiredState, observed: ObservedState) -> list[Check]:
    checks = []
    for spec in desired.eks:
        eks = observed.region(spec.region).eks
        problems: list[str] = []
        notes: list[str] = []
        if eks is None or eks.error:
            problems.append(eks.error if eks and eks.error else "not read")
        elif eks.status is None:
            problems.append("cluster not found")
        else:
            if eks.status != "ACTIVE":
                problems.append(f"cluster {eks.status}")
            for name in spec.deployments:
                dep = next((d for d in eks.deployments if d.name == name), None)
                if dep is None or not dep.found:
                    problems.append(f"{spec.namespace}/{name} not found")
                elif dep.ready_replicas < dep.replicas:
                    problems.append(f"{name} {dep.ready_replicas}/{dep.replicas} ready")
                else:
                    notes.append(f"{name} {dep.ready_replicas}/{dep.replicas} ready")
        checks.append(
            Check(
                kind="eks-cluster",
                id=spec.cluster,
                region=spec.region,
                ok=not problems,
                detail="; ".join(problems) if problems else "ACTIVE; " + "; ".join(notes),
            )
        )
    return checks


def compute_plan(desired: DesiredState, observed: ObservedState) -> Plan:
    """Every resource of `desired` with its action and field-level diff against `observed`."""
    errors = list(desired.errors)
    warnings = list(desired.warnings)
    hc_changes, hc_ids = _health_check_changes(desired, observed)
    changes = [
        *hc_changes,
        *_record_changes(desired, observed, hc_ids, warnings),
        *_global_table_changes(desired, observed, errors),
        *_replicator_changes(desired, observed, warnings),
        *_aurora_changes(desired, observed, errors, warnings),
        *_alarm_changes(desired, observed, warnings),
    ]
    return Plan(
        environment=desired.environment,
        routing=desired.routing,
        changes=tuple(changes),
        checks=tuple(_eks_checks(desired, observed)),
        errors=tuple(errors),
        warnings=tuple(warnings),
        failover=desired.failover,
    )


def plan_for(topology: Topology, observed: ObservedState) -> Plan:
    return compute_plan(desired_state(topology, observed), observed)


# -- apply order ----------------------------------------------------------------------------------


def apply_stages(plan: Plan) -> list[Stage]:
    """Pending changes in dependency order.

    Health checks exist before records point at them; replaced checks are deleted only after
    the records have moved. Route 53 stages are sequential (its API allows 5 requests/s per
    account); the rest run one resource per region concurrently. DynamoDB replicas of one table
    are added one region at a time inside their change (AWS allows one replica change at a time).
    """
    pending = plan.pending

    def of(kind: ResourceKind, actions: Iterable[Action] = tuple(Action)) -> tuple[Change, ...]:
        wanted = set(actions)
        return tuple(c for c in pending if c.kind is kind and c.action in wanted)

    stages = [
        Stage(
            name="route53-health-checks",
            kind=ResourceKind.HEALTH_CHECK,
            changes=of(ResourceKind.HEALTH_CHECK),
            concurrent=False,
        ),
        Stage(
            name="route53-records",
            kind=ResourceKind.RECORD,
            changes=of(ResourceKind.RECORD),
            concurrent=False,
        ),
        Stage(
            name="route53-health-check-cleanup",
            kind=ResourceKind.HEALTH_CHECK,
            changes=tuple(c for c in of(ResourceKind.HEALTH_CHECK) if c.stale_ids),
            concurrent=False,
            cleanup=True,
        ),
        Stage(
            name="dynamodb-replicas",
            kind=ResourceKind.GLOBAL_TABLE,
            changes=of(ResourceKind.GLOBAL_TABLE),
            concurrent=True,
        ),
        Stage(
            name="msk-replicators",
            kind=ResourceKind.REPLICATOR,
            changes=of(ResourceKind.REPLICATOR),
            concurrent=True,
        ),
        Stage(
            name="aurora-global-cluster",
            kind=ResourceKind.GLOBAL_CLUSTER,
            changes=of(ResourceKind.GLOBAL_CLUSTER),
            concurrent=False,
        ),
        Stage(
            name="aurora-secondaries",
            kind=ResourceKind.SECONDARY_CLUSTER,
            changes=of(ResourceKind.SECONDARY_CLUSTER),
            concurrent=True,
        ),
        Stage(
            name="cloudwatch-alarms", kind=ResourceKind.ALARM, changes=of(ResourceKind.ALARM), concurrent=True
        ),
    ]
    return [s for s in stages if s.changes]


# -- rendering ------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def _diff_text(change: Change) -> str:
    return "; ".join(f"{d.field}: {_fmt(d.old)} → {_fmt(d.new)}" for d in change.diffs)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def plan_table_rows(plan: Plan) -> list[dict[str, str]]:
    """One row per resource (unchanged ones included) for a Prefect table artifact."""
    return [
        {
            "action": c.action.value,
            "kind": c.kind.value,
            "resource": c.id,
            "region": c.region,
            "diff": _diff_text(c),
        }
        for c in plan.changes
    ]


def render_plan_markdown(plan: Plan) -> str:
    f = plan.failover
    verdict = "meets" if f.meets_slo else "**cannot meet**"
    lines = [
        f"# Provision plan: {plan.environment} ({plan.routing.value} routing)",
        "",
        f"**{plan.count(Action.CREATE)} to create, {plan.count(Action.UPDATE)} to update, "
        f"{plan.count(Action.REPLACE)} to replace, {plan.count(Action.NOOP)} unchanged.**",
        "",
        f"Expected failover time: {f.formula}: configuration {verdict} the SLO.",
    ]
    if f.time_scale != 1:
        lines.append(f"(Configured AWS seconds; this environment runs time-scaled x{f.time_scale:g}.)")
    if f.warning:
        lines += ["", f"> **SLO warning:** {f.warning}"]
    if plan.errors:
        lines += ["", "## Errors (apply refuses to start until these are fixed)", ""]
        lines += [f"- {e}" for e in plan.errors]
    if plan.warnings:
        lines += ["", "## Warnings", ""]
        lines += [f"- {w}" for w in plan.warnings]
    lines += ["", "## Changes", ""]
    if plan.pending:
        lines += ["| action | kind | resource | region | diff (old → new) |", "|---|---|---|---|---|"]
        lines += [
            f"| {c.action.value} | {c.kind.value} | {_cell(c.id)} | {c.region} | {_cell(_diff_text(c))} |"
            for c in plan.pending
        ]
    else:
        lines.append("None: AWS already matches the topology.")
    unchanged = [c for c in plan.changes if c.action is Action.NOOP]
    if unchanged:
        lines += ["", f"<details><summary>{len(unchanged)} unchanged</summary>", ""]
        lines += [f"- {c.kind.value} `{c.id}` ({c.region})" for c in unchanged]
        lines += ["", "</details>"]
    if plan.checks:
        lines += [
            "",
            "## EKS (verified, never changed)",
            "",
            "| cluster | region | ok | detail |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {c.id} | {c.region} | {'yes' if c.ok else '**no**'} | {_cell(c.detail)} |"
            for c in plan.checks
        ]
    return "\n".join(lines) + "\n"
