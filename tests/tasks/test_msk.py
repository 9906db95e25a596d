"""MSK tasks against the sandbox's MSK (moto has no Replicator API and never activates clusters)."""

from __future__ import annotations

import time
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
from chalkdr.plan import MskEndpoint
from chalkdr.plan import ReplicatorSpec
from chalkdr.plan import ResourceKind
from chalkdr.plan import WaitPolicy
from chalkdr.topology import RegionConfig
from sandbox.clock import SandboxClock
from sandbox.harness import AwsSandbox
from sandbox.msk import MskSim
from tasks.audit import ApplyContext
from tasks.msk import ensure_replicator
from tasks.msk import read_msk

EAST, WEST = "us-east-1", "us-west-2"
ROLE = "arn:aws:iam::123456789012:role/msk-replicator"
FAST = WaitPolicy(time_scale=100.0, timeout_s=1000)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with AwsSandbox(
        lambda app, truth: [MskSim(app, clock=SandboxClock(time_scale=10.0), truth=truth)]
    ) as aws:
        yield aws.endpoint


def make_cluster(region: str, name: str) -> str:
    kafka = boto3.client("kafka", region_name=region)
    arn: str = kafka.create_cluster(
        ClusterName=name,
        KafkaVersion="3.6.0",
        NumberOfBrokerNodes=2,
        BrokerNodeGroupInfo={"InstanceType": "kafka.m5.large", "ClientSubnets": [f"subnet-{region}-a"]},
    )["ClusterArn"]
    deadline = time.monotonic() + 10
    while kafka.describe_cluster_v2(ClusterArn=arn)["ClusterInfo"]["State"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.05)
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
            "chalk": {
                "environment_id": "e",
                "api_server": "https://q.example.com",
                "client_id": "c",
                "client_secret": {"env": "X"},
            },
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
        tags=MANAGED_TAGS,
    )


def test_read_cluster_state_and_subnets(clusters: dict[str, str]) -> None:
    cluster, replicators = read_msk.fn(AwsClients(), region_config(EAST, clusters[EAST]), "none-")
    assert cluster is not None and cluster.state == "ACTIVE" and cluster.subnet_ids == (f"subnet-{EAST}-a",)
    assert replicators == []


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
    assert raw["Tags"] == {"chalk-dr:managed": "true"}
    assert raw["ReplicationInfoList"][0]["TopicReplication"]["TopicNameConfiguration"] == {
        "Type": "IDENTICAL"
    }


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
    audit: list[AuditRecord] = []
    new = ensure_replicator.fn(ApplyContext(AwsClients(), waits=FAST, emit=audit.append), replace).resource_id
    assert [a.api_call for a in audit] == ["kafka:DeleteReplicator", "kafka:CreateReplicator"]
    _, reps = read_msk.fn(AwsClients(), region_config(WEST, clusters[WEST]), name)
    assert [r.arn for r in reps] == [new] and new != old
