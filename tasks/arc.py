"""Tasks for Amazon Application Recovery Controller (ARC) routing controls: read, ensure, set states.

Two APIs. The routing-control configuration API (clusters, control panels, routing controls,
safety rules, tags) is served from us-west-2 only (`AwsClients.arc_config`). Routing-control
states are read and set on the cluster's own data-plane endpoints, five of them in different
regions (DescribeCluster `ClusterEndpoints`; `AwsClients.arc_cluster(endpoint, region)`), and
ARC's guidance is to try them in turn: "Your process for getting and changing routing control
states should try each endpoint in rotation, as needed, since cluster endpoints are cycled
through available and unavailable states for regular maintenance and updates" (ARC developer
guide, routing-control.update.api). `set_routing_controls` and `read_routing_controls` do that
for provision and for incident recovery: an endpoint that does not answer (a connection error,
throttling, a 5xx, EndpointTemporarilyUnavailableException) hands over to the next; an answer
that refuses the request (a safety rule, a permission, validation) is the cluster's consensus
and is raised at once.

Each ensure makes the one change its plan entry names, audits every mutating call, and waits
for the resource to be DEPLOYED before it returns, because what depends on it refuses a parent
that is still PENDING (a control panel needs a DEPLOYED cluster, a routing control a DEPLOYED
control panel: getting-started-cli-routing-config).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

from chalkdr.classify import aws_call
from chalkdr.clients import AwsClients
from chalkdr.errors import PermanentAwsError
from chalkdr.errors import TransientAwsError
from chalkdr.plan import Action
from chalkdr.plan import ArcClusterSpec
from chalkdr.plan import Change
from chalkdr.plan import ChangeResult
from chalkdr.plan import ClusterEndpoint
from chalkdr.plan import ControlPanelSpec
from chalkdr.plan import ObservedArc
from chalkdr.plan import ObservedArcCluster
from chalkdr.plan import ObservedControlPanel
from chalkdr.plan import ObservedRoutingControl
from chalkdr.plan import ObservedSafetyRule
from chalkdr.plan import RoutingControlSpec
from chalkdr.plan import RoutingControlStatesSpec
from chalkdr.plan import SafetyRuleSpec
from chalkdr.plan import WaitPolicy
from chalkdr.plan import arc_view
from chalkdr.plan import resource_ref
from chalkdr.plan import safety_rule_name
from chalkdr.topology import Topology
from tasks.audit import ApplyContext
from tasks.retry import retry_options

__all__ = [
    "RoutingControlStates",
    "State",
    "cluster_endpoints",
    "ensure_arc_cluster",
    "ensure_control_panel",
    "ensure_routing_control",
    "ensure_routing_control_states",
    "ensure_safety_rule",
    "read_arc",
    "read_routing_controls",
    "set_routing_controls",
]

CONFIG = "route53-recovery-control-config"
CLUSTER = "route53-recovery-cluster"
DEPLOYED = "DEPLOYED"
State = Literal["On", "Off"]
Endpoints = str | Sequence[ClusterEndpoint]  # a cluster ARN (DescribeCluster is asked), or its endpoints


def _pages(call: Callable[..., Any], key: str, **params: Any) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    while True:
        page = call(**params)
        out += page.get(key, [])
        token = page.get("NextToken")
        if not token:
            return out
        params["NextToken"] = token


def _tags(clients: AwsClients, arn: str) -> dict[str, str]:
    with aws_call(CONFIG, "ListTagsForResource", arn):
        return dict(clients.arc_config().list_tags_for_resource(ResourceArn=arn).get("Tags") or {})


def _endpoints(raw: Mapping[str, Any]) -> tuple[ClusterEndpoint, ...]:
    return tuple(
        ClusterEndpoint(endpoint=str(e["Endpoint"]), region=str(e["Region"]))
        for e in raw.get("ClusterEndpoints") or ()
    )


def _describe_cluster(clients: AwsClients, arn: str) -> Mapping[str, Any]:
    with aws_call(CONFIG, "DescribeCluster", arn):
        return clients.arc_config().describe_cluster(ClusterArn=arn)["Cluster"]


def _rule(raw: Mapping[str, Any], tags: dict[str, str]) -> ObservedSafetyRule:
    kind: Literal["ASSERTION", "GATING"] = "ASSERTION" if "ASSERTION" in raw else "GATING"
    rule = raw[kind]
    config = rule.get("RuleConfig") or {}
    return ObservedSafetyRule(
        arn=rule["SafetyRuleArn"],
        name=rule["Name"],
        control_panel_arn=rule["ControlPanelArn"],
        status=rule.get("Status", ""),
        kind=kind,
        asserted_controls=tuple(rule.get("AssertedControls") or ()),
        rule_type=str(config.get("Type", "")),
        threshold=int(config.get("Threshold", 0)),
        inverted=bool(config.get("Inverted", False)),
        wait_period_ms=int(rule.get("WaitPeriodMs", 0)),
        tags=tags,
    )


# -- reads ------------------------------------------------------------------------------------------


@task(task_run_name="read-arc", cache_policy=NO_CACHE, **retry_options())
def read_arc(clients: AwsClients, topology: Topology) -> ObservedArc:
    """The clusters named like the topology's (with endpoints and tags), the control panels of its
    name in them, their routing controls and safety rules, and, from the cluster's data plane, the
    routing controls' states. Without `recovery.arc`, nothing is read."""
    arc = topology.recovery.arc
    if arc is None:
        return ObservedArc()
    config = clients.arc_config()
    with aws_call(CONFIG, "ListClusters", "*"):
        listed = [c for c in _pages(config.list_clusters, "Clusters") if c.get("Name") == arc.cluster_name]
    clusters: list[ObservedArcCluster] = []
    panels: list[ObservedControlPanel] = []
    controls: list[ObservedRoutingControl] = []
    rules: list[ObservedSafetyRule] = []
    for summary in listed:
        raw = _describe_cluster(clients, summary["ClusterArn"])  # ClusterEndpoints once DEPLOYED
        clusters.append(
            ObservedArcCluster(
                arn=raw["ClusterArn"],
                name=raw["Name"],
                status=raw.get("Status", ""),
                endpoints=_endpoints(raw),
                tags=_tags(clients, raw["ClusterArn"]),
            )
        )
        with aws_call(CONFIG, "ListControlPanels", raw["ClusterArn"]):
            found = _pages(config.list_control_panels, "ControlPanels", ClusterArn=raw["ClusterArn"])
        for p in found:
            if p.get("Name") != arc.control_panel_name:
                continue
            panel_arn = p["ControlPanelArn"]
            panels.append(
                ObservedControlPanel(
                    arn=panel_arn,
                    name=p["Name"],
                    cluster_arn=p["ClusterArn"],
                    status=p.get("Status", ""),
                    default=bool(p.get("DefaultControlPanel", False)),
                    tags=_tags(clients, panel_arn),
                )
            )
            with aws_call(CONFIG, "ListRoutingControls", panel_arn):
                listed_controls = _pages(
                    config.list_routing_controls, "RoutingControls", ControlPanelArn=panel_arn
                )
            controls += [
                ObservedRoutingControl(
                    arn=rc["RoutingControlArn"],
                    name=rc["Name"],
                    control_panel_arn=rc["ControlPanelArn"],
                    status=rc.get("Status", ""),
                )
                for rc in listed_controls
            ]
            with aws_call(CONFIG, "ListSafetyRules", panel_arn):
                listed_rules = _pages(config.list_safety_rules, "SafetyRules", ControlPanelArn=panel_arn)
            for r in listed_rules:
                body = r.get("ASSERTION") or r.get("GATING") or {}
                if body.get("Name") == safety_rule_name(topology.environment):
                    rules.append(_rule(r, _tags(clients, body["SafetyRuleArn"])))
    observed = ObservedArc(
        read=True,
        clusters=tuple(clusters),
        control_panels=tuple(panels),
        routing_controls=tuple(controls),
        safety_rules=tuple(rules),
    )
    view = arc_view(topology, observed)
    if view.cluster is None or view.control_panel is None or not view.routing_controls:
        return observed
    if not view.cluster.endpoints:
        return observed.model_copy(
            update={
                "state_errors": (f"cluster {view.cluster.name} is {view.cluster.status}: no endpoints yet",)
            }
        )
    read = read_routing_controls(clients, view.cluster.endpoints, control_panel_arn=view.control_panel.arn)
    return observed.model_copy(
        update={
            "states": read.states,
            "states_endpoint": read.endpoint.region if read.endpoint else None,
            "state_errors": tuple(read.errors),
        }
    )


