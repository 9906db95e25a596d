"""ARC in the plan: a routing-control cluster, a control panel, one routing control per region, their states.

Only when the topology has `recovery.arc`. Amazon Application Recovery Controller (ARC) routing
controls are on/off switches kept by a cluster whose data plane answers on five regional
endpoints; a Route 53 health check of type RECOVERY_CONTROL is healthy while its routing control
is On (chalkdr.plan.route53 makes those checks and the records that use them). A failover then
moves traffic with `UpdateRoutingControlStates` on any cluster endpoint, a data-plane call that
does not need Route 53's control plane in us-east-1. The configuration API that creates clusters,
control panels and routing controls is served from us-west-2 only (ARC API reference, "you must
specify the US West (Oregon) Region for Route 53 ARC API calls"), so every change here is in
`recovery.arc.control_plane_region`.

What exists before what (ARC developer guide, getting-started-cli-routing-config): a new cluster
is PENDING until DEPLOYED, and only then has its endpoints; control panels live in a DEPLOYED
cluster and routing controls in a DEPLOYED control panel. The stages follow that order and each
create waits for DEPLOYED before the next stage starts.

Ownership (what makes provision leave other people's things alone), as for every other system:
- the cluster and the control panel carry tags (CreateCluster/CreateControlPanel `Tags`): the one
  the plan uses is the one named in the topology that carries `chalk-dr:environment=<env>`. One
  of that name without the tag (another environment's, or nobody's) is an error naming it, unless
  the topology lists it under `adopt.arc_clusters` / `adopt.arc_control_panels`; adopting adds the
  tags (TagResource, audited). ARC bills every cluster by the hour (routing-control.create: "you
  are charged by the hour for each cluster that you create"): adopting a cluster the account
  already pays for is how two environments share one, and a plan that creates a cluster says so.
  ARC does not require cluster names to be unique: several clusters of the name, none of them
  ours, is an error too (the plan cannot tell which one is meant);
- routing controls take no tags (CreateRoutingControl has no `Tags`); a routing control is ours
  when it is in our control panel (names are unique within a panel: routing-control.create-control);
- the safety rule is in our control panel too, and tagged.

Routing-control states. ARC creates a routing control Off, so a RECOVERY_CONTROL health check on
it is unhealthy until it is set On (routing-control.update: "When a routing control state is On,
traffic flows to the cell"). Before any failover record carries such a check (the records stage
depends on this one), provision sets the routing controls On through the cluster's data-plane
endpoints, trying each in turn (routing-control.update.api: "Your process for getting and changing
routing control states should try each endpoint in rotation, as needed, since cluster endpoints
are cycled through available and unavailable states"). Which ones: every routing control it
creates, and all of them when all are Off (as created: no traffic anywhere is never a decision).
When some are On and others Off, that is a routing decision (a failover, or an operator's), not
drift: provision leaves it and says so in the plan, as it leaves a health check a failover inverted.

The safety rule: one assertion rule, "at least one of the environment's routing controls On"
(ATLEAST, threshold 1; ARC developer guide, routing-control.safety-rules), so that no update can
turn every region Off. A failover therefore turns the failed region Off and the other On in one
`UpdateRoutingControlStates` call (both entries are evaluated together). Its asserted controls
cannot be changed in place (UpdateSafetyRule changes Name and WaitPeriodMs only): a new region
replaces the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import ClassVar
from typing import Literal
from typing import Protocol
from typing import TypeVar

from pydantic import Field

from chalkdr.plan.core import OWNER_TAG_KEY
from chalkdr.plan.core import RECOVERY_TAG
from chalkdr.plan.core import Action
from chalkdr.plan.core import Change
from chalkdr.plan.core import FieldDiff
from chalkdr.plan.core import Findings
from chalkdr.plan.core import PlanModel
from chalkdr.plan.core import ResourceKind
from chalkdr.plan.core import Spec
from chalkdr.plan.core import StageDef
from chalkdr.plan.core import claim
from chalkdr.plan.core import compare
from chalkdr.plan.core import ownership_tags
from chalkdr.topology import ArcConfig
from chalkdr.topology import Topology

if TYPE_CHECKING:
    from chalkdr.plan.systems import DesiredState
    from chalkdr.plan.systems import ObservedState

__all__ = [
    "SAFETY_RULE_THRESHOLD",
    "SAFETY_RULE_WAIT_PERIOD_MS",
    "STAGES",
    "ArcClusterSpec",
    "ArcView",
    "ClusterEndpoint",
    "ControlPanelSpec",
    "ObservedArc",
    "ObservedArcCluster",
    "ObservedControlPanel",
    "ObservedRoutingControl",
    "ObservedSafetyRule",
    "RoutingControlSpec",
    "RoutingControlStatesSpec",
    "SafetyRuleSpec",
    "arc_view",
    "changes",
    "desired",
    "pending_routing_control",
    "routing_control_names",
    "safety_rule_name",
]

GONE = "PENDING_DELETION"
SAFETY_RULE_THRESHOLD = 1  # at least one routing control On
# ARC's WaitPeriodMs: after a state change, requests against the asserted controls fail for this
# long (anti-flapping). The guide's examples use 5000 ms; a failover and its failback are minutes apart.
SAFETY_RULE_WAIT_PERIOD_MS = 5000


def routing_control_names(topology: Topology) -> dict[str, str]:
    """region -> its routing control (ArcConfig.routing_control_name); empty without `recovery.arc`."""
    arc = topology.recovery.arc
    if arc is None:
        return {}
    return {
        r.aws_region: arc.routing_control_name(topology.environment, r.aws_region) for r in topology.regions
    }


def safety_rule_name(environment: str) -> str:
    return f"chalkdr-{environment}-at-least-one-on"[:64]


def pending_routing_control(name: str) -> str:
    """What a change shows for a routing control the same apply will create."""
    return f"(new routing control {name})"


# -- observed -----------------------------------------------------------------------------------


class ClusterEndpoint(PlanModel):
    """One of a cluster's regional data-plane endpoints (DescribeCluster ClusterEndpoints)."""

    endpoint: str
    region: str


