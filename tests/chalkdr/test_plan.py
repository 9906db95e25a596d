"""The provision plan as a pure function: what is created, updated, replaced, and what blocks apply."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from chalkdr.plan import (
    MANAGED_TAGS,
    Action,
    AliasTarget,
    DesiredState,
    ObservedAlarm,
    ObservedAlb,
    ObservedDbCluster,
    ObservedDeployment,
    ObservedEks,
    ObservedGlobalCluster,
    ObservedHealthCheck,
    ObservedMskCluster,
    ObservedRecord,
    ObservedRegion,
    ObservedReplicator,
    ObservedRoute53,
    ObservedState,
    ObservedTable,
    Plan,
    ResourceKind,
    apply_stages,
    caller_reference,
    caller_reference_prefix,
    desired_state,
    plan_for,
    plan_table_rows,
    render_plan_markdown,
)
from chalkdr.topology import Topology, parse_topology

EXAMPLE = Path(__file__).resolve().parents[2] / "deployments" / "topology.example.yaml"
ACCOUNT = "123456789012"
THIRD_REGION: dict[str, Any] = {
    "aws_region": "eu-west-1",
    "resource_group": "prod-eu",
    "query_hostname": "prod-eu.query.example.com",
    "alb": "chalk-prod-eu",
    "eks": {"cluster_name": "chalk-prod-eu"},
    "online_store_tables": ["chalk-online-store"],
    "msk_cluster_arn": f"arn:aws:kafka:eu-west-1:{ACCOUNT}:cluster/chalk-prod-eu/abc-1",
    "aurora_cluster_id": "chalk-meta-eu",
    "chalk": {
        "environment_id": "prod-eu",
        "api_server": "https://prod-eu.query.example.com",
        "client_id": "client-prod-eu",
        "client_secret": {"env": "CHALK_PROD_EU_CLIENT_SECRET"},
    },
}


def topology_dict() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def topology(mutate: Any = None) -> Topology:
    d = topology_dict()
    if mutate is not None:
        mutate(d)
    return parse_topology(d)


def three_regions(d: dict[str, Any]) -> None:
    d["regions"].append(copy.deepcopy(THIRD_REGION))


def weighted(d: dict[str, Any]) -> None:
    d["routing"] = "weighted"
    for i, r in enumerate(d["regions"]):
        r.pop("primary", None)
        r["weight"] = 100 if i == 0 else 50


def alb_dns(region: str) -> str:
    return f"chalk-{region}-1234567890.{region}.elb.amazonaws.com"


def facts(t: Topology) -> ObservedState:
    """A fresh world: what Chalk's team provisioned (ALBs, MSK, primary Aurora, table), nothing of ours."""
    regions = {}
    for r in t.regions:
        primary = r is t.primary
        regions[r.aws_region] = ObservedRegion(
            region=r.aws_region,
            alb=ObservedAlb(
                region=r.aws_region,
                name=r.alb_name,
                arn=f"arn:aws:elasticloadbalancing:{r.aws_region}:{ACCOUNT}:loadbalancer/app/{r.alb_name}/1",
                dns_name=alb_dns(r.aws_region),
                canonical_hosted_zone_id=f"Z{r.aws_region.replace('-', '').upper()}",
            ),
            tables=tuple(
                ObservedTable(
                    table=name,
                    region=r.aws_region,
                    status="ACTIVE",
                    arn=f"arn:aws:dynamodb:{r.aws_region}:{ACCOUNT}:table/{name}",
                )
                for name in (r.online_store_tables if primary else [])
            ),
            msk_cluster=ObservedMskCluster(
                arn=r.msk_cluster_arn,
                region=r.aws_region,
                state="ACTIVE",
                subnet_ids=(f"subnet-{r.aws_region}",),
            ),
            db_cluster=(
                ObservedDbCluster(
                    id=r.aurora_cluster_id,
                    arn=f"arn:aws:rds:{r.aws_region}:{ACCOUNT}:cluster:{r.aurora_cluster_id}",
                    region=r.aws_region,
                    engine="aurora-postgresql",
                    engine_version="15.4",
                    status="available",
                )
                if primary
                else None
            ),
            eks=ObservedEks(
                cluster=r.eks.cluster_name,
                region=r.aws_region,
                status="ACTIVE",
                deployments=(
                    ObservedDeployment(
                        name=r.eks.query_server_deployment, found=True, replicas=2, ready_replicas=2
                    ),
                    ObservedDeployment(
                        name=r.eks.persistence_deployment, found=True, replicas=1, ready_replicas=1
                    ),
                ),
            ),
        )
    return ObservedState(
        route53=ObservedRoute53(zone_id=t.route53.zone_id, zone_name="example.com."),
        regions=regions,
    )


