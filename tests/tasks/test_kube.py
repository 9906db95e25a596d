"""EKS verification: cluster status from EKS, Deployment readiness from the cluster's own API server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalkdr.clients import AwsClients
from chalkdr.topology import RegionConfig
from sandbox.clock import SandboxClock
from sandbox.eks import EksSim
from sandbox.harness import AwsSandbox
from tasks.kube import read_eks

REGION = "us-east-1"


@pytest.fixture
def eks_world(kube_emulators: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    kube = kube_emulators[REGION]
    endpoints = {(REGION, kube.cluster_name): kube.url}
    with AwsSandbox(
        lambda app, truth: [EksSim(app, clock=SandboxClock(1.0), truth=truth, endpoints=endpoints)]
    ) as aws:
        monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
        boto3.client("eks", region_name=REGION).create_cluster(
            name=kube.cluster_name,
            roleArn="arn:aws:iam::123456789012:role/eks",
            resourcesVpcConfig={"subnetIds": ["subnet-1"]},
        )
        yield {"kube": kube}


def region(cluster: str, **eks: str) -> RegionConfig:
    return RegionConfig.model_validate(
        {
            "aws_region": REGION,
            "resource_group": "rg",
            "query_hostname": "q.example.com",
            "alb": "alb",
            "eks": {"cluster_name": cluster, "namespace": "chalk", **eks},
            "online_store_tables": ["t"],
            "msk_cluster_arn": f"arn:aws:kafka:{REGION}:123456789012:cluster/c/u-1",
            "aurora_cluster_id": "a",
        }
    )


def test_active_cluster_and_ready_deployments(eks_world: dict[str, Any]) -> None:
    kube = eks_world["kube"]
    seen = read_eks.fn(AwsClients(), region(kube.cluster_name))
    assert seen.status == "ACTIVE" and seen.error is None
    assert {(d.name, d.found, d.replicas, d.ready_replicas) for d in seen.deployments} == {
        ("chalk-query-server", True, 2, 2),
        ("chalk-persistence-worker", True, 1, 1),
    }


def test_missing_cluster_and_missing_deployment_are_observations(eks_world: dict[str, Any]) -> None:
    assert read_eks.fn(AwsClients(), region("no-such-cluster")).status is None
    kube = eks_world["kube"]
    seen = read_eks.fn(AwsClients(), region(kube.cluster_name, persistence_deployment="not-deployed"))
    assert [(d.name, d.found) for d in seen.deployments] == [
        ("chalk-query-server", True),
        ("not-deployed", False),
    ]
