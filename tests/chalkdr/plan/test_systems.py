"""The whole plan: a fresh world creates everything, a converged one is empty, the stages form a graph."""

from __future__ import annotations

from typing import Any

import pytest

from chalkdr.plan import Action
from chalkdr.plan import DesiredState
from chalkdr.plan import Plan
from chalkdr.plan import ResourceKind
from chalkdr.plan import apply_stages
from chalkdr.plan import desired_state
from chalkdr.plan import plan_for
from chalkdr.plan.core import normalize_dns
from chalkdr.plan.route53 import HealthCheckSpec
from chalkdr.plan.route53 import RecordSpec


class TestFreshWorld:
    def test_everything_is_created_in_a_world_with_only_chalks_own_resources(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.facts(t))
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
        assert len(w.of_kind(plan, ResourceKind.HEALTH_CHECK)) == 2
        # PRIMARY, SECONDARY, two regional names, and the ownership TXT record of each of the three names
        assert len(w.of_kind(plan, ResourceKind.RECORD)) == 7
        # 2 DynamoDB directions + MSK latency and lag + the Aurora secondary's lag
        assert len(w.of_kind(plan, ResourceKind.ALARM)) == 5

    def test_summary_names_counts_and_failover_time(self, w: Any) -> None:
        t = w.topology()
        s = plan_for(t, w.facts(t)).summary()
        assert s.startswith("prod: 17 to create, 1 to update, 0 to replace, 0 unchanged")
        assert "expected failover 10 s x 3 + 60 s TTL = 90 s" in s


class TestConverged:
    def test_a_converged_world_is_an_empty_plan(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.converged(t))
        assert plan.errors == () and plan.warnings == ()
        assert plan.empty and plan.pending == []
        assert len(plan.changes) == 18
        assert {c.action for c in plan.changes} == {Action.NOOP}
        assert apply_stages(plan) == []
        assert len(plan.checks) == 2 and {c.ok for c in plan.checks} == {True}

    @pytest.mark.parametrize("shape", ["three_regions", "weighted", "latency"])
    def test_other_shapes_converge_too(self, w: Any, shape: str) -> None:
        t = w.topology(getattr(w, shape))
        plan = plan_for(t, w.converged(t))
        assert plan.errors == ()
        assert plan.empty, [c.id for c in plan.pending]


class TestStageGraph:
    def test_fresh_world_stages_declare_only_the_real_orders(self, w: Any) -> None:
        t = w.topology()
        stages = apply_stages(plan_for(t, w.facts(t)))
        assert [(s.name, s.depends_on, s.concurrent) for s in stages] == [
            ("route53-regional-records", (), False),
            ("route53-health-checks", ("route53-regional-records",), False),
            ("route53-records", ("route53-health-checks",), False),
            ("dynamodb-replicas", (), True),
            ("msk-replicators", (), True),
            ("aurora-global-cluster", (), False),
            ("aurora-secondaries", ("aurora-global-cluster",), True),
            ("cloudwatch-alarms", ("aurora-secondaries", "dynamodb-replicas", "msk-replicators"), True),
        ]

    def test_the_names_health_checks_probe_are_written_before_the_checks(self, w: Any) -> None:
        """A check resolves its FullyQualifiedDomainName at every request: created before the name
        exists it fails from the start and may turn unhealthy before the records follow."""
        t = w.topology()
        stages = {s.name: s for s in apply_stages(plan_for(t, w.facts(t)))}
        probed = {
            normalize_dns(c.typed_spec(HealthCheckSpec).fqdn) for c in stages["route53-health-checks"].changes
        }
        names = {normalize_dns(r.query_hostname) for r in t.regions}
        assert probed == names
        regional = [c.typed_spec(RecordSpec) for c in stages["route53-regional-records"].changes]
        # each regional name, and its ownership TXT record (written in the same batch)
        assert sorted((r.batch_name, r.type) for r in regional) == sorted(
            (n, kind) for n in names for kind in ("A", "TXT")
        )
        later = [c.typed_spec(RecordSpec) for c in stages["route53-records"].changes]
        assert {r.batch_name for r in later} == {normalize_dns(t.route53.failover_record)}
        assert stages["route53-health-checks"].depends_on == ("route53-regional-records",)

    def test_an_empty_stage_passes_its_dependencies_through(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        alarms = {r: () for r in obs.alarms.alarms}
        tables = dict(obs.dynamodb.tables)
        tables["us-west-2"] = ()
        table = tables["us-east-1"][0].model_copy(update={"replica_regions": (), "replica_status": {}})
        tables["us-east-1"] = (table,)
        obs = w.updated(w.updated(obs, "alarms", alarms=alarms), "dynamodb", tables=tables)
        stages = {s.name: s for s in apply_stages(plan_for(t, obs))}
        assert set(stages) == {"dynamodb-replicas", "cloudwatch-alarms"}
        # msk-replicators and aurora-secondaries have nothing to do: only the real dependency remains
        assert stages["cloudwatch-alarms"].depends_on == ("dynamodb-replicas",)


class TestRoundTrip:
    def test_plan_and_desired_state_round_trip_as_json(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.facts(t))
        assert Plan.model_validate_json(plan.model_dump_json()) == plan
        desired = desired_state(t, w.facts(t))
        again = DesiredState.model_validate_json(desired.model_dump_json())
        assert again == desired
        assert [type(s) for s in again.specs] == [type(s) for s in desired.specs]
