"""Aurora in the plan: the global cluster from the primary's cluster, a new secondary per region."""

from __future__ import annotations

from typing import Any

from chalkdr.plan import Action
from chalkdr.plan import GlobalClusterSpec
from chalkdr.plan import ObservedGlobalCluster
from chalkdr.plan import ResourceKind
from chalkdr.plan import SecondaryClusterSpec
from chalkdr.plan import desired_state
from chalkdr.plan import plan_for


class TestDesired:
    def test_aurora_global_cluster_is_built_from_the_primary_cluster(self, w: Any) -> None:
        t = w.topology()
        d = desired_state(t, w.facts(t))
        (gc,) = d.of(GlobalClusterSpec)
        assert gc.writer_cluster_arn == f"arn:aws:rds:us-east-1:{w.ACCOUNT}:cluster:chalk-meta-east"
        (sec,) = d.of(SecondaryClusterSpec)
        assert (sec.id, sec.region, sec.global_cluster_id, sec.engine) == (
            "chalk-meta-west",
            "us-west-2",
            "chalk-meta",
            "aurora-postgresql",
        )


def _members(w: Any, obs: Any, members: dict[str, bool]) -> Any:
    gc = obs.aurora.global_cluster
    return w.updated(obs, "aurora", global_cluster=gc.model_copy(update={"members": members}))


class TestErrors:
    def test_an_existing_standalone_secondary_cluster_cannot_be_attached(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        west = obs.aurora.clusters["us-west-2"]
        members = {arn: x for arn, x in obs.aurora.global_cluster.members.items() if arn != west.arn}
        plan = plan_for(t, _members(w, obs, members))
        assert any("cannot attach an existing cluster" in e and "chalk-meta-west" in e for e in plan.errors)

    def test_primary_cluster_in_another_global_cluster(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.changed(w.facts(t), "aurora", "clusters", "us-east-1", global_cluster_id="x"))
        assert any("already belongs to global cluster x" in e for e in plan.errors)
        assert w.of_kind(plan, ResourceKind.SECONDARY_CLUSTER) == []

    def test_global_cluster_without_the_primary(self, w: Any) -> None:
        t = w.topology()
        gc = ObservedGlobalCluster(id="chalk-meta", arn="arn:gc", status="available", members={})
        plan = plan_for(t, w.updated(w.facts(t), "aurora", global_cluster=gc))
        assert any("exists without chalk-meta-east" in e for e in plan.errors)

    def test_missing_primary_cluster(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.updated(w.facts(t), "aurora", clusters={}))
        assert any("us-east-1: Aurora cluster chalk-meta-east not found" in e for e in plan.errors)


class TestWarnings:
    def test_writer_moved_by_a_failover_is_reported_not_changed(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        flipped = {arn: not x for arn, x in obs.aurora.global_cluster.members.items()}
        plan = plan_for(t, _members(w, obs, flipped))
        assert plan.empty
        (warning,) = plan.warnings
        assert "(a cluster of this topology)" in warning and "provision does not move the writer" in warning
        assert {c.action for c in w.of_kind(plan, ResourceKind.GLOBAL_CLUSTER)} == {Action.NOOP}


class TestSecondaryPrerequisites:
    """A secondary of an encrypted global database needs a KMS key of its region, a DB subnet
    group and security groups in its VPC (CreateDBCluster, Aurora User Guide "Adding an AWS
    Region to an Aurora global database"), and an instance to serve or be promoted."""

    def test_the_secondary_carries_its_placement_key_and_instance(self, w: Any) -> None:
        t = w.topology()
        (spec,) = desired_state(t, w.facts(t)).of(SecondaryClusterSpec)
        west = t.region("us-west-2").aurora
        assert (spec.subnet_group, spec.security_group_ids) == (
            west.subnet_group,
            tuple(west.security_group_ids),
        )
        assert (spec.kms_key_id, spec.instance_class) == (west.kms_key_id, "db.r6g.large")
        (change,) = w.of_kind(plan_for(t, w.facts(t)), ResourceKind.SECONDARY_CLUSTER)
        assert w.diff(change)["instances"] == (None, "chalk-meta-west-1 (db.r6g.large)")

    def test_missing_placement_is_an_error_naming_the_fields(self, w: Any) -> None:
        t = w.topology(lambda d: d["regions"][1].pop("aurora"))
        plan = plan_for(t, w.facts(t))
        (error,) = plan.errors
        assert error.startswith(
            "us-west-2: the Aurora secondary chalk-meta-west needs regions[1].aurora.subnet_group"
        )
        assert "regions[1].aurora.kms_key_id" in error and "kmsKeyId should be explicitly specified" in error
        assert w.of_kind(plan, ResourceKind.SECONDARY_CLUSTER) == []

    def test_an_unencrypted_global_database_needs_no_key(self, w: Any) -> None:
        t = w.topology(lambda d: d["regions"][1]["aurora"].pop("kms_key_id"))
        obs = w.facts(t)
        clusters = dict(obs.aurora.clusters)
        clusters["us-east-1"] = clusters["us-east-1"].model_copy(update={"storage_encrypted": False})
        plan = plan_for(t, w.updated(obs, "aurora", clusters=clusters))
        assert plan.errors == ()
        (spec,) = desired_state(t, w.updated(obs, "aurora", clusters=clusters)).of(SecondaryClusterSpec)
        assert spec.kms_key_id is None

    def test_a_headless_secondary_gets_its_instance(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        clusters = dict(obs.aurora.clusters)
        clusters["us-west-2"] = clusters["us-west-2"].model_copy(update={"instances": 0})
        (change,) = plan_for(t, w.updated(obs, "aurora", clusters=clusters)).pending
        assert change.action is Action.UPDATE and change.region == "us-west-2"
        assert w.diff(change) == {"instances": (0, "chalk-meta-west-1 (db.r6g.large)")}
