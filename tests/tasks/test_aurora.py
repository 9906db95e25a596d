"""Aurora tasks against the sandbox's RDS (moto leaves no writer when a global cluster is made from one)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest

from chalkdr.audit import AuditRecord
from chalkdr.clients import AwsClients
from chalkdr.plan import MANAGED_TAGS
from chalkdr.plan import Action
from chalkdr.plan import Change
from chalkdr.plan import GlobalClusterSpec
from chalkdr.plan import ResourceKind
from chalkdr.plan import SecondaryClusterSpec
from chalkdr.plan import WaitPolicy
from sandbox.aurora import AuroraSim
from sandbox.clock import SandboxClock
from sandbox.harness import AwsSandbox
from tasks.audit import ApplyContext
from tasks.aurora import ensure_global_cluster
from tasks.aurora import ensure_secondary_cluster
from tasks.aurora import read_db_cluster
from tasks.aurora import read_global_cluster

EAST, WEST = "us-east-1", "us-west-2"
FAST = WaitPolicy(time_scale=100.0, timeout_s=1000)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with AwsSandbox(
        lambda app, truth: [AuroraSim(app, clock=SandboxClock(time_scale=10.0), truth=truth)]
    ) as aws:
        yield aws.endpoint


@pytest.fixture
def primary(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    cluster_id = f"meta-east-{uuid.uuid4().hex[:6]}"
    boto3.client("rds", region_name=EAST).create_db_cluster(
        DBClusterIdentifier=cluster_id,
        Engine="aurora-postgresql",
        EngineVersion="15.4",
        MasterUsername="chalk",
        MasterUserPassword="sandbox-only-password",
    )
    return cluster_id


def test_reads_absent_and_present(primary: str) -> None:
    clients = AwsClients()
    assert read_db_cluster.fn(clients, WEST, "no-such-cluster") is None
    assert read_global_cluster.fn(clients, EAST, f"g-{uuid.uuid4().hex[:6]}") is None
    seen = read_db_cluster.fn(clients, EAST, primary)
    assert seen is not None and (seen.engine, seen.engine_version, seen.global_cluster_id) == (
        "aurora-postgresql",
        "15.4",
        None,
    )


def test_global_cluster_from_the_primary_then_a_secondary(primary: str) -> None:
    clients = AwsClients()
    writer = read_db_cluster.fn(clients, EAST, primary)
    assert writer is not None
    gid = f"g-{uuid.uuid4().hex[:6]}"
    audit: list[AuditRecord] = []
    gspec = GlobalClusterSpec(
        id=gid,
        region=EAST,
        writer_cluster_id=primary,
        writer_cluster_arn=writer.arn,
        engine="aurora-postgresql",
        engine_version="15.4",
        tags=MANAGED_TAGS,
    )
    ensure_global_cluster.fn(
        ApplyContext(clients, waits=FAST, emit=audit.append),
        Change(kind=ResourceKind.GLOBAL_CLUSTER, id=gid, region=EAST, action=Action.CREATE, spec=gspec),
    )
    sid = f"meta-west-{uuid.uuid4().hex[:6]}"
    sspec = SecondaryClusterSpec(
        id=sid,
        region=WEST,
        global_cluster_id=gid,
        engine="aurora-postgresql",
        engine_version="15.4",
        tags=MANAGED_TAGS,
    )
    ensure_secondary_cluster.fn(
        ApplyContext(clients, waits=FAST, emit=audit.append),
        Change(kind=ResourceKind.SECONDARY_CLUSTER, id=sid, region=WEST, action=Action.CREATE, spec=sspec),
    )
    assert [a.api_call for a in audit] == ["rds:CreateGlobalCluster", "rds:CreateDBCluster"]
    assert audit[1].region == WEST and audit[1].detail["global_cluster"] == gid
    gc = read_global_cluster.fn(clients, EAST, gid)
    secondary = read_db_cluster.fn(clients, WEST, sid)
    assert gc is not None and secondary is not None
    assert gc.members == {writer.arn: True, secondary.arn: False}
    raw = boto3.client("rds", region_name=WEST).describe_db_clusters(DBClusterIdentifier=sid)["DBClusters"][0]
    assert {"Key": "chalk-dr:managed", "Value": "true"} in raw["TagList"]
