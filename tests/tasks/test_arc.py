"""ARC tasks against the sandbox's ARC (sandbox/arc.py): reading what exists, ensuring the plan's
resources in dependency order, and routing-control states set and read through each endpoint in
turn, one of them unreachable."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chalkdr.audit import AuditRecord
from chalkdr.clients import AwsClients
from chalkdr.errors import PermanentAwsError
from chalkdr.errors import TransientAwsError
from chalkdr.plan import Action
from chalkdr.plan import ClusterEndpoint
from chalkdr.plan import ObservedRoute53
from chalkdr.plan import ObservedState
from chalkdr.plan import ResourceKind
from chalkdr.plan import WaitPolicy
from chalkdr.plan import plan_for
from chalkdr.settings import ClientSettings
from chalkdr.topology import Topology
from chalkdr.topology import parse_topology
from sandbox.arc import ArcSim
from sandbox.aws import SandboxAwsApp
from sandbox.clock import SandboxClock
from sandbox.harness import AwsSandbox
from sandbox.route53 import Route53Sim
from sandbox.truth import GroundTruth
from tasks.arc import ensure_arc_cluster
from tasks.arc import ensure_control_panel
from tasks.arc import ensure_routing_control
from tasks.arc import ensure_routing_control_states
from tasks.arc import ensure_safety_rule
from tasks.arc import read_arc
from tasks.arc import read_routing_controls
from tasks.arc import set_routing_controls
from tasks.audit import ApplyContext

EXAMPLE = Path(__file__).resolve().parents[2] / "deployments" / "topology.example.yaml"
TIME_SCALE = 100.0  # a cluster deploys in 0.2 s, the rest in 0.05 s
FAST = WaitPolicy(time_scale=TIME_SCALE, timeout_s=1000)
EAST, WEST = "us-east-1", "us-west-2"
ENSURE = {
    ResourceKind.ARC_CLUSTER: ensure_arc_cluster,
    ResourceKind.ARC_CONTROL_PANEL: ensure_control_panel,
    ResourceKind.ARC_ROUTING_CONTROL: ensure_routing_control,
    ResourceKind.ARC_ROUTING_CONTROL_STATES: ensure_routing_control_states,
    ResourceKind.ARC_SAFETY_RULE: ensure_safety_rule,
}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsSandbox]:
    def simulators(app: SandboxAwsApp, truth: GroundTruth) -> list[Any]:
        clock = SandboxClock(TIME_SCALE)
        route53 = Route53Sim(app, clock=clock, truth=truth, resolve=lambda *_: None, throttle=False)
        return [route53, ArcSim(app, clock=clock, truth=truth, route53=route53)]

    with AwsSandbox(simulators) as sandbox:
        monkeypatch.setenv("AWS_ENDPOINT_URL", sandbox.endpoint)
        yield sandbox


class Calls:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[str] = []

    def __call__(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls.append(f"{model.service_model.service_name}:{model.name}")


def clients(calls: Calls | None = None) -> AwsClients:
    """One attempt per call: an unreachable endpoint fails at once, and the next one is tried."""
    return AwsClients(
        settings=ClientSettings(max_attempts=1, unreachable_cooldown_s=0),
        event_hooks=[("before-call", calls)] if calls else (),
    )


def topology() -> Topology:
    d = yaml.safe_load(EXAMPLE.read_text())
    d["recovery"] = {"arc": {"cluster_name": "prod-arc", "control_panel_name": "prod-panel"}}
    for r in d["regions"]:
        r.pop("role_arn", None)
    return parse_topology(d)


def arc_plan(aws_clients: AwsClients, t: Topology) -> list[Any]:
    """The plan's ARC changes for what is there now (Route 53 is not this test's concern)."""
    observed = ObservedState(
        route53=ObservedRoute53(zone_id=t.route53.zone_id, zone_name=None), arc=read_arc.fn(aws_clients, t)
    )
    return [c for c in plan_for(t, observed).changes if c.kind.value.startswith("arc-")]


def apply_arc(aws_clients: AwsClients, changes: list[Any], audit: list[AuditRecord]) -> dict[str, str]:
    """The ARC changes in stage order, each stage given what the earlier ones made (as provision does)."""
    apply = ApplyContext(aws_clients, waits=FAST, emit=audit.append)
    refs = {c.spec.ref: c.current_id for c in changes if c.current_id}
    for kind in ENSURE:  # the stages' order
        for change in [c for c in changes if c.kind is kind and c.action is not Action.NOOP]:
            result = ENSURE[kind].fn(apply, change, dict(refs))
            if result.resource_id:
                refs[result.ref or ""] = result.resource_id
    return refs


def built(aws: AwsSandbox) -> tuple[AwsClients, Topology, dict[str, str]]:
    t = topology()
    c = clients()
    refs = apply_arc(c, arc_plan(c, t), [])
    return c, t, refs


def endpoints_of(aws_clients: AwsClients, refs: dict[str, str]) -> list[ClusterEndpoint]:
    raw = aws_clients.arc_config().describe_cluster(ClusterArn=refs["arc-cluster:prod-arc"])["Cluster"]
    return [ClusterEndpoint(endpoint=e["Endpoint"], region=e["Region"]) for e in raw["ClusterEndpoints"]]


class TestEnsure:
    def test_a_fresh_account_gets_everything_tagged_and_on_and_a_second_plan_is_empty(
        self, aws: AwsSandbox
    ) -> None:
        t, c, audit = topology(), clients(), []
        changes = arc_plan(c, t)
        assert [x.kind for x in changes if x.action is Action.CREATE] == [
            ResourceKind.ARC_CLUSTER,
            ResourceKind.ARC_CONTROL_PANEL,
            ResourceKind.ARC_ROUTING_CONTROL,
            ResourceKind.ARC_ROUTING_CONTROL,
            ResourceKind.ARC_SAFETY_RULE,
        ]
        refs = apply_arc(c, changes, audit)
        assert [a.api_call.split(":")[1] for a in audit] == [
            "CreateCluster",
            "CreateControlPanel",
            "CreateRoutingControl",
            "CreateRoutingControl",
            "UpdateRoutingControlStates",
            "UpdateRoutingControlStates",  # one call, one audit row per routing control
            "CreateSafetyRule",
        ]
        config = c.arc_config()
        assert config.list_tags_for_resource(ResourceArn=refs["arc-cluster:prod-arc"])["Tags"] == {
            "chalk-dr:managed": "true",
            "chalk-dr:environment": "prod",
        }
        observed = read_arc.fn(c, t)
        assert observed.states == {
            refs["arc-routing-control:prod-us-east-1"]: "On",
            refs["arc-routing-control:prod-us-west-2"]: "On",
        }
        assert {x.action for x in arc_plan(c, t)} == {Action.NOOP}

    def test_read_arc_reads_nothing_without_recovery_arc(self, aws: AwsSandbox) -> None:
        calls = Calls()
        t = topology().model_copy(update={"recovery": topology().recovery.model_copy(update={"arc": None})})
        assert read_arc.fn(clients(calls), t).read is False
        assert calls.calls == []


class TestStates:
    def test_each_endpoint_in_turn_until_one_answers(self, aws: AwsSandbox) -> None:
        c, _t, refs = built(aws)
        endpoints = endpoints_of(c, refs)
        east = refs["arc-routing-control:prod-us-east-1"]
        aws.set_unreachable(EAST)  # the first endpoint listed
        try:
            answered = set_routing_controls(c, endpoints, {east: "Off"})
            assert answered.region == endpoints[1].region != EAST
            read = read_routing_controls(c, endpoints, every_endpoint=True)
        finally:
            aws.set_unreachable(EAST, False)
        assert read.states[east] == "Off" and read.endpoint is not None and read.endpoint.region != EAST
        assert read.answered == {e.region: e.region != EAST for e in endpoints}
        assert len(read.errors) == 1 and read.errors[0].startswith(f"{EAST}: ")

    def test_avoid_puts_a_region_last_and_a_random_rotation_still_tries_them_all(
        self, aws: AwsSandbox
    ) -> None:
        c, _t, refs = built(aws)
        endpoints = endpoints_of(c, refs)
        west = refs["arc-routing-control:prod-us-west-2"]
        first = set_routing_controls(c, endpoints, {west: "On"}, avoid=[endpoints[0].region])
        assert first.region == endpoints[1].region
        others = [e.region for e in endpoints[1:]]
        for region in others:
            aws.set_unreachable(region)
        try:  # only the avoided one answers: it is tried last, but tried
            assert (
                set_routing_controls(c, endpoints, {west: "On"}, rng=random.Random(7)).region
                == endpoints[0].region
            )
        finally:
            for region in others:
                aws.set_unreachable(region, False)

    def test_a_safety_rule_refusal_is_raised_at_once_and_no_other_endpoint_is_asked(
        self, aws: AwsSandbox
    ) -> None:
        calls = Calls()
        c, _t, refs = built(aws)
        counted = clients(calls)
        both = {
            refs["arc-routing-control:prod-us-east-1"]: "Off",
            refs["arc-routing-control:prod-us-west-2"]: "Off",
        }
        with pytest.raises(PermanentAwsError) as refused:
            set_routing_controls(counted, endpoints_of(c, refs), both)
        assert refused.value.code == "ConflictException"
        assert calls.calls.count("route53-recovery-cluster:UpdateRoutingControlStates") == 1

    def test_no_endpoint_answering_is_a_transient_error_naming_each(self, aws: AwsSandbox) -> None:
        c, _t, refs = built(aws)
        endpoints = endpoints_of(c, refs)
        for e in endpoints:
            aws.set_unreachable(e.region)
        try:
            with pytest.raises(TransientAwsError) as none:
                set_routing_controls(c, endpoints, {refs["arc-routing-control:prod-us-east-1"]: "On"})
            read = read_routing_controls(c, endpoints)
        finally:
            for e in endpoints:
                aws.set_unreachable(e.region, False)
        assert none.value.code == "NoEndpointAnswered"
        assert all(f"{e.region}: " in str(none.value) for e in endpoints)
        assert read.endpoint is None and read.states == {} and len(read.errors) == len(endpoints)