class ObservedArcCluster(PlanModel):
    arn: str
    name: str
    status: str  # PENDING | DEPLOYED | PENDING_DELETION
    endpoints: tuple[ClusterEndpoint, ...] = ()
    tags: dict[str, str] = Field(default_factory=dict)


class ObservedControlPanel(PlanModel):
    arn: str
    name: str
    cluster_arn: str
    status: str
    default: bool = False  # the panel ARC makes with every cluster (DefaultControlPanel)
    tags: dict[str, str] = Field(default_factory=dict)


class ObservedRoutingControl(PlanModel):
    arn: str
    name: str
    control_panel_arn: str
    status: str


class ObservedSafetyRule(PlanModel):
    arn: str
    name: str
    control_panel_arn: str
    status: str
    kind: Literal["ASSERTION", "GATING"] = "ASSERTION"
    asserted_controls: tuple[str, ...] = ()
    rule_type: str = "ATLEAST"  # RuleConfig.Type
    threshold: int = 1
    inverted: bool = False
    wait_period_ms: int = 0
    tags: dict[str, str] = Field(default_factory=dict)


class ObservedArc(PlanModel):
    """ARC as read for a topology with `recovery.arc`: the clusters of its cluster name, the
    control panels of its panel name in them, their routing controls and safety rules, and the
    routing-control states the cluster's data plane reports."""

    read: bool = False  # False: the topology has no `recovery.arc`, nothing was read
    clusters: tuple[ObservedArcCluster, ...] = ()
    control_panels: tuple[ObservedControlPanel, ...] = ()
    routing_controls: tuple[ObservedRoutingControl, ...] = ()
    safety_rules: tuple[ObservedSafetyRule, ...] = ()
    states: dict[str, str] = Field(default_factory=dict)  # routing control ARN -> On | Off
    states_endpoint: str | None = (
        None  # the endpoint region that answered (None: none was asked, or none answered)
    )
    state_errors: tuple[str, ...] = ()  # why endpoints did not answer


