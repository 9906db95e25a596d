"""DynamoDB global-table tasks against the sandbox's DynamoDB (moto ignores ReplicaUpdates).

AWS checks two things before it adds a replica (global tables prerequisites): a table encrypted
with a customer managed key needs a KMS key of the replica's region (KMSMasterKeyId per replica),
and its write capacity must be on-demand or auto scaled. The reads report both; the ensure passes
the replica's key.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalkdr.audit import AuditRecord
from chalkdr.clients import AwsClients
from chalkdr.errors import PermanentAwsError
from chalkdr.plan import Action
from chalkdr.plan import Change
from chalkdr.plan import FieldDiff
from chalkdr.plan import GlobalTableSpec
from chalkdr.plan import ResourceKind
from chalkdr.plan import WaitPolicy
from chalkdr.plan import ownership_tags
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


KEY_SCHEMA: dict[str, Any] = {
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
}


def new_table(**settings: Any) -> str:
    name = f"online-{uuid.uuid4().hex[:8]}"
    boto3.client("dynamodb", region_name=EAST).create_table(TableName=name, **KEY_SCHEMA, **settings)
    return name


def customer_key(region: str) -> str:
    arn: str = boto3.client("kms", region_name=region).create_key(Description=f"online store {region}")[
        "KeyMetadata"
    ]["Arn"]
    return arn


@pytest.fixture
def table(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return new_table(BillingMode="PAY_PER_REQUEST")


@pytest.fixture
def encrypted(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """An on-demand table encrypted with a customer managed key, as Chalk's online store is."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    key = customer_key(EAST)
    sse = {"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": key}
    return new_table(BillingMode="PAY_PER_REQUEST", SSESpecification=sse), key


def change(
    table: str,
    present: list[str],
    regions: tuple[str, ...] = (EAST, WEST, EU),
    keys: dict[str, str] | None = None,
) -> Change:
    spec = GlobalTableSpec(
        table=table, region=EAST, regions=regions, tags=ownership_tags("test"), replica_kms_keys=keys or {}
    )
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
        self.creates: list[dict[str, Any]] = []  # each UpdateTable's ReplicaUpdates Create

    def __call__(self, model: Any, params: Any, **_: Any) -> None:
        op = model.name
        if op == "UpdateTable":
            create = params["ReplicaUpdates"][0]["Create"]
            op += "+" + create["RegionName"]
            with self.lock:
                self.creates.append(dict(create))
        with self.lock:
            self.ops.append(op)


def test_read_reports_only_existing_tables_and_their_other_regions(table: str) -> None:
    clients = AwsClients()
    (east,) = read_tables.fn(clients, EAST, [table, "no-such-table"])
    assert (east.table, east.status, east.replica_regions) == (table, "ACTIVE", ())
    assert (east.kms_key_arn, east.kms_customer_managed, east.billing_mode) == (
        None,
        False,
        "PAY_PER_REQUEST",
    )
    assert read_tables.fn(clients, WEST, [table]) == []


class TestPrerequisitesRead:
    """What the plan judges a replica by, read from DescribeTable, KMS and Application Auto Scaling."""

    def test_a_customer_managed_key(self, encrypted: tuple[str, str]) -> None:
        name, key = encrypted
        (seen,) = read_tables.fn(AwsClients(), EAST, [name])
        assert (seen.kms_key_arn, seen.kms_customer_managed, seen.billing_mode) == (
            key,
            True,
            "PAY_PER_REQUEST",
        )

    def test_provisioned_write_capacity_with_and_without_auto_scaling(
        self, endpoint: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        throughput = {"ProvisionedThroughput": {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}}
        fixed, scaled = new_table(**throughput), new_table(**throughput)
        aas = boto3.client("application-autoscaling", region_name=EAST)
        scope: dict[str, Any] = {
            "ServiceNamespace": "dynamodb",
            "ResourceId": f"table/{scaled}",
            "ScalableDimension": "dynamodb:table:WriteCapacityUnits",
        }
        aas.register_scalable_target(**scope, MinCapacity=5, MaxCapacity=100)
        (target_only,) = read_tables.fn(AwsClients(), EAST, [scaled])
        assert target_only.write_autoscaled is False  # a target without a policy scales nothing
        aas.put_scaling_policy(
            **scope,
            PolicyName=f"{scaled}-writes",
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": 70.0,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "DynamoDBWriteCapacityUtilization"},
            },
        )
        seen = {t.table: t for t in read_tables.fn(AwsClients(), EAST, [fixed, scaled])}
        assert {n: (t.billing_mode, t.write_autoscaled) for n, t in seen.items()} == {
            fixed: ("PROVISIONED", False),
            scaled: ("PROVISIONED", True),
        }


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
            {"Key": "chalk-dr:managed", "Value": "true"},
            {"Key": "chalk-dr:environment", "Value": "test"},  # the replica is this environment's
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


def test_a_replica_of_an_encrypted_table_is_created_with_its_regions_key(encrypted: tuple[str, str]) -> None:
    name, _ = encrypted
    west_key = customer_key(WEST)
    calls = Calls()
    clients = AwsClients(event_hooks=[("before-parameter-build.dynamodb", calls)])
    result = ensure_replicas.fn(
        ApplyContext(clients, waits=FAST, emit=lambda _r: None),
        change(name, [EAST], (EAST, WEST), keys={WEST: west_key}),
    )
    assert [a.action for a in result.audit] == ["create-replica", "tag-replica"]
    assert calls.creates == [{"RegionName": WEST, "KMSMasterKeyId": west_key}]
    (replica,) = read_tables.fn(clients, WEST, [name])
    assert replica.status == "ACTIVE"
    assert (replica.kms_key_arn, replica.kms_customer_managed) == (west_key, True)


def test_without_the_regions_key_aws_refuses_the_replica(encrypted: tuple[str, str]) -> None:
    """Why the plan asks for online_store_kms_key: UpdateTable fails, nothing is created."""
    name, _ = encrypted
    with pytest.raises(PermanentAwsError, match="KMSMasterKeyId must be specified for each replica"):
        ensure_replicas.fn(
            ApplyContext(AwsClients(), waits=FAST, emit=lambda _r: None), change(name, [EAST], (EAST, WEST))
        )
    assert read_tables.fn(AwsClients(), WEST, [name]) == []