def converged(t: Topology) -> ObservedState:
    """What AWS holds after a successful apply, written the way AWS reports it (not from our specs' types)."""
    base = facts(t)
    desired = desired_state(t, base)
    checks = {
        hc.region: ObservedHealthCheck(
            id=f"hc-{hc.region}",
            caller_reference=hc.caller_reference,
            version=1,
            type=hc.type,
            fqdn=hc.fqdn,
            port=hc.port,
            resource_path=hc.resource_path,
            request_interval=hc.request_interval,
            failure_threshold=hc.failure_threshold,
            regions=tuple(reversed(hc.regions)),  # AWS's order is not ours
            tags=dict(hc.tags),
        )
        for hc in desired.health_checks
    }
    records = tuple(
        ObservedRecord(
            name=r.name + ".",
            type=r.type,
            set_identifier=r.set_identifier,
            failover=r.failover,
            weight=r.weight,
            latency_region=r.latency_region,
            alias=AliasTarget(
                dns_name=r.alias.dns_name + ".",
                hosted_zone_id=r.alias.hosted_zone_id,
                evaluate_target_health=False,
            ),
            health_check_id=checks[r.health_check_region].id if r.health_check_region else None,
        )
        for r in desired.records
    )
    regions = dict(base.regions)
    all_regions = [r.aws_region for r in t.regions]
    for r in t.regions:
        obs = regions[r.aws_region]
        others = tuple(x for x in all_regions if x != r.aws_region)
        tables = tuple(
            ObservedTable(
                table=name,
                region=r.aws_region,
                status="ACTIVE",
                arn=f"arn:aws:dynamodb:{r.aws_region}:{ACCOUNT}:table/{name}",
                replica_regions=others,
                replica_status=dict.fromkeys(others, "ACTIVE"),
                global_table_version="2019.11.21",
            )
            for name in r.online_store_tables
        )
        replicators = tuple(
            ObservedReplicator(
                name=s.name,
                arn=f"arn:aws:kafka:{s.region}:{ACCOUNT}:replicator/{s.name}/x",
                region=s.region,
                state="RUNNING",
                current_version="V1",
                source_cluster_arn=s.source_cluster_arn,
                target_cluster_arn=s.target_cluster_arn,
                topics=tuple(reversed(s.topics)),
                consumer_groups=(".*",),
                sync_consumer_group_offsets=True,
                service_execution_role_arn=s.service_execution_role_arn,
            )
            for s in desired.replicators
            if s.region == r.aws_region
        )
        db = obs.db_cluster or ObservedDbCluster(
            id=r.aurora_cluster_id,
            arn=f"arn:aws:rds:{r.aws_region}:{ACCOUNT}:cluster:{r.aurora_cluster_id}",
            region=r.aws_region,
            engine="aurora-postgresql",
            engine_version="15.4",
            status="available",
        )
        alarms = tuple(
            ObservedAlarm(
                name=a.name,
                region=a.region,
                namespace=a.namespace,
                metric_name=a.metric_name,
                dimensions=dict(reversed(list(a.dimensions.items()))),
                statistic=a.statistic,
                period=a.period,
                evaluation_periods=a.evaluation_periods,
                datapoints_to_alarm=a.datapoints_to_alarm,
                threshold=a.threshold,
                comparison_operator=a.comparison_operator,
                treat_missing_data=a.treat_missing_data,
            )
            for a in desired.alarms
            if a.region == r.aws_region
        )
        regions[r.aws_region] = obs.model_copy(
            update={
                "tables": tables,
                "replicators": replicators,
                "db_cluster": db.model_copy(update={"global_cluster_id": t.aurora.global_cluster_id}),
                "alarms": alarms,
            }
        )
    gc = ObservedGlobalCluster(
        id=t.aurora.global_cluster_id,
        arn=f"arn:aws:rds::{ACCOUNT}:global-cluster:{t.aurora.global_cluster_id}",
        engine="aurora-postgresql",
        engine_version="15.4",
        status="available",
        members={regions[r.aws_region].db_cluster.arn: r is t.primary for r in t.regions},  # type: ignore[union-attr]
    )
    return ObservedState(
        route53=base.route53.model_copy(update={"health_checks": tuple(checks.values()), "records": records}),
        regions=regions,
        global_cluster=gc,
    )


