"""DynamoDB global-table tasks against the sandbox's DynamoDB (moto ignores ReplicaUpdates)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalkdr.audit import AuditRecord
from chalkdr.clients import AwsClients
from chalkdr.plan import MANAGED_TAGS
from chalkdr.plan import Action
from chalkdr.plan import Change
from chalkdr.plan import FieldDiff
from chalkdr.plan import GlobalTableSpec
from chalkdr.plan import ResourceKind
from chalkdr.plan import WaitPolicy
from sandbox.clock import SandboxClock
from sandbox.dynamodb import DynamoDbSim
from sandbox.harness import AwsSandbox
from tasks.audit import ApplyContext
from tasks.dynamodb import ensure_replicas
from tasks.dynamodb import read_tables

EAST, WEST, EU = "us-east-1", "us-west-2", "eu-west-1"
FAST = WaitPolicy(time_scale=100.0, timeout_s=1000)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with AwsSandbox(
        lambda app, truth: [
            DynamoDbSim(app, clock=SandboxClock(time_scale=10.0), truth=truth, replica_create_s=0.3)
        ]
    ) as aws:
        yield aws.endpoint


@pytest.fixture
def table(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    name = f"online-{uuid.uuid4().hex[:8]}"
    boto3.client("dynamodb", region_name=EAST).create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def change(table: str, present: list[str], regions: tuple[str, ...] = (EAST, WEST, EU)) -> Change:
    spec = GlobalTableSpec(table=table, region=EAST, regions=regions, tags=MANAGED_TAGS)
    return Change(
        kind=ResourceKind.GLOBAL_TABLE,
        id=table,
        region=EAST,
        action=Action.UPDATE,
        diffs=(FieldDiff(field="replica_regions", old=present, new=sorted(regions)),),
        spec=spec,
    )


class Calls:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops: list[str] = []

    def __call__(self, model: Any, params: Any, **_: Any) -> None:
        op = model.name
        if op == "UpdateTable":
            op += "+" + params["ReplicaUpdates"][0]["Create"]["RegionName"]
        with self.lock:
            self.ops.append(op)


def test_read_reports_only_existing_tables_and_their_other_regions(table: str) -> None:
    clients = AwsClients()
    (east,) = read_tables.fn(clients, EAST, [table, "no-such-table"])
    assert (east.table, east.status, east.replica_regions) == (table, "ACTIVE", ())
    assert read_tables.fn(clients, WEST, [table]) == []


def test_replicas_are_added_one_region_at_a_time_waited_for_and_tagged(table: str) -> None:
    calls = Calls()
    clients = AwsClients(event_hooks=[("before-parameter-build.dynamodb", calls)])
    audit: list[AuditRecord] = []
    result = ensure_replicas.fn(
        ApplyContext(clients, waits=FAST, audit_detail={"approver": "ada"}, emit=audit.append),
        change(table, [EAST]),
    )
    assert [op for op in calls.ops if op.startswith(("UpdateTable", "TagResource"))] == [
        f"UpdateTable+{WEST}",
        "TagResource",
        f"UpdateTable+{EU}",
        "TagResource",
    ]
    assert [(a.action, a.region) for a in result.audit] == [
        ("create-replica", EAST),
        ("tag-replica", WEST),
        ("create-replica", EAST),
        ("tag-replica", EU),
    ]
    assert audit == list(result.audit) and all(a.detail["approver"] == "ada" for a in audit)
    (east,) = read_tables.fn(clients, EAST, [table])
    assert sorted(east.replica_regions) == [EU, WEST] and set(east.replica_status.values()) == {"ACTIVE"}
    for region in (WEST, EU):
        ddb = boto3.client("dynamodb", region_name=region)
        arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
        assert ddb.list_tags_of_resource(ResourceArn=arn)["Tags"] == [
            {"Key": "chalk-dr:managed", "Value": "true"}
        ]
        assert f":{region}:" in arn


def test_a_replica_added_meanwhile_is_not_added_again(table: str) -> None:
    boto3.client("dynamodb", region_name=EAST).update_table(
        TableName=table, ReplicaUpdates=[{"Create": {"RegionName": WEST}}]
    )
    result = ensure_replicas.fn(
        ApplyContext(AwsClients(), waits=FAST, emit=lambda _r: None), change(table, [EAST], (EAST, WEST))
    )
    assert result.audit == ()