# -- which resources are the topology's ------------------------------------------------------------


def _ours(tags: dict[str, str], environment: str) -> bool:
    return tags.get(OWNER_TAG_KEY) == environment


@dataclass(frozen=True)
class ArcView:
    """The cluster, control panel and routing controls a topology's ARC resources are, among
    those read; None where there is none (or the choice is ambiguous: `ambiguous` says which)."""

    cluster: ObservedArcCluster | None
    control_panel: ObservedControlPanel | None
    routing_controls: dict[str, ObservedRoutingControl]  # region -> its control (absent: none)
    safety_rule: ObservedSafetyRule | None
    ambiguous: tuple[str, ...] = ()

    def routing_control_arn(self, region: str) -> str | None:
        rc = self.routing_controls.get(region)
        return rc.arn if rc else None


class _Owned(Protocol):
    @property
    def status(self) -> str: ...

    @property
    def tags(self) -> dict[str, str]: ...


_O = TypeVar("_O", bound=_Owned)


def _choose(found: Sequence[_O], environment: str, what: str, ambiguous: list[str]) -> _O | None:
    live = [x for x in found if x.status != GONE]
    mine = [x for x in live if _ours(x.tags, environment)]
    if mine:
        return mine[0]
    if len(live) > 1:
        ambiguous.append(what)
        return None
    return live[0] if live else None


def _view(
    environment: str,
    cluster_name: str,
    panel_name: str,
    control_names: dict[str, str],
    observed: ObservedArc,
) -> ArcView:
    ambiguous: list[str] = []
    cluster = _choose(
        [c for c in observed.clusters if c.name == cluster_name],
        environment,
        f"ARC cluster {cluster_name}",
        ambiguous,
    )
    panel = None
    if cluster is not None:
        panel = _choose(
            [p for p in observed.control_panels if p.name == panel_name and p.cluster_arn == cluster.arn],
            environment,
            f"ARC control panel {panel_name}",
            ambiguous,
        )
    controls: dict[str, ObservedRoutingControl] = {}
    rule = None
    if panel is not None:
        by_name = {
            rc.name: rc
            for rc in observed.routing_controls
            if rc.control_panel_arn == panel.arn and rc.status != GONE
        }
        controls = {region: by_name[name] for region, name in control_names.items() if name in by_name}
        rule = next(
            (
                r
                for r in observed.safety_rules
                if r.control_panel_arn == panel.arn
                and r.name == safety_rule_name(environment)
                and r.status != GONE
            ),
            None,
        )
    return ArcView(cluster, panel, controls, rule, tuple(ambiguous))


def arc_view(topology: Topology, observed: ObservedArc) -> ArcView:
    """The topology's ARC resources among those read: this environment's (by tag) first, else the
    only one of the name (whose ownership the changes then judge); never one PENDING_DELETION."""
    arc = topology.recovery.arc
    if arc is None:
        return ArcView(None, None, {}, None)
    return _view(
        topology.environment,
        arc.cluster_name,
        arc.control_panel_name,
        routing_control_names(topology),
        observed,
    )


# -- specs ------------------------------------------------------------------------------------------


class ArcClusterSpec(Spec):
    kind: Literal["arc-cluster"] = "arc-cluster"
    # `region` is the ARC configuration API's (us-west-2).
    name: str
    tags: dict[str, str]


class ControlPanelSpec(Spec):
    kind: Literal["arc-control-panel"] = "arc-control-panel"
    name: str
    cluster: str
    cluster_arn: str | None = None  # None: the cluster is created by the same apply
    tags: dict[str, str]


class RoutingControlSpec(Spec):
    kind: Literal["arc-routing-control"] = "arc-routing-control"
    name: str
    cell: str  # the AWS region it routes traffic to
    cluster: str
    cluster_arn: str | None = None
    control_panel: str
    control_panel_arn: str | None = None


