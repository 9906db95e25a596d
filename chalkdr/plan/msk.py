"""MSK in the plan: one MSK Replicator per secondary, copying the primary's topics with offsets synced.

A replicator lives in its target cluster's region. Its clusters and service role are immutable
(a change replaces it); its topics and consumer-group settings are updated in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Literal

from pydantic import Field

from chalkdr.plan.core import MANAGED_TAGS
from chalkdr.plan.core import Change
from chalkdr.plan.core import Findings
from chalkdr.plan.core import PlanModel
from chalkdr.plan.core import ResourceKind
from chalkdr.plan.core import Spec
from chalkdr.plan.core import StageDef
from chalkdr.plan.core import compare
from chalkdr.topology import Topology

if TYPE_CHECKING:
    from chalkdr.plan.systems import DesiredState
    from chalkdr.plan.systems import ObservedState

__all__ = [
    "STAGES",
    "MskEndpoint",
    "ObservedMsk",
    "ObservedMskCluster",
    "ObservedReplicator",
    "ReplicatorSpec",
    "changes",
    "desired",
    "replicator_name",
    "replicator_names",
]

_IMMUTABLE = ("source_cluster_arn", "target_cluster_arn", "service_execution_role_arn")


def replicator_name(topology: Topology, target_region: str) -> str:
    """The topology's name; suffixed with the target region when there is more than one target."""
    base = topology.msk.replicator_name
    return base if len(topology.secondaries) <= 1 else f"{base}-{target_region}"[:128]


def replicator_names(topology: Topology) -> dict[str, str]:
    """target region -> the replicator that feeds it."""
    return {r.aws_region: replicator_name(topology, r.aws_region) for r in topology.secondaries}


class MskEndpoint(PlanModel):
    """One side of a replicator: the cluster and the VPC placement the replicator reaches it by."""

    arn: str
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()


class ReplicatorSpec(Spec):
    kind: Literal["msk-replicator"] = "msk-replicator"
    # `region` is the target cluster's region: AWS creates a replicator there.
    name: str
    source: MskEndpoint
    target: MskEndpoint
    topics: tuple[str, ...]
    consumer_groups: tuple[str, ...] = (".*",)
    sync_consumer_group_offsets: bool = True
    service_execution_role_arn: str
    tags: dict[str, str]


class ObservedMskCluster(PlanModel):
    arn: str
    region: str
    state: str
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()

    def endpoint(self) -> MskEndpoint:
        return MskEndpoint(
            arn=self.arn, subnet_ids=self.subnet_ids, security_group_ids=self.security_group_ids
        )


class ObservedReplicator(PlanModel):
    name: str
    arn: str
    region: str
    state: str
    current_version: str
    source_cluster_arn: str | None
    target_cluster_arn: str | None
    topics: tuple[str, ...] = ()
    consumer_groups: tuple[str, ...] = ()
    sync_consumer_group_offsets: bool = False
    service_execution_role_arn: str | None = None


class ObservedMsk(PlanModel):
    clusters: dict[str, ObservedMskCluster] = Field(default_factory=dict)  # region -> its cluster
    replicators: dict[str, tuple[ObservedReplicator, ...]] = Field(default_factory=dict)  # by region


def _settings(r: ReplicatorSpec | ObservedReplicator) -> dict[str, object]:
    clusters = (
        (r.source.arn, r.target.arn)
        if isinstance(r, ReplicatorSpec)
        else (r.source_cluster_arn, r.target_cluster_arn)
    )
    return {
        "source_cluster_arn": clusters[0],
        "target_cluster_arn": clusters[1],
        "service_execution_role_arn": r.service_execution_role_arn,
        "topics": sorted(r.topics),
        "consumer_groups": sorted(r.consumer_groups),
        "sync_consumer_group_offsets": r.sync_consumer_group_offsets,
    }


def desired(topology: Topology, observed: ObservedState, findings: Findings) -> list[Spec]:
    clusters = observed.msk.clusters
    source_cfg = topology.primary
    source = clusters.get(source_cfg.aws_region)
    specs: list[Spec] = []
    for target_cfg in topology.secondaries:
        target = clusters.get(target_cfg.aws_region)
        name = replicator_name(topology, target_cfg.aws_region)
        problems = []
        for cfg, cluster in ((source_cfg, source), (target_cfg, target)):
            if cluster is None:
                problems.append(f"MSK cluster {cfg.msk_cluster_arn} not found (kafka:DescribeClusterV2)")
            elif cluster.state != "ACTIVE":
                problems.append(
                    f"MSK cluster {cfg.msk_cluster_arn} is {cluster.state}; "
                    "a replicator needs ACTIVE clusters"
                )
        if problems or source is None or target is None:
            findings.errors.extend(f"{target_cfg.aws_region}: replicator {name}: {p}" for p in problems)
            continue
        specs.append(
            ReplicatorSpec(
                name=name,
                region=target_cfg.aws_region,
                source=source.endpoint(),
                target=target.endpoint(),
                topics=tuple(sorted(topology.msk.topics)),
                service_execution_role_arn=topology.msk.service_execution_role_arn,
                tags=MANAGED_TAGS,
            )
        )
    return specs


def changes(desired: DesiredState, observed: ObservedState, findings: Findings) -> list[Change]:
    out = []
    for spec in desired.of(ReplicatorSpec):
        current = next(
            (
                r
                for r in observed.msk.replicators.get(spec.region, ())
                if r.name == spec.name and r.state != "DELETING"
            ),
            None,
        )
        if current is not None and current.state == "FAILED":
            findings.warnings.append(
                f"{spec.region}: MSK replicator {spec.name} is FAILED; see its StateInfo"
            )
        action, diffs = compare(
            _settings(current) if current else None, _settings(spec), immutable=_IMMUTABLE
        )
        out.append(
            Change.of(
                spec,
                action,
                diffs,
                current_id=current.arn if current else None,
                current_version=current.current_version if current else None,
            )
        )
    return out


STAGES = (StageDef("msk-replicators", ResourceKind.REPLICATOR, concurrent=True),)
