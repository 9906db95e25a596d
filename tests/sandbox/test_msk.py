"""MSK in the sandbox, seen only through boto3 and the control API: clusters, brokers, Replicator, metrics."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sandbox.aws import SandboxAwsApp
from sandbox.clock import SandboxClock
from sandbox.harness import AwsSandbox
from sandbox.harness import poll
from sandbox.msk import MskSim
from sandbox.truth import GroundTruth

SOURCE, TARGET = "us-east-1", "us-west-2"
ROLE = "arn:aws:iam::123456789012:role/msk-replicator"
BROKERS = {"InstanceType": "kafka.m5.large", "ClientSubnets": ["subnet-a", "subnet-b", "subnet-c"]}
IAM = {"Sasl": {"Iam": {"Enabled": True}}}
ACTIVATE_AFTER = 0.6


@pytest.fixture(scope="module")
def world() -> Iterator[AwsSandbox]:
    def simulators(app: SandboxAwsApp, truth: GroundTruth) -> list[MskSim]:
        sim = MskSim(
            app,
            clock=SandboxClock(),
            truth=truth,
            activate_after=ACTIVATE_AFTER,
            replicator_ready_after=0.3,
            replicator_delete_after=0.2,
            metric_period=0.2,
            seed=7,
        )
        return [sim]

    with AwsSandbox(simulators) as sandbox:
        yield sandbox


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_cluster(world: AwsSandbox, region: str, **extra: Any) -> str:
    kafka = world.client("kafka", region)
    resp = kafka.create_cluster(
        ClusterName=unique("chalk"),
        KafkaVersion="3.6.0",
        NumberOfBrokerNodes=3,
        BrokerNodeGroupInfo=BROKERS,
        **({"ClientAuthentication": IAM} | extra),
    )
    return str(resp["ClusterArn"])


def wait_active(world: AwsSandbox, arn: str) -> None:
    kafka = world.client("kafka", arn.split(":")[3])
    poll(lambda: kafka.describe_cluster(ClusterArn=arn)["ClusterInfo"]["State"] == "ACTIVE")


@pytest.fixture(scope="module")
def clusters(world: AwsSandbox) -> tuple[str, str]:
    """An ACTIVE source cluster in us-east-1 and an ACTIVE target cluster in us-west-2."""
    source, target = create_cluster(world, SOURCE), create_cluster(world, TARGET)
    wait_active(world, source)
    wait_active(world, target)
    return source, target


def replicator_request(source: str, target: str, name: str) -> dict[str, Any]:
    vpc = {"SubnetIds": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-1"]}
    return {
        "ReplicatorName": name,
        "Description": "chalk persistence traffic",
        "ServiceExecutionRoleArn": ROLE,
        "KafkaClusters": [
            {"AmazonMskCluster": {"MskClusterArn": source}, "VpcConfig": vpc},
            {"AmazonMskCluster": {"MskClusterArn": target}, "VpcConfig": vpc},
        ],
        "ReplicationInfoList": [
            {
                "SourceKafkaClusterArn": source,
                "TargetKafkaClusterArn": target,
                "TargetCompressionType": "LZ4",
                "TopicReplication": {
                    "TopicsToReplicate": ["chalk-.*"],
                    "CopyTopicConfigurations": True,
                    "DetectAndCopyNewTopics": True,
                    "CopyAccessControlListsForTopics": False,
                    "StartingPosition": {"Type": "EARLIEST"},
                },
                "ConsumerGroupReplication": {
                    "ConsumerGroupsToReplicate": ["chalk-workers"],
                    "SynchroniseConsumerGroupOffsets": True,
                    "DetectAndCopyNewConsumerGroups": True,
                },
            }
        ],
        "Tags": {"chalk-dr:managed": "true"},
    }


def wait_running(world: AwsSandbox, arn: str) -> None:
    kafka = world.client("kafka", TARGET)
    poll(lambda: kafka.describe_replicator(ReplicatorArn=arn)["ReplicatorState"] == "RUNNING")


class TestClusters:
    def test_provisioned_and_v2_clusters_become_active_everywhere(self, world: AwsSandbox) -> None:
        kafka = world.client("kafka", SOURCE)
        v1 = kafka.create_cluster(
            ClusterName=unique("v1"), KafkaVersion="3.6.0", NumberOfBrokerNodes=3, BrokerNodeGroupInfo=BROKERS
        )
        v2 = kafka.create_cluster_v2(
            ClusterName=unique("v2"),
            Provisioned={"BrokerNodeGroupInfo": BROKERS, "KafkaVersion": "3.6.0", "NumberOfBrokerNodes": 3},
        )
        assert v1["State"] == "CREATING"
        assert v2["State"] == "CREATING"
        arns = {v1["ClusterArn"], v2["ClusterArn"]}

        poll(lambda: kafka.describe_cluster(ClusterArn=v1["ClusterArn"])["ClusterInfo"]["State"] == "ACTIVE")
        poll(
            lambda: kafka.describe_cluster_v2(ClusterArn=v2["ClusterArn"])["ClusterInfo"]["State"] == "ACTIVE"
        )
        listed = {c["ClusterArn"]: c["State"] for c in kafka.list_clusters()["ClusterInfoList"]}
        listed_v2 = {c["ClusterArn"]: c["State"] for c in kafka.list_clusters_v2()["ClusterInfoList"]}
        assert {listed[a] for a in arns} == {"ACTIVE"}
        assert {listed_v2[a] for a in arns} == {"ACTIVE"}
        assert {e["arn"] for e in world.truth.events("msk.cluster")} >= arns

    def test_unknown_cluster_is_not_found(self, world: AwsSandbox) -> None:
        kafka = world.client("kafka", SOURCE)
        missing = f"arn:aws:kafka:{SOURCE}:123456789012:cluster/{uuid.uuid4()}"
        with pytest.raises(ClientError) as exc:
            kafka.describe_cluster(ClusterArn=missing)
        assert error_code(exc) == "NotFoundException"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


class TestBootstrapBrokers:
    def test_refused_until_active_then_iam_brokers(self, world: AwsSandbox) -> None:
        arn = create_cluster(world, SOURCE)
        kafka = world.client("kafka", SOURCE)
        with pytest.raises(ClientError) as exc:
            kafka.get_bootstrap_brokers(ClusterArn=arn)
        assert error_code(exc) == "BadRequestException"
        assert "CREATING" in exc.value.response["Error"]["Message"]

        wait_active(world, arn)
        brokers = kafka.get_bootstrap_brokers(ClusterArn=arn)
        hosts = brokers["BootstrapBrokerStringSaslIam"].split(",")
        assert len(hosts) == 3
        pattern = r"b-[1-3]\.chalk-[0-9a-f]{8}\.[0-9a-f]{6}\.c[1-3]\.kafka\.us-east-1\.amazonaws\.com:9098"
        assert all(re.fullmatch(pattern, h) for h in hosts), hosts
        assert "BootstrapBrokerString" not in brokers  # IAM-only clusters have no plaintext listener

    def test_unauthenticated_tls_plaintext_cluster_gets_9092_and_9094(self, world: AwsSandbox) -> None:
        arn = create_cluster(
            world,
            TARGET,
            ClientAuthentication={"Unauthenticated": {"Enabled": True}},
            EncryptionInfo={"EncryptionInTransit": {"ClientBroker": "TLS_PLAINTEXT", "InCluster": True}},
        )
        wait_active(world, arn)
        brokers = world.client("kafka", TARGET).get_bootstrap_brokers(ClusterArn=arn)
        assert brokers["BootstrapBrokerString"].endswith(".kafka.us-west-2.amazonaws.com:9092")
        assert brokers["BootstrapBrokerStringTls"].endswith(":9094")
        assert "BootstrapBrokerStringSaslIam" not in brokers

    def test_unknown_cluster(self, world: AwsSandbox) -> None:
        with pytest.raises(ClientError) as exc:
            world.client("kafka", SOURCE).get_bootstrap_brokers(
                ClusterArn=f"arn:aws:kafka:{SOURCE}:123456789012:cluster/{uuid.uuid4()}"
            )
        assert error_code(exc) == "NotFoundException"


class TestReplicator:
    def test_lifecycle_and_shapes(self, world: AwsSandbox, clusters: tuple[str, str]) -> None:
        source, target = clusters
        kafka = world.client("kafka", TARGET)
        name = unique("chalk-rep")
        created = kafka.create_replicator(**replicator_request(source, target, name))
        arn = created["ReplicatorArn"]
        assert created["ReplicatorName"] == name
        assert created["ReplicatorState"] == "CREATING"
        assert arn.startswith(f"arn:aws:kafka:{TARGET}:123456789012:replicator/{name}/")

        wait_running(world, arn)
        described = kafka.describe_replicator(ReplicatorArn=arn)
        assert described["ReplicatorName"] == name
        assert described["ReplicatorDescription"] == "chalk persistence traffic"
        assert described["ServiceExecutionRoleArn"] == ROLE
        assert described["IsReplicatorReference"] is False
        assert described["ReplicatorResourceArn"] == arn
        assert described["CurrentVersion"]
        assert isinstance(described["CreationTime"], datetime)
        assert described["Tags"] == {"chalk-dr:managed": "true"}
        msk_arns = [c["AmazonMskCluster"]["MskClusterArn"] for c in described["KafkaClusters"]]
        assert msk_arns == [source, target]
        assert all(c["VpcConfig"]["SubnetIds"] and c["KafkaClusterAlias"] for c in described["KafkaClusters"])
        (info,) = described["ReplicationInfoList"]
        aliases = [c["KafkaClusterAlias"] for c in described["KafkaClusters"]]
        assert [info["SourceKafkaClusterAlias"], info["TargetKafkaClusterAlias"]] == aliases
        assert info["TargetCompressionType"] == "LZ4"
        topics = info["TopicReplication"]
        assert topics["TopicsToReplicate"] == ["chalk-.*"]
        assert topics["CopyAccessControlListsForTopics"] is False
        assert topics["StartingPosition"] == {"Type": "EARLIEST"}
        groups = info["ConsumerGroupReplication"]
        assert groups["ConsumerGroupsToReplicate"] == ["chalk-workers"]
        assert groups["SynchroniseConsumerGroupOffsets"] is True

        listed = kafka.list_replicators(ReplicatorNameFilter=name)["Replicators"]
        assert [(r["ReplicatorArn"], r["ReplicatorState"]) for r in listed] == [(arn, "RUNNING")]
        assert listed[0]["ReplicationInfoSummaryList"][0]["TargetKafkaClusterAlias"] == aliases[1]
        assert world.client("kafka", SOURCE).list_replicators(ReplicatorNameFilter=name)["Replicators"] == []

        kafka.tag_resource(ResourceArn=arn, Tags={"chalk-dr:drill-id": "d1"})
        kafka.untag_resource(ResourceArn=arn, TagKeys=["chalk-dr:managed"])
        assert kafka.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"chalk-dr:drill-id": "d1"}

        deleted = kafka.delete_replicator(ReplicatorArn=arn, CurrentVersion=described["CurrentVersion"])
        assert deleted["ReplicatorState"] == "DELETING"

        def gone() -> bool:
            try:
                kafka.describe_replicator(ReplicatorArn=arn)
            except ClientError as exc:
                return exc.response["Error"]["Code"] == "NotFoundException"
            return False

        poll(gone)
        assert kafka.list_replicators(ReplicatorNameFilter=name)["Replicators"] == []
        states = [e["state"] for e in world.truth.events("msk.replicator") if e["name"] == name]
        assert states == ["CREATING", "RUNNING", "DELETING", "DELETED"]

    def test_update_replication_info_is_versioned(self, world: AwsSandbox, clusters: tuple[str, str]) -> None:
        source, target = clusters
        kafka = world.client("kafka", TARGET)
        arn = kafka.create_replicator(**replicator_request(source, target, unique("upd")))["ReplicatorArn"]
        wait_running(world, arn)
        version = kafka.describe_replicator(ReplicatorArn=arn)["CurrentVersion"]
        update: dict[str, Any] = {
            "ReplicatorArn": arn,
            "SourceKafkaClusterArn": source,
            "TargetKafkaClusterArn": target,
            "TopicReplication": {
                "TopicsToReplicate": ["chalk-.*", "offline-.*"],
                "TopicsToExclude": [],
                "CopyTopicConfigurations": True,
                "DetectAndCopyNewTopics": True,
                "CopyAccessControlListsForTopics": True,
            },
        }
        with pytest.raises(ClientError) as exc:
            kafka.update_replication_info(CurrentVersion="stale", **update)
        assert error_code(exc) == "BadRequestException"

        assert (
            kafka.update_replication_info(CurrentVersion=version, **update)["ReplicatorState"] == "UPDATING"
        )
        wait_running(world, arn)
        described = kafka.describe_replicator(ReplicatorArn=arn)
        topics = described["ReplicationInfoList"][0]["TopicReplication"]
        assert topics["TopicsToReplicate"] == ["chalk-.*", "offline-.*"]
        assert topics["StartingPosition"] == {"Type": "EARLIEST"}  # not part of an update: kept
        assert described["CurrentVersion"] != version

    def test_unknown_cluster_is_rejected(self, world: AwsSandbox, clusters: tuple[str, str]) -> None:
        source, _ = clusters
        missing = f"arn:aws:kafka:{TARGET}:123456789012:cluster/{uuid.uuid4()}"
        with pytest.raises(ClientError) as exc:
            world.client("kafka", TARGET).create_replicator(
                **replicator_request(source, missing, unique("r"))
            )
        assert error_code(exc) == "NotFoundException"

    def test_duplicate_name_conflicts(self, world: AwsSandbox, clusters: tuple[str, str]) -> None:
        kafka = world.client("kafka", TARGET)
        request = replicator_request(*clusters, unique("dup"))
        kafka.create_replicator(**request)
        with pytest.raises(ClientError) as exc:
            kafka.create_replicator(**request)
        assert error_code(exc) == "ConflictException"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409

    def test_must_be_created_in_target_region(self, world: AwsSandbox, clusters: tuple[str, str]) -> None:
        with pytest.raises(ClientError) as exc:
            world.client("kafka", SOURCE).create_replicator(**replicator_request(*clusters, unique("wrong")))
        assert error_code(exc) == "BadRequestException"
        assert "target" in exc.value.response["Error"]["Message"]

    def test_clusters_must_be_active(self, world: AwsSandbox, clusters: tuple[str, str]) -> None:
        fresh = create_cluster(world, TARGET)
        with pytest.raises(ClientError) as exc:
            world.client("kafka", TARGET).create_replicator(
                **replicator_request(clusters[0], fresh, unique("early"))
            )
        assert error_code(exc) == "BadRequestException"

    def test_unknown_replicator(self, world: AwsSandbox) -> None:
        kafka = world.client("kafka", TARGET)
        missing = f"arn:aws:kafka:{TARGET}:123456789012:replicator/nope/{uuid.uuid4()}"
        for call in (kafka.describe_replicator, kafka.delete_replicator):
            with pytest.raises(ClientError) as exc:
                call(ReplicatorArn=missing)
            assert error_code(exc) == "NotFoundException"
        with pytest.raises(ClientError) as exc:
            kafka.list_tags_for_resource(ResourceArn=missing)
        assert error_code(exc) == "NotFoundException"


class TestMetrics:
    @staticmethod
    def maximum(world: AwsSandbox, region: str, metric: str, name: str) -> tuple[float, str] | None:
        now = datetime.now(UTC)
        points = world.client("cloudwatch", region).get_metric_statistics(
            Namespace="AWS/Kafka",
            MetricName=metric,
            Dimensions=[{"Name": "ReplicatorName", "Value": name}],
            StartTime=now - timedelta(minutes=10),
            EndTime=now + timedelta(minutes=1),
            Period=60,
            Statistics=["Maximum"],
        )["Datapoints"]
        if not points:
            return None
        return max(p["Maximum"] for p in points), points[0]["Unit"]

    def test_running_replicator_publishes_and_lag_is_controllable(
        self, world: AwsSandbox, clusters: tuple[str, str]
    ) -> None:
        name = unique("metrics")
        arn = world.client("kafka", TARGET).create_replicator(**replicator_request(*clusters, name))[
            "ReplicatorArn"
        ]
        wait_running(world, arn)

        latency = poll(lambda: self.maximum(world, TARGET, "ReplicationLatency", name))
        lag = poll(lambda: self.maximum(world, TARGET, "MessageLag", name))
        assert latency[1] == "Milliseconds" and 0 < latency[0] < 1000
        assert lag[1] == "Count" and lag[0] >= 0
        assert self.maximum(world, SOURCE, "ReplicationLatency", name) is None

        resp = world.control(
            "POST",
            "/_sandbox/msk/lag",
            json={"replicator_name": name, "latency_ms": 45000, "message_lag": 250000},
        )
        assert resp.status_code == 200
        poll(lambda: (self.maximum(world, TARGET, "ReplicationLatency", name) or (0.0, ""))[0] == 45000)
        poll(lambda: (self.maximum(world, TARGET, "MessageLag", name) or (0.0, ""))[0] == 250000)

    def test_control_route_rejects_unknown_replicator(self, world: AwsSandbox) -> None:
        resp = world.control(
            "POST",
            "/_sandbox/msk/lag",
            json={"replicator_name": "nope", "latency_ms": 1},
        )
        assert resp.status_code == 404