class RoutingControlStates(BaseModel):
    """What the cluster's data plane said: each routing control's state, and which endpoints answered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    states: dict[str, str] = Field(default_factory=dict)  # routing control ARN -> On | Off
    names: dict[str, str] = Field(default_factory=dict)  # routing control ARN -> its name
    endpoint: ClusterEndpoint | None = None  # the (first) endpoint that answered; None: none did
    answered: dict[str, bool] = Field(default_factory=dict)  # endpoint region -> it answered
    errors: tuple[str, ...] = ()  # why the others did not


def cluster_endpoints(clients: AwsClients, endpoints: Endpoints) -> list[ClusterEndpoint]:
    """The endpoints as given, or a cluster ARN's (DescribeCluster; a configuration-API call, so an
    incident path that cannot reach us-west-2 should pass endpoints it kept)."""
    if not isinstance(endpoints, str):
        return list(endpoints)
    return list(_endpoints(_describe_cluster(clients, endpoints)))


def _in_turn(
    endpoints: Sequence[ClusterEndpoint], avoid: Collection[str], rng: random.Random | None
) -> list[ClusterEndpoint]:
    """A rotation starting at a random endpoint (AWS's examples pick one at random, spreading
    load and maintenance windows), with the regions in `avoid` (a failed region) last."""
    ordered = list(endpoints)
    if ordered and rng is not None:
        start = rng.randrange(len(ordered))
        ordered = ordered[start:] + ordered[:start]
    return sorted(ordered, key=lambda e: e.region in avoid)


def _next_endpoint(exc: Exception) -> bool:
    """Whether another endpoint may answer where this one failed: it did not answer (connection,
    throttling, 5xx, EndpointTemporarilyUnavailable), or does not know the control yet."""
    if isinstance(exc, TransientAwsError):
        return True
    return isinstance(exc, PermanentAwsError) and exc.code in (
        "EndpointTemporarilyUnavailableException",
        "ResourceNotFoundException",
    )


def read_routing_controls(
    clients: AwsClients,
    endpoints: Endpoints,
    *,
    control_panel_arn: str | None = None,
    every_endpoint: bool = False,
    avoid: Collection[str] = (),
    rng: random.Random | None = None,
) -> RoutingControlStates:
    """The routing controls' states (one control panel's, or the cluster's) from the data plane's
    ListRoutingControls, asking each endpoint in turn until one answers, or with `every_endpoint`
    all of them (readiness: how many answer). Never raises for an endpoint that does not answer:
    `endpoint` is None when none did, and `errors` says why."""
    states: dict[str, str] = {}
    names: dict[str, str] = {}
    first: ClusterEndpoint | None = None
    answered: dict[str, bool] = {}
    errors: list[str] = []
    params: dict[str, Any] = {"ControlPanelArn": control_panel_arn} if control_panel_arn else {}
    for ep in _in_turn(cluster_endpoints(clients, endpoints), avoid, rng):
        data = clients.arc_cluster(ep.endpoint, ep.region)
        try:
            with aws_call(CLUSTER, "ListRoutingControls", f"{ep.endpoint} ({ep.region})"):
                listed = _pages(data.list_routing_controls, "RoutingControls", **params)
        except (TransientAwsError, PermanentAwsError) as exc:
            answered[ep.region] = False
            errors.append(f"{ep.region}: {exc}")
            if _next_endpoint(exc):
                continue
            raise
        answered[ep.region] = True
        if first is None:
            first = ep
            states = {rc["RoutingControlArn"]: rc["RoutingControlState"] for rc in listed}
            names = {rc["RoutingControlArn"]: rc.get("RoutingControlName", "") for rc in listed}
        if not every_endpoint:
            break
    return RoutingControlStates(
        states=states, names=names, endpoint=first, answered=answered, errors=tuple(errors)
    )


def set_routing_controls(
    clients: AwsClients,
    endpoints: Endpoints,
    states: Mapping[str, State],
    *,
    avoid: Collection[str] = (),
    safety_rules_to_override: Sequence[str] = (),
    rng: random.Random | None = None,
) -> ClusterEndpoint:
    """Set every routing control in `states` (ARN -> On/Off) in one UpdateRoutingControlStates call
    (the entries apply together or not at all, and a safety rule judges their joint result), on
    each cluster endpoint in turn, the regions in `avoid` last: the endpoint that took it.

    Raises TransientAwsError when no endpoint answered (naming each one's failure), and at once
    what an endpoint refused (ConflictException from a safety rule, AccessDenied, validation:
    the cluster's consensus, the same from every endpoint)."""
    entries: list[Any] = [{"RoutingControlArn": arn, "RoutingControlState": s} for arn, s in states.items()]
    extra: dict[str, Any] = (
        {"SafetyRulesToOverride": list(safety_rules_to_override)} if safety_rules_to_override else {}
    )
    failures: list[str] = []
    not_found: PermanentAwsError | None = None
    for ep in _in_turn(cluster_endpoints(clients, endpoints), avoid, rng):
        try:
            with aws_call(CLUSTER, "UpdateRoutingControlStates", f"{ep.endpoint} ({ep.region})"):
                clients.arc_cluster(ep.endpoint, ep.region).update_routing_control_states(
                    UpdateRoutingControlStateEntries=entries, **extra
                )
        except (TransientAwsError, PermanentAwsError) as exc:
            if not _next_endpoint(exc):
                raise
            if isinstance(exc, PermanentAwsError):
                not_found = exc
            failures.append(f"{ep.region}: {exc}")
            continue
        return ep
    if not_found is not None:
        raise not_found  # every endpoint that answered said so
    raise TransientAwsError(
        service=CLUSTER,
        operation="UpdateRoutingControlStates",
        resource=", ".join(states),
        code="NoEndpointAnswered",
        message="; ".join(failures) or "the cluster lists no endpoints",
    )


# -- waits ------------------------------------------------------------------------------------------


def _wait_deployed(
    describe: Callable[[], Mapping[str, Any]], what: str, waits: WaitPolicy
) -> Mapping[str, Any]:
    def done(seen: Mapping[str, Any]) -> bool:
        if seen.get("Status") == "PENDING_DELETION":
            raise RuntimeError(f"{what} is being deleted")
        return bool(seen.get("Status") == DEPLOYED)

    return waits.poll(describe, done, lambda seen: f"{what} still {seen.get('Status')}")


def _cluster_deployed(clients: AwsClients, arn: str, waits: WaitPolicy) -> Mapping[str, Any]:
    return _wait_deployed(lambda: _describe_cluster(clients, arn), f"ARC cluster {arn}", waits)


def _panel_deployed(clients: AwsClients, arn: str, waits: WaitPolicy) -> Mapping[str, Any]:
    def describe() -> Mapping[str, Any]:
        with aws_call(CONFIG, "DescribeControlPanel", arn):
            return clients.arc_config().describe_control_panel(ControlPanelArn=arn)["ControlPanel"]

    return _wait_deployed(describe, f"ARC control panel {arn}", waits)


def _control_deployed(clients: AwsClients, arn: str, waits: WaitPolicy) -> Mapping[str, Any]:
    def describe() -> Mapping[str, Any]:
        with aws_call(CONFIG, "DescribeRoutingControl", arn):
            return clients.arc_config().describe_routing_control(RoutingControlArn=arn)["RoutingControl"]

    return _wait_deployed(describe, f"ARC routing control {arn}", waits)


def _resolved(value: str | None, refs: Mapping[str, str], kind: str, key: str) -> str:
    """An ARN the plan knew, or the one an earlier stage of this apply made."""
    found = value or refs.get(resource_ref(kind, key))
    if not found or found.startswith("("):
        raise ValueError(f"no ARN for {kind} {key}: the stage that makes it has not run")
    return found


# -- changes ----------------------------------------------------------------------------------------


def _tag(
    apply: ApplyContext, arn: str, tags: Mapping[str, str], change: Change, trail: Any, what: str
) -> None:
    with aws_call(CONFIG, "TagResource", arn):
        apply.clients.arc_config().tag_resource(ResourceArn=arn, Tags=dict(tags))
    trail.record(
        f"adopt-{what}" if change.adoption else f"tag-{what}",
        arn,
        change.region,
        f"{CONFIG}:TagResource",
        **change.adoption,
    )


@task(task_run_name="ensure-arc-cluster-{change.id}", cache_policy=NO_CACHE)
def ensure_arc_cluster(apply: ApplyContext, change: Change, refs: Mapping[str, str]) -> ChangeResult:
    """Create the cluster (tagged) and wait until DEPLOYED, or tag an existing one (adoption)."""
    spec = change.typed_spec(ArcClusterSpec)
    trail = apply.trail("arc")
    arn = change.current_id
    if arn is None:
        with aws_call(CONFIG, "CreateCluster", spec.name):
            arn = str(
                apply.clients.arc_config().create_cluster(ClusterName=spec.name, Tags=dict(spec.tags))[
                    "Cluster"
                ]["ClusterArn"]
            )
        trail.record("create-arc-cluster", arn, spec.region, f"{CONFIG}:CreateCluster", name=spec.name)
    else:
        _tag(apply, arn, spec.tags, change, trail, "arc-cluster")
    _cluster_deployed(apply.clients, arn, apply.waits)
    return change.result(trail.records, resource_id=arn)


@task(task_run_name="ensure-arc-control-panel-{change.id}", cache_policy=NO_CACHE)
def ensure_control_panel(apply: ApplyContext, change: Change, refs: Mapping[str, str]) -> ChangeResult:
    """Create the control panel in its DEPLOYED cluster and wait until DEPLOYED, or tag it."""
    spec = change.typed_spec(ControlPanelSpec)
    trail = apply.trail("arc")
    arn = change.current_id
    if arn is None:
        cluster = _resolved(spec.cluster_arn, refs, "arc-cluster", spec.cluster)
        _cluster_deployed(apply.clients, cluster, apply.waits)
        with aws_call(CONFIG, "CreateControlPanel", spec.name):
            arn = str(
                apply.clients.arc_config().create_control_panel(
                    ClusterArn=cluster, ControlPanelName=spec.name, Tags=dict(spec.tags)
                )["ControlPanel"]["ControlPanelArn"]
            )
        trail.record(
            "create-arc-control-panel", arn, spec.region, f"{CONFIG}:CreateControlPanel", cluster=cluster
        )
    else:
        _tag(apply, arn, spec.tags, change, trail, "arc-control-panel")
    _panel_deployed(apply.clients, arn, apply.waits)
    return change.result(trail.records, resource_id=arn)


@task(task_run_name="ensure-arc-routing-control-{change.id}", cache_policy=NO_CACHE)
def ensure_routing_control(apply: ApplyContext, change: Change, refs: Mapping[str, str]) -> ChangeResult:
    """Create the routing control in its DEPLOYED control panel and wait until DEPLOYED (it is Off)."""
    spec = change.typed_spec(RoutingControlSpec)
    trail = apply.trail("arc")
    cluster = _resolved(spec.cluster_arn, refs, "arc-cluster", spec.cluster)
    panel = _resolved(spec.control_panel_arn, refs, "arc-control-panel", spec.control_panel)
    _panel_deployed(apply.clients, panel, apply.waits)
    with aws_call(CONFIG, "CreateRoutingControl", spec.name):
        arn = str(
            apply.clients.arc_config().create_routing_control(
                ClusterArn=cluster, ControlPanelArn=panel, RoutingControlName=spec.name
            )["RoutingControl"]["RoutingControlArn"]
        )
    trail.record(
        "create-arc-routing-control",
        arn,
        spec.region,
        f"{CONFIG}:CreateRoutingControl",
        name=spec.name,
        cell=spec.cell,
    )
    _control_deployed(apply.clients, arn, apply.waits)
    return change.result(trail.records, resource_id=arn)


@task(task_run_name="ensure-arc-routing-control-states-{change.id}", cache_policy=NO_CACHE)
def ensure_routing_control_states(
    apply: ApplyContext, change: Change, refs: Mapping[str, str]
) -> ChangeResult:
    """Set the plan's routing controls On in one UpdateRoutingControlStates, trying each endpoint."""
    spec = change.typed_spec(RoutingControlStatesSpec)
    trail = apply.trail("arc")
    cluster = _resolved(spec.cluster_arn, refs, "arc-cluster", spec.cluster)
    endpoints = _endpoints(_cluster_deployed(apply.clients, cluster, apply.waits))
    arns = {
        name: _resolved(spec.routing_controls.get(name), refs, "arc-routing-control", name)
        for name in spec.turn_on
    }
    answered = set_routing_controls(apply.clients, endpoints, dict.fromkeys(arns.values(), "On"))
    for name, arn in arns.items():
        trail.record(
            "set-routing-control-state",
            arn,
            answered.region,
            f"{CLUSTER}:UpdateRoutingControlStates",
            name=name,
            state="On",
            endpoint=answered.endpoint,
        )
    return change.result(trail.records, resource_id=answered.region)


def _assertion(spec: SafetyRuleSpec, panel: str, refs: Mapping[str, str]) -> dict[str, Any]:
    return {
        "ControlPanelArn": panel,
        "Name": spec.name,
        "AssertedControls": [
            _resolved(arn, refs, "arc-routing-control", name) for name, arn in sorted(spec.asserted.items())
        ],
        "RuleConfig": {"Type": "ATLEAST", "Threshold": spec.threshold, "Inverted": False},
        "WaitPeriodMs": spec.wait_period_ms,
    }


@task(task_run_name="ensure-arc-safety-rule-{change.id}", cache_policy=NO_CACHE)
def ensure_safety_rule(apply: ApplyContext, change: Change, refs: Mapping[str, str]) -> ChangeResult:
    """Create the assertion rule, replace it (its asserted controls cannot change in place), or
    update its wait period and tags."""
    spec = change.typed_spec(SafetyRuleSpec)
    trail = apply.trail("arc")
    config = apply.clients.arc_config()
    changed = {d.field for d in change.diffs}
    arn = change.current_id
    if change.action is Action.UPDATE and arn is not None:
        if "wait_period_ms" in changed:
            with aws_call(CONFIG, "UpdateSafetyRule", arn):
                config.update_safety_rule(
                    AssertionRuleUpdate={
                        "Name": spec.name,
                        "SafetyRuleArn": arn,
                        "WaitPeriodMs": spec.wait_period_ms,
                    }
                )
            trail.record("update-arc-safety-rule", arn, spec.region, f"{CONFIG}:UpdateSafetyRule")
        if "tags" in changed:
            _tag(apply, arn, spec.tags, change, trail, "arc-safety-rule")
        return change.result(trail.records, resource_id=arn)
    panel = _resolved(spec.control_panel_arn, refs, "arc-control-panel", spec.control_panel)
    if arn is not None:  # replace: the old rule goes first (it names the controls the new one asserts)
        with aws_call(CONFIG, "DeleteSafetyRule", arn):
            config.delete_safety_rule(SafetyRuleArn=arn)
        trail.record("delete-arc-safety-rule", arn, spec.region, f"{CONFIG}:DeleteSafetyRule", replaced=True)
    with aws_call(CONFIG, "CreateSafetyRule", spec.name):
        created = config.create_safety_rule(
            AssertionRule=_assertion(spec, panel, refs),  # type: ignore[arg-type]
            Tags=dict(spec.tags),
        )
    new = str(created["AssertionRule"]["SafetyRuleArn"])
    trail.record(
        "create-arc-safety-rule",
        new,
        spec.region,
        f"{CONFIG}:CreateSafetyRule",
        rule=f"ATLEAST {spec.threshold}",
        asserted=sorted(spec.asserted),
    )

    def describe() -> Mapping[str, Any]:
        with aws_call(CONFIG, "DescribeSafetyRule", new):
            return dict(config.describe_safety_rule(SafetyRuleArn=new).get("AssertionRule") or {})

    _wait_deployed(describe, f"ARC safety rule {new}", apply.waits)
    return change.result(trail.records, resource_id=new)
