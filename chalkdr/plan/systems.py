"""The registry of systems and the plan they make together.

A system is one module with the same shape (desired specs, observed model, changes, stages).
`SYSTEMS` lists them in apply order; the observed world is one typed slot per system. Adding a
system means adding its module, its entry here and its slot in `ObservedState`.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from typing import TypeVar

from pydantic import Field

from chalkdr.failover import failover_estimate
from chalkdr.plan import alarms
from chalkdr.plan import arc
from chalkdr.plan import aurora
from chalkdr.plan import dynamodb
from chalkdr.plan import eks
from chalkdr.plan import msk
from chalkdr.plan import route53
from chalkdr.plan.alarms import ObservedAlarms
from chalkdr.plan.arc import ObservedArc
from chalkdr.plan.aurora import ObservedAurora
from chalkdr.plan.core import OWNER_TAG_KEY
from chalkdr.plan.core import AnySpec
from chalkdr.plan.core import Change
from chalkdr.plan.core import Check
from chalkdr.plan.core import FieldDiff
from chalkdr.plan.core import Findings
from chalkdr.plan.core import Plan
from chalkdr.plan.core import PlanHeader
from chalkdr.plan.core import PlanModel
from chalkdr.plan.core import Spec
from chalkdr.plan.core import Stage
from chalkdr.plan.core import StageDef
from chalkdr.plan.core import claim
from chalkdr.plan.core import stages_for
from chalkdr.plan.dynamodb import ObservedDynamoDb
from chalkdr.plan.eks import ObservedEksClusters
from chalkdr.plan.msk import ObservedMsk
from chalkdr.plan.route53 import ObservedRoute53
from chalkdr.topology import AdoptConfig
from chalkdr.topology import Topology

__all__ = [
    "SYSTEMS",
    "DesiredState",
    "ObservedState",
    "System",
    "apply_stages",
    "compute_plan",
    "desired_state",
    "plan_for",
    "stage_defs",
]

_S = TypeVar("_S", bound=Spec)


class ObservedState(PlanModel):
    """The world as read, one slot per system."""

    route53: ObservedRoute53
    dynamodb: ObservedDynamoDb = Field(default_factory=ObservedDynamoDb)
    msk: ObservedMsk = Field(default_factory=ObservedMsk)
    aurora: ObservedAurora = Field(default_factory=ObservedAurora)
    alarms: ObservedAlarms = Field(default_factory=ObservedAlarms)
    eks: ObservedEksClusters = Field(default_factory=ObservedEksClusters)
    arc: ObservedArc = Field(default_factory=ObservedArc)


class DesiredState(PlanHeader):
    """What AWS must hold for a topology: every system's specs, and what was found on the way."""

    specs: tuple[AnySpec, ...] = ()
    # Existing resources the topology takes over although they are not this environment's.
    adopt: AdoptConfig = Field(default_factory=AdoptConfig)

    def of(self, spec_type: type[_S]) -> list[_S]:
        return [s for s in self.specs if isinstance(s, spec_type)]

    def claim_tagged(
        self,
        findings: Findings,
        adopt_field: Literal["health_checks", "alarms", "replicators", "arc_clusters", "arc_control_panels"],
        key: str,
        tags: Mapping[str, str],
        what: str,
    ) -> list[FieldDiff] | None:
        """`chalkdr.plan.core.claim` for a resource that carries its ownership as a tag, adopted
        when `key` is listed under `adopt.<adopt_field>`."""
        return claim(
            findings,
            environment=self.environment,
            owner=tags.get(OWNER_TAG_KEY),
            adopted=key in getattr(self.adopt, adopt_field),
            what=what,
            marker=f"{OWNER_TAG_KEY} tag",
            adopt_field=adopt_field,
        )


Desire = Callable[[Topology, ObservedState, Findings], list[Spec]]
Diff = Callable[[DesiredState, ObservedState, Findings], list[Change]]


@dataclass(frozen=True)
class System:
    name: str
    desired: Desire
    changes: Diff
    stages: tuple[StageDef, ...] = ()
    checks: Callable[[Topology, ObservedState], list[Check]] | None = None


def _verify_only(topology: Topology, observed: ObservedState, findings: Findings) -> list[Spec]:
    return []


def _no_changes(desired: DesiredState, observed: ObservedState, findings: Findings) -> list[Change]:
    return []


# ARC first: its stages (routing controls, their states) are what Route 53's checks and records wait for.
SYSTEMS: tuple[System, ...] = (
    System("arc", arc.desired, arc.changes, arc.STAGES),
    System("route53", route53.desired, route53.changes, route53.STAGES),
    System("dynamodb", dynamodb.desired, dynamodb.changes, dynamodb.STAGES),
    System("msk", msk.desired, msk.changes, msk.STAGES),
    System("aurora", aurora.desired, aurora.changes, aurora.STAGES),
    System("alarms", alarms.desired, alarms.changes, alarms.STAGES),
    System("eks", _verify_only, _no_changes, checks=eks.checks),
)


def stage_defs(systems: Sequence[System] = SYSTEMS) -> list[StageDef]:
    return [d for s in systems for d in s.stages]


def desired_state(topology: Topology, observed: ObservedState) -> DesiredState:
    """What AWS must hold; `observed` supplies only facts (ALB DNS names, ARNs, subnets)."""
    findings = Findings()
    specs = [spec for system in SYSTEMS for spec in system.desired(topology, observed, findings)]
    return DesiredState(
        environment=topology.environment,
        routing=topology.routing,
        specs=tuple(specs),
        adopt=topology.adopt,
        errors=tuple(findings.errors),
        warnings=tuple(findings.warnings),
        failover=failover_estimate(topology),
    )


def compute_plan(topology: Topology, desired: DesiredState, observed: ObservedState) -> Plan:
    """Every resource of `desired` with its action and field-level diff against `observed`,
    and the verify-only checks (EKS) of `topology`'s regions."""
    findings = Findings(errors=list(desired.errors), warnings=list(desired.warnings))
    changes = [c for system in SYSTEMS for c in system.changes(desired, observed, findings)]
    checks = [c for system in SYSTEMS if system.checks for c in system.checks(topology, observed)]
    return Plan(
        environment=desired.environment,
        routing=desired.routing,
        changes=tuple(changes),
        checks=tuple(checks),
        errors=tuple(findings.errors),
        warnings=tuple(findings.warnings),
        failover=desired.failover,
    )


def plan_for(topology: Topology, observed: ObservedState) -> Plan:
    return compute_plan(topology, desired_state(topology, observed), observed)


def apply_stages(plan: Plan) -> list[Stage]:
    """The plan's pending changes as stages, each with the stages it must wait for."""
    return stages_for(plan, stage_defs())
