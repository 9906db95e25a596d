"""CloudWatch alarm tasks against moto: created with tags, updated whole, read back by prefix."""

from __future__ import annotations

import uuid

import boto3

from chalkdr.audit import AuditRecord
from chalkdr.clients import AwsClients
from chalkdr.plan import MANAGED_TAGS
from chalkdr.plan import Action
from chalkdr.plan import AlarmSpec
from chalkdr.plan import Change
from chalkdr.plan import ResourceKind
from tasks.audit import ApplyContext
from tasks.cloudwatch import ensure_alarm
from tasks.cloudwatch import read_alarms

REGION = "us-west-2"


def spec(prefix: str, threshold: float) -> AlarmSpec:
    return AlarmSpec(
        name=f"{prefix}aurora-meta-west-replication-lag",
        region=REGION,
        namespace="AWS/RDS",
        metric_name="AuroraGlobalDBReplicationLag",
        dimensions={"DBClusterIdentifier": "meta-west"},
        threshold=threshold,
        description="lag",
        account_id="123456789012",
        tags=MANAGED_TAGS,
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
    cw = boto3.client("cloudwatch", region_name=REGION)
    arn = cw.describe_alarms(AlarmNames=[created.name])["MetricAlarms"][0]["AlarmArn"]
    assert arn == created.arn == audit[0].resource
    assert cw.list_tags_for_resource(ResourceARN=arn)["Tags"] == [
        {"Key": "chalk-dr:managed", "Value": "true"}
    ]
    updated = spec(prefix, 2500)
    ensure_alarm.fn(
        ApplyContext(clients, emit=audit.append),
        Change(kind=ResourceKind.ALARM, id=updated.name, region=REGION, action=Action.UPDATE, spec=updated),
    )
    (seen,) = read_alarms.fn(clients, REGION, prefix)
    assert seen.threshold == 2500
    assert [a.action for a in audit] == ["create-alarm", "update-alarm"]
    assert read_alarms.fn(clients, REGION, "chalkdr-other-") == []
