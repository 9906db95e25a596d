"""Route 53 in the plan: health checks per ALB, failover/weighted/latency records, identity rules."""

from __future__ import annotations

from typing import Any

from chalkdr.plan import Action
from chalkdr.plan import AliasTarget
from chalkdr.plan import HealthCheckSpec
from chalkdr.plan import ObservedHealthCheck
from chalkdr.plan import ObservedRecord
from chalkdr.plan import RecordSpec
from chalkdr.plan import ResourceKind
from chalkdr.plan import apply_stages
from chalkdr.plan import caller_reference
from chalkdr.plan import caller_reference_prefix
from chalkdr.plan import desired_state
from chalkdr.plan import plan_for

HC, REC = ResourceKind.HEALTH_CHECK, ResourceKind.RECORD


def slower(d: dict[str, Any]) -> None:
    d["route53"]["health_check"]["request_interval"] = 30


class TestDesired:
    def test_health_checks_follow_the_topology_and_check_the_regional_hostname(self, w: Any) -> None:
        t = w.topology()
        checks = desired_state(t, w.facts(t)).of(HealthCheckSpec)
        assert [h.region for h in checks] == ["us-east-1", "us-west-2"]
        east = checks[0]
        assert (east.type, east.port, east.resource_path) == ("HTTPS", 443, "/healthz")
        assert (east.request_interval, east.failure_threshold) == (10, 3)
        assert east.regions == ("eu-west-1", "us-east-1", "us-west-2")
        # Route 53 sends the FQDN as Host and SNI: the regional hostname the ALB routes and certifies.
        assert east.fqdn == "prod-east.query.example.com"
        assert east.tags == {**w.OURS, "Name": "chalkdr-prod-us-east-1"}
        assert east.caller_reference == f"chalkdr-prod-us-east-1-{w.HASH_HTTPS_10}"

    def test_failover_records_are_aliases_with_unique_set_identifiers(self, w: Any) -> None:
        t = w.topology()
        records = [r for r in desired_state(t, w.facts(t)).of(RecordSpec) if r.type == "A"]
        by_name = {(r.name, r.set_identifier): r for r in records}
        assert len(by_name) == len(records) == 4
        primary = by_name[("chalk-failover.example.com", "prod-us-east-1")]
        secondary = by_name[("chalk-failover.example.com", "prod-us-west-2")]
        assert (primary.failover, secondary.failover) == ("PRIMARY", "SECONDARY")
        assert primary.alias == AliasTarget(
            dns_name=w.alb_dns("us-east-1"), hosted_zone_id="ZUSEAST1", evaluate_target_health=False
        )
        assert (primary.health_check_region, secondary.health_check_region) == ("us-east-1", "us-west-2")
        regional = by_name[("prod-west.query.example.com", None)]
        assert regional.alias.dns_name == w.alb_dns("us-west-2")
        assert regional.health_check_region is None

    def test_new_records_point_at_health_checks_still_to_be_created(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.facts(t))
        primary = next(c for c in w.of_kind(plan, REC) if c.id.endswith("prod-us-east-1"))
        assert w.diff(primary)["health_check_id"] == (None, "(new health check chalkdr-prod-us-east-1)")

    def test_weighted_routing_gives_weighted_records(self, w: Any) -> None:
        t = w.topology(w.weighted)
        records = [r for r in desired_state(t, w.facts(t)).of(RecordSpec) if r.set_identifier]
        assert {(r.set_identifier, r.weight, r.failover, r.health_check_region) for r in records} == {
            ("prod-us-east-1", 100, None, "us-east-1"),
            ("prod-us-west-2", 50, None, "us-west-2"),
        }

    def test_latency_routing_gives_latency_records(self, w: Any) -> None:
        t = w.topology(w.latency)
        records = [r for r in desired_state(t, w.facts(t)).of(RecordSpec) if r.set_identifier]
        assert {(r.latency_region, r.region) for r in records} == {
            ("us-east-1", "us-east-1"),
            ("us-west-2", "us-west-2"),
        }

    def test_three_regions_in_failover_mode_warn_that_only_one_is_secondary(self, w: Any) -> None:
        t = w.topology(w.three_regions)
        plan = plan_for(t, w.facts(t))
        assert any("eu-west-1 not reachable through chalk-failover.example.com" in x for x in plan.warnings)


