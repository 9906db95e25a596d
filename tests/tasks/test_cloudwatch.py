"""CloudWatch alarm tasks against moto: created with tags and actions, updated whole, read back by prefix.

PutMetricAlarm replaces an alarm's whole configuration, actions included: the read, the plan and
the ensure together must keep the actions an operator added while restoring the guard.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import yaml

from chalkdr.audit import AuditRecord
from chalkdr.clients import AwsClients
from chalkdr.plan import Action
from chalkdr.plan import AlarmSpec
from chalkdr.plan import Change
from chalkdr.plan import ObservedAlarms
from chalkdr.plan import ObservedRoute53
from chalkdr.plan import ObservedState
from chalkdr.plan import ResourceKind
from chalkdr.plan import ownership_tags
from chalkdr.plan import plan_for
from chalkdr.topology import Topology
from chalkdr.topology import parse_topology
from tasks.audit import ApplyContext
from tasks.cloudwatch import ensure_alarm
from tasks.cloudwatch import read_alarms

REGION = "us-west-2"
EXAMPLE = Path(__file__).resolve().parents[2] / "deployments" / "topology.example.yaml"
TOPIC = "arn:aws:sns:us-west-2:123456789012:chalk-dr-alarms"
PAGER = "arn:aws:sns:us-west-2:123456789012:oncall-pager"
RESOLVED = "arn:aws:sns:us-west-2:123456789012:oncall-resolved"


def spec(prefix: str, threshold: float) -> AlarmSpec:
    return AlarmSpec(
        name=f"{prefix}aurora-meta-west-replication-lag",
        region=REGION,
        namespace="AWS/RDS",
        metric_name="AuroraGlobalDBReplicationLag",
        dimensions={"DBClusterIdentifier": "meta-west", "SourceRegion": "us-east-1"},
        threshold=threshold,
        description="lag",
        account_id="123456789012",
        alarm_actions=(TOPIC,),
        tags=ownership_tags("test"),
    )


def test_create_read_update(moto_server: str) -> None:
    prefix = f"chalkdr-t{uuid.uuid4().hex[:6]}-"
    clients = AwsClients()
    audit: list[AuditRecord] = []
    created = spec(prefix, 5000)
    ensure_alarm.fn(
        ApplyContext(clients, emit=audit.append),
        Change(kind=ResourceKind.ALARM, id=created.name, region=REGION, action=Action.CREATE, spec=created),
    )
    (seen,) = read_alarms.fn(clients, REGION, prefix)
    assert seen.settings() == created.settings()
    assert seen.alarm_actions == (TOPIC,)
    cw = boto3.client("cloudwatch", region_name=REGION)
    raw = cw.describe_alarms(AlarmNames=[created.name])["MetricAlarms"][0]
    assert raw["AlarmArn"] == created.arn == audit[0].resource
    assert raw["ActionsEnabled"] is True and raw["AlarmActions"] == [TOPIC]
    assert cw.list_tags_for_resource(ResourceARN=raw["AlarmArn"])["Tags"] == [
        {"Key": "chalk-dr:managed", "Value": "true"},
        {"Key": "chalk-dr:environment", "Value": "test"},
    ]
    assert seen.tags == ownership_tags("test")  # read back: whose it is
    updated = spec(prefix, 2500)
    ensure_alarm.fn(
        ApplyContext(clients, emit=audit.append),
        Change(kind=ResourceKind.ALARM, id=updated.name, region=REGION, action=Action.UPDATE, spec=updated),
    )
    (seen,) = read_alarms.fn(clients, REGION, prefix)
    assert seen.threshold == 2500
    assert [a.action for a in audit] == ["create-alarm", "update-alarm"]
    assert read_alarms.fn(clients, "us-west-2", "chalkdr-other-") == []


def _topology() -> Topology:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["environment"] = f"t{uuid.uuid4().hex[:8]}"
    return parse_topology(data)


def _alarm_plan(clients: AwsClients, t: Topology) -> list[Change]:
    """The alarms' part of the plan, from what the alarm reader sees (other systems are not read)."""
    prefix = f"chalkdr-{t.environment}-"
    seen = {r.aws_region: tuple(read_alarms.fn(clients, r.aws_region, prefix)) for r in t.regions}
    observed = ObservedState(
        route53=ObservedRoute53(zone_id=t.route53.zone_id, zone_name=None),
        alarms=ObservedAlarms(alarms=seen),
    )
    return [c for c in plan_for(t, observed).changes if c.kind is ResourceKind.ALARM]