def changes(plan: Plan, kind: ResourceKind) -> list[Any]:
    return [c for c in plan.changes if c.kind is kind]


def diff(change: Any) -> dict[str, tuple[Any, Any]]:
    return {d.field: (d.old, d.new) for d in change.diffs}


def with_region(obs: ObservedState, region: str, **update: Any) -> ObservedState:
    regions = dict(obs.regions)
    regions[region] = regions[region].model_copy(update=update)
    return obs.model_copy(update={"regions": regions})


def with_route53(obs: ObservedState, **update: Any) -> ObservedState:
    return obs.model_copy(update={"route53": obs.route53.model_copy(update=update)})


class TestFreshWorld:
    def test_everything_is_created_in_a_world_with_only_chalks_own_resources(self) -> None:
        t = topology()
        plan = plan_for(t, facts(t))
        assert plan.errors == ()
        assert {(c.kind, c.action) for c in plan.changes} == {
            (ResourceKind.HEALTH_CHECK, Action.CREATE),
            (ResourceKind.RECORD, Action.CREATE),
            (ResourceKind.GLOBAL_TABLE, Action.UPDATE),  # the table is Chalk's; its replicas are ours
            (ResourceKind.REPLICATOR, Action.CREATE),
            (ResourceKind.GLOBAL_CLUSTER, Action.CREATE),
            (ResourceKind.SECONDARY_CLUSTER, Action.CREATE),
            (ResourceKind.ALARM, Action.CREATE),
        }
        assert len(changes(plan, ResourceKind.HEALTH_CHECK)) == 2
        assert len(changes(plan, ResourceKind.RECORD)) == 4  # PRIMARY, SECONDARY, two regional names
        # 2 DynamoDB directions + MSK latency and lag + the Aurora secondary's lag
        assert len(changes(plan, ResourceKind.ALARM)) == 5

    def test_health_checks_follow_the_topology_and_target_the_alb(self) -> None:
        t = topology()
        d = desired_state(t, facts(t))
        east = next(h for h in d.health_checks if h.region == "us-east-1")
        assert (east.type, east.port, east.resource_path) == ("HTTPS", 443, "/healthz")
        assert (east.request_interval, east.failure_threshold) == (10, 3)
        assert east.regions == ("eu-west-1", "us-east-1", "us-west-2")
        assert east.fqdn == alb_dns("us-east-1")
        assert east.tags == {**MANAGED_TAGS, "Name": "chalkdr-prod-us-east-1"}
        assert east.caller_reference.startswith("chalkdr-prod-us-east-1-")

    def test_failover_records_are_aliases_with_unique_set_identifiers(self) -> None:
        t = topology()
        d = desired_state(t, facts(t))
        by_name = {(r.name, r.set_identifier): r for r in d.records}
        primary = by_name[("chalk-failover.example.com", "prod-us-east-1")]
        secondary = by_name[("chalk-failover.example.com", "prod-us-west-2")]
        assert (primary.failover, secondary.failover) == ("PRIMARY", "SECONDARY")
        assert primary.alias == AliasTarget(
            dns_name=alb_dns("us-east-1"), hosted_zone_id="ZUSEAST1", evaluate_target_health=False
        )
        assert primary.health_check_region == "us-east-1" and secondary.health_check_region == "us-west-2"
        regional = by_name[("prod-west.query.example.com", None)]
        assert regional.alias.dns_name == alb_dns("us-west-2") and regional.health_check_region is None

    def test_new_records_point_at_health_checks_still_to_be_created(self) -> None:
        t = topology()
        plan = plan_for(t, facts(t))
        primary = next(c for c in changes(plan, ResourceKind.RECORD) if c.spec.failover == "PRIMARY")
        assert diff(primary)["health_check_id"] == (None, "(new health check chalkdr-prod-us-east-1)")

    def test_replicator_goes_from_primary_to_secondary_in_the_target_region(self) -> None:
        t = topology()
        (rep,) = desired_state(t, facts(t)).replicators
        assert rep.name == "chalk-prod-east-to-west" and rep.region == "us-west-2"
        assert rep.source_cluster_arn == t.primary.msk_cluster_arn
        assert rep.target_cluster_arn == t.region("us-west-2").msk_cluster_arn
        assert rep.topics == ("chalk-online-writes", "chalk-persistence")
        assert rep.sync_consumer_group_offsets and rep.source_subnet_ids == ("subnet-us-east-1",)

    def test_aurora_global_cluster_is_built_from_the_primary_cluster(self) -> None:
        t = topology()
        d = desired_state(t, facts(t))
        assert d.global_cluster is not None
        assert (
            d.global_cluster.writer_cluster_arn == f"arn:aws:rds:us-east-1:{ACCOUNT}:cluster:chalk-meta-east"
        )
        (sec,) = d.secondary_clusters
        assert (sec.id, sec.region, sec.global_cluster_id, sec.engine) == (
            "chalk-meta-west",
            "us-west-2",
            "chalk-meta",
            "aurora-postgresql",
        )

    def test_alarms_are_prefixed_tagged_and_use_the_guards(self) -> None:
        t = topology()
        alarms = {a.name: a for a in desired_state(t, facts(t)).alarms}
        ddb = alarms["chalkdr-prod-dynamodb-chalk-online-store-us-east-1-to-us-west-2-replication-latency"]
        assert (ddb.region, ddb.namespace, ddb.metric_name) == (
            "us-east-1",
            "AWS/DynamoDB",
            "ReplicationLatency",
        )
        assert ddb.dimensions == {"TableName": "chalk-online-store", "ReceivingRegion": "us-west-2"}
        assert ddb.threshold == 5000
        lag = alarms["chalkdr-prod-msk-chalk-prod-east-to-west-message-lag"]
        assert (lag.region, lag.namespace, lag.dimensions) == (
            "us-west-2",
            "AWS/Kafka",
            {"ReplicatorName": "chalk-prod-east-to-west"},
        )
        aurora = alarms["chalkdr-prod-aurora-chalk-meta-west-replication-lag"]
        assert aurora.metric_name == "AuroraGlobalDBReplicationLag" and aurora.region == "us-west-2"
        assert all(a.name.startswith("chalkdr-prod-") and a.tags == MANAGED_TAGS for a in alarms.values())


