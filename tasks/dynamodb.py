"""Tasks for Amazon DynamoDB global tables (version 2019.11.21): observe tables, add missing replicas.

The online-store tables are Chalk's; what provision ensures is that each one is a global table
with a replica in every region. AWS allows one replica change per table at a time (UpdateTable
with one ReplicaUpdates entry while the table is ACTIVE), so replicas are added one region
after another, each awaited until ACTIVE before the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError
from prefect import task
from prefect.cache_policies import NO_CACHE

from chalkdr.classify import aws_call
from chalkdr.clients import AwsClients
from chalkdr.plan import Change
from chalkdr.plan import ChangeResult
from chalkdr.plan import GlobalTableSpec
from chalkdr.plan import ObservedTable
from chalkdr.plan import WaitPolicy
from chalkdr.plan import tag_list
from tasks.audit import ApplyContext
from tasks.retry import retry_options

__all__ = ["ensure_replicas", "read_tables"]


def _describe(clients: AwsClients, region: str, table: str) -> dict[str, Any] | None:
    with aws_call("dynamodb", "DescribeTable", f"{region}/{table}"):
        try:
            return clients.dynamodb(region).describe_table(TableName=table)["Table"]  # type: ignore[return-value]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise


def _customer_managed(clients: AwsClients, region: str, key_arn: str | None) -> bool:
    """KMS DescribeKey: whether the table's key is the customer's (KeyManager CUSTOMER)."""
    if not key_arn:
        return False
    with aws_call("kms", "DescribeKey", key_arn):
        meta = clients.client("kms", region).describe_key(KeyId=key_arn)["KeyMetadata"]
    return meta.get("KeyManager") == "CUSTOMER"


def _write_autoscaled(clients: AwsClients, region: str, table: str) -> bool:
    """Application Auto Scaling: a scalable target and a scaling policy on the table's write capacity."""
    aas = clients.client("application-autoscaling", region)
    scope = {
        "ServiceNamespace": "dynamodb",
        "ResourceIds": [f"table/{table}"],
        "ScalableDimension": "dynamodb:table:WriteCapacityUnits",
    }
    with aws_call("application-autoscaling", "DescribeScalableTargets", f"{region}/{table}"):
        targets = aas.describe_scalable_targets(**scope)["ScalableTargets"]
    if not targets:
        return False
    with aws_call("application-autoscaling", "DescribeScalingPolicies", f"{region}/{table}"):
        policies = aas.describe_scaling_policies(
            ServiceNamespace="dynamodb",
            ResourceId=f"table/{table}",
            ScalableDimension="dynamodb:table:WriteCapacityUnits",
        )["ScalingPolicies"]
    return bool(policies)


def _observed(region: str, raw: Mapping[str, Any], **prerequisites: Any) -> ObservedTable:
    replicas = raw.get("Replicas") or []
    return ObservedTable(
        table=raw["TableName"],
        region=region,
        status=raw.get("TableStatus", "UNKNOWN"),
        arn=raw["TableArn"],
        # DescribeTable lists the other regions; a region that lists itself is not one of them.
        replica_regions=tuple(r["RegionName"] for r in replicas if r["RegionName"] != region),
        replica_status={
            r["RegionName"]: r.get("ReplicaStatus", "") for r in replicas if r["RegionName"] != region
        },
        global_table_version=raw.get("GlobalTableVersion"),
        **prerequisites,
    )


@task(task_run_name="read-tables-{region}", cache_policy=NO_CACHE, **retry_options())
def read_tables(clients: AwsClients, region: str, tables: Sequence[str]) -> list[ObservedTable]:
    """The named tables that exist in `region`, with the replicas each one reports."""
    found = []
    for name in dict.fromkeys(tables):
        raw = _describe(clients, region, name)
        if raw is None:
            continue
        sse = raw.get("SSEDescription") or {}
        key = sse.get("KMSMasterKeyArn") if sse.get("Status") in ("ENABLED", "UPDATING") else None
        billing = (raw.get("BillingModeSummary") or {}).get("BillingMode") or "PROVISIONED"
        found.append(
            _observed(
                region,
                raw,
                kms_key_arn=key,
                kms_customer_managed=_customer_managed(clients, region, key),
                billing_mode=billing,
                write_autoscaled=billing == "PROVISIONED" and _write_autoscaled(clients, region, name),
            )
        )
    return found


def _wait_settled(
    clients: AwsClients, region: str, table: str, waits: WaitPolicy, *, replica: str | None = None
) -> ObservedTable:
    """Until the table is ACTIVE with no replica in flight (and `replica`, if given, ACTIVE)."""

    def read() -> ObservedTable:
        raw = _describe(clients, region, table)
        if raw is None:
            raise FileNotFoundError(f"DynamoDB table {table} disappeared from {region}")
        return _observed(region, raw)

    def settled(seen: ObservedTable) -> bool:
        quiet = seen.status == "ACTIVE" and all(s == "ACTIVE" for s in seen.replica_status.values())
        return quiet and (replica is None or seen.replica_status.get(replica) == "ACTIVE")

    return waits.poll(
        read,
        settled,
        lambda seen: (
            f"DynamoDB table {table} in {region} not settled "
            f"(table {seen.status}, replicas {seen.replica_status})"
        ),
    )


@task(task_run_name="ensure-replicas-{change.id}", cache_policy=NO_CACHE)
def ensure_replicas(apply: ApplyContext, change: Change) -> ChangeResult:
    """Add each missing replica (one UpdateTable each), wait for ACTIVE, then tag the replica."""
    spec = change.typed_spec(GlobalTableSpec)
    source = spec.region
    diff = next((d for d in change.diffs if d.field == "replica_regions"), None)
    present = set(diff.old if diff else ())
    missing = [r for r in spec.regions if r not in present]
    trail = apply.trail("dynamodb")
    for region in missing:
        seen = _wait_settled(apply.clients, source, spec.table, apply.waits)
        if region in seen.replica_regions:
            continue  # added meanwhile (a concurrent or earlier interrupted run): converged
        with aws_call("dynamodb", "UpdateTable", f"{source}/{spec.table} +replica {region}"):
            create: dict[str, Any] = {"RegionName": region}
            if region in spec.replica_kms_keys:
                create["KMSMasterKeyId"] = spec.replica_kms_keys[region]
            apply.clients.dynamodb(source).update_table(
                TableName=spec.table,
                ReplicaUpdates=[{"Create": create}],  # type: ignore[list-item]
            )
        replica_arn = seen.arn.replace(f":{source}:", f":{region}:", 1)
        trail.record(
            "create-replica",
            replica_arn,
            source,
            "dynamodb:UpdateTable",
            table=spec.table,
            replica_region=region,
        )
        _wait_settled(apply.clients, source, spec.table, apply.waits, replica=region)
        with aws_call("dynamodb", "TagResource", replica_arn):
            apply.clients.dynamodb(region).tag_resource(
                ResourceArn=replica_arn,
                Tags=tag_list(spec.tags),  # type: ignore[arg-type]
            )
        trail.record("tag-replica", replica_arn, region, "dynamodb:TagResource")
    return change.result(trail.records)
