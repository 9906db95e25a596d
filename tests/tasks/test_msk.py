"""MSK tasks against the sandbox's MSK (moto has no Replicator API and never activates clusters).

The sandbox checks MSK Replicator's prerequisites as AWS documents them (IAM access control, at
least three brokers; for a cross-region replicator, multi-VPC connectivity with IAM and a cluster
policy on the source): `prepared` clusters have them, `make_cluster(..., prepare=False)` not.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalkdr.audit import AuditRecord
from chalkdr.clients import AwsClients
from chalkdr.plan import Action
from chalkdr.plan import Change
from chalkdr.plan import FieldDiff
from chalkdr.plan import MskEndpoint
from chalkdr.plan import ReplicatorSpec
from chalkdr.plan import ResourceKind
from chalkdr.plan import WaitPolicy
from chalkdr.plan import ownership_tags
from chalkdr.plan.msk import policy_missing_actions
from chalkdr.topology import RegionConfig
from sandbox.clock import SandboxClock
from sandbox.harness import AwsSandbox
from sandbox.harness import poll
from sandbox.msk import MskSim
from tasks.audit import ApplyContext
from tasks.msk import ensure_replicator
from tasks.msk import read_msk

EAST, WEST = "us-east-1", "us-west-2"
ROLE = "arn:aws:iam::123456789012:role/msk-replicator"
FAST = WaitPolicy(time_scale=100.0, timeout_s=1000)
OURS = ownership_tags("test")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with AwsSandbox(
        lambda app, truth: [MskSim(app, clock=SandboxClock(time_scale=10.0), truth=truth)]
    ) as aws:
        yield aws.endpoint


REPLICATOR_POLICY_ACTIONS = [
    "kafka:CreateVpcConnection",
    "kafka:GetBootstrapBrokers",
    "kafka:DescribeClusterV2",
]


def make_cluster(region: str, name: str, *, brokers: int = 3, iam: bool = True, prepare: bool = True) -> str:
    """An ACTIVE cluster; `prepare` does what msk-replicator-prepare-cluster asks of a source:
    multi-VPC private connectivity with IAM (UpdateConnectivity) and a cluster policy letting
    kafka.amazonaws.com reach it (PutClusterPolicy)."""
    kafka = boto3.client("kafka", region_name=region)
    auth = {"ClientAuthentication": {"Sasl": {"Iam": {"Enabled": True}}}} if iam else {}
    arn: str = kafka.create_cluster(
        ClusterName=name,
        KafkaVersion="3.6.0",
        NumberOfBrokerNodes=brokers,
        BrokerNodeGroupInfo={"InstanceType": "kafka.m5.large", "ClientSubnets": [f"subnet-{region}-a"]},
        **auth,  # type: ignore[arg-type]
    )["ClusterArn"]
    poll(
        lambda: kafka.describe_cluster_v2(ClusterArn=arn)["ClusterInfo"]["State"] == "ACTIVE",
        timeout=10,
        what=f"MSK cluster {name} ACTIVE",
    )
    if prepare:
        version = kafka.describe_cluster_v2(ClusterArn=arn)["ClusterInfo"]["CurrentVersion"]
        kafka.update_connectivity(
            ClusterArn=arn,
            CurrentVersion=version,
            ConnectivityInfo={
                "VpcConnectivity": {"ClientAuthentication": {"Sasl": {"Iam": {"Enabled": True}}}}
            },
        )
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": ["kafka.amazonaws.com"]},
                    "Action": REPLICATOR_POLICY_ACTIONS,
                    "Resource": arn,
                }
            ],
        }
        kafka.put_cluster_policy(ClusterArn=arn, Policy=json.dumps(policy))
    return arn


@pytest.fixture
def clusters(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    suffix = uuid.uuid4().hex[:6]
    return {r: make_cluster(r, f"c-{suffix}-{r[-6:]}") for r in (EAST, WEST)}


def region_config(region: str, arn: str) -> RegionConfig:
    return RegionConfig.model_validate(
        {
            "aws_region": region,
            "resource_group": "rg",
            "query_hostname": "q.example.com",
            "alb": "alb",
            "eks": {"cluster_name": "eks"},
            "online_store_tables": ["t"],
            "msk_cluster_arn": arn,
            "aurora_cluster_id": "a",
        }
    )


def spec(
    name: str, clusters: dict[str, str], topics: tuple[str, ...] = ("chalk-persistence",)
) -> ReplicatorSpec:
    return ReplicatorSpec(
        name=name,
        region=WEST,
        source=MskEndpoint(arn=clusters[EAST], subnet_ids=(f"subnet-{EAST}-a",)),
        target=MskEndpoint(arn=clusters[WEST], subnet_ids=(f"subnet-{WEST}-a",)),
        topics=topics,
        service_execution_role_arn=ROLE,
        tags=OURS,
    )


def test_read_cluster_state_and_subnets(clusters: dict[str, str]) -> None:
    cluster, replicators = read_msk.fn(AwsClients(), region_config(EAST, clusters[EAST]), "none-")
    assert cluster is not None and cluster.state == "ACTIVE" and cluster.subnet_ids == (f"subnet-{EAST}-a",)
    assert replicators == []


class TestReplicatorPrerequisites:
    """What the plan needs to refuse a replicator AWS would fail, read from DescribeClusterV2
    (IAM, brokers, multi-VPC connectivity) and GetClusterPolicy."""

    def test_a_prepared_cluster_reads_as_ready_for_a_replicator(self, clusters: dict[str, str]) -> None:
        cluster, _ = read_msk.fn(AwsClients(), region_config(EAST, clusters[EAST]), "none-")
        assert cluster is not None
        assert (cluster.serverless, cluster.brokers, cluster.iam_enabled, cluster.vpc_iam_enabled) == (
            False,
            3,
            True,
            True,
        )
        assert cluster.policy is not None
        assert json.loads(cluster.policy)["Statement"][0]["Action"] == REPLICATOR_POLICY_ACTIONS
        assert policy_missing_actions(cluster.policy) == []

    def test_an_unprepared_cluster_reads_as_what_it_lacks(
        self, endpoint: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        arn = make_cluster(EAST, f"bare-{uuid.uuid4().hex[:6]}", brokers=2, iam=False, prepare=False)
        cluster, _ = read_msk.fn(AwsClients(), region_config(EAST, arn), "none-")
        assert cluster is not None and cluster.state == "ACTIVE"
        assert (cluster.brokers, cluster.iam_enabled, cluster.vpc_iam_enabled) == (2, False, False)
        # No cluster policy: GetClusterPolicy answers NotFoundException, read as "no policy".
        assert cluster.policy is None
        assert policy_missing_actions(cluster.policy) == REPLICATOR_POLICY_ACTIONS

    def test_a_replicator_from_an_unprepared_source_ends_failed(
        self, endpoint: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """What the plan's prerequisite errors prevent: AWS accepts the replicator, then fails it."""
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        suffix = uuid.uuid4().hex[:6]
        unprepared = {
            EAST: make_cluster(EAST, f"u-{suffix}-east", prepare=False),
            WEST: make_cluster(WEST, f"u-{suffix}-west"),
        }
        name = f"rep-{suffix}"
        change = Change(
            kind=ResourceKind.REPLICATOR,
            id=name,
            region=WEST,
            action=Action.CREATE,
            spec=spec(name, unprepared),
        )
        with pytest.raises(RuntimeError, match="FAILED"):
            ensure_replicator.fn(ApplyContext(AwsClients(), waits=FAST, emit=lambda _r: None), change)
        _, (rep,) = read_msk.fn(AwsClients(), region_config(WEST, unprepared[WEST]), name)
        raw: Any = boto3.client("kafka", region_name=WEST).describe_replicator(ReplicatorArn=rep.arn)
        assert rep.state == "FAILED"
        assert raw["StateInfo"]["Code"] == "InvalidInput.InvalidKafkaCluster"
        assert "Multi-VPC private connectivity" in raw["StateInfo"]["Message"]


