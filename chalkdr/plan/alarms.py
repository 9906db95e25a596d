"""CloudWatch in the plan: replication-lag alarms at the topology's guards, for every replication path.

Alarms are found by the `chalkdr-<env>-` name prefix and are ours by the tag
`chalk-dr:environment=<env>`: an alarm of the topology's name without it is an error naming it,
unless the topology's `adopt.alarms` lists it (adopting tags it: TagResource, since PutMetricAlarm
ignores Tags when it updates an alarm). One alarm per DynamoDB direction (after a failover the
writes come from another region, so every direction is watched), two per MSK replicator (latency
and message lag), one per Aurora secondary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any
from typing import Literal

from pydantic import Field

from chalkdr.plan.core import Action
from chalkdr.plan.core import Change
from chalkdr.plan.core import FieldDiff
from chalkdr.plan.core import Findings
from chalkdr.plan.core import PlanModel
from chalkdr.plan.core import ResourceKind
from chalkdr.plan.core import Spec
from chalkdr.plan.core import StageDef
from chalkdr.plan.core import compare
from chalkdr.plan.core import ownership_tags
from chalkdr.plan.core import unwanted
from chalkdr.plan.dynamodb import online_store_tables
from chalkdr.plan.msk import replicator_names
from chalkdr.topology import Topology

if TYPE_CHECKING:
    from chalkdr.plan.systems import DesiredState
    from chalkdr.plan.systems import ObservedState

__all__ = [
    "ALARM_DATAPOINTS_TO_ALARM",
    "ALARM_EVALUATION_PERIODS",
    "ALARM_PERIOD_S",
    "STAGES",
    "AlarmSpec",
    "ObservedAlarm",
    "ObservedAlarms",
    "alarm_prefix",
    "changes",
    "desired",
    "dynamodb_lag_alarm_name",
]

# Replication lag alarms: one-minute maxima, three in a row above the guard.
ALARM_PERIOD_S = 60
ALARM_EVALUATION_PERIODS = 3
ALARM_DATAPOINTS_TO_ALARM = 3
_SETTINGS = (
    "namespace",
    "metric_name",
    "dimensions",
    "statistic",
    "period",
    "evaluation_periods",
    "datapoints_to_alarm",
    "threshold",
    "comparison_operator",
    "treat_missing_data",
    "alarm_actions",
)


def alarm_prefix(environment: str) -> str:
    return f"chalkdr-{environment}-"


def dynamodb_lag_alarm_name(environment: str, table: str, source: str, receiver: str) -> str:
    """The alarm on `table`'s replication latency from `source` to `receiver` (in `source`)."""
    return f"{alarm_prefix(environment)}{_dynamodb_lag_slug(table, source, receiver)}"


def _dynamodb_lag_slug(table: str, source: str, receiver: str) -> str:
    return f"dynamodb-{table}-{source}-to-{receiver}-replication-latency"


class _AlarmSettings(PlanModel):
    """What PutMetricAlarm sets, the same fields whether wanted or read. AWS omits what was not
    set (a metric-math alarm has no single metric, DatapointsToAlarm and TreatMissingData have
    defaults); EvaluationPeriods and ComparisonOperator are required, so every alarm has them."""

    evaluation_periods: int
    comparison_operator: str
    namespace: str | None = None
    metric_name: str | None = None
    dimensions: dict[str, str] = Field(default_factory=dict)
    statistic: str | None = None
    period: int | None = None
    threshold: float | None = None
    datapoints_to_alarm: int | None = None
    treat_missing_data: str | None = None
    alarm_actions: tuple[str, ...] = ()
    ok_actions: tuple[str, ...] = ()
    insufficient_data_actions: tuple[str, ...] = ()

    def settings(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in _SETTINGS}
        out["dimensions"] = dict(sorted(self.dimensions.items()))
        out["alarm_actions"] = sorted(self.alarm_actions)
        out["threshold"] = None if self.threshold is None else float(self.threshold)
        out["treat_missing_data"] = self.treat_missing_data or "missing"  # AWS's default
        return out


class ObservedAlarm(_AlarmSettings):
    name: str
    region: str
    tags: dict[str, str] = Field(default_factory=dict)  # ListTagsForResource


class ObservedAlarms(PlanModel):
    alarms: dict[str, tuple[ObservedAlarm, ...]] = Field(default_factory=dict)  # region -> ours there


class AlarmSpec(_AlarmSettings, Spec):
    kind: Literal["cloudwatch-alarm"] = "cloudwatch-alarm"
    name: str
    namespace: str
    metric_name: str
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


def _alarm(topology: Topology, slug: str, region: str, metric: tuple[str, str], **fields: Any) -> AlarmSpec:
    cfg = topology.region(region)
    account = cfg.msk_cluster_arn.split(":")[4]  # the account the topology names
    topic = cfg.alarm_topic_arn
    return AlarmSpec(
        name=f"{alarm_prefix(topology.environment)}{slug}",
        region=region,
        alarm_actions=(topic,) if topic and not topology.silent_alarms else (),
        namespace=metric[0],
        metric_name=metric[1],
        account_id=account,
        tags=ownership_tags(topology.environment),
        **fields,
    )