class RoutingControlStatesSpec(Spec):
    """The routing controls the apply sets On (one UpdateRoutingControlStates call)."""

    ID_FIELD: ClassVar[str] = "control_panel"

    kind: Literal["arc-routing-control-states"] = "arc-routing-control-states"
    control_panel: str
    cluster: str
    cluster_arn: str | None = None
    routing_controls: dict[str, str | None]  # name -> ARN (None: created by the same apply)
    turn_on: tuple[str, ...] = ()  # names


class SafetyRuleSpec(Spec):
    kind: Literal["arc-safety-rule"] = "arc-safety-rule"
    name: str
    control_panel: str
    control_panel_arn: str | None = None
    asserted: dict[str, str | None]  # routing control name -> ARN (None: created by the same apply)
    threshold: int = SAFETY_RULE_THRESHOLD
    wait_period_ms: int = SAFETY_RULE_WAIT_PERIOD_MS
    tags: dict[str, str]


# -- desired ----------------------------------------------------------------------------------------


def desired(topology: Topology, observed: ObservedState, findings: Findings) -> list[Spec]:
    arc = topology.recovery.arc
    if arc is None:
        return []
    view = arc_view(topology, observed.arc)
    region = arc.control_plane_region
    tags = ownership_tags(topology.environment)
    cluster_arn = view.cluster.arn if view.cluster else None
    panel_arn = view.control_panel.arn if view.control_panel else None
    names = routing_control_names(topology)
    arns = {name: view.routing_control_arn(r) for r, name in names.items()}
    specs: list[Spec] = [
        ArcClusterSpec(region=region, name=arc.cluster_name, tags=tags),
        ControlPanelSpec(
            region=region,
            name=arc.control_panel_name,
            cluster=arc.cluster_name,
            cluster_arn=cluster_arn,
            tags=tags,
        ),
    ]
    specs += [
        RoutingControlSpec(
            region=region,
            name=name,
            cell=cell,
            cluster=arc.cluster_name,
            cluster_arn=cluster_arn,
            control_panel=arc.control_panel_name,
            control_panel_arn=panel_arn,
        )
        for cell, name in names.items()
    ]
    specs.append(_states(topology, arc, view, observed.arc, arns, findings))
    specs.append(
        SafetyRuleSpec(
            region=region,
            name=safety_rule_name(topology.environment),
            control_panel=arc.control_panel_name,
            control_panel_arn=panel_arn,
            asserted=arns,
            tags=tags,
        )
    )
    return specs


def _states(
    topology: Topology,
    arc: ArcConfig,
    view: ArcView,
    observed: ObservedArc,
    arns: dict[str, str | None],
    findings: Findings,
) -> RoutingControlStatesSpec:
    """Which routing controls to set On: the new ones, and every one when all are Off."""
    existing = {name: arn for name, arn in arns.items() if arn is not None}
    new = [name for name, arn in arns.items() if arn is None]
    states = {name: observed.states.get(arn) for name, arn in existing.items()}
    unread = sorted(name for name, state in states.items() if state is None)
    turn_on: list[str] = []
    if unread:
        why = "; ".join(observed.state_errors) or "the data plane does not list them yet"
        findings.errors.append(
            f"arc: cannot read the state of routing control(s) {', '.join(unread)} from any endpoint of "
            f"cluster {arc.cluster_name} ({why}): provision sets routing controls On only when it knows "
            "their states"
        )
    elif not any(state == "On" for state in states.values()):
        turn_on = sorted(arns)  # all Off (as ARC creates them), or all new
    else:
        turn_on = sorted(new)
        off = sorted(name for name, state in states.items() if state == "Off")
        if off:
            why = ""
            panel = view.control_panel
            if panel is not None and RECOVERY_TAG in panel.tags:
                why = f" (recovery {panel.tags[RECOVERY_TAG]})"
            on = sorted(name for name, state in states.items() if state == "On")
            findings.warnings.append(
                f"arc: routing control(s) {', '.join(off)} are Off while {', '.join(on)} are On{why}: a "
                "routing decision (a failover, or an operator's), left as it is until failback"
            )
    return RoutingControlStatesSpec(
        region=arc.control_plane_region,
        control_panel=arc.control_panel_name,
        cluster=arc.cluster_name,
        cluster_arn=view.cluster.arn if view.cluster else None,
        routing_controls=arns,
        turn_on=tuple(turn_on),
    )