def test_create_waits_for_running_and_reads_back_what_it_made(clusters: dict[str, str]) -> None:
    name = f"rep-{uuid.uuid4().hex[:6]}"
    audit: list[AuditRecord] = []
    change = Change(
        kind=ResourceKind.REPLICATOR, id=name, region=WEST, action=Action.CREATE, spec=spec(name, clusters)
    )
    result = ensure_replicator.fn(ApplyContext(AwsClients(), waits=FAST, emit=audit.append), change)
    assert [a.api_call for a in audit] == ["kafka:CreateReplicator"] and result.resource_id == audit[
        0
    ].resource
    _, (rep,) = read_msk.fn(AwsClients(), region_config(WEST, clusters[WEST]), name)
    assert rep.state == "RUNNING" and rep.name == name
    assert (rep.source_cluster_arn, rep.target_cluster_arn) == (clusters[EAST], clusters[WEST])
    assert rep.topics == ("chalk-persistence",) and rep.sync_consumer_group_offsets
    assert rep.consumer_groups == (".*",) and rep.service_execution_role_arn == ROLE
    raw: Any = boto3.client("kafka", region_name=WEST).describe_replicator(ReplicatorArn=rep.arn)
    assert raw["Tags"] == rep.tags == {"chalk-dr:managed": "true", "chalk-dr:environment": "test"}
    topics = raw["ReplicationInfoList"][0]["TopicReplication"]
    assert topics["TopicNameConfiguration"] == {"Type": "IDENTICAL"}
    assert topics["StartingPosition"] == {"Type": "EARLIEST"}  # a first replicator: the initial copy