class TestConverged:
    def test_a_converged_world_is_an_empty_plan(self) -> None:
        t = topology()
        plan = plan_for(t, converged(t))
        assert plan.errors == () and plan.warnings == ()
        assert plan.empty and plan.pending == []
        assert all(c.action is Action.NOOP for c in plan.changes)
        assert apply_stages(plan) == []
        assert all(c.ok for c in plan.checks)

    @pytest.mark.parametrize("mutate", [three_regions, weighted], ids=["three-regions", "weighted"])
    def test_other_shapes_converge_too(self, mutate: Any) -> None:
        t = topology(mutate)
        assert plan_for(t, converged(t)).empty


class TestDrift:
    def test_failure_threshold_edited_out_of_band_is_an_update(self) -> None:
        t = topology()
        obs = converged(t)
        hcs = tuple(
            h.model_copy(update={"failure_threshold": 7, "version": 2}) if h.id == "hc-us-east-1" else h
            for h in obs.route53.health_checks
        )
        plan = plan_for(t, with_route53(obs, health_checks=hcs))
        (change,) = plan.pending
        assert (change.kind, change.action, change.region) == (
            ResourceKind.HEALTH_CHECK,
            Action.UPDATE,
            "us-east-1",
        )
        assert diff(change) == {"failure_threshold": (7, 3)}
        assert (change.current_id, change.current_version) == ("hc-us-east-1", "2")

    def test_request_interval_change_replaces_checks_and_repoints_records(self) -> None:
        old = topology()
        obs = converged(old)

        def slower(d: dict[str, Any]) -> None:
            d["route53"]["health_check"]["request_interval"] = 30

        plan = plan_for(topology(slower), obs)
        hcs = changes(plan, ResourceKind.HEALTH_CHECK)
        assert {c.action for c in hcs} == {Action.REPLACE}
        east = next(c for c in hcs if c.region == "us-east-1")
        assert diff(east)["request_interval"] == (10, 30)
        assert east.stale_ids == ("hc-us-east-1",) and east.current_id is None
        records = [c for c in plan.pending if c.kind is ResourceKind.RECORD]
        assert {c.spec.failover for c in records} == {"PRIMARY", "SECONDARY"}
        primary = next(c for c in records if c.spec.failover == "PRIMARY")
        assert diff(primary)["health_check_id"] == (
            "hc-us-east-1",
            "(new health check chalkdr-prod-us-east-1)",
        )
        names = [s.name for s in apply_stages(plan)]
        assert names == ["route53-health-checks", "route53-records", "route53-health-check-cleanup"]

    def test_an_interrupted_replace_finishes_by_cleaning_up_the_old_check(self) -> None:
        old = topology()
        obs = converged(old)

        def slower(d: dict[str, Any]) -> None:
            d["route53"]["health_check"]["request_interval"] = 30

        new_t = topology(slower)
        new_ref = caller_reference("prod", "us-east-1", check_type="HTTPS", request_interval=30)
        east_old = next(h for h in obs.route53.health_checks if h.id == "hc-us-east-1")
        east_new = east_old.model_copy(
            update={"id": "hc-new", "caller_reference": new_ref, "request_interval": 30}
        )
        rest = tuple(h for h in obs.route53.health_checks if h.id != "hc-us-east-1")
        plan = plan_for(new_t, with_route53(obs, health_checks=(east_old, east_new, *rest)))
        east = next(c for c in changes(plan, ResourceKind.HEALTH_CHECK) if c.region == "us-east-1")
        assert east.action is Action.REPLACE and east.current_id == "hc-new"
        assert east.stale_ids == ("hc-us-east-1",)
        primary = next(c for c in changes(plan, ResourceKind.RECORD) if c.spec.failover == "PRIMARY")
        assert diff(primary)["health_check_id"] == ("hc-us-east-1", "hc-new")

    def test_deleted_replica_is_an_update_of_the_global_table(self) -> None:
        t = topology()
        obs = converged(t)
        east = obs.regions["us-east-1"]
        table = east.tables[0].model_copy(update={"replica_regions": (), "replica_status": {}})
        obs = with_region(obs, "us-east-1", tables=(table,))
        obs = with_region(obs, "us-west-2", tables=())
        (change,) = plan_for(t, obs).pending
        assert (change.kind, change.action, change.id) == (
            ResourceKind.GLOBAL_TABLE,
            Action.UPDATE,
            "chalk-online-store",
        )
        assert diff(change) == {"replica_regions": (["us-east-1"], ["us-east-1", "us-west-2"])}

    def test_a_replica_being_deleted_counts_as_missing(self) -> None:
        t = topology()
        obs = converged(t)
        table = (
            obs.regions["us-east-1"]
            .tables[0]
            .model_copy(update={"replica_status": {"us-west-2": "DELETING"}})
        )
        (change,) = plan_for(t, with_region(obs, "us-east-1", tables=(table,))).pending
        assert change.kind is ResourceKind.GLOBAL_TABLE

    def test_repointed_record_is_an_update(self) -> None:
        t = topology()
        obs = converged(t)
        records = tuple(
            r.model_copy(update={"alias": AliasTarget(dns_name="evil.example.net.", hosted_zone_id="ZEVIL")})
            if r.failover == "PRIMARY"
            else r
            for r in obs.route53.records
        )
        (change,) = plan_for(t, with_route53(obs, records=records)).pending
        assert (change.kind, change.action) == (ResourceKind.RECORD, Action.UPDATE)
        assert diff(change)["alias_target"] == ("evil.example.net", alb_dns("us-east-1"))
        assert diff(change)["alias_zone"] == ("ZEVIL", "ZUSEAST1")

    def test_dualstack_prefix_and_case_are_not_drift(self) -> None:
        t = topology()
        obs = converged(t)
        records = tuple(
            r.model_copy(
                update={
                    "alias": AliasTarget(
                        dns_name="dualstack." + r.alias.dns_name.upper(),
                        hosted_zone_id=r.alias.hosted_zone_id,
                    )
                }
            )
            if r.alias
            else r
            for r in obs.route53.records
        )
        assert plan_for(t, with_route53(obs, records=records)).empty

    def test_alarm_threshold_drift_and_topic_change(self) -> None:
        t = topology()
        obs = converged(t)
        west = obs.regions["us-west-2"]
        alarms = tuple(
            a.model_copy(update={"threshold": 1.0}) if a.metric_name == "MessageLag" else a
            for a in west.alarms
        )
        obs = with_region(obs, "us-west-2", alarms=alarms)

        def more_topics(d: dict[str, Any]) -> None:
            d["msk"]["topics"].append("chalk-audit")

        plan = plan_for(topology(more_topics), obs)
        by_kind = {c.kind: c for c in plan.pending}
        assert diff(by_kind[ResourceKind.ALARM]) == {"threshold": (1.0, 10000.0)}
        rep = by_kind[ResourceKind.REPLICATOR]
        assert rep.action is Action.UPDATE and rep.current_version == "V1"
        assert diff(rep)["topics"][1] == ["chalk-audit", "chalk-online-writes", "chalk-persistence"]

    def test_replicator_pointing_at_another_cluster_is_replaced(self) -> None:
        t = topology()
        obs = converged(t)
        west = obs.regions["us-west-2"]
        reps = tuple(r.model_copy(update={"source_cluster_arn": "arn:aws:kafka:x"}) for r in west.replicators)
        (change,) = plan_for(t, with_region(obs, "us-west-2", replicators=reps)).pending
        assert change.action is Action.REPLACE and "source_cluster_arn" in diff(change)

    def test_tags_removed_from_a_health_check_are_restored(self) -> None:
        t = topology()
        obs = converged(t)
        hcs = tuple(h.model_copy(update={"tags": {}}) for h in obs.route53.health_checks)
        plan = plan_for(t, with_route53(obs, health_checks=hcs))
        assert {c.action for c in plan.pending} == {Action.UPDATE}
        assert all(set(diff(c)) == {"tags"} for c in plan.pending)

    def test_a_disabled_or_inverted_check_is_drift(self) -> None:
        t = topology()
        obs = converged(t)
        hcs = tuple(
            h.model_copy(update={"disabled": True, "inverted": True}) for h in obs.route53.health_checks
        )
        plan = plan_for(t, with_route53(obs, health_checks=hcs))
        assert all(diff(c) == {"inverted": (True, False), "disabled": (True, False)} for c in plan.pending)


