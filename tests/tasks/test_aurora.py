"""Aurora tasks against the sandbox's RDS (moto leaves no writer when a global cluster is made from one).

The primary is encrypted with a customer key, as Chalk's metadata plane is: AWS then refuses a
cross-region secondary without a KMS key of its own region, and a secondary needs the region's
subnet group and security groups, and a DB instance before it can serve or be promoted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from chalkdr.audit import AuditRecord
from chalkdr.clients import AwsClients
from chalkdr.errors import PermanentAwsError
from chalkdr.plan import MANAGED_TAGS
from chalkdr.plan import Action
from chalkdr.plan import Change
from chalkdr.plan import GlobalClusterSpec
from chalkdr.plan import ResourceKind
from chalkdr.plan import SecondaryClusterSpec
from chalkdr.plan import WaitPolicy
from sandbox.aurora import AuroraSim
from sandbox.aurora import create_primary_cluster
from sandbox.clock import SandboxClock
from sandbox.harness import AwsSandbox
from tasks.audit import ApplyContext
from tasks.aurora import ensure_global_cluster
from tasks.aurora import ensure_secondary_cluster
from tasks.aurora import read_db_cluster
from tasks.aurora import read_global_cluster

EAST, WEST = "us-east-1", "us-west-2"
FAST = WaitPolicy(time_scale=100.0, timeout_s=1000)


@dataclass(frozen=True)
class WestNetwork:
    """What Chalk's team provisions in the secondary's region for its metadata plane."""

    subnet_group: str
    security_group: str
    kms_key: str


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with AwsSandbox(
        lambda app, truth: [AuroraSim(app, clock=SandboxClock(time_scale=10.0), truth=truth)]
    ) as aws:
        yield aws.endpoint


@pytest.fixture
def west(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> WestNetwork:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    suffix = uuid.uuid4().hex[:6]
    ec2 = boto3.client("ec2", region_name=WEST)
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.1.{i}.0/24", AvailabilityZone=f"{WEST}{z}")["Subnet"][
            "SubnetId"
        ]
        for i, z in enumerate("ab")
    ]
    group = ec2.create_security_group(GroupName=f"meta-{suffix}", Description="meta", VpcId=vpc)["GroupId"]
    boto3.client("rds", region_name=WEST).create_db_subnet_group(
        DBSubnetGroupName=f"meta-{suffix}", DBSubnetGroupDescription="meta", SubnetIds=subnets
    )
    key = boto3.client("kms", region_name=WEST).create_key(Description="meta west")["KeyMetadata"]["Arn"]
    return WestNetwork(subnet_group=f"meta-{suffix}", security_group=group, kms_key=key)


@pytest.fixture
def primary(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    cluster_id = f"meta-east-{uuid.uuid4().hex[:6]}"
    key = boto3.client("kms", region_name=EAST).create_key(Description="meta east")["KeyMetadata"]["Arn"]
    create_primary_cluster(boto3.client("rds", region_name=EAST), cluster_id, key)
    return cluster_id


def make_global(clients: AwsClients, primary: str, audit: list[AuditRecord]) -> str:
    writer = read_db_cluster.fn(clients, EAST, primary)
    assert writer is not None
    gid = f"g-{uuid.uuid4().hex[:6]}"
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
    return gid


def secondary_spec(gid: str, net: WestNetwork, **overrides: Any) -> SecondaryClusterSpec:
    fields: dict[str, Any] = {
        "id": f"meta-west-{uuid.uuid4().hex[:6]}",
        "region": WEST,
        "global_cluster_id": gid,
        "engine": "aurora-postgresql",
        "engine_version": "15.4",
        "tags": MANAGED_TAGS,
        "subnet_group": net.subnet_group,
        "security_group_ids": (net.security_group,),
        "kms_key_id": net.kms_key,
        "instance_class": "db.r6g.large",
    }
    return SecondaryClusterSpec(**{**fields, **overrides})


def ensure_secondary(
    clients: AwsClients, spec: SecondaryClusterSpec, audit: list[AuditRecord], **change: Any
) -> None:
    """ensure_secondary_cluster as the apply runs it, for the Change `change` completes (its action,
    and current_id for an UPDATE); its audit records go into `audit`."""
    ensure_secondary_cluster.fn(
        ApplyContext(clients, waits=FAST, emit=audit.append),
        Change(kind=ResourceKind.SECONDARY_CLUSTER, id=spec.id, region=WEST, spec=spec, **change),
    )


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
    # What the plan needs to ask for a KMS key and to tell a headless cluster from a serving one.
    assert seen.storage_encrypted and seen.instances == 1


def test_global_cluster_from_the_primary_then_a_serving_secondary(primary: str, west: WestNetwork) -> None:
    clients = AwsClients()
    audit: list[AuditRecord] = []
    gid = make_global(clients, primary, audit)
    sspec = secondary_spec(gid, west)
    ensure_secondary(clients, sspec, audit, action=Action.CREATE)
    assert [a.api_call for a in audit] == [
        "rds:CreateGlobalCluster",
        "rds:CreateDBCluster",
        "rds:CreateDBInstance",
    ]
    assert audit[1].region == WEST and audit[1].detail["global_cluster"] == gid
    assert audit[2].detail["instance_class"] == "db.r6g.large"
    writer = read_db_cluster.fn(clients, EAST, primary)
    gc = read_global_cluster.fn(clients, EAST, gid)
    secondary = read_db_cluster.fn(clients, WEST, sspec.id)
    assert writer is not None and gc is not None and secondary is not None
    assert gc.members == {writer.arn: True, secondary.arn: False}
    assert secondary.instances == 1

    rds = boto3.client("rds", region_name=WEST)
    raw = rds.describe_db_clusters(DBClusterIdentifier=sspec.id)["DBClusters"][0]
    assert raw["DBSubnetGroup"] == west.subnet_group
    assert raw["KmsKeyId"] == west.kms_key
    assert [g["VpcSecurityGroupId"] for g in raw["VpcSecurityGroups"]] == [west.security_group]
    assert {"Key": "chalk-dr:managed", "Value": "true"} in raw["TagList"]
    assert [m["DBInstanceIdentifier"] for m in raw["DBClusterMembers"]] == [sspec.instance_id]
    (instance,) = rds.describe_db_instances(DBInstanceIdentifier=sspec.instance_id)["DBInstances"]
    assert (instance["DBInstanceClass"], instance["DBInstanceStatus"], instance["DBClusterIdentifier"]) == (
        "db.r6g.large",
        "available",
        sspec.id,
    )


def test_an_encrypted_global_database_needs_the_regions_kms_key(primary: str, west: WestNetwork) -> None:
    """Why the plan refuses a secondary without kms_key_id: AWS refuses the CreateDBCluster."""
    clients = AwsClients()
    gid = make_global(clients, primary, [])
    sspec = secondary_spec(gid, west, kms_key_id=None)
    audit: list[AuditRecord] = []
    with pytest.raises(PermanentAwsError, match="kmsKeyId should be explicitly specified"):
        ensure_secondary(clients, sspec, audit, action=Action.CREATE)
    assert audit == [] and read_db_cluster.fn(clients, WEST, sspec.id) is None


def test_a_headless_secondary_gets_only_its_instance(primary: str, west: WestNetwork) -> None:
    """An UPDATE (a member without an instance, e.g. after an interrupted apply) adds the instance."""
    clients = AwsClients()
    gid = make_global(clients, primary, [])
    sspec = secondary_spec(gid, west)
    boto3.client("rds", region_name=WEST).create_db_cluster(
        DBClusterIdentifier=sspec.id,
        GlobalClusterIdentifier=gid,
        Engine="aurora-postgresql",
        DBSubnetGroupName=west.subnet_group,
        KmsKeyId=west.kms_key,
    )
    headless = read_db_cluster.fn(clients, WEST, sspec.id)
    assert headless is not None and headless.instances == 0
    audit: list[AuditRecord] = []
    ensure_secondary(clients, sspec, audit, action=Action.UPDATE, current_id=headless.arn)
    assert [a.api_call for a in audit] == ["rds:CreateDBInstance"]
    served = read_db_cluster.fn(clients, WEST, sspec.id)
    assert served is not None and served.instances == 1
