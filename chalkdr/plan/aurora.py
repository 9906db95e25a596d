"""Aurora in the plan: the metadata plane's global cluster, written in the primary, a secondary per region.

The primary's cluster is Chalk's; provision makes it the writer of the topology's global cluster
and creates each secondary with CreateDBCluster(GlobalClusterIdentifier=...). AWS cannot attach
an existing standalone cluster to a global cluster, so that is an error, never a change, and
provision never moves the writer (failover and failback do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any
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

__all__ = [
    "STAGES",
    "GlobalClusterSpec",
    "ObservedAurora",
    "ObservedDbCluster",
    "ObservedGlobalCluster",
    "SecondaryClusterSpec",
    "changes",
    "desired",
]


class _AuroraMember(Spec):
    """What every Aurora resource of the plan carries: its id and the primary's engine."""

    ID_FIELD = "id"
    id: str
    engine: str
    engine_version: str | None
    tags: dict[str, str]


class GlobalClusterSpec(_AuroraMember):
    kind: Literal["aurora-global-cluster"] = "aurora-global-cluster"
    # `region` is the primary region (where the writer is).
    writer_cluster_id: str
    writer_cluster_arn: str


class SecondaryClusterSpec(_AuroraMember):
    """A secondary that can serve: the cluster in its region's VPC, encrypted with a key of its
    region when the global database is encrypted, and one DB instance (a cluster without an
    instance replicates storage but cannot serve reads or be promoted)."""

    kind: Literal["aurora-secondary-cluster"] = "aurora-secondary-cluster"
    global_cluster_id: str
    subnet_group: str
    security_group_ids: tuple[str, ...]
    kms_key_id: str | None
    instance_class: str

    @property
    def instance_id(self) -> str:
        return f"{self.id}-1"


class ObservedDbCluster(PlanModel):
    id: str
    arn: str
    region: str
    engine: str
    engine_version: str | None = None
    status: str
    global_cluster_id: str | None = None
    storage_encrypted: bool = False
    instances: int = 0  # DBClusterMembers


class ObservedGlobalCluster(PlanModel):
    id: str
    arn: str
    engine: str | None = None
    engine_version: str | None = None
    status: str
    members: dict[str, bool] = Field(default_factory=dict)  # cluster ARN -> is writer


class ObservedAurora(PlanModel):
    clusters: dict[str, ObservedDbCluster] = Field(default_factory=dict)  # region -> its cluster
    global_cluster: ObservedGlobalCluster | None = None


def desired(topology: Topology, observed: ObservedState, findings: Findings) -> list[Spec]:
    primary_cfg = topology.primary
    primary = observed.aurora.clusters.get(primary_cfg.aws_region)
    gid = topology.aurora.global_cluster_id
    if primary is None:
        findings.errors.append(
            f"{primary_cfg.aws_region}: Aurora cluster {primary_cfg.aurora_cluster_id} not found "
            "(rds:DescribeDBClusters): the global cluster is built from it"
        )
        return []
    # What every Aurora resource of the plan shares: the primary's engine, and our tags.
    member: dict[str, Any] = {
        "engine": primary.engine,
        "engine_version": primary.engine_version,
        "tags": ownership_tags(topology.environment),
    }
    secondaries = []
    for i, r in enumerate(topology.regions):
        if r is primary_cfg:
            continue
        cfg, where = r.aurora, f"regions[{i}].aurora"
        missing = [
            f"{where}.{name}"
            for name, value in (
                ("subnet_group", cfg.subnet_group),
                ("security_group_ids", cfg.security_group_ids),
                ("instance_class", cfg.instance_class),
                ("kms_key_id", cfg.kms_key_id if primary.storage_encrypted else "not needed"),
            )
            if not value
        ]
        if missing:
            why = (
                "; the global database is encrypted, so AWS needs a KMS key in this region "
                "(For encrypted cross-region replica, kmsKeyId should be explicitly specified)"
                if not cfg.kms_key_id and primary.storage_encrypted
                else ""
            )
            findings.errors.append(
                f"{r.aws_region}: the Aurora secondary {r.aurora_cluster_id} needs {', '.join(missing)} "
                f"(CreateDBCluster in this region's VPC, CreateDBInstance to serve){why}"
            )
            continue
        assert cfg.subnet_group is not None and cfg.instance_class is not None
        secondaries.append(
            SecondaryClusterSpec(
                **member,
                id=r.aurora_cluster_id,
                region=r.aws_region,
                global_cluster_id=gid,
                subnet_group=cfg.subnet_group,
                security_group_ids=tuple(cfg.security_group_ids),
                kms_key_id=cfg.kms_key_id if primary.storage_encrypted else None,
                instance_class=cfg.instance_class,
            )
        )
    return [
        GlobalClusterSpec(
            **member,
            id=gid,
            region=primary_cfg.aws_region,
            writer_cluster_id=primary.id,
            writer_cluster_arn=primary.arn,
        ),
        *secondaries,
    ]


