"""Tasks for Amazon Aurora global databases: observe the clusters, ensure the global cluster and secondaries.

The primary's cluster exists (it is Chalk's metadata plane); provision makes it the writer of
the topology's global cluster (CreateGlobalCluster from its ARN) and creates each secondary
cluster in its region with CreateDBCluster(GlobalClusterIdentifier=...). AWS cannot attach an
existing standalone cluster to a global cluster: the plan reports that as an error instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from prefect import task
from prefect.cache_policies import NO_CACHE

from chalkdr.classify import aws_call
from chalkdr.clients import AwsClients
from chalkdr.plan import Action
from chalkdr.plan import Change
from chalkdr.plan import ChangeResult
from chalkdr.plan import GlobalClusterSpec
from chalkdr.plan import ObservedDbCluster
from chalkdr.plan import ObservedGlobalCluster
from chalkdr.plan import SecondaryClusterSpec
from chalkdr.plan import WaitPolicy
from chalkdr.plan import tag_list
from tasks.audit import ApplyContext
from tasks.retry import retry_options

__all__ = [
    "ensure_global_cluster",
    "ensure_secondary_cluster",
    "read_db_cluster",
    "read_global_cluster",
]


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _db_cluster(clients: AwsClients, region: str, cluster_id: str) -> ObservedDbCluster | None:
    with aws_call("rds", "DescribeDBClusters", f"{region}/{cluster_id}"):
        try:
            found = clients.rds(region).describe_db_clusters(DBClusterIdentifier=cluster_id)["DBClusters"]
        except ClientError as exc:
            if _code(exc) == "DBClusterNotFoundFault":
                return None
            raise
    if not found:
        return None
    raw = found[0]
    gid = raw.get("GlobalClusterIdentifier")
    return ObservedDbCluster(
        id=raw["DBClusterIdentifier"],
        arn=raw["DBClusterArn"],
        region=region,
        engine=raw.get("Engine", ""),
        engine_version=raw.get("EngineVersion"),
        status=raw.get("Status", "unknown"),
        # AWS names the global cluster by identifier; some answers carry its ARN instead.
        global_cluster_id=gid.rsplit(":", 1)[-1] if gid else None,
        storage_encrypted=bool(raw.get("StorageEncrypted", False)),
        instances=len(raw.get("DBClusterMembers") or []),
    )


def _global_cluster(clients: AwsClients, region: str, global_id: str) -> ObservedGlobalCluster | None:
    with aws_call("rds", "DescribeGlobalClusters", global_id):
        try:
            found = clients.rds(region).describe_global_clusters(GlobalClusterIdentifier=global_id)[
                "GlobalClusters"
            ]
        except ClientError as exc:
            if _code(exc) == "GlobalClusterNotFoundFault":
                return None
            raise
    raw = next((g for g in found if g.get("GlobalClusterIdentifier") == global_id), None)
    if raw is None:
        return None
    return ObservedGlobalCluster(
        id=raw["GlobalClusterIdentifier"],
        arn=raw.get("GlobalClusterArn", ""),
        engine=raw.get("Engine"),
        engine_version=raw.get("EngineVersion"),
        status=raw.get("Status", "unknown"),
        members={m["DBClusterArn"]: bool(m.get("IsWriter")) for m in raw.get("GlobalClusterMembers", [])},
    )


@task(task_run_name="read-db-cluster-{region}", cache_policy=NO_CACHE, **retry_options())
def read_db_cluster(clients: AwsClients, region: str, cluster_id: str) -> ObservedDbCluster | None:
    return _db_cluster(clients, region, cluster_id)


@task(task_run_name="read-global-cluster", cache_policy=NO_CACHE, **retry_options())
def read_global_cluster(clients: AwsClients, region: str, global_id: str) -> ObservedGlobalCluster | None:
    """Global clusters are visible from any region; read from the primary's."""
    return _global_cluster(clients, region, global_id)


def _wait_available(what: str, read: Callable[[], str | None], waits: WaitPolicy) -> None:
    waits.poll(
        read, lambda status: status == "available", lambda status: f"{what} still {status or 'absent'}"
    )