# -- changes ----------------------------------------------------------------------------------------


def _tag_diffs(wanted: dict[str, str], current: dict[str, str]) -> list[FieldDiff]:
    """Only our keys count: tags an operator added are theirs (TagResource adds, never removes)."""
    have = {k: v for k in wanted if (v := current.get(k)) is not None}
    return [] if have == wanted else [FieldDiff(field="tags", old=have, new=dict(wanted))]


def _owned(
    desired: DesiredState,
    findings: Findings,
    *,
    tags: dict[str, str],
    adopted: bool,
    what: str,
    adopt_field: str,
) -> list[FieldDiff] | None:
    return claim(
        findings,
        environment=desired.environment,
        owner=tags.get(OWNER_TAG_KEY),
        adopted=adopted,
        what=what,
        marker=f"{OWNER_TAG_KEY} tag",
        adopt_field=adopt_field,
    )


def _cluster_change(
    desired: DesiredState, spec: ArcClusterSpec, view: ArcView, findings: Findings
) -> Change | None:
    cluster = view.cluster
    if cluster is None:
        findings.warnings.append(
            f"arc: creates ARC cluster {spec.name}: ARC bills each cluster by the hour; to share one this "
            "account already has, name it in recovery.arc.cluster_name and list it under adopt.arc_clusters"
        )
        return Change.of(spec, Action.CREATE, [FieldDiff(field="cluster", new=spec.name)])
    taking = _owned(
        desired,
        findings,
        tags=cluster.tags,
        adopted=spec.name in desired.adopt.arc_clusters,
        what=f"arc: ARC cluster {spec.name} ({cluster.arn})",
        adopt_field="arc_clusters",
    )
    if taking is None:
        return None
    diffs = [*_tag_diffs(spec.tags, cluster.tags), *taking]
    return Change.of(spec, Action.UPDATE if diffs else Action.NOOP, diffs, current_id=cluster.arn)


def _panel_change(
    desired: DesiredState, spec: ControlPanelSpec, view: ArcView, findings: Findings
) -> Change | None:
    panel = view.control_panel
    if panel is None:
        return Change.of(spec, Action.CREATE, [FieldDiff(field="control_panel", new=spec.name)])
    taking = _owned(
        desired,
        findings,
        tags=panel.tags,
        adopted=spec.name in desired.adopt.arc_control_panels,
        what=f"arc: ARC control panel {spec.name} ({panel.arn})",
        adopt_field="arc_control_panels",
    )
    if taking is None:
        return None
    diffs = [*_tag_diffs(spec.tags, panel.tags), *taking]
    return Change.of(spec, Action.UPDATE if diffs else Action.NOOP, diffs, current_id=panel.arn)


def _rule_change(spec: SafetyRuleSpec, view: ArcView) -> Change:
    wanted = {
        "asserted_controls": sorted(arn or pending_routing_control(n) for n, arn in spec.asserted.items()),
        "rule": f"ATLEAST {spec.threshold}",
        "inverted": False,
    }
    rule = view.safety_rule
    if rule is None:
        return Change.of(spec, *compare(None, {**wanted, "wait_period_ms": spec.wait_period_ms}))
    current = {
        "asserted_controls": sorted(rule.asserted_controls),
        "rule": f"{rule.rule_type} {rule.threshold}" if rule.kind == "ASSERTION" else rule.kind,
        "inverted": rule.inverted,
    }
    action, diffs = compare(current, wanted, immutable=wanted)  # only Name and WaitPeriodMs update in place
    if rule.wait_period_ms != spec.wait_period_ms:
        diffs.append(FieldDiff(field="wait_period_ms", old=rule.wait_period_ms, new=spec.wait_period_ms))
        action = Action.REPLACE if action is Action.REPLACE else Action.UPDATE
    tags = _tag_diffs(spec.tags, rule.tags)
    if tags and action is Action.NOOP:
        action = Action.UPDATE
    return Change.of(spec, action, [*diffs, *tags], current_id=rule.arn)