def _global_change(
    spec: GlobalClusterSpec, desired: DesiredState, observed: ObservedAurora, findings: Findings
) -> Change | None:
    gc = observed.global_cluster
    primary = observed.clusters.get(spec.region)
    if gc is None:
        if primary is not None and primary.global_cluster_id and primary.global_cluster_id != spec.id:
            findings.errors.append(
                f"{spec.region}: Aurora cluster {spec.writer_cluster_id} already belongs to global cluster "
                f"{primary.global_cluster_id}, not {spec.id}"
            )
            return None
        engine = f"{spec.engine} {spec.engine_version or ''}".strip()
        diffs = [
            FieldDiff(field="writer", new=spec.writer_cluster_arn),
            FieldDiff(field="engine", new=engine),
        ]
        return Change.of(spec, Action.CREATE, diffs)
    if spec.writer_cluster_arn not in gc.members:
        findings.errors.append(
            f"{spec.region}: Aurora global cluster {spec.id} exists without {spec.writer_cluster_id}; an "
            "existing cluster cannot be attached to a global cluster (AWS adds only new secondaries)"
        )
        return None
    if gc.engine and gc.engine != spec.engine:
        findings.errors.append(
            f"aurora: global cluster {spec.id} runs {gc.engine}, the primary runs {spec.engine}"
        )
    writer = next((arn for arn, is_writer in gc.members.items() if is_writer), None)
    if writer != spec.writer_cluster_arn:
        ours = {spec.writer_cluster_arn} | {
            c.arn
            for s in desired.of(SecondaryClusterSpec)
            if (c := observed.clusters.get(s.region)) is not None
        }
        where = "a cluster of this topology" if writer in ours else "a cluster outside this topology"
        findings.warnings.append(
            f"aurora: the writer of {spec.id} is {writer or 'nobody'} ({where}), not the topology's "
            f"primary {spec.writer_cluster_id}; provision does not move the writer (failback does)"
        )
    return Change.of(spec, Action.NOOP, current_id=gc.arn)


def _secondary_change(
    spec: SecondaryClusterSpec, observed: ObservedAurora, findings: Findings
) -> Change | None:
    cluster = observed.clusters.get(spec.region)
    members = observed.global_cluster.members if observed.global_cluster is not None else {}
    if cluster is None:
        diffs = [
            FieldDiff(field="global_cluster", new=spec.global_cluster_id),
            FieldDiff(field="subnet_group", new=spec.subnet_group),
            FieldDiff(field="instances", new=f"{spec.instance_id} ({spec.instance_class})"),
        ]
        return Change.of(spec, Action.CREATE, diffs)
    if cluster.arn in members:
        if cluster.instances == 0:
            # A headless secondary (e.g. an interrupted apply): add the instance it needs to serve.
            diff = FieldDiff(field="instances", old=0, new=f"{spec.instance_id} ({spec.instance_class})")
            return Change.of(spec, Action.UPDATE, [diff], current_id=cluster.arn)
        return Change.of(spec, Action.NOOP, current_id=cluster.arn)
    findings.errors.append(
        f"{spec.region}: Aurora cluster {spec.id} exists as a standalone cluster; AWS cannot attach an "
        f"existing cluster to global cluster {spec.global_cluster_id} (a secondary is created by "
        "rds:CreateDBCluster with GlobalClusterIdentifier): delete or rename it"
    )
    return None


def changes(desired: DesiredState, observed: ObservedState, findings: Findings) -> list[Change]:
    out: list[Change | None] = []
    for spec in desired.of(GlobalClusterSpec):
        gc_change = _global_change(spec, desired, observed.aurora, findings)
        if gc_change is None:
            return []  # without a usable global cluster, no secondary can join it
        out.append(gc_change)
    out += [_secondary_change(s, observed.aurora, findings) for s in desired.of(SecondaryClusterSpec)]
    return [c for c in out if c is not None]


_AFTER_GLOBAL = ("aurora-global-cluster",)  # a secondary joins an existing global cluster
STAGES = (
    StageDef("aurora-global-cluster", ResourceKind.GLOBAL_CLUSTER, concurrent=False),
    StageDef("aurora-secondaries", ResourceKind.SECONDARY_CLUSTER, concurrent=True, depends_on=_AFTER_GLOBAL),
)