@task(task_run_name="ensure-global-cluster-{change.id}", cache_policy=NO_CACHE)
def ensure_global_cluster(apply: ApplyContext, change: Change) -> ChangeResult:
    """CreateGlobalCluster from the primary cluster's ARN, which becomes the writer."""
    spec = change.typed_spec(GlobalClusterSpec)
    rds = apply.clients.rds(spec.region)
    with aws_call("rds", "CreateGlobalCluster", spec.id):
        created = rds.create_global_cluster(
            GlobalClusterIdentifier=spec.id,
            SourceDBClusterIdentifier=spec.writer_cluster_arn,
            Tags=tag_list(spec.tags),  # type: ignore[arg-type]
        )["GlobalCluster"]
    trail = apply.trail("aurora")
    arn = created.get("GlobalClusterArn") or spec.id
    trail.record(
        "create-global-cluster", arn, spec.region, "rds:CreateGlobalCluster", writer=spec.writer_cluster_arn
    )

    def status() -> str | None:
        gc = _global_cluster(apply.clients, spec.region, spec.id)
        return gc.status if gc else None

    _wait_available(f"Aurora global cluster {spec.id}", status, apply.waits)
    return change.result(trail.records, resource_id=arn)


@task(task_run_name="ensure-secondary-cluster-{change.region}", cache_policy=NO_CACHE)
def ensure_secondary_cluster(apply: ApplyContext, change: Change) -> ChangeResult:
    """CreateDBCluster in the secondary's region as a member of the global cluster (in the
    region's subnet group and security groups, with the region's KMS key when the global database
    is encrypted), await available, then CreateDBInstance so the secondary can serve and be
    promoted; await the instance. An UPDATE adds only the missing instance."""
    spec = change.typed_spec(SecondaryClusterSpec)
    rds = apply.clients.rds(spec.region)
    trail = apply.trail("aurora")
    arn = change.current_id or spec.id
    if change.action is Action.CREATE:
        params: dict[str, Any] = {
            "DBClusterIdentifier": spec.id,
            "GlobalClusterIdentifier": spec.global_cluster_id,
            "Engine": spec.engine,
            "DBSubnetGroupName": spec.subnet_group,
            "VpcSecurityGroupIds": list(spec.security_group_ids),
            "Tags": tag_list(spec.tags),
        }
        if spec.engine_version:
            params["EngineVersion"] = spec.engine_version
        if spec.kms_key_id:
            params["KmsKeyId"] = spec.kms_key_id
        with aws_call("rds", "CreateDBCluster", f"{spec.region}/{spec.id}"):
            created = rds.create_db_cluster(**params)["DBCluster"]
        arn = created.get("DBClusterArn") or spec.id
        trail.record(
            "create-secondary-cluster",
            arn,
            spec.region,
            "rds:CreateDBCluster",
            global_cluster=spec.global_cluster_id,
        )

    def status() -> str | None:
        cluster = _db_cluster(apply.clients, spec.region, spec.id)
        return cluster.status if cluster else None

    _wait_available(f"Aurora cluster {spec.id} in {spec.region}", status, apply.waits)
    with aws_call("rds", "CreateDBInstance", f"{spec.region}/{spec.instance_id}"):
        instance = rds.create_db_instance(
            DBInstanceIdentifier=spec.instance_id,
            DBClusterIdentifier=spec.id,
            DBInstanceClass=spec.instance_class,
            Engine=spec.engine,
            Tags=tag_list(spec.tags),  # type: ignore[arg-type]
        )["DBInstance"]
    trail.record(
        "create-secondary-instance",
        instance.get("DBInstanceArn") or spec.instance_id,
        spec.region,
        "rds:CreateDBInstance",
        instance_class=spec.instance_class,
    )

    def instance_status() -> str | None:
        with aws_call("rds", "DescribeDBInstances", f"{spec.region}/{spec.instance_id}"):
            found = rds.describe_db_instances(DBInstanceIdentifier=spec.instance_id)["DBInstances"]
        return found[0].get("DBInstanceStatus") if found else None

    _wait_available(f"Aurora instance {spec.instance_id} in {spec.region}", instance_status, apply.waits)
    return change.result(trail.records, resource_id=arn)
