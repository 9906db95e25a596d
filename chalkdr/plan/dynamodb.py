"""DynamoDB in the plan: every online-store table a global table (2019.11.21) with a replica in every region.

The tables are Chalk's; the replicas provision adds are ours, tagged for the environment on
creation (a replica someone else added is left as it is: the plan never changes one). AWS adds
a replica only where no table of that name exists, one replica change per table at a time (the
apply task adds them in turn).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Literal

from pydantic import Field

from chalkdr.plan.core import Action
from chalkdr.plan.core import Change
from chalkdr.plan.core import FieldDiff
from chalkdr.plan.core import Findings
from chalkdr.plan.core import PlanModel
from chalkdr.plan.core import ResourceKind
from chalkdr.plan.core import Spec
from chalkdr.plan.core import StageDef
from chalkdr.plan.core import ownership_tags
from chalkdr.topology import Topology

if TYPE_CHECKING:
    from chalkdr.plan.systems import DesiredState
    from chalkdr.plan.systems import ObservedState

__all__ = ["STAGES", "GlobalTableSpec", "ObservedDynamoDb", "ObservedTable", "changes", "desired"]


class GlobalTableSpec(Spec):
    ID_FIELD = "table"
    kind: Literal["dynamodb-global-table"] = "dynamodb-global-table"
    # `region` is the source region (the primary's table, where replicas are added from).
    table: str
    regions: tuple[str, ...]  # every region that must hold a replica, the source included
    tags: dict[str, str]
    replica_kms_keys: dict[str, str] = Field(default_factory=dict)  # region -> its KMS key for the replica


class ObservedTable(PlanModel):
    table: str
    region: str
    status: str
    arn: str
    replica_regions: tuple[str, ...] = ()  # the OTHER regions, as DescribeTable lists them
    replica_status: dict[str, str] = Field(default_factory=dict)
    global_table_version: str | None = None
    # What AWS checks before it adds a replica (DynamoDB Developer Guide, global tables
    # prerequisites; UpdateTable ReplicaUpdates): the table's encryption and its write capacity.
    kms_key_arn: str | None = None  # SSEDescription.KMSMasterKeyArn (None: owned by DynamoDB)
    kms_customer_managed: bool = False  # KMS DescribeKey KeyManager == CUSTOMER
    billing_mode: str = "PROVISIONED"  # BillingModeSummary.BillingMode; absent means PROVISIONED
    write_autoscaled: bool = False  # an Application Auto Scaling target and policy on write capacity


class ObservedDynamoDb(PlanModel):
    tables: dict[str, tuple[ObservedTable, ...]] = Field(default_factory=dict)  # region -> tables there

    def table(self, region: str, name: str) -> ObservedTable | None:
        return next((t for t in self.tables.get(region, ()) if t.table == name), None)


def online_store_tables(topology: Topology) -> list[str]:
    """Every region's online-store tables, each once, in topology order."""
    return list(dict.fromkeys(t for r in topology.regions for t in r.online_store_tables))


def desired(topology: Topology, observed: ObservedState, findings: Findings) -> list[Spec]:
    regions = tuple(r.aws_region for r in topology.regions)
    keys = {r.aws_region: r.online_store_kms_key for r in topology.secondaries if r.online_store_kms_key}
    return [
        GlobalTableSpec(
            table=t,
            region=topology.primary.aws_region,
            regions=regions,
            tags=ownership_tags(topology.environment),
            replica_kms_keys=keys,
        )
        for t in online_store_tables(topology)
    ]


def _prerequisites(
    spec: GlobalTableSpec, source: ObservedTable, missing: list[str], findings: Findings
) -> bool:
    """What UpdateTable would refuse, named before any call; True when a replica can be added."""
    ok = True
    if source.kms_customer_managed:
        for r in missing:
            if r not in spec.replica_kms_keys:
                ok = False
                findings.errors.append(
                    f"{r}: DynamoDB table {spec.table} is encrypted with a customer managed KMS key "
                    f"({source.kms_key_arn}); AWS needs a KMS key in {r} for its replica "
                    "(KMSMasterKeyId must be specified for each replica): set online_store_kms_key "
                    f"for region {r} in the topology"
                )
    if source.billing_mode != "PAY_PER_REQUEST" and not source.write_autoscaled:
        ok = False
        findings.errors.append(
            f"{spec.region}: DynamoDB table {spec.table} has provisioned write capacity without auto "
            "scaling; AWS adds replicas only to tables whose write capacity is on-demand or auto "
            "scaled (Table write capacity should either be Pay-Per-Request or AutoScaled): switch "
            "it to on-demand or register a scalable target and policy on WriteCapacityUnits"
        )
    return ok


def _change(spec: GlobalTableSpec, observed: ObservedDynamoDb, findings: Findings) -> Change | None:
    source = observed.table(spec.region, spec.table)
    if source is None:
        findings.errors.append(
            f"{spec.region}: DynamoDB table {spec.table} not found (dynamodb:DescribeTable); "
            "the online store is Chalk's to create, its replicas are ours"
        )
        return None
    present = [spec.region] + [
        r for r in source.replica_regions if source.replica_status.get(r) != "DELETING"
    ]
    missing = [r for r in spec.regions if r not in present]
    for r in missing:
        standalone = observed.table(r, spec.table)
        if standalone is not None and spec.region not in standalone.replica_regions:
            findings.errors.append(
                f"{r}: DynamoDB table {spec.table} exists there as a separate table; AWS adds a "
                f"replica only where no table of that name exists (delete it or rename the table)"
            )
    if not missing:
        return Change.of(spec, Action.NOOP, current_id=source.arn)
    if not _prerequisites(spec, source, missing, findings):
        return None
    new = sorted(set(spec.regions) | set(present))
    diff = FieldDiff(field="replica_regions", old=sorted(present), new=new)
    return Change.of(spec, Action.UPDATE, [diff], current_id=source.arn)


def changes(desired: DesiredState, observed: ObservedState, findings: Findings) -> list[Change]:
    found = (_change(spec, observed.dynamodb, findings) for spec in desired.of(GlobalTableSpec))
    return [c for c in found if c is not None]


STAGES = (StageDef("dynamodb-replicas", ResourceKind.GLOBAL_TABLE, concurrent=True),)