def changes(desired: DesiredState, observed: ObservedState, findings: Findings) -> list[Change]:
    clusters = desired.of(ArcClusterSpec)
    if not clusters:
        return []
    (panel_spec,) = desired.of(ControlPanelSpec)
    names = {spec.cell: spec.name for spec in desired.of(RoutingControlSpec)}
    view = _view(desired.environment, clusters[0].name, panel_spec.name, names, observed.arc)
    for what in view.ambiguous:
        findings.errors.append(
            f"arc: several {what} exist and none carries {OWNER_TAG_KEY}={desired.environment}: tag the "
            "one to use (TagResource) or choose another name in recovery.arc"
        )
    if view.ambiguous:
        return []
    out: list[Change] = []
    cluster = _cluster_change(desired, clusters[0], view, findings)
    if cluster is None:
        return []
    out.append(cluster)
    panel = _panel_change(desired, panel_spec, view, findings)
    if panel is None:
        return out
    out.append(panel)
    for spec in desired.of(RoutingControlSpec):
        rc = view.routing_controls.get(spec.cell)
        if rc is None:
            out.append(Change.of(spec, Action.CREATE, [FieldDiff(field="routing_control", new=spec.name)]))
        else:
            out.append(Change.of(spec, Action.NOOP, current_id=rc.arn))
    (states,) = desired.of(RoutingControlStatesSpec)
    turn_on = [
        FieldDiff(field=f"state {name}", old=_state(states, observed, name), new="On")
        for name in states.turn_on
    ]
    out.append(Change.of(states, Action.UPDATE if turn_on else Action.NOOP, turn_on))
    out += [_rule_change(spec, view) for spec in desired.of(SafetyRuleSpec)]
    if view.control_panel is not None:
        wanted = set(states.routing_controls)
        for rc in observed.arc.routing_controls:
            if rc.control_panel_arn == view.control_panel.arn and rc.name not in wanted and rc.status != GONE:
                findings.warnings.append(
                    f"arc: routing control {rc.name} in control panel {view.control_panel.name} is not in "
                    "the topology and is left alone"
                )
    return out


def _state(spec: RoutingControlStatesSpec, observed: ObservedState, name: str) -> str:
    arn = spec.routing_controls.get(name)
    return observed.arc.states.get(arn, "Off") if arn else "Off"


# Each create waits for DEPLOYED before the stage ends, so what depends on it finds it usable. The
# configuration API's resources are few; routing controls and nothing else are made side by side.
STAGES = (
    StageDef("arc-cluster", ResourceKind.ARC_CLUSTER, concurrent=False),
    StageDef(
        "arc-control-panel", ResourceKind.ARC_CONTROL_PANEL, concurrent=False, depends_on=("arc-cluster",)
    ),
    StageDef(
        "arc-routing-controls",
        ResourceKind.ARC_ROUTING_CONTROL,
        concurrent=True,
        depends_on=("arc-control-panel",),
    ),
    StageDef(
        "arc-routing-control-states",
        ResourceKind.ARC_ROUTING_CONTROL_STATES,
        concurrent=False,
        depends_on=("arc-routing-controls",),
    ),
    StageDef(
        "arc-safety-rule",
        ResourceKind.ARC_SAFETY_RULE,
        concurrent=False,
        depends_on=("arc-routing-controls", "arc-routing-control-states"),
    ),
)
