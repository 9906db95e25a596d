"""DynamoDB global tables in the sandbox, exercised only through boto3/httpx on the served endpoint."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sandbox.aws import SandboxAwsApp
from sandbox.clock import SandboxClock
from sandbox.dynamodb import DynamoDbSim
from sandbox.harness import AwsSandbox
from sandbox.harness import poll
from sandbox.metrics import recent_datapoints
from sandbox.truth import GroundTruth

LAG_S = 0.3
METRICS_PERIOD_S = 0.2
TIME_SCALE = 60.0
EAST, WEST = "us-east-1", "us-west-2"


@pytest.fixture(scope="module")
def aws() -> Iterator[AwsSandbox]:
    def simulators(app: SandboxAwsApp, truth: GroundTruth) -> list[DynamoDbSim]:
        sim = DynamoDbSim(
            app,
            clock=SandboxClock(time_scale=TIME_SCALE),
            truth=truth,
            replication_lag_s=LAG_S,
            replica_create_s=0.4,  # long enough to observe CREATING, short enough to keep tests fast
            replica_delete_s=0.2,
            metrics_period_s=METRICS_PERIOD_S,
        )
        return [sim]

    with AwsSandbox(simulators) as sandbox:
        yield sandbox


def create_table(ddb: Any) -> str:
    name = f"features-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def wait_active(ddb: Any, name: str) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        table = ddb.describe_table(TableName=name)["Table"]
        replicas = table.get("Replicas", [])
        ok = table["TableStatus"] == "ACTIVE" and all(r["ReplicaStatus"] == "ACTIVE" for r in replicas)
        return table if ok else None

    return poll(settled)  # type: ignore[no-any-return]


@pytest.fixture
def global_table(regions: tuple[Any, Any]) -> str:
    east, _ = regions
    name = create_table(east)
    east.update_table(TableName=name, ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
    wait_active(east, name)
    return name


def key(pk: str, sk: int = 1) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"N": str(sk)}}


def absent_for(ddb: Any, name: str, item_key: dict[str, Any], seconds: float) -> None:
    """Assert the item stays absent for `seconds` (checking throughout, not once)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert "Item" not in ddb.get_item(TableName=name, Key=item_key)
        time.sleep(0.05)