def desired(topology: Topology, observed: ObservedState, findings: Findings) -> list[Spec]:
    env, guards = topology.environment, topology.guards
    regions = [r.aws_region for r in topology.regions]
    specs: list[Spec] = []
    ddb_ms = guards.max_dynamodb_replication_lag_ms
    for table in online_store_tables(topology):
        # ReplicationLatency is published in the region the writes come from, per receiving region.
        for source in regions:
            for receiver in (r for r in regions if r != source):
                specs.append(
                    _alarm(
                        topology,
                        _dynamodb_lag_slug(table, source, receiver),
                        source,
                        ("AWS/DynamoDB", "ReplicationLatency"),
                        dimensions={"TableName": table, "ReceivingRegion": receiver},
                        threshold=ddb_ms,
                        description=(
                            f"chalk-dr {env}: DynamoDB {table} replication {source} -> {receiver} "
                            f"above {ddb_ms:g} ms"
                        ),
                    )
                )
    for region, name in replicator_names(topology).items():
        for metric, slug, threshold, unit in (
            ("ReplicationLatency", "replication-latency", guards.max_msk_replication_lag_ms, "ms"),
            ("MessageLag", "message-lag", guards.max_msk_message_lag, "messages"),
        ):
            specs.append(
                _alarm(
                    topology,
                    f"msk-{name}-{slug}",
                    region,
                    ("AWS/Kafka", metric),
                    dimensions={"ReplicatorName": name},
                    threshold=threshold,
                    description=f"chalk-dr {env}: MSK replicator {name} {metric} above {threshold:g} {unit}",
                )
            )
    aurora_ms = guards.max_aurora_replication_lag_ms
    for r in topology.secondaries:
        specs.append(
            _alarm(
                topology,
                f"aurora-{r.aurora_cluster_id}-replication-lag",
                r.aws_region,
                ("AWS/RDS", "AuroraGlobalDBReplicationLag"),
                # AWS publishes the metric under both dimensions (the secondary and the region it
                # replicates from); an alarm naming only one matches no series and never fires.
                dimensions={
                    "DBClusterIdentifier": r.aurora_cluster_id,
                    "SourceRegion": topology.primary.aws_region,
                },
                threshold=aurora_ms,
                description=(
                    f"chalk-dr {env}: Aurora secondary {r.aurora_cluster_id} replication lag above "
                    f"{aurora_ms:g} ms"
                ),
            )
        )
    if topology.silent_alarms:
        findings.warnings.append("cloudwatch: silent_alarms is set: the replication-lag alarms notify nobody")
    return specs


def _keeping_operator_actions(spec: AlarmSpec, current: ObservedAlarm) -> AlarmSpec:
    """PutMetricAlarm replaces an alarm's whole configuration, actions included: the spec carries
    the actions an operator added (alarm, OK, insufficient-data) so that an update keeps them."""
    return spec.model_copy(
        update={
            "alarm_actions": tuple(dict.fromkeys([*current.alarm_actions, *spec.alarm_actions])),
            "ok_actions": current.ok_actions,
            "insufficient_data_actions": current.insufficient_data_actions,
        }
    )


def _change(
    desired: DesiredState, spec: AlarmSpec, observed: ObservedAlarms, findings: Findings
) -> Change | None:
    current = next((a for a in observed.alarms.get(spec.region, ()) if a.name == spec.name), None)
    if current is None:
        metric = FieldDiff(field="metric", new=f"{spec.namespace} {spec.metric_name}")
        return Change.of(
            spec, Action.CREATE, [metric, FieldDiff(field="threshold", new=float(spec.threshold))]
        )
    taking = desired.claim_tagged(
        findings, "alarms", spec.name, current.tags, f"{spec.region}: CloudWatch alarm {spec.name}"
    )
    if taking is None:
        return None
    merged = _keeping_operator_actions(spec, current)
    action, diffs = compare(current.settings(), merged.settings())
    return Change.of(merged, Action.UPDATE if taking else action, [*diffs, *taking])


def changes(desired: DesiredState, observed: ObservedState, findings: Findings) -> list[Change]:
    specs = desired.of(AlarmSpec)
    for region, alarm in unwanted(specs, observed.alarms.alarms):
        findings.warnings.append(f"{region}: alarm {alarm.name} is no longer in the topology (left alone)")
    found = (_change(desired, spec, observed.alarms, findings) for spec in specs)
    return [c for c in found if c is not None]


# Alarms watch what the other stages make: the replicas' and replicators' metrics.
_WATCHED = ("dynamodb-replicas", "msk-replicators", "aurora-secondaries")
STAGES = (StageDef("cloudwatch-alarms", ResourceKind.ALARM, concurrent=True, depends_on=_WATCHED),)