class TestActiveActive:
    def test_weighted_routing_gives_weighted_records(self) -> None:
        t = topology(weighted)
        records = [r for r in desired_state(t, facts(t)).records if r.name == "chalk-failover.example.com"]
        assert {(r.set_identifier, r.weight, r.failover) for r in records} == {
            ("prod-us-east-1", 100, None),
            ("prod-us-west-2", 50, None),
        }
        assert all(r.health_check_region == r.region for r in records)

    def test_latency_routing_gives_latency_records(self) -> None:
        def latency(d: dict[str, Any]) -> None:
            d["routing"] = "latency"

        t = topology(latency)
        records = [r for r in desired_state(t, facts(t)).records if r.set_identifier]
        assert {(r.latency_region, r.region) for r in records} == {
            ("us-east-1", "us-east-1"),
            ("us-west-2", "us-west-2"),
        }

    def test_switching_failover_to_weighted_replaces_the_records(self) -> None:
        obs = converged(topology())
        plan = plan_for(topology(weighted), obs)
        (primary_change, secondary_change) = [c for c in plan.pending if c.kind is ResourceKind.RECORD]
        assert {primary_change.action, secondary_change.action} == {Action.REPLACE}
        assert (
            primary_change.replaces_record is not None
            and primary_change.replaces_record.failover == "PRIMARY"
        )
        assert diff(primary_change)["failover"] == ("PRIMARY", None)
        assert diff(primary_change)["weighted"] == (None, 100)

    def test_three_regions_in_failover_mode_warn_that_only_one_is_secondary(self) -> None:
        t = topology(three_regions)
        plan = plan_for(t, facts(t))
        assert any("eu-west-1 not reachable through chalk-failover.example.com" in w for w in plan.warnings)
        reps = {c.spec.name for c in changes(plan, ResourceKind.REPLICATOR)}
        assert reps == {"chalk-prod-east-to-west-us-west-2", "chalk-prod-east-to-west-eu-west-1"}


