"""ARC and failback readiness in the plan: routing controls, their checks, the records' calculated
checks, and reverse MSK replicators; worlds written the way AWS reports them."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from chalkdr.plan import Action
from chalkdr.plan import ClusterEndpoint
from chalkdr.plan import ObservedArc
from chalkdr.plan import ObservedArcCluster
from chalkdr.plan import ObservedControlPanel
from chalkdr.plan import ObservedHealthCheck
from chalkdr.plan import ObservedReplicator
from chalkdr.plan import ObservedRoutingControl
from chalkdr.plan import ObservedSafetyRule
from chalkdr.plan import ObservedState
from chalkdr.plan import Plan
from chalkdr.plan import RecordSpec
from chalkdr.plan import ReplicatorSpec
from chalkdr.plan import ResourceKind
from chalkdr.plan import apply_stages
from chalkdr.plan import desired_state
from chalkdr.plan import plan_for
from chalkdr.plan import reverse_replicator_name
from chalkdr.topology import Topology

EAST, WEST, EU = "us-east-1", "us-west-2", "eu-west-1"
ACCOUNT = "123456789012"
CLUSTER_ARN = f"arn:aws:route53-recovery-control::{ACCOUNT}:cluster/0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"
PANEL_ARN = f"arn:aws:route53-recovery-control::{ACCOUNT}:controlpanel/abcdef0123456789abcdef0123456789"
RULE_ARN = f"{PANEL_ARN}/safetyrule/0123456789abcdef"
ENDPOINTS = tuple(
    ClusterEndpoint(endpoint=f"https://0f1e2d3c.route53-recovery-cluster.{r}.amazonaws.com/v1", region=r)
    for r in ("us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1", "ap-southeast-2")
)
OURS = {"chalk-dr:managed": "true", "chalk-dr:environment": "prod"}


def control_arn(region: str) -> str:
    return f"{PANEL_ARN}/routingcontrol/{hashlib.sha256(region.encode()).hexdigest()[:16]}"


def with_arc(d: dict[str, Any]) -> None:
    d["recovery"] = {"arc": {"cluster_name": "prod-arc", "control_panel_name": "prod-panel"}}


def with_failback(d: dict[str, Any]) -> None:
    d.setdefault("recovery", {})["failback_readiness"] = True


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def arc_world(t: Topology, obs: ObservedState, *, states: dict[str, str] | None = None) -> ObservedState:
    """`obs` (a converged world without ARC) after a converged ARC apply: cluster, panel, a routing
    control per region (On unless `states` says otherwise), the safety rule, per region a
    RECOVERY_CONTROL and a CALCULATED check, and the failover records carrying the calculated ones."""
    regions = [r.aws_region for r in t.regions]
    states = {r: (states or {}).get(r, "On") for r in regions}
    arc = ObservedArc(
        read=True,
        clusters=(
            ObservedArcCluster(
                arn=CLUSTER_ARN, name="prod-arc", status="DEPLOYED", endpoints=ENDPOINTS, tags=OURS
            ),
        ),
        control_panels=(
            ObservedControlPanel(
                arn=PANEL_ARN, name="prod-panel", cluster_arn=CLUSTER_ARN, status="DEPLOYED", tags=OURS
            ),
        ),
        routing_controls=tuple(
            ObservedRoutingControl(
                arn=control_arn(r), name=f"prod-{r}", control_panel_arn=PANEL_ARN, status="DEPLOYED"
            )
            for r in regions
        ),
        safety_rules=(
            ObservedSafetyRule(
                arn=RULE_ARN,
                name="chalkdr-prod-at-least-one-on",
                control_panel_arn=PANEL_ARN,
                status="DEPLOYED",
                asserted_controls=tuple(control_arn(r) for r in reversed(regions)),  # AWS's order
                rule_type="ATLEAST",
                threshold=1,
                wait_period_ms=5000,
                tags=OURS,
            ),
        ),
        states={control_arn(r): states[r] for r in regions},
        states_endpoint="us-east-1",
    )
    checks = list(obs.route53.health_checks)
    for r in regions:
        checks.append(
            ObservedHealthCheck(
                id=f"rc-{r}",
                caller_reference=f"chalkdr-prod-{r}-rc-"
                + _hash(f"RECOVERY_CONTROL|prod-arc|prod-panel|prod-{r}"),
                version=1,
                type="RECOVERY_CONTROL",
                routing_control_arn=control_arn(r),
                tags={**OURS, "Name": f"chalkdr-prod-{r}-routing-control"},
            )
        )
        checks.append(
            ObservedHealthCheck(
                id=f"calc-{r}",
                caller_reference=f"chalkdr-prod-{r}-calc-" + _hash("CALCULATED"),
                version=1,
                type="CALCULATED",
                children=(f"rc-{r}", f"hc-{r}"),  # Route 53 keeps its own order
                health_threshold=2,
                tags={**OURS, "Name": f"chalkdr-prod-{r}-calculated"},
            )
        )
    records = [
        r.model_copy(update={"health_check_id": f"calc-{r.health_check_id.removeprefix('hc-')}"})
        if r.health_check_id
        else r
        for r in obs.route53.records
    ]
    return obs.model_copy(
        update={
            "arc": arc,
            "route53": obs.route53.model_copy(
                update={"health_checks": tuple(checks), "records": tuple(records)}
            ),
        }
    )


def arc_of(obs: ObservedState, **fields: Any) -> ObservedState:
    return obs.model_copy(update={"arc": obs.arc.model_copy(update=fields)})


def kinds(plan: Plan) -> dict[ResourceKind, list[Any]]:
    out: dict[ResourceKind, list[Any]] = {}
    for c in plan.changes:
        out.setdefault(c.kind, []).append(c)
    return out


def one(plan: Plan, kind: ResourceKind, **where: Any) -> Any:
    (found,) = [
        c for c in plan.changes if c.kind is kind and all(getattr(c, k) == v for k, v in where.items())
    ]
    return found


class TestFreshWorld:
    def test_creates_the_arc_structure_checks_and_sets_every_control_on(self, w: Any) -> None:
        t = w.topology(with_arc)
        plan = plan_for(t, w.facts(t))
        assert plan.errors == ()
        by = kinds(plan)
        assert [(c.id, c.action, c.region) for c in by[ResourceKind.ARC_CLUSTER]] == [
            ("prod-arc", Action.CREATE, "us-west-2")  # the configuration API's region
        ]
        assert [c.id for c in by[ResourceKind.ARC_CONTROL_PANEL]] == ["prod-panel"]
        assert sorted((c.id, c.spec.cell) for c in by[ResourceKind.ARC_ROUTING_CONTROL]) == [
            ("prod-us-east-1", EAST),
            ("prod-us-west-2", WEST),
        ]
        (states,) = by[ResourceKind.ARC_ROUTING_CONTROL_STATES]
        assert states.action is Action.UPDATE and states.spec.turn_on == ("prod-us-east-1", "prod-us-west-2")
        assert w.diff(states) == {
            "state prod-us-east-1": ("Off", "On"),
            "state prod-us-west-2": ("Off", "On"),
        }
        (rule,) = by[ResourceKind.ARC_SAFETY_RULE]
        assert rule.action is Action.CREATE and w.diff(rule)["rule"] == (None, "ATLEAST 1")
        # every cluster is billed by the hour: the plan says so
        assert any("ARC bills each cluster by the hour" in x for x in plan.warnings)

    def test_each_region_gets_a_routing_control_check_and_a_calculated_check_its_record_carries(
        self, w: Any
    ) -> None:
        t = w.topology(with_arc)
        plan = plan_for(t, w.facts(t))
        rc = one(plan, ResourceKind.ROUTING_CONTROL_HEALTH_CHECK, region=EAST)
        assert rc.spec.caller_reference == "chalkdr-prod-us-east-1-rc-" + _hash(
            "RECOVERY_CONTROL|prod-arc|prod-panel|prod-us-east-1"
        )
        assert w.diff(rc) == {"routing_control_arn": (None, "(new routing control prod-us-east-1)")}
        assert rc.spec.tags == {**OURS, "Name": "chalkdr-prod-us-east-1-routing-control"}
        calc = one(plan, ResourceKind.CALCULATED_HEALTH_CHECK, region=EAST)
        assert calc.spec.caller_reference == "chalkdr-prod-us-east-1-calc-" + _hash("CALCULATED")
        assert w.diff(calc) == {
            "children": (
                None,
                [
                    "(new health check chalkdr-prod-us-east-1)",
                    "(new health check chalkdr-prod-us-east-1-routing-control)",
                ],
            ),
            "health_threshold": (None, 2),
        }
        primary = next(
            c for c in plan.changes if c.kind is ResourceKind.RECORD and c.spec.failover == "PRIMARY"
        )
        assert primary.spec.health_check_kind == "route53-calculated-health-check"
        assert w.diff(primary)["health_check_id"] == (
            None,
            "(new health check chalkdr-prod-us-east-1-calculated)",
        )
        # the regional names carry no health check, with ARC as without
        regional = [
            c
            for c in plan.changes
            if c.kind is ResourceKind.RECORD and c.spec.name.endswith(".query.example.com")
        ]
        assert {c.spec.health_check_region for c in regional} == {None}

    def test_stages_make_parents_deployed_first_and_records_wait_for_the_controls_on(self, w: Any) -> None:
        t = w.topology(with_arc)
        stages = {s.name: s.depends_on for s in apply_stages(plan_for(t, w.facts(t)))}
        assert stages["arc-cluster"] == ()
        assert stages["arc-control-panel"] == ("arc-cluster",)
        assert stages["arc-routing-controls"] == ("arc-control-panel",)
        assert stages["arc-routing-control-states"] == ("arc-routing-controls",)
        assert stages["arc-safety-rule"] == ("arc-routing-control-states", "arc-routing-controls")
        assert stages["route53-routing-control-health-checks"] == ("arc-routing-controls",)
        assert stages["route53-calculated-health-checks"] == (
            "route53-health-checks",
            "route53-routing-control-health-checks",
        )
        assert stages["route53-records"] == (
            "arc-routing-control-states",
            "route53-calculated-health-checks",
            "route53-health-checks",
        )

    def test_without_recovery_arc_nothing_changes_from_today(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.facts(t))
        assert not {c.kind for c in plan.changes} & {
            ResourceKind.ARC_CLUSTER,
            ResourceKind.ROUTING_CONTROL_HEALTH_CHECK,
            ResourceKind.CALCULATED_HEALTH_CHECK,
        }
        records = [c.spec for c in plan.changes if isinstance(c.spec, RecordSpec) and c.spec.failover]
        assert {r.health_check_kind for r in records} == {"route53-health-check"}

    def test_the_plan_round_trips_as_json(self, w: Any) -> None:
        t = w.topology(with_arc, with_failback)
        plan = plan_for(t, w.facts(t))
        assert Plan.model_validate_json(plan.model_dump_json()) == plan


class TestConverged:
    def test_a_converged_arc_world_is_an_empty_plan(self, w: Any) -> None:
        t = w.topology(with_arc)
        plan = plan_for(t, arc_world(t, w.converged(t)))
        assert plan.errors == () and plan.warnings == ()
        assert plan.empty, [(c.kind.value, c.id, c.diffs) for c in plan.pending]
        assert one(plan, ResourceKind.ARC_CLUSTER).current_id == CLUSTER_ARN

    def test_a_failover_in_effect_is_left_as_it_is_and_said(self, w: Any) -> None:
        t = w.topology(with_arc)
        obs = arc_world(t, w.converged(t), states={EAST: "Off"})
        plan = plan_for(t, obs)
        assert plan.empty and plan.errors == ()
        (warning,) = plan.warnings
        assert "prod-us-east-1 are Off while prod-us-west-2 are On" in warning and "until failback" in warning

    def test_all_off_means_nobody_decided_anything_they_are_all_set_on(self, w: Any) -> None:
        t = w.topology(with_arc)
        plan = plan_for(t, arc_world(t, w.converged(t), states={EAST: "Off", WEST: "Off"}))
        (states,) = plan.pending
        assert states.kind is ResourceKind.ARC_ROUTING_CONTROL_STATES
        assert states.spec.turn_on == ("prod-us-east-1", "prod-us-west-2")
        assert states.spec.routing_controls == {
            "prod-us-east-1": control_arn(EAST),
            "prod-us-west-2": control_arn(WEST),
        }

    def test_states_that_no_endpoint_reported_are_an_error(self, w: Any) -> None:
        t = w.topology(with_arc)
        obs = arc_of(
            arc_world(t, w.converged(t)), states={}, state_errors=("us-east-1: EndpointConnectionError",)
        )
        plan = plan_for(t, obs)
        (error,) = plan.errors
        assert "cannot read the state of routing control(s) prod-us-east-1, prod-us-west-2" in error
        assert "EndpointConnectionError" in error

    def test_a_new_region_gets_its_control_on_and_replaces_the_safety_rule(self, w: Any) -> None:
        t2 = w.topology(with_arc)
        obs = arc_world(t2, w.converged(t2))
        t3 = w.topology(with_arc, w.three_regions)
        plan = plan_for(t3, obs)
        control = one(plan, ResourceKind.ARC_ROUTING_CONTROL, id="prod-eu-west-1")
        assert control.action is Action.CREATE
        states = one(plan, ResourceKind.ARC_ROUTING_CONTROL_STATES)
        assert states.spec.turn_on == ("prod-eu-west-1",)  # the others are On already: left alone
        rule = one(plan, ResourceKind.ARC_SAFETY_RULE)
        assert rule.action is Action.REPLACE and rule.current_id == RULE_ARN
        assert "(new routing control prod-eu-west-1)" in w.diff(rule)["asserted_controls"][1]

    def test_a_wait_period_changed_out_of_band_is_updated_in_place(self, w: Any) -> None:
        t = w.topology(with_arc)
        obs = arc_world(t, w.converged(t))
        rule = obs.arc.safety_rules[0].model_copy(update={"wait_period_ms": 60000})
        (change,) = plan_for(t, arc_of(obs, safety_rules=(rule,))).pending
        assert change.action is Action.UPDATE and w.diff(change) == {"wait_period_ms": (60000, 5000)}

    def test_a_recreated_routing_control_replaces_its_check_and_the_parent_follows(self, w: Any) -> None:
        t = w.topology(with_arc)
        obs = arc_world(t, w.converged(t))
        new_arn = f"{PANEL_ARN}/routingcontrol/ffffffffffffffff"
        controls = tuple(
            rc.model_copy(update={"arn": new_arn}) if rc.name == "prod-us-east-1" else rc
            for rc in obs.arc.routing_controls
        )
        states = {**obs.arc.states, new_arn: "On"}
        plan = plan_for(t, arc_of(obs, routing_controls=controls, states=states))
        rc = one(plan, ResourceKind.ROUTING_CONTROL_HEALTH_CHECK, region=EAST)
        assert rc.action is Action.REPLACE and rc.stale_ids == ("rc-us-east-1",)
        assert w.diff(rc) == {"routing_control_arn": (control_arn(EAST), new_arn)}
        calc = one(plan, ResourceKind.CALCULATED_HEALTH_CHECK, region=EAST)
        assert calc.action is Action.UPDATE and calc.current_id == "calc-us-east-1"
        assert w.diff(calc)["children"][1] == [
            "(new health check chalkdr-prod-us-east-1-routing-control)",
            "hc-us-east-1",
        ]
        # the old check is deleted only after the calculated check stopped pointing at it
        stages = {s.name: s for s in apply_stages(plan)}
        assert stages["route53-routing-control-health-check-cleanup"].depends_on == (
            "route53-calculated-health-checks",
        )
        assert one(plan, ResourceKind.ARC_SAFETY_RULE).action is Action.REPLACE

    def test_a_calculated_check_a_failover_inverted_stays_inverted(self, w: Any) -> None:
        t = w.topology(with_arc)
        obs = arc_world(t, w.converged(t))
        checks = tuple(
            c.model_copy(update={"inverted": True, "tags": {**c.tags, "chalk-dr:recovery-id": "r1"}})
            if c.id == "calc-us-east-1"
            else c
            for c in obs.route53.health_checks
        )
        plan = plan_for(t, w.updated(obs, "route53", health_checks=checks))
        assert plan.empty and any("inverted by recovery r1" in x for x in plan.warnings)

    def test_turning_arc_off_moves_the_records_back_and_leaves_the_arc_checks_alone(self, w: Any) -> None:
        t = w.topology(with_arc)
        obs = arc_world(t, w.converged(t))
        plan = plan_for(w.topology(), obs)
        records = [c for c in plan.pending if c.kind is ResourceKind.RECORD]
        assert {c.spec.region: w.diff(c)["health_check_id"] for c in records} == {
            EAST: ("calc-us-east-1", "hc-us-east-1"),
            WEST: ("calc-us-west-2", "hc-us-west-2"),
        }
        assert sum("no recovery.arc any more" in x for x in plan.warnings) == 4  # 2 regions x 2 checks


class TestOwnership:
    def test_a_cluster_of_the_name_that_is_not_ours_is_an_error_naming_it(self, w: Any) -> None:
        t = w.topology(with_arc)
        obs = arc_world(t, w.converged(t))
        theirs = obs.arc.clusters[0].model_copy(update={"tags": {}})
        plan = plan_for(t, arc_of(obs, clusters=(theirs,)))
        (error,) = plan.errors
        assert f"ARC cluster prod-arc ({CLUSTER_ARN}) exists and is not chalk-dr's" in error
        assert "adopt.arc_clusters" in error
        assert not [c for c in plan.changes if c.kind.value.startswith("arc-")]

    def test_adopting_the_cluster_tags_it(self, w: Any) -> None:
        def adopt(d: dict[str, Any]) -> None:
            d["adopt"] = {"arc_clusters": ["prod-arc"]}

        t = w.topology(with_arc, adopt)
        obs = arc_world(t, w.converged(t))
        theirs = obs.arc.clusters[0].model_copy(update={"tags": {"team": "sre"}})
        (change,) = plan_for(t, arc_of(obs, clusters=(theirs,))).pending
        assert change.kind is ResourceKind.ARC_CLUSTER and change.action is Action.UPDATE
        assert change.adoption == {"adopted_from": None, "owner": "prod"}
        assert change.current_id == CLUSTER_ARN

    def test_another_environments_panel_of_the_name_is_an_error(self, w: Any) -> None:
        t = w.topology(with_arc)
        obs = arc_world(t, w.converged(t))
        panel = obs.arc.control_panels[0].model_copy(
            update={"tags": {**OURS, "chalk-dr:environment": "staging"}}
        )
        plan = plan_for(t, arc_of(obs, control_panels=(panel,)))
        assert any("its chalk-dr:environment tag names environment 'staging'" in e for e in plan.errors)

    def test_two_clusters_of_the_name_none_ours_is_ambiguous(self, w: Any) -> None:
        t = w.topology(with_arc)
        obs = arc_world(t, w.converged(t))
        a = obs.arc.clusters[0].model_copy(update={"tags": {}})
        b = a.model_copy(update={"arn": CLUSTER_ARN + "2"})
        plan = plan_for(t, arc_of(obs, clusters=(a, b)))
        assert any("several ARC cluster prod-arc exist" in e for e in plan.errors)

    def test_ours_wins_over_an_untagged_namesake_and_one_pending_deletion_is_ignored(self, w: Any) -> None:
        t = w.topology(with_arc)
        obs = arc_world(t, w.converged(t))
        stranger = obs.arc.clusters[0].model_copy(update={"arn": CLUSTER_ARN + "2", "tags": {}})
        going = obs.arc.clusters[0].model_copy(
            update={"arn": CLUSTER_ARN + "3", "status": "PENDING_DELETION"}
        )
        plan = plan_for(t, arc_of(obs, clusters=(stranger, going, obs.arc.clusters[0])))
        assert plan.empty and plan.errors == ()

    def test_someone_elses_routing_control_check_blocks_that_regions_record(self, w: Any) -> None:
        t = w.topology(with_arc)
        obs = arc_world(t, w.converged(t))
        checks = tuple(
            c.model_copy(update={"tags": {}}) if c.id == "rc-us-east-1" else c
            for c in obs.route53.health_checks
        )
        plan = plan_for(t, w.updated(obs, "route53", health_checks=checks))
        assert any("Route 53 health check rc-us-east-1" in e for e in plan.errors)
        assert not [
            c for c in plan.changes if c.kind is ResourceKind.CALCULATED_HEALTH_CHECK and c.region == EAST
        ]


class TestReverseReplicators:
    def test_failback_readiness_adds_one_per_secondary_in_the_primary_region_from_latest(
        self, w: Any
    ) -> None:
        t = w.topology(with_failback)
        specs = desired_state(t, w.facts(t)).of(ReplicatorSpec)
        (forward,) = [s for s in specs if s.direction == "failover"]
        (reverse,) = [s for s in specs if s.direction == "failback"]
        assert (forward.name, forward.region, forward.starting_position) == (
            "chalk-prod-east-to-west",
            WEST,
            "EARLIEST",
        )
        assert (reverse.name, reverse.region, reverse.starting_position) == (
            "chalk-prod-east-to-west-failback",
            EAST,
            "LATEST",
        )
        assert reverse.source.arn == t.region(WEST).msk_cluster_arn
        assert reverse.target.arn == t.primary.msk_cluster_arn
        assert reverse.tags == OURS and reverse.topics == forward.topics
        assert reverse_replicator_name(t, WEST) == reverse.name

    def test_several_secondaries_name_their_source_and_long_names_keep_the_suffix(self, w: Any) -> None:
        def long_name(d: dict[str, Any]) -> None:
            d["msk"]["replicator_name"] = "r" * 128

        t = w.topology(with_failback, w.three_regions)
        names = sorted(
            s.name for s in desired_state(t, w.facts(t)).of(ReplicatorSpec) if s.direction == "failback"
        )
        assert names == [
            "chalk-prod-east-to-west-failback-eu-west-1",
            "chalk-prod-east-to-west-failback-us-west-2",
        ]
        t = w.topology(with_failback, w.three_regions, long_name)
        long = {reverse_replicator_name(t, r) for r in (WEST, EU)}
        assert len(long) == 2 and all(
            len(n) == 128 and n.endswith(f"-failback-{r}")
            for n, r in zip(sorted(long), (EU, WEST), strict=True)
        )

    def test_the_secondary_as_a_source_needs_connectivity_and_a_cluster_policy(self, w: Any) -> None:
        t = w.topology(with_failback)
        obs = w.changed(w.facts(t), "msk", "clusters", WEST, vpc_iam_enabled=False, policy=None)
        errors = plan_for(t, obs).errors
        reverse = [e for e in errors if "chalk-prod-east-to-west-failback" in e]
        assert len(reverse) == 2 and all(
            e.startswith(f"{EAST}: replicator chalk-prod-east-to-west-failback: source") for e in reverse
        )
        assert any("multi-VPC private connectivity" in e for e in reverse)
        assert any("kafka:CreateVpcConnection" in e for e in reverse)
        # the forward replicator reads the primary: it is not blocked by the secondary's source settings
        assert not [e for e in errors if e.startswith(f"{WEST}: replicator chalk-prod-east-to-west:")]

    def test_a_converged_reverse_replicator_is_unchanged_and_without_readiness_it_is_left_alone(
        self, w: Any
    ) -> None:
        t = w.topology(with_failback)
        obs = w.converged(t)
        reverse = ObservedReplicator(
            name="chalk-prod-east-to-west-failback",
            arn=f"arn:aws:kafka:{EAST}:{ACCOUNT}:replicator/chalk-prod-east-to-west-failback/y",
            region=EAST,
            state="RUNNING",
            current_version="V1",
            source_cluster_arn=t.region(WEST).msk_cluster_arn,
            target_cluster_arn=t.primary.msk_cluster_arn,
            topics=("chalk-persistence", "chalk-online-writes"),
            consumer_groups=(".*",),
            sync_consumer_group_offsets=True,
            service_execution_role_arn=f"arn:aws:iam::{ACCOUNT}:role/chalk-msk-replicator",
            tags=OURS,
        )
        obs = w.updated(obs, "msk", replicators={**obs.msk.replicators, EAST: (reverse,)})
        plan = plan_for(t, obs)
        assert plan.empty and plan.errors == ()
        plan = plan_for(w.topology(), obs)
        assert plan.empty
        assert any(
            "chalk-prod-east-to-west-failback is this environment's but no longer" in x for x in plan.warnings
        )


@pytest.mark.parametrize("field", ["arc_clusters", "arc_control_panels"])
def test_adopt_names_are_validated(w: Any, field: str) -> None:
    from chalkdr.errors import TopologyError

    def bad(d: dict[str, Any]) -> None:
        d["adopt"] = {field: ["has space"]}

    with pytest.raises(TopologyError, match="non-space"):
        w.topology(bad)


def test_records_carry_the_calculated_check_in_weighted_routing_too(w: Any) -> None:
    t = w.topology(with_arc, w.weighted)
    records = [
        c
        for c in plan_for(t, w.facts(t)).changes
        if c.kind is ResourceKind.RECORD and c.spec.weight is not None
    ]
    assert {c.spec.health_check_kind for c in records} == {"route53-calculated-health-check"}
    assert all(isinstance(c.spec, RecordSpec) for c in records)
