"""EKS in the plan: verified, never changed. Each cluster ACTIVE and Chalk's Deployments ready.

Clusters and Chalk's workloads are Chalk's; the plan only reports whether the data plane the
failover plumbing points at is there, as checks beside the changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from chalkdr.plan.core import Check
from chalkdr.plan.core import PlanModel
from chalkdr.topology import RegionConfig
from chalkdr.topology import Topology

if TYPE_CHECKING:
    from chalkdr.plan.systems import ObservedState

__all__ = ["ObservedDeployment", "ObservedEks", "ObservedEksClusters", "checks"]


class ObservedDeployment(PlanModel):
    name: str
    found: bool
    replicas: int = 0
    ready_replicas: int = 0


class ObservedEks(PlanModel):
    cluster: str
    region: str
    status: str | None = None  # None: the cluster was not found
    deployments: tuple[ObservedDeployment, ...] = ()
    error: str | None = None


class ObservedEksClusters(PlanModel):
    clusters: dict[str, ObservedEks] = Field(default_factory=dict)  # region -> its cluster


def _problems(region: RegionConfig, eks: ObservedEks | None) -> tuple[list[str], list[str]]:
    if eks is None or eks.error:
        return [eks.error if eks and eks.error else "not read"], []
    if eks.status is None:
        return ["cluster not found"], []
    problems = [f"cluster {eks.status}"] if eks.status != "ACTIVE" else []
    notes: list[str] = []
    for name in (region.eks.query_server_deployment, region.eks.persistence_deployment):
        dep = next((d for d in eks.deployments if d.name == name), None)
        if dep is None or not dep.found:
            problems.append(f"{region.eks.namespace}/{name} not found")
        elif dep.ready_replicas < dep.replicas:
            problems.append(f"{name} {dep.ready_replicas}/{dep.replicas} ready")
        else:
            notes.append(f"{name} {dep.ready_replicas}/{dep.replicas} ready")
    return problems, notes


def checks(topology: Topology, observed: ObservedState) -> list[Check]:
    out = []
    for r in topology.regions:
        problems, notes = _problems(r, observed.eks.clusters.get(r.aws_region))
        out.append(
            Check(
                kind="eks-cluster",
                id=r.eks.cluster_name,
                region=r.aws_region,
                ok=not problems,
                detail="; ".join(problems) if problems else "ACTIVE; " + "; ".join(notes),
            )
        )
    return out