def _apply(clients: AwsClients, changes: list[Change]) -> list[AuditRecord]:
    audit: list[AuditRecord] = []
    for change in changes:
        if change.action is not Action.NOOP:
            ensure_alarm.fn(ApplyContext(clients, emit=audit.append), change)
    return audit


def test_an_update_keeps_the_actions_an_operator_added(moto_server: str) -> None:
    t, clients = _topology(), AwsClients()
    created = _apply(clients, _alarm_plan(clients, t))
    assert len(created) == 5
    cw = boto3.client("cloudwatch", region_name=REGION)
    name = f"chalkdr-{t.environment}-aurora-chalk-meta-west-replication-lag"
    alarm: dict[str, Any] = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    assert alarm["AlarmActions"] == [TOPIC]  # the region's topic from the topology
    assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == {
        "DBClusterIdentifier": "chalk-meta-west",
        "SourceRegion": "us-east-1",
    }

    # An operator pages on-call from the alarm too, and someone loosens its threshold: the whole
    # configuration is written back, as PutMetricAlarm requires.
    keep = (
        "AlarmName",
        "AlarmDescription",
        "Namespace",
        "MetricName",
        "Statistic",
        "Period",
        "EvaluationPeriods",
        "DatapointsToAlarm",
        "ComparisonOperator",
        "TreatMissingData",
        "Dimensions",
    )
    cw.put_metric_alarm(
        **{k: alarm[k] for k in keep},
        Threshold=60_000.0,
        AlarmActions=[TOPIC, PAGER],
        OKActions=[RESOLVED],
    )

    (drift,) = [c for c in _alarm_plan(clients, t) if c.action is not Action.NOOP]
    assert drift.id == name and drift.action is Action.UPDATE
    assert {d.field: (d.old, d.new) for d in drift.diffs} == {"threshold": (60_000.0, 5000.0)}
    audit = _apply(clients, [drift])
    assert [(a.action, a.api_call) for a in audit] == [("update-alarm", "cloudwatch:PutMetricAlarm")]
    after = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    assert after["Threshold"] == 5000.0
    assert sorted(after["AlarmActions"]) == sorted([TOPIC, PAGER]) and after["OKActions"] == [RESOLVED]
    assert {c.action for c in _alarm_plan(clients, t)} == {Action.NOOP}


def test_an_alarm_someone_else_made_is_an_error_until_adopted_then_only_tagged(moto_server: str) -> None:
    t, clients = _topology(), AwsClients()
    name = f"chalkdr-{t.environment}-aurora-chalk-meta-west-replication-lag"
    ours = next(c for c in _alarm_plan(clients, t) if c.id == name).typed_spec(AlarmSpec)
    cw = boto3.client("cloudwatch", region_name=REGION)
    cw.put_metric_alarm(  # the same alarm, made by hand: not tagged for this environment
        AlarmName=name,
        AlarmDescription=ours.description,
        Namespace=ours.namespace,
        MetricName=ours.metric_name,
        Dimensions=[{"Name": k, "Value": v} for k, v in ours.dimensions.items()],
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=3,
        DatapointsToAlarm=3,
        Threshold=5000.0,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
        AlarmActions=[TOPIC],
        Tags=[{"Key": "team", "Value": "db"}],
    )
    prefix = f"chalkdr-{t.environment}-"
    seen = {r.aws_region: tuple(read_alarms.fn(clients, r.aws_region, prefix)) for r in t.regions}
    observed = ObservedState(
        route53=ObservedRoute53(zone_id=t.route53.zone_id, zone_name=None), alarms=ObservedAlarms(alarms=seen)
    )
    assert any(
        e.startswith(f"{REGION}: CloudWatch alarm {name} exists and is not chalk-dr's")
        for e in plan_for(t, observed).errors
    )

    data = t.model_dump(mode="json", exclude_none=True)
    data["adopt"] = {"alarms": [name]}
    adopting = parse_topology(data)
    (change,) = [c for c in _alarm_plan(clients, adopting) if c.id == name]
    assert change.action is Action.UPDATE and change.only_adopts
    audit = _apply(clients, [change])
    assert [(a.action, a.api_call, a.detail["owner"]) for a in audit] == [
        ("adopt-alarm", "cloudwatch:TagResource", t.environment)
    ]
    (after,) = [a for a in read_alarms.fn(clients, REGION, name) if a.name == name]
    assert after.tags == {"team": "db", **ownership_tags(t.environment)}
    assert next(c for c in _alarm_plan(clients, t) if c.id == name).action is Action.NOOP