class TestErrors:
    def test_missing_alb_hosted_zone_and_table_are_errors(self) -> None:
        t = topology()
        obs = with_region(facts(t), "us-west-2", alb=None)
        obs = with_region(obs, "us-east-1", tables=())
        obs = with_route53(obs, zone_name=None)
        plan = plan_for(t, obs)
        text = "\n".join(plan.errors)
        assert (
            "us-west-2: ALB 'chalk-prod-west' not found (elasticloadbalancing:DescribeLoadBalancers)" in text
        )
        assert "hosted zone Z0123456789ABCDEFGHIJ not found" in text
        assert "DynamoDB table chalk-online-store not found (dynamodb:DescribeTable)" in text

    def test_names_outside_the_hosted_zone_are_errors(self) -> None:
        t = topology()
        plan = plan_for(t, with_route53(facts(t), zone_name="other.org."))
        assert any("not within hosted zone other.org" in e for e in plan.errors)

    def test_a_standalone_table_in_a_secondary_region_blocks_the_replica(self) -> None:
        t = topology()
        standalone = ObservedTable(
            table="chalk-online-store", region="us-west-2", status="ACTIVE", arn="arn:x"
        )
        plan = plan_for(t, with_region(facts(t), "us-west-2", tables=(standalone,)))
        assert any("exists there as a separate table" in e for e in plan.errors)

    def test_an_existing_standalone_secondary_cluster_cannot_be_attached(self) -> None:
        t = topology()
        obs = converged(t)
        west = obs.regions["us-west-2"]
        assert west.db_cluster is not None
        gc = obs.global_cluster
        assert gc is not None
        members = {arn: w for arn, w in gc.members.items() if arn != west.db_cluster.arn}
        obs = obs.model_copy(update={"global_cluster": gc.model_copy(update={"members": members})})
        plan = plan_for(t, obs)
        assert any("cannot attach an existing cluster" in e and "chalk-meta-west" in e for e in plan.errors)

    def test_primary_cluster_in_another_global_cluster(self) -> None:
        t = topology()
        obs = facts(t)
        db = obs.regions["us-east-1"].db_cluster
        assert db is not None
        plan = plan_for(
            t, with_region(obs, "us-east-1", db_cluster=db.model_copy(update={"global_cluster_id": "x"}))
        )
        assert any("already belongs to global cluster x" in e for e in plan.errors)

    def test_global_cluster_without_the_primary(self) -> None:
        t = topology()
        obs = facts(t).model_copy(
            update={
                "global_cluster": ObservedGlobalCluster(
                    id="chalk-meta", arn="arn:gc", status="available", members={}
                )
            }
        )
        plan = plan_for(t, obs)
        assert any("exists without chalk-meta-east" in e for e in plan.errors)

    def test_msk_cluster_not_active_and_missing_primary_aurora(self) -> None:
        t = topology()
        obs = facts(t)
        cluster = obs.regions["us-west-2"].msk_cluster
        assert cluster is not None
        obs = with_region(obs, "us-west-2", msk_cluster=cluster.model_copy(update={"state": "CREATING"}))
        obs = with_region(obs, "us-east-1", db_cluster=None)
        plan = plan_for(t, obs)
        assert any("is CREATING; a replicator needs ACTIVE clusters" in e for e in plan.errors)
        assert any("Aurora cluster chalk-meta-east not found" in e for e in plan.errors)
        assert changes(plan, ResourceKind.REPLICATOR) == []