def test_replace_deletes_then_recreates_under_the_same_name(clusters: dict[str, str]) -> None:
    name = f"rep-{uuid.uuid4().hex[:6]}"
    first = Change(
        kind=ResourceKind.REPLICATOR, id=name, region=WEST, action=Action.CREATE, spec=spec(name, clusters)
    )
    old = ensure_replicator.fn(
        ApplyContext(AwsClients(), waits=FAST, emit=lambda _r: None), first
    ).resource_id
    _, (seen,) = read_msk.fn(AwsClients(), region_config(WEST, clusters[WEST]), name)
    replace = Change(
        kind=ResourceKind.REPLICATOR,
        id=name,
        region=WEST,
        action=Action.REPLACE,
        spec=spec(name, clusters),
        current_id=seen.arn,
        current_version=seen.current_version,
    )
    replace = replace.model_copy(
        update={"spec": replace.spec.model_copy(update={"starting_position": "LATEST"})}
    )
    audit: list[AuditRecord] = []
    new = ensure_replicator.fn(ApplyContext(AwsClients(), waits=FAST, emit=audit.append), replace).resource_id
    assert [a.api_call for a in audit] == ["kafka:DeleteReplicator", "kafka:CreateReplicator"]
    assert audit[1].detail["starting_position"] == "LATEST"
    _, reps = read_msk.fn(AwsClients(), region_config(WEST, clusters[WEST]), name)
    assert [r.arn for r in reps] == [new] and new != old
    raw: Any = boto3.client("kafka", region_name=WEST).describe_replicator(ReplicatorArn=new)
    # the plan's choice for a replacement: no silent replay of what the source retains
    assert raw["ReplicationInfoList"][0]["TopicReplication"]["StartingPosition"] == {"Type": "LATEST"}


def test_an_adopted_replicator_is_only_tagged(clusters: dict[str, str]) -> None:
    name = f"rep-{uuid.uuid4().hex[:6]}"
    theirs = spec(name, clusters).model_copy(update={"tags": {"team": "data"}})
    first = Change(kind=ResourceKind.REPLICATOR, id=name, region=WEST, action=Action.CREATE, spec=theirs)
    arn = ensure_replicator.fn(
        ApplyContext(AwsClients(), waits=FAST, emit=lambda _r: None), first
    ).resource_id
    _, (seen,) = read_msk.fn(AwsClients(), region_config(WEST, clusters[WEST]), name)
    assert seen.tags == {"team": "data"}
    adopt = Change(
        kind=ResourceKind.REPLICATOR,
        id=name,
        region=WEST,
        action=Action.UPDATE,
        diffs=(FieldDiff(field="owner", old=None, new="test"),),
        spec=spec(name, clusters),
        current_id=seen.arn,
        current_version=seen.current_version,
    )
    audit: list[AuditRecord] = []
    ensure_replicator.fn(ApplyContext(AwsClients(), waits=FAST, emit=audit.append), adopt)
    assert [(a.action, a.api_call, a.detail["owner"]) for a in audit] == [
        ("adopt-replicator", "kafka:TagResource", "test")
    ]
    _, (after,) = read_msk.fn(AwsClients(), region_config(WEST, clusters[WEST]), name)
    assert after.arn == arn and after.tags == {"team": "data", **OURS}
    assert after.current_version == seen.current_version  # not updated: nothing else changed
