"""MSK in the plan: a replicator per secondary, in the target region; immutable fields replace it."""

from __future__ import annotations

from typing import Any

import pytest

from chalkdr.plan import Action
from chalkdr.plan import ReplicatorSpec
from chalkdr.plan import ResourceKind
from chalkdr.plan import desired_state
from chalkdr.plan import plan_for
from chalkdr.plan.msk import REPLICATOR_POLICY_ACTIONS
from chalkdr.plan.msk import policy_missing_actions


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
        obs = w.changed(w.converged(t), "msk", "replicators", source_cluster_arn="arn:aws:kafka:x")
        (change,) = plan_for(t, obs).pending
        assert change.action is Action.REPLACE
        assert w.diff(change) == {
            "source_cluster_arn": ("arn:aws:kafka:x", t.primary.msk_cluster_arn),
            "starting_position": (None, "LATEST"),  # never a silent replay from EARLIEST
        }

    def test_a_failed_replicator_is_reported(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.changed(w.converged(t), "msk", "replicators", state="FAILED"))
        assert plan.warnings == (
            "us-west-2: MSK replicator chalk-prod-east-to-west is FAILED; see its StateInfo",
        )


class TestErrors:
    def test_a_cluster_that_is_not_active_blocks_its_replicator(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.changed(w.facts(t), "msk", "clusters", "us-west-2", state="CREATING"))
        assert any("is CREATING; a replicator needs ACTIVE clusters" in e for e in plan.errors)
        assert w.of_kind(plan, ResourceKind.REPLICATOR) == []


class TestReplicatorPrerequisites:
    """What MSK Replicator needs (MSK Developer Guide, msk-replicator-prepare-cluster): IAM
    access control and at least three brokers on both clusters; for a cross-region replicator,
    multi-VPC private connectivity with IAM on the source and a cluster policy letting
    kafka.amazonaws.com call CreateVpcConnection, GetBootstrapBrokers and DescribeClusterV2.
    Otherwise AWS accepts the create and the replicator ends FAILED later; the plan says so first."""

    def _plan(self, w: Any, region: str, **fields: Any) -> Any:
        t = w.topology()
        return plan_for(t, w.changed(w.facts(t), "msk", "clusters", region, **fields))

    def test_a_prepared_pair_plans_a_replicator(self, w: Any) -> None:
        plan = self._plan(w, "us-east-1")
        assert plan.errors == () and len(w.of_kind(plan, ResourceKind.REPLICATOR)) == 1

    @pytest.mark.parametrize(
        ("region", "fields", "reason"),
        [
            ("us-east-1", {"iam_enabled": False}, "source MSK cluster"),
            ("us-west-2", {"iam_enabled": False}, "target MSK cluster"),
            ("us-west-2", {"brokers": 2}, "has 2 brokers; a replicator needs at least 3"),
            ("us-east-1", {"vpc_iam_enabled": False}, "multi-VPC private connectivity with IAM off"),
            ("us-east-1", {"policy": None}, "no cluster policy allowing kafka.amazonaws.com"),
        ],
        ids=["source iam", "target iam", "brokers", "multi-vpc", "policy"],
    )
    def test_a_missing_prerequisite_blocks_the_replicator(
        self, w: Any, region: str, fields: dict[str, Any], reason: str
    ) -> None:
        plan = self._plan(w, region, **fields)
        assert w.of_kind(plan, ResourceKind.REPLICATOR) == []
        (error,) = plan.errors
        assert error.startswith("us-west-2: replicator chalk-prod-east-to-west: ") and reason in error

    def test_the_target_needs_no_policy_or_multi_vpc(self, w: Any) -> None:
        plan = self._plan(w, "us-west-2", policy=None, vpc_iam_enabled=False)
        assert plan.errors == ()


class TestClusterPolicy:
    def test_missing_actions_are_named(self, w: Any) -> None:
        assert policy_missing_actions(w.REPLICATOR_POLICY) == []
        partial = w.REPLICATOR_POLICY.replace('"kafka:GetBootstrapBrokers", ', "")
        assert policy_missing_actions(partial) == ["kafka:GetBootstrapBrokers"]
        assert policy_missing_actions(None) == list(REPLICATOR_POLICY_ACTIONS)
        assert policy_missing_actions("{not json") == list(REPLICATOR_POLICY_ACTIONS)

    def test_another_principal_or_a_deny_does_not_count(self, w: Any) -> None:
        other = w.REPLICATOR_POLICY.replace("kafka.amazonaws.com", "ec2.amazonaws.com")
        deny = w.REPLICATOR_POLICY.replace('"Allow"', '"Deny"')
        assert (
            policy_missing_actions(other) == policy_missing_actions(deny) == list(REPLICATOR_POLICY_ACTIONS)
        )

    def test_a_wildcard_allows_everything(self) -> None:
        doc = (
            '{"Statement": {"Effect": "Allow", "Principal": {"Service": "kafka.amazonaws.com"}, '
            '"Action": "kafka:*"}}'
        )
        assert policy_missing_actions(doc) == []


def test_a_policy_for_another_cluster_does_not_count(w: Any) -> None:
    mine = "arn:aws:kafka:us-east-1:123456789012:cluster/chalk-prod-east/abc-1"
    other = w.REPLICATOR_POLICY.replace(
        '"Resource": "*"', '"Resource": "arn:aws:kafka:us-east-1:123456789012:cluster/x/*"'
    )
    assert policy_missing_actions(other, mine) == list(REPLICATOR_POLICY_ACTIONS)
    named = w.REPLICATOR_POLICY.replace(
        '"Resource": "*"', '"Resource": ["arn:aws:kafka:*:*:cluster/chalk-prod-east/*"]'
    )
    assert policy_missing_actions(named, mine) == []