class TestWarnings:
    def test_writer_moved_by_a_failover_is_reported_not_changed(self) -> None:
        t = topology()
        obs = converged(t)
        gc = obs.global_cluster
        assert gc is not None
        flipped = {arn: not w for arn, w in gc.members.items()}
        plan = plan_for(
            t, obs.model_copy(update={"global_cluster": gc.model_copy(update={"members": flipped})})
        )
        assert plan.empty
        assert any("provision does not move the writer" in w for w in plan.warnings)

    def test_unknown_records_and_alarms_are_left_alone_with_a_warning(self) -> None:
        t = topology()
        obs = converged(t)
        stray = ObservedRecord(
            name="chalk-failover.example.com.", type="A", set_identifier="legacy", weight=1
        )
        obs = with_route53(obs, records=(*obs.route53.records, stray))
        old_alarm = ObservedAlarm(name="chalkdr-prod-old", region="us-east-1")
        obs = with_region(obs, "us-east-1", alarms=(*obs.regions["us-east-1"].alarms, old_alarm))
        plan = plan_for(t, obs)
        assert plan.empty
        assert any("SetIdentifier legacy" in w for w in plan.warnings)
        assert any("chalkdr-prod-old is no longer in the topology" in w for w in plan.warnings)


class TestEksChecks:
    def test_unready_deployments_and_inactive_clusters_fail_the_check(self) -> None:
        t = topology()
        obs = facts(t)
        west = obs.regions["us-west-2"].eks
        assert west is not None
        obs = with_region(
            obs,
            "us-west-2",
            eks=west.model_copy(
                update={
                    "status": "UPDATING",
                    "deployments": (
                        ObservedDeployment(
                            name="chalk-query-server", found=True, replicas=2, ready_replicas=1
                        ),
                        ObservedDeployment(name="chalk-persistence-worker", found=False),
                    ),
                }
            ),
        )
        checks = {c.region: c for c in plan_for(t, obs).checks}
        assert checks["us-east-1"].ok and "chalk-query-server 2/2 ready" in checks["us-east-1"].detail
        west_check = checks["us-west-2"]
        assert not west_check.ok
        assert west_check.detail == (
            "cluster UPDATING; chalk-query-server 1/2 ready; chalk/chalk-persistence-worker not found"
        )

    def test_a_passive_deployment_scaled_to_zero_is_ready(self) -> None:
        t = topology()
        obs = facts(t)
        west = obs.regions["us-west-2"].eks
        assert west is not None
        deps = (
            west.deployments[0],
            ObservedDeployment(name="chalk-persistence-worker", found=True, replicas=0, ready_replicas=0),
        )
        obs = with_region(obs, "us-west-2", eks=west.model_copy(update={"deployments": deps}))
        assert all(c.ok for c in plan_for(t, obs).checks)


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

    def test_checks_of_another_environment_are_not_ours(self) -> None:
        t = topology()
        other = ObservedHealthCheck(
            id="hc-other",
            caller_reference=caller_reference(
                "prod-eu", "us-east-1", check_type="HTTPS", request_interval=10
            ),
            version=1,
            type="HTTPS",
            request_interval=10,
        )
        plan = plan_for(t, with_route53(facts(t), health_checks=(other,)))
        assert {c.action for c in changes(plan, ResourceKind.HEALTH_CHECK)} == {Action.CREATE}