class TestReplicas:
    def test_create_replica_reports_in_both_regions(self, regions: tuple[Any, Any]) -> None:
        east, west = regions
        name = create_table(east)
        resp = east.update_table(TableName=name, ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
        desc = resp["TableDescription"]
        assert desc["TableStatus"] == "UPDATING"
        assert desc["Replicas"] == [{"RegionName": WEST, "ReplicaStatus": "CREATING"}]
        assert desc["GlobalTableVersion"] == "2019.11.21"

        source = wait_active(east, name)
        replica = wait_active(west, name)
        # Each region lists the other replicas, as DescribeTable does on AWS.
        assert source["Replicas"] == [{"RegionName": WEST, "ReplicaStatus": "ACTIVE"}]
        assert replica["Replicas"] == [{"RegionName": EAST, "ReplicaStatus": "ACTIVE"}]
        assert replica["GlobalTableVersion"] == source["GlobalTableVersion"] == "2019.11.21"
        assert replica["KeySchema"] == source["KeySchema"]
        assert replica["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert replica["TableArn"].startswith(f"arn:aws:dynamodb:{WEST}:")
        assert source["StreamSpecification"] == {
            "StreamEnabled": True,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }

    def test_existing_items_are_copied_to_new_replica(self, regions: tuple[Any, Any]) -> None:
        east, west = regions
        name = create_table(east)
        east.put_item(TableName=name, Item={**key("before"), "v": {"S": "old"}})
        east.update_table(TableName=name, ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
        wait_active(west, name)
        assert west.get_item(TableName=name, Key=key("before"))["Item"]["v"] == {"S": "old"}

    def test_delete_replica_removes_it(
        self, regions: tuple[Any, Any], global_table: str, error_code_of: Any
    ) -> None:
        east, west = regions
        resp = east.update_table(TableName=global_table, ReplicaUpdates=[{"Delete": {"RegionName": WEST}}])
        assert resp["TableDescription"]["Replicas"] == [{"RegionName": WEST, "ReplicaStatus": "DELETING"}]

        poll(
            lambda: (
                error_code_of(lambda: west.describe_table(TableName=global_table))
                == "ResourceNotFoundException"
            )
        )
        table = east.describe_table(TableName=global_table)["Table"]
        assert table["TableStatus"] == "ACTIVE"
        assert "Replicas" not in table

    def test_replica_update_errors(self, regions: tuple[Any, Any], global_table: str) -> None:
        east, _ = regions
        cases = [
            ({"Create": {"RegionName": EAST}}, "ValidationException", "local region"),
            ({"Create": {"RegionName": WEST}}, "ValidationException", "already existed"),
            ({"Create": {"RegionName": "moon-central-1"}}, "ValidationException", "region"),
            ({"Delete": {"RegionName": "eu-west-1"}}, "ValidationException", "not found"),
        ]
        for update, code, fragment in cases:
            with pytest.raises(ClientError) as err:
                east.update_table(TableName=global_table, ReplicaUpdates=[update])
            assert err.value.response["Error"]["Code"] == code, update
            assert fragment in err.value.response["Error"]["Message"], update
        with pytest.raises(ClientError) as err:
            east.update_table(TableName="no-such-table", ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
        assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"

    def test_table_is_busy_while_a_replica_is_created(self, regions: tuple[Any, Any]) -> None:
        east, west = regions
        name = create_table(east)
        east.update_table(TableName=name, ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
        with pytest.raises(ClientError) as err:
            east.update_table(TableName=name, ReplicaUpdates=[{"Create": {"RegionName": "eu-west-1"}}])
        assert err.value.response["Error"]["Code"] == "ResourceInUseException"
        assert west.describe_table(TableName=name)["Table"]["TableStatus"] == "CREATING"
        with pytest.raises(ClientError) as err:  # a table that is not ACTIVE serves no data yet
            west.get_item(TableName=name, Key=key("any"))
        assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
        wait_active(east, name)


def replication(aws: AwsSandbox, action: str, table: str, region: str) -> Any:
    """The operator's route: replication into `region`'s replica paused or resumed (`action`)."""
    return aws.control("POST", f"/_sandbox/dynamodb/{action}", json={"table": table, "region": region})


class TestReplication:
    def test_put_arrives_after_the_lag_and_not_before(
        self, regions: tuple[Any, Any], global_table: str
    ) -> None:
        east, west = regions
        started = time.monotonic()
        east.put_item(TableName=global_table, Item={**key("user-1"), "name": {"S": "ada"}})
        assert "Item" not in west.get_item(TableName=global_table, Key=key("user-1"))
        item = poll(lambda: west.get_item(TableName=global_table, Key=key("user-1")).get("Item"))
        assert time.monotonic() - started >= LAG_S
        assert item["name"] == {"S": "ada"}

    def test_update_and_delete_replicate_both_ways(self, regions: tuple[Any, Any], global_table: str) -> None:
        east, west = regions
        west.put_item(TableName=global_table, Item={**key("user-2"), "n": {"N": "1"}})
        poll(lambda: east.get_item(TableName=global_table, Key=key("user-2")).get("Item"))
        east.update_item(
            TableName=global_table,
            Key=key("user-2"),
            UpdateExpression="SET n = :n",
            ExpressionAttributeValues={":n": {"N": "2"}},
        )
        poll(lambda: west.get_item(TableName=global_table, Key=key("user-2"))["Item"]["n"] == {"N": "2"})
        east.delete_item(TableName=global_table, Key=key("user-2"))
        poll(lambda: "Item" not in west.get_item(TableName=global_table, Key=key("user-2")))

    def test_batch_and_transact_writes_replicate(self, regions: tuple[Any, Any], global_table: str) -> None:
        east, west = regions
        east.batch_write_item(
            RequestItems={global_table: [{"PutRequest": {"Item": key("batch", i)}} for i in range(3)]}
        )
        east.transact_write_items(TransactItems=[{"Put": {"TableName": global_table, "Item": key("tx")}}])
        wanted = [key("batch", 0), key("batch", 2), key("tx")]
        poll(lambda: all("Item" in west.get_item(TableName=global_table, Key=k) for k in wanted))

    def test_last_writer_wins(self, regions: tuple[Any, Any], global_table: str) -> None:
        east, west = regions
        east.put_item(TableName=global_table, Item={**key("race"), "v": {"S": "east"}})
        west.put_item(TableName=global_table, Item={**key("race"), "v": {"S": "west"}})  # later write

        def converged() -> bool:
            values = [r.get_item(TableName=global_table, Key=key("race"))["Item"]["v"] for r in (east, west)]
            return values == [{"S": "west"}, {"S": "west"}]

        poll(converged)

    def test_operator_pause_holds_writes_and_resume_drains(
        self, aws: AwsSandbox, regions: tuple[Any, Any], global_table: str
    ) -> None:
        east, west = regions
        resp = replication(aws, "pause", global_table, WEST)
        assert resp.status_code == 200
        east.put_item(TableName=global_table, Item=key("held"))
        absent_for(west, global_table, key("held"), LAG_S * 3)
        resp = replication(aws, "resume", global_table, WEST)
        assert resp.status_code == 200
        poll(lambda: west.get_item(TableName=global_table, Key=key("held")).get("Item"))

    def test_control_route_rejects_a_non_replica(self, aws: AwsSandbox, global_table: str) -> None:
        resp = replication(aws, "pause", global_table, "eu-west-1")
        assert resp.status_code == 404
        assert aws.control("POST", "/_sandbox/dynamodb/pause", content=b"nope").status_code == 400


class TestReplicationLatencyMetric:
    @staticmethod
    def maximum(cloudwatch: Any, table: str, receiving: str) -> float | None:
        points = recent_datapoints(
            cloudwatch,
            "AWS/DynamoDB",
            "ReplicationLatency",
            {"TableName": table, "ReceivingRegion": receiving},
            minutes=5,
            statistics=("Maximum", "SampleCount"),
        )
        if not points:
            return None
        assert {p["Unit"] for p in points} == {"Milliseconds"}
        return float(max(p["Maximum"] for p in points))

    def test_latency_is_published_in_the_source_region(
        self, aws: AwsSandbox, regions: tuple[Any, Any], global_table: str
    ) -> None:
        east, west = regions
        east.put_item(TableName=global_table, Item=key("metric"))
        east_cw, west_cw = aws.client("cloudwatch", EAST), aws.client("cloudwatch", WEST)
        peak = poll(lambda: self.maximum(east_cw, global_table, WEST))
        assert peak >= LAG_S * 1000 * 0.9  # real milliseconds: lag is measured, not scaled
        west.put_item(TableName=global_table, Item=key("metric-back"))
        assert poll(lambda: self.maximum(west_cw, global_table, EAST))  # the other direction: its own writes

    def test_no_writes_no_datapoints(
        self, aws: AwsSandbox, regions: tuple[Any, Any], global_table: str
    ) -> None:
        """V2globaltables_monitoring: ReplicationLatency is "the elapsed time between when an item is
        written to a replica table, and when that item appears in another replica": an idle table has
        nothing to measure and publishes no datapoint (a consumer must read the gap as missing data,
        not as zero lag). Writes bring the datapoints back."""
        east, _ = regions
        cloudwatch = aws.client("cloudwatch", EAST)
        deadline = time.monotonic() + METRICS_PERIOD_S * 6  # six publishing periods without a write
        while time.monotonic() < deadline:
            assert self.maximum(cloudwatch, global_table, WEST) is None
            time.sleep(METRICS_PERIOD_S / 2)
        east.put_item(TableName=global_table, Item=key("wakes-the-metric"))
        assert poll(lambda: self.maximum(cloudwatch, global_table, WEST))

    def test_latency_grows_while_paused(
        self, aws: AwsSandbox, regions: tuple[Any, Any], global_table: str
    ) -> None:
        east, _ = regions
        cloudwatch = aws.client("cloudwatch", EAST)
        replication(aws, "pause", global_table, WEST)
        try:
            east.put_item(TableName=global_table, Item=key("slow"))
            threshold = 3 * LAG_S * 1000
            poll(lambda: (self.maximum(cloudwatch, global_table, WEST) or 0) > threshold)
        finally:
            replication(aws, "resume", global_table, WEST)


def create_keyed_table(ddb: Any, **settings: Any) -> str:
    name = f"online-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        **settings,
    )
    return name


def replica_error(ddb: Any, name: str, replica: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ClientError) as err:
        ddb.update_table(TableName=name, ReplicaUpdates=[{"Create": {"RegionName": WEST, **replica}}])
    return str(err.value.response["Error"]["Code"]), str(err.value.response["Error"]["Message"])


class TestReplicaPrerequisites:
    """What UpdateTable ReplicaUpdates Create refuses before a replica is made (global tables
    2019.11.21): "KMSMasterKeyId must be specified for each replica" for a table under a customer
    managed key (API reference CreateReplicationGroupMemberAction.KMSMasterKeyId: "The KMS key that
    should be used for KMS encryption in the new replica"), and a provisioned table's write capacity
    must be auto scaled ("A global table must have throughput capacity configured one of two ways:
    on-demand ... or provisioned capacity mode with auto scaling", V2globaltables_reqs_bestpractices)."""

    def test_a_customer_managed_key_needs_a_key_for_the_replica(
        self, aws: AwsSandbox, regions: tuple[Any, Any]
    ) -> None:
        east, west = regions
        east_key = aws.client("kms", EAST).create_key(Description="online store")["KeyMetadata"]["Arn"]
        west_key = aws.client("kms", WEST).create_key(Description="online store")["KeyMetadata"]["Arn"]
        name = create_keyed_table(
            east,
            BillingMode="PAY_PER_REQUEST",
            SSESpecification={"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": east_key},
        )
        assert replica_error(east, name, {}) == (
            "ValidationException",
            "One or more parameter values were invalid: KMSMasterKeyId must be specified for each replica.",
        )
        assert east.describe_table(TableName=name)["Table"].get("Replicas") is None  # nothing was made

        east.update_table(
            TableName=name, ReplicaUpdates=[{"Create": {"RegionName": WEST, "KMSMasterKeyId": west_key}}]
        )
        replica = wait_active(west, name)
        assert replica["SSEDescription"]["KMSMasterKeyArn"] == west_key

    def test_the_aws_managed_key_needs_no_replica_key(self, regions: tuple[Any, Any]) -> None:
        east, west = regions
        name = create_keyed_table(east, BillingMode="PAY_PER_REQUEST", SSESpecification={"Enabled": True})
        east.update_table(TableName=name, ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
        wait_active(west, name)

    def test_provisioned_write_capacity_must_be_auto_scaled(
        self, aws: AwsSandbox, regions: tuple[Any, Any]
    ) -> None:
        east, west = regions
        name = create_keyed_table(
            east,
            BillingMode="PROVISIONED",
            ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5},
        )
        refused = (
            "ValidationException",
            "Table write capacity should either be Pay-Per-Request or AutoScaled.",
        )
        assert replica_error(east, name, {}) == refused

        scaling = aws.client("application-autoscaling", EAST)
        target = {
            "ServiceNamespace": "dynamodb",
            "ResourceId": f"table/{name}",
            "ScalableDimension": "dynamodb:table:WriteCapacityUnits",
        }
        scaling.register_scalable_target(**target, MinCapacity=5, MaxCapacity=50)
        assert replica_error(east, name, {}) == refused  # a scalable target without a policy scales nothing

        scaling.put_scaling_policy(
            PolicyName=f"{name}-writes",
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": 70.0,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "DynamoDBWriteCapacityUtilization"},
            },
            **target,
        )
        east.update_table(TableName=name, ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
        assert wait_active(west, name)["ProvisionedThroughput"]["WriteCapacityUnits"] == 5
