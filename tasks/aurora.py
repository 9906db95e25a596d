"""Tasks for Amazon Aurora global databases: observe the clusters, ensure the global cluster and secondaries.

The primary's cluster exists (it is Chalk's metadata plane); provision makes it the writer of
the topology's global cluster (CreateGlobalCluster from its ARN) and creates each secondary
cluster in its region with CreateDBCluster(GlobalClusterIdentifier=...). AWS cannot attach an
existing standalone cluster to a global cluster: the plan reports that as an error instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError
from prefect import task
from prefect.cache_policies import NO_CACHE

from chalkdr.audit import AuditRecord
from chalkdr.classify import aws_call
from chalkdr.clients import AwsClients
from chalkdr.plan import (
    Change,
    ChangeResult,
    GlobalClusterSpec,
    ObservedDbCluster,
    ObservedGlobalCluster,
    SecondaryClusterSpec,
    WaitPolicy,
)
from tasks.audit import emit_audit_event
from tasks.retry import retry_options

__all__ = [
    "ensure_global_cluster",
    "ensure_secondary_cluster",
    "read_db_cluster",
    "read_global_cluster",
]

Emit = Callable[[AuditRecord], None]


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
def ensure_global_cluster(
    clients: AwsClients,
    change: Change,
    *,
    waits: WaitPolicy,
    audit_detail: Mapping[str, Any] | None = None,
    emit: Emit = emit_audit_event,
) -> ChangeResult:
    """CreateGlobalCluster from the primary cluster's ARN, which becomes the writer."""
    spec = change.spec
    assert isinstance(spec, GlobalClusterSpec)
    rds = clients.rds(spec.region)
    with aws_call("rds", "CreateGlobalCluster", spec.id):
        created = rds.create_global_cluster(
            GlobalClusterIdentifier=spec.id,
            SourceDBClusterIdentifier=spec.writer_cluster_arn,
            Tags=[{"Key": k, "Value": v} for k, v in spec.tags.items()],
        )["GlobalCluster"]
    record = AuditRecord(
        system="aurora",
        action="create-global-cluster",
        resource=created.get("GlobalClusterArn") or spec.id,
        region=spec.region,
        api_call="rds:CreateGlobalCluster",
        detail={**dict(audit_detail or {}), "writer": spec.writer_cluster_arn},
    )
    emit(record)

    def status() -> str | None:
        gc = _global_cluster(clients, spec.region, spec.id)
        return gc.status if gc else None

    _wait_available(f"Aurora global cluster {spec.id}", status, waits)
    return change.result([record], resource_id=record.resource)


@task(task_run_name="ensure-secondary-cluster-{change.region}", cache_policy=NO_CACHE)
def ensure_secondary_cluster(
    clients: AwsClients,
    change: Change,
    *,
    waits: WaitPolicy,
    audit_detail: Mapping[str, Any] | None = None,
    emit: Emit = emit_audit_event,
) -> ChangeResult:
    """CreateDBCluster in the secondary's region as a member of the global cluster; await available.

    A new member is a headless secondary (storage replication only): DB instances, subnet group
    and KMS key for an encrypted source are not in the topology and stay Chalk's to add.
    """
    spec = change.spec
    assert isinstance(spec, SecondaryClusterSpec)
    params: dict[str, Any] = {
        "DBClusterIdentifier": spec.id,
        "GlobalClusterIdentifier": spec.global_cluster_id,
        "Engine": spec.engine,
        "Tags": [{"Key": k, "Value": v} for k, v in spec.tags.items()],
    }
    if spec.engine_version:
        params["EngineVersion"] = spec.engine_version
    with aws_call("rds", "CreateDBCluster", f"{spec.region}/{spec.id}"):
        created = clients.rds(spec.region).create_db_cluster(**params)["DBCluster"]
    record = AuditRecord(
        system="aurora",
        action="create-secondary-cluster",
        resource=created.get("DBClusterArn") or spec.id,
        region=spec.region,
        api_call="rds:CreateDBCluster",
        detail={**dict(audit_detail or {}), "global_cluster": spec.global_cluster_id},
    )
    emit(record)

    def status() -> str | None:
        cluster = _db_cluster(clients, spec.region, spec.id)
        return cluster.status if cluster else None

    _wait_available(f"Aurora cluster {spec.id} in {spec.region}", status, waits)
    return change.result([record], resource_id=record.resource)
