"""MSK in the sandbox, seen only through boto3 and the control API: clusters, brokers, Replicator, metrics."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sandbox.aws import SandboxAwsApp
from sandbox.clock import SandboxClock
from sandbox.harness import AwsSandbox
from sandbox.harness import poll
from sandbox.metrics import recent_datapoints
from sandbox.msk import MskSim
from sandbox.truth import GroundTruth

SOURCE, TARGET = "us-east-1", "us-west-2"
ROLE = "arn:aws:iam::123456789012:role/msk-replicator"
BROKERS = {"InstanceType": "kafka.m5.large", "ClientSubnets": ["subnet-a", "subnet-b", "subnet-c"]}
IAM = {"Sasl": {"Iam": {"Enabled": True}}}
ACTIVATE_AFTER = 0.6
METRIC_PERIOD = 0.2
REPLICATOR_ACTIONS = ["kafka:CreateVpcConnection", "kafka:GetBootstrapBrokers", "kafka:DescribeClusterV2"]


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
            metric_period=METRIC_PERIOD,
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


def replicator_policy(arn: str, actions: list[str] = REPLICATOR_ACTIONS) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": ["kafka.amazonaws.com"]},
                    "Action": actions,
                    "Resource": arn,
                }
            ],
        }
    )


def turn_on_multi_vpc(world: AwsSandbox, arn: str) -> None:
    kafka = world.client("kafka", arn.split(":")[3])
    version = kafka.describe_cluster_v2(ClusterArn=arn)["ClusterInfo"]["CurrentVersion"]
    kafka.update_connectivity(
        ClusterArn=arn,
        CurrentVersion=version,
        ConnectivityInfo={"VpcConnectivity": {"ClientAuthentication": IAM}},
    )


def prepare_source(world: AwsSandbox, arn: str) -> None:
    """msk-replicator-prepare-cluster, for a cross-region source: multi-VPC private connectivity with
    IAM, and a cluster policy that lets kafka.amazonaws.com reach the cluster."""
    turn_on_multi_vpc(world, arn)
    world.client("kafka", arn.split(":")[3]).put_cluster_policy(ClusterArn=arn, Policy=replicator_policy(arn))


@pytest.fixture(scope="module")
def clusters(world: AwsSandbox) -> tuple[str, str]:
    """An ACTIVE source cluster in us-east-1, prepared for MSK Replicator, and an ACTIVE target
    cluster in us-west-2."""
    source, target = create_cluster(world, SOURCE), create_cluster(world, TARGET)
    wait_active(world, source)
    wait_active(world, target)
    prepare_source(world, source)
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
    def test_lifecycle_and_shapes(
        self, world: AwsSandbox, clusters: tuple[str, str], error_code_of: Any
    ) -> None:
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

        poll(
            lambda: error_code_of(lambda: kafka.describe_replicator(ReplicatorArn=arn)) == "NotFoundException"
        )
        assert kafka.list_replicators(ReplicatorNameFilter=name)["Replicators"] == []
        states = [e["state"] for e in world.truth.events("msk.replicator") if e["name"] == name]
        assert states == ["CREATING", "RUNNING", "DELETING", "DELETED"]

    def test_update_replication_info_is_versioned(
        self, world: AwsSandbox, clusters: tuple[str, str], error_code_of: Any
    ) -> None:
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
        stale = error_code_of(lambda: kafka.update_replication_info(CurrentVersion="stale", **update))
        assert stale == "BadRequestException"

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

    def test_unknown_replicator(self, world: AwsSandbox, error_code_of: Any) -> None:
        kafka = world.client("kafka", TARGET)
        missing = f"arn:aws:kafka:{TARGET}:123456789012:replicator/nope/{uuid.uuid4()}"
        for call in (kafka.describe_replicator, kafka.delete_replicator):
            with pytest.raises(ClientError) as exc:
                call(ReplicatorArn=missing)
            assert error_code(exc) == "NotFoundException"
        assert error_code_of(lambda: kafka.list_tags_for_resource(ResourceArn=missing)) == "NotFoundException"


def produce(world: AwsSandbox, cluster_arn: str, topic: str, count: int) -> None:
    """Records produced to a topic of the cluster (the Kafka data plane of the sandbox's MSK)."""
    sim = world.simulators[0]
    assert isinstance(sim, MskSim)
    for i in range(count):
        sim.log.produce(cluster_arn, topic, {"n": i})


def pin_lag(world: AwsSandbox, name: str, **lag: float) -> Any:
    """The operator's route: the replicator's published `latency_ms` / `message_lag` pinned."""
    return world.control("POST", "/_sandbox/msk/lag", json={"replicator_name": name, **lag})


class TestMetrics:
    @staticmethod
    def maximum(world: AwsSandbox, region: str, metric: str, name: str) -> tuple[float, str] | None:
        points = recent_datapoints(
            world.client("cloudwatch", region), "AWS/Kafka", metric, {"ReplicatorName": name}
        )
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
        produce(world, clusters[0], "chalk-persistence", 3)

        latency = poll(lambda: self.maximum(world, TARGET, "ReplicationLatency", name))
        lag = poll(lambda: self.maximum(world, TARGET, "MessageLag", name))
        assert latency[1] == "Milliseconds" and 0 < latency[0] < 1000
        assert lag[1] == "Count" and lag[0] >= 0
        assert self.maximum(world, SOURCE, "ReplicationLatency", name) is None

        resp = pin_lag(world, name, latency_ms=45000, message_lag=250000)
        assert resp.status_code == 200
        poll(lambda: (self.maximum(world, TARGET, "ReplicationLatency", name) or (0.0, ""))[0] == 45000)
        poll(lambda: (self.maximum(world, TARGET, "MessageLag", name) or (0.0, ""))[0] == 250000)

    def test_control_route_rejects_unknown_replicator(self, world: AwsSandbox) -> None:
        resp = pin_lag(world, "nope", latency_ms=1)
        assert resp.status_code == 404


def describe(world: AwsSandbox, arn: str) -> dict[str, Any]:
    return world.client("kafka", TARGET).describe_replicator(ReplicatorArn=arn)  # type: ignore[no-any-return]


def failed_with(world: AwsSandbox, source: str, target: str) -> dict[str, Any]:
    """Create a replicator, see it accepted and CREATING, and wait for it to end FAILED."""
    created = world.client("kafka", TARGET).create_replicator(
        **replicator_request(source, target, unique("rep"))
    )
    assert created["ReplicatorState"] == "CREATING"
    first = describe(world, created["ReplicatorArn"])
    assert first["ReplicatorState"] == "CREATING" and "StateInfo" not in first
    return poll(  # type: ignore[no-any-return]
        lambda: (d := describe(world, created["ReplicatorArn"]))["ReplicatorState"] == "FAILED" and d,
        what="the replicator to fail",
    )


def active_cluster(world: AwsSandbox, region: str, **extra: Any) -> str:
    arn = create_cluster(world, region, **extra)
    wait_active(world, arn)
    return arn


@pytest.fixture(scope="module")
def target(world: AwsSandbox) -> str:
    return active_cluster(world, TARGET)


class TestReplicatorPrerequisites:
    """msk-replicator-prepare-cluster: both clusters need IAM access control and at least three
    brokers; a cross-region source needs multi-VPC private connectivity with IAM turned on and a
    cluster policy letting kafka.amazonaws.com CreateVpcConnection, GetBootstrapBrokers and
    DescribeClusterV2 ("For a same-region MSK Replicator, you do not need to do this step").
    msk-replicator-troubleshooting, "MSK Replicator state goes from CREATING to FAILED": a replicator
    missing them is accepted and fails later; StateInfo is "Code: InvalidInput.InvalidKafkaCluster
    Message: ..." (re:Post knowledge center, msk-amazon-replicator-errors)."""

    def test_a_source_without_iam_fails(self, world: AwsSandbox, target: str) -> None:
        source = active_cluster(world, SOURCE, ClientAuthentication={"Unauthenticated": {"Enabled": True}})
        world.client("kafka", SOURCE).put_cluster_policy(ClusterArn=source, Policy=replicator_policy(source))
        info = failed_with(world, source, target)["StateInfo"]
        assert info == {
            "Code": "InvalidInput.InvalidKafkaCluster",
            "Message": f"IAM Auth is not enabled for the Amazon MSK Cluster {source}",
        }

    def test_a_source_with_fewer_than_three_brokers_fails(self, world: AwsSandbox, target: str) -> None:
        kafka = world.client("kafka", SOURCE)
        source = kafka.create_cluster(
            ClusterName=unique("small"),
            KafkaVersion="3.6.0",
            NumberOfBrokerNodes=2,
            BrokerNodeGroupInfo={**BROKERS, "ClientSubnets": ["subnet-a", "subnet-b"]},
            ClientAuthentication=IAM,
        )["ClusterArn"]
        wait_active(world, source)
        prepare_source(world, source)
        info = failed_with(world, source, target)["StateInfo"]
        assert info["Code"] == "InvalidInput.InvalidKafkaCluster"
        assert (
            info["Message"]
            == f"The specified Amazon MSK Cluster has less than 3 brokers. Cluster ARN: {source}"
        )

    def test_a_cross_region_source_without_multi_vpc_connectivity_fails(
        self, world: AwsSandbox, target: str
    ) -> None:
        source = active_cluster(world, SOURCE)
        world.client("kafka", SOURCE).put_cluster_policy(ClusterArn=source, Policy=replicator_policy(source))
        info = failed_with(world, source, target)["StateInfo"]
        assert info["Code"] == "InvalidInput.InvalidKafkaCluster"
        assert "Multi-VPC" in info["Message"] and source in info["Message"]

    @pytest.mark.parametrize("policy", [None, REPLICATOR_ACTIONS[:2]], ids=["no-policy", "missing-action"])
    def test_a_cross_region_source_without_a_replicator_policy_fails(
        self, world: AwsSandbox, target: str, policy: list[str] | None
    ) -> None:
        source = active_cluster(world, SOURCE)
        turn_on_multi_vpc(world, source)
        if policy is not None:
            world.client("kafka", SOURCE).put_cluster_policy(
                ClusterArn=source, Policy=replicator_policy(source, policy)
            )
        info = failed_with(world, source, target)["StateInfo"]
        assert info["Code"] == "InvalidInput.InvalidKafkaCluster"
        assert "cluster policy" in info["Message"] and source in info["Message"]

    def test_a_prepared_source_runs(self, world: AwsSandbox, target: str) -> None:
        source = active_cluster(world, SOURCE)
        prepare_source(world, source)
        arn = world.client("kafka", TARGET).create_replicator(
            **replicator_request(source, target, unique("ok"))
        )["ReplicatorArn"]
        wait_running(world, arn)
        assert "StateInfo" not in describe(world, arn)

    def test_a_same_region_source_needs_no_multi_vpc_or_policy(self, world: AwsSandbox, target: str) -> None:
        source = active_cluster(world, TARGET)
        arn = world.client("kafka", TARGET).create_replicator(
            **replicator_request(source, target, unique("same"))
        )["ReplicatorArn"]
        wait_running(world, arn)


class TestClusterPolicyAndConnectivity:
    """PutClusterPolicy / GetClusterPolicy (`/v1/clusters/{clusterArn}/policy`: the policy comes back
    as the JSON string that was put, with its currentVersion; a cluster without one is NotFound),
    and UpdateConnectivity, whose VpcConnectivity DescribeClusterV2 reports under
    Provisioned.BrokerNodeGroupInfo.ConnectivityInfo (Kafka API reference)."""

    def test_policy_round_trip(self, world: AwsSandbox, error_code_of: Any) -> None:
        arn = active_cluster(world, SOURCE)
        kafka = world.client("kafka", SOURCE)
        assert error_code_of(lambda: kafka.get_cluster_policy(ClusterArn=arn)) == "NotFoundException"

        policy = replicator_policy(arn)
        version = kafka.put_cluster_policy(ClusterArn=arn, Policy=policy)["CurrentVersion"]
        got = kafka.get_cluster_policy(ClusterArn=arn)
        assert (got["Policy"], got["CurrentVersion"]) == (policy, version)

        stale = error_code_of(
            lambda: kafka.put_cluster_policy(ClusterArn=arn, Policy=policy, CurrentVersion="stale")
        )
        assert stale == "BadRequestException"
        newer = kafka.put_cluster_policy(ClusterArn=arn, Policy=policy, CurrentVersion=version)[
            "CurrentVersion"
        ]
        assert newer != version

    def test_describe_cluster_v2_shows_multi_vpc_connectivity(self, world: AwsSandbox) -> None:
        arn = active_cluster(world, SOURCE)
        kafka = world.client("kafka", SOURCE)

        def vpc_iam() -> bool:
            info = kafka.describe_cluster_v2(ClusterArn=arn)["ClusterInfo"]
            connectivity = info["Provisioned"]["BrokerNodeGroupInfo"]["ConnectivityInfo"]
            return bool(connectivity["VpcConnectivity"]["ClientAuthentication"]["Sasl"]["Iam"]["Enabled"])

        assert vpc_iam() is False
        turn_on_multi_vpc(world, arn)
        assert vpc_iam() is True


class TestSparseMetrics:
    """MSK Developer Guide, msk-replicator-metrics-ref: ReplicationLatency is the time records take to
    replicate from the source cluster to the target (a property of replicated records, Maximum by
    ReplicatorName): without records flowing there is no latency to report, while MessageLag, a
    count of records not yet replicated, is still published (0)."""

    def test_latency_only_while_records_flow(self, world: AwsSandbox, target: str) -> None:
        source = active_cluster(world, SOURCE)  # a fresh source: no records from other tests
        prepare_source(world, source)
        name = unique("idle")
        arn = world.client("kafka", TARGET).create_replicator(**replicator_request(source, target, name))[
            "ReplicatorArn"
        ]
        wait_running(world, arn)
        assert poll(lambda: TestMetrics.maximum(world, TARGET, "MessageLag", name)) == (0.0, "Count")
        deadline = time.monotonic() + METRIC_PERIOD * 6  # six publishing periods without a record
        while time.monotonic() < deadline:
            assert TestMetrics.maximum(world, TARGET, "ReplicationLatency", name) is None
            time.sleep(METRIC_PERIOD / 2)

        produce(world, source, "chalk-idle-topic", 2)
        latency = poll(lambda: TestMetrics.maximum(world, TARGET, "ReplicationLatency", name))
        assert latency[1] == "Milliseconds"


class TestBidirectional:
    def test_a_record_is_not_replicated_back_to_the_cluster_it_came_from(self, world: AwsSandbox) -> None:
        """Replicators both ways under identical topic names: each record reaches the other
        cluster once and never comes back (msk-replicator-topic-naming: MSK Replicator "uses
        Kafka headers to automatically avoid replicating data back to the topic it originated
        from")."""
        east, west = create_cluster(world, SOURCE), create_cluster(world, TARGET)
        for arn in (east, west):
            wait_active(world, arn)
            prepare_source(world, arn)
        forward = world.client("kafka", TARGET).create_replicator(
            **replicator_request(east, west, unique("forward"))
        )["ReplicatorArn"]
        reverse = world.client("kafka", SOURCE).create_replicator(
            **replicator_request(west, east, unique("reverse"))
        )["ReplicatorArn"]
        wait_running(world, forward)
        poll(
            lambda: (
                world.client("kafka", SOURCE).describe_replicator(ReplicatorArn=reverse)["ReplicatorState"]
                == "RUNNING"
            )
        )
        sim = world.simulators[0]
        assert isinstance(sim, MskSim)
        topic = "chalk-bidirectional"
        sim.log.produce(east, topic, {"from": "east"})
        sim.log.produce(west, topic, {"from": "west"})

        def values(arn: str) -> list[Any]:
            return sorted(str(r.value) for r in sim.log.read(arn, topic, 0))

        poll(lambda: len(values(east)) == 2 and len(values(west)) == 2, timeout=10)
        # Replication rounds later (a marker produced after has made it across), still one copy each.
        sim.log.produce(east, topic, {"from": "east", "marker": True})
        poll(lambda: len(values(west)) == 3, timeout=10)
        assert values(east) == values(west)
        assert len(values(east)) == 3, values(east)
