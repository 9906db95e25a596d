"""MSK in the plan: a replicator per secondary, in the target region; immutable fields replace it."""

from __future__ import annotations

from typing import Any

from chalkdr.plan import Action
from chalkdr.plan import ReplicatorSpec
from chalkdr.plan import ResourceKind
from chalkdr.plan import desired_state
from chalkdr.plan import plan_for


class TestDesired:
    def test_replicator_goes_from_primary_to_secondary_in_the_target_region(self, w: Any) -> None:
        t = w.topology()
        (rep,) = desired_state(t, w.facts(t)).of(ReplicatorSpec)
        assert rep.name == "chalk-prod-east-to-west" and rep.region == "us-west-2"
        assert rep.source.arn == t.primary.msk_cluster_arn
        assert rep.target.arn == t.region("us-west-2").msk_cluster_arn
        assert rep.topics == ("chalk-online-writes", "chalk-persistence")
        assert rep.sync_consumer_group_offsets and rep.source.subnet_ids == ("subnet-us-east-1",)

    def test_several_secondaries_get_one_replicator_each_named_by_target(self, w: Any) -> None:
        t = w.topology(w.three_regions)
        reps = w.of_kind(plan_for(t, w.facts(t)), ResourceKind.REPLICATOR)
        assert sorted((c.spec.name, c.region) for c in reps) == [
            ("chalk-prod-east-to-west-eu-west-1", "eu-west-1"),
            ("chalk-prod-east-to-west-us-west-2", "us-west-2"),
        ]


class TestDrift:
    def test_a_new_topic_updates_the_replicator_in_place(self, w: Any) -> None:
        def more_topics(d: dict[str, Any]) -> None:
            d["msk"]["topics"].append("chalk-audit")

        obs = w.converged(w.topology())
        (rep,) = plan_for(w.topology(more_topics), obs).pending
        assert (rep.kind, rep.action, rep.current_version) == (ResourceKind.REPLICATOR, Action.UPDATE, "V1")
        assert w.diff(rep) == {
            "topics": (
                ["chalk-online-writes", "chalk-persistence"],
                ["chalk-audit", "chalk-online-writes", "chalk-persistence"],
            )
        }

    def test_replicator_pointing_at_another_cluster_is_replaced(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        reps = {
            r: tuple(x.model_copy(update={"source_cluster_arn": "arn:aws:kafka:x"}) for x in v)
            for r, v in obs.msk.replicators.items()
        }
        (change,) = plan_for(t, w.updated(obs, "msk", replicators=reps)).pending
        assert change.action is Action.REPLACE
        assert w.diff(change) == {"source_cluster_arn": ("arn:aws:kafka:x", t.primary.msk_cluster_arn)}

    def test_a_failed_replicator_is_reported(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        reps = {
            r: tuple(x.model_copy(update={"state": "FAILED"}) for x in v)
            for r, v in obs.msk.replicators.items()
        }
        plan = plan_for(t, w.updated(obs, "msk", replicators=reps))
        assert plan.warnings == (
            "us-west-2: MSK replicator chalk-prod-east-to-west is FAILED; see its StateInfo",
        )


class TestErrors:
    def test_a_cluster_that_is_not_active_blocks_its_replicator(self, w: Any) -> None:
        t = w.topology()
        obs = w.facts(t)
        clusters = dict(obs.msk.clusters)
        clusters["us-west-2"] = clusters["us-west-2"].model_copy(update={"state": "CREATING"})
        plan = plan_for(t, w.updated(obs, "msk", clusters=clusters))
        assert any("is CREATING; a replicator needs ACTIVE clusters" in e for e in plan.errors)
        assert w.of_kind(plan, ResourceKind.REPLICATOR) == []
