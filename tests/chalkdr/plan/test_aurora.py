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
        obs = w.facts(t)
        clusters = dict(obs.aurora.clusters)
        clusters["us-east-1"] = clusters["us-east-1"].model_copy(update={"global_cluster_id": "x"})
        plan = plan_for(t, w.updated(obs, "aurora", clusters=clusters))
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