class TestDrift:
    def test_failure_threshold_edited_out_of_band_is_an_update(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        hcs = tuple(
            h.model_copy(update={"failure_threshold": 7, "version": 2}) if h.id == "hc-us-east-1" else h
            for h in obs.route53.health_checks
        )
        (change,) = plan_for(t, w.updated(obs, "route53", health_checks=hcs)).pending
        assert (change.kind, change.action, change.region) == (HC, Action.UPDATE, "us-east-1")
        assert w.diff(change) == {"failure_threshold": (7, 3)}
        assert (change.current_id, change.current_version) == ("hc-us-east-1", "2")

    def test_request_interval_change_replaces_checks_and_repoints_records(self, w: Any) -> None:
        obs = w.converged(w.topology())
        plan = plan_for(w.topology(slower), obs)
        hcs = w.of_kind(plan, HC)
        assert [(c.region, c.action) for c in hcs] == [
            ("us-east-1", Action.REPLACE),
            ("us-west-2", Action.REPLACE),
        ]
        east = hcs[0]
        assert w.diff(east)["request_interval"] == (10, 30)
        assert east.stale_ids == ("hc-us-east-1",) and east.current_id is None
        records = [c for c in plan.pending if c.kind is REC]
        assert sorted(c.id for c in records) == [
            "chalk-failover.example.com A prod-us-east-1",
            "chalk-failover.example.com A prod-us-west-2",
        ]
        primary = next(c for c in records if c.id.endswith("prod-us-east-1"))
        assert w.diff(primary)["health_check_id"] == (
            "hc-us-east-1",
            "(new health check chalkdr-prod-us-east-1)",
        )
        stages = apply_stages(plan)
        assert [(s.name, s.depends_on) for s in stages] == [
            ("route53-health-checks", ()),
            ("route53-records", ("route53-health-checks",)),
            ("route53-health-check-cleanup", ("route53-records",)),
        ]

    def test_an_interrupted_replace_finishes_by_cleaning_up_the_old_check(self, w: Any) -> None:
        obs = w.converged(w.topology())
        east_old = next(h for h in obs.route53.health_checks if h.id == "hc-us-east-1")
        east_new = east_old.model_copy(
            update={
                "id": "hc-new",
                "caller_reference": f"chalkdr-prod-us-east-1-{w.HASH_HTTPS_30}",
                "request_interval": 30,
            }
        )
        rest = tuple(h for h in obs.route53.health_checks if h.id != "hc-us-east-1")
        plan = plan_for(
            w.topology(slower), w.updated(obs, "route53", health_checks=(east_old, east_new, *rest))
        )
        east = next(c for c in w.of_kind(plan, HC) if c.region == "us-east-1")
        assert east.action is Action.REPLACE and east.current_id == "hc-new"
        assert east.stale_ids == ("hc-us-east-1",)
        primary = next(c for c in w.of_kind(plan, REC) if c.id.endswith("prod-us-east-1"))
        assert w.diff(primary)["health_check_id"] == ("hc-us-east-1", "hc-new")

    def test_repointed_record_is_an_update(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        evil = AliasTarget(dns_name="evil.example.net.", hosted_zone_id="ZEVIL")
        records = tuple(
            r.model_copy(update={"alias": evil}) if r.failover == "PRIMARY" else r
            for r in obs.route53.records
        )
        (change,) = plan_for(t, w.updated(obs, "route53", records=records)).pending
        assert (change.kind, change.action) == (REC, Action.UPDATE)
        assert w.diff(change) == {
            "alias_target": ("evil.example.net", w.alb_dns("us-east-1")),
            "alias_zone": ("ZEVIL", "ZUSEAST1"),
        }

    def test_dualstack_prefix_and_case_are_not_drift(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        records = tuple(
            r.model_copy(
                update={
                    "alias": AliasTarget(
                        dns_name="dualstack." + r.alias.dns_name.upper(),
                        hosted_zone_id=r.alias.hosted_zone_id,
                    )
                }
            )
            for r in obs.route53.records
            if r.alias is not None
        )
        assert len(records) == 4
        assert plan_for(t, w.updated(obs, "route53", records=records)).empty

    def test_tags_removed_from_a_health_check_are_restored(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        hcs = tuple(h.model_copy(update={"tags": w.OURS}) for h in obs.route53.health_checks)  # no Name
        plan = plan_for(t, w.updated(obs, "route53", health_checks=hcs))
        assert [(c.region, c.action) for c in plan.pending] == [
            ("us-east-1", Action.UPDATE),
            ("us-west-2", Action.UPDATE),
        ]
        assert [set(w.diff(c)) for c in plan.pending] == [{"tags"}, {"tags"}]

    def test_a_disabled_or_inverted_check_is_drift(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        hcs = tuple(
            h.model_copy(update={"disabled": True, "inverted": True}) for h in obs.route53.health_checks
        )
        plan = plan_for(t, w.updated(obs, "route53", health_checks=hcs))
        assert len(plan.pending) == 2
        assert [w.diff(c) for c in plan.pending] == [
            {"inverted": (True, False), "disabled": (True, False)}
        ] * 2

    def test_switching_failover_to_weighted_replaces_the_records(self, w: Any) -> None:
        obs = w.converged(w.topology())
        plan = plan_for(w.topology(w.weighted), obs)
        (primary_change, secondary_change) = [c for c in plan.pending if c.kind is REC]
        assert {primary_change.action, secondary_change.action} == {Action.REPLACE}
        assert primary_change.replaces is not None
        assert ObservedRecord.model_validate(primary_change.replaces).failover == "PRIMARY"
        assert w.diff(primary_change)["failover"] == ("PRIMARY", None)
        assert w.diff(primary_change)["weighted"] == (None, 100)


class TestErrorsAndWarnings:
    def test_missing_alb_and_hosted_zone_are_errors(self, w: Any) -> None:
        t = w.topology()
        obs = w.facts(t)
        albs = {r: a for r, a in obs.route53.albs.items() if r != "us-west-2"}
        plan = plan_for(t, w.updated(obs, "route53", albs=albs, zone_name=None))
        text = "\n".join(plan.errors)
        assert (
            "us-west-2: ALB 'chalk-prod-west' not found (elasticloadbalancing:DescribeLoadBalancers)" in text
        )
        assert "hosted zone Z0123456789ABCDEFGHIJ not found" in text

    def test_names_outside_the_hosted_zone_are_errors(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.updated(w.facts(t), "route53", zone_name="other.org."))
        assert any("not within hosted zone other.org" in e for e in plan.errors)

    def test_unknown_records_are_left_alone_with_a_warning(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        stray = ObservedRecord(
            name="chalk-failover.example.com.", type="A", set_identifier="legacy", weight=1
        )
        plan = plan_for(t, w.updated(obs, "route53", records=(*obs.route53.records, stray)))
        assert plan.empty
        assert plan.warnings == (
            "route53: record chalk-failover.example.com A (SetIdentifier legacy) is not in the topology "
            "and is left alone; Route 53 rejects mixing routing policies under one name, "
            "so remove it if it conflicts",
        )


class TestIdentity:
    def test_caller_reference_is_deterministic_and_depends_only_on_immutable_settings(self) -> None:
        a = caller_reference("prod", "us-east-1", check_type="HTTPS", request_interval=10)
        assert a == caller_reference("prod", "us-east-1", check_type="HTTPS", request_interval=10)
        assert a != caller_reference("prod", "us-east-1", check_type="HTTPS", request_interval=30)
        assert a != caller_reference("prod", "us-east-1", check_type="HTTP", request_interval=10)

    def test_caller_reference_fits_route53_limit_for_long_environment_names(self) -> None:
        env = "e" * 63
        ref = caller_reference(env, "ap-southeast-2", check_type="HTTPS", request_interval=10)
        assert len(ref) + 3 <= 64 and ref.startswith(caller_reference_prefix(env, "ap-southeast-2"))

    def test_checks_of_another_environment_are_not_ours(self, w: Any) -> None:
        t = w.topology()
        other = ObservedHealthCheck(
            id="hc-other",
            caller_reference=f"chalkdr-prod-eu-us-east-1-{w.HASH_HTTPS_10}",
            version=1,
            type="HTTPS",
            request_interval=10,
        )
        plan = plan_for(t, w.updated(w.facts(t), "route53", health_checks=(other,)))
        assert [c.action for c in w.of_kind(plan, HC)] == [Action.CREATE, Action.CREATE]


class TestWhatRoute53CanReach:
    """Route 53 health checkers are on the internet and resolve a check's domain name through
    public DNS (Route 53 Developer Guide, "Values that you specify when you create or update
    health checks"); TestDNSAnswer answers only for public hosted zones (API reference)."""

    def test_an_internal_alb_is_an_error_naming_the_region(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.changed(w.facts(t), "route53", "albs", "us-west-2", scheme="internal"))
        (error,) = [e for e in plan.errors if "internal" in e]
        assert error.startswith("us-west-2: ALB chalk-prod-west is internal (Scheme internal)")
        checks = [c for c in plan.changes if c.kind is ResourceKind.HEALTH_CHECK]
        assert [c.region for c in checks] == ["us-east-1"]  # nothing is made for the unreachable one

    def test_a_private_hosted_zone_is_an_error(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.updated(w.facts(t), "route53", private_zone=True))
        assert any("hosted zone example.com is private" in e for e in plan.errors)
        assert [c for c in plan.changes if c.kind is ResourceKind.RECORD] == []