class TestRendering:
    def test_markdown_shows_counts_diffs_slo_and_eks(self) -> None:
        t = topology()
        obs = converged(t)
        hcs = tuple(h.model_copy(update={"failure_threshold": 7}) for h in obs.route53.health_checks)
        text = render_plan_markdown(plan_for(t, with_route53(obs, health_checks=hcs)))
        assert text.startswith("# Provision plan: prod (failover routing)")
        assert "**0 to create, 2 to update, 0 to replace" in text
        assert "failure_threshold: 7 → 3" in text
        assert "Expected failover time: 10 s x 3 + 60 s TTL = 90 s (RTO SLO 120 s)" in text
        assert "## EKS (verified, never changed)" in text and "| chalk-prod-east | us-east-1 | yes |" in text

    def test_markdown_warns_when_the_slo_cannot_be_met(self) -> None:
        def slow(d: dict[str, Any]) -> None:
            d["slo"]["rto_seconds"] = 60

        t = topology(slow)
        text = render_plan_markdown(plan_for(t, converged(t)))
        assert "> **SLO warning:**" in text and "None: AWS already matches the topology." in text

    def test_table_rows_list_every_resource(self) -> None:
        t = topology()
        plan = plan_for(t, facts(t))
        rows = plan_table_rows(plan)
        assert len(rows) == len(plan.changes)
        assert set(rows[0]) == {"action", "kind", "resource", "region", "diff"}
        assert any(r["kind"] == "route53-health-check" and r["action"] == "create" for r in rows)

    def test_summary_names_counts_and_failover_time(self) -> None:
        t = topology()
        s = plan_for(t, facts(t)).summary()
        assert s.startswith("prod: 14 to create, 1 to update, 0 to replace, 0 unchanged")
        assert "expected failover 10 s x 3 + 60 s TTL = 90 s" in s

    def test_plan_round_trips_as_json(self) -> None:
        t = topology()
        plan = plan_for(t, facts(t))
        again = Plan.model_validate_json(plan.model_dump_json())
        assert again == plan
        assert isinstance(
            DesiredState.model_validate_json(desired_state(t, facts(t)).model_dump_json()), DesiredState
        )


class TestStages:
    def test_fresh_world_stages_in_dependency_order(self) -> None:
        t = topology()
        stages = apply_stages(plan_for(t, facts(t)))
        assert [s.name for s in stages] == [
            "route53-health-checks",
            "route53-records",
            "dynamodb-replicas",
            "msk-replicators",
            "aurora-global-cluster",
            "aurora-secondaries",
            "cloudwatch-alarms",
        ]
        assert [s.concurrent for s in stages] == [False, False, True, True, False, True, True]


def test_wait_policy_polls_until_done_and_times_out_naming_what_it_saw() -> None:
    from chalkdr.plan import WaitPolicy

    fast = WaitPolicy(time_scale=1000.0, timeout_s=50.0, first_poll_s=1.0, poll_s=10.0)
    seen = iter(["CREATING", "CREATING", "RUNNING"])
    assert fast.poll(lambda: next(seen), lambda s: s == "RUNNING", lambda s: f"x still {s}") == "RUNNING"
    with pytest.raises(TimeoutError, match=r"^x still CREATING after 50 s$"):
        fast.poll(lambda: "CREATING", lambda s: s == "RUNNING", lambda s: f"x still {s}")
