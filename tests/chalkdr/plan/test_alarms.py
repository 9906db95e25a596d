"""CloudWatch in the plan: lag alarms per replication path, at the guards, ours by prefix."""

from __future__ import annotations

from typing import Any

from chalkdr.plan import AlarmSpec
from chalkdr.plan import ObservedAlarm
from chalkdr.plan import desired_state
from chalkdr.plan import plan_for


class TestDesired:
    def test_alarms_are_prefixed_tagged_and_use_the_guards(self, w: Any) -> None:
        t = w.topology()
        alarms = {a.name: a for a in desired_state(t, w.facts(t)).of(AlarmSpec)}
        assert sorted(alarms) == [
            "chalkdr-prod-aurora-chalk-meta-west-replication-lag",
            "chalkdr-prod-dynamodb-chalk-online-store-us-east-1-to-us-west-2-replication-latency",
            "chalkdr-prod-dynamodb-chalk-online-store-us-west-2-to-us-east-1-replication-latency",
            "chalkdr-prod-msk-chalk-prod-east-to-west-message-lag",
            "chalkdr-prod-msk-chalk-prod-east-to-west-replication-latency",
        ]
        ddb = alarms["chalkdr-prod-dynamodb-chalk-online-store-us-east-1-to-us-west-2-replication-latency"]
        assert (ddb.region, ddb.namespace, ddb.metric_name, ddb.threshold) == (
            "us-east-1",
            "AWS/DynamoDB",
            "ReplicationLatency",
            5000,
        )
        assert ddb.dimensions == {"TableName": "chalk-online-store", "ReceivingRegion": "us-west-2"}
        lag = alarms["chalkdr-prod-msk-chalk-prod-east-to-west-message-lag"]
        assert (lag.region, lag.namespace, lag.dimensions) == (
            "us-west-2",
            "AWS/Kafka",
            {"ReplicatorName": "chalk-prod-east-to-west"},
        )
        aurora = alarms["chalkdr-prod-aurora-chalk-meta-west-replication-lag"]
        assert (aurora.metric_name, aurora.region) == ("AuroraGlobalDBReplicationLag", "us-west-2")
        assert {a.tags == w.OURS for a in alarms.values()} == {True}


class TestDrift:
    def test_threshold_drift_is_an_update_back_to_the_guard(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        alarms = {
            r: tuple(
                a.model_copy(update={"threshold": 1.0}) if a.metric_name == "MessageLag" else a for a in v
            )
            for r, v in obs.alarms.alarms.items()
        }
        (change,) = plan_for(t, w.updated(obs, "alarms", alarms=alarms)).pending
        assert change.id == "chalkdr-prod-msk-chalk-prod-east-to-west-message-lag"
        assert w.diff(change) == {"threshold": (1.0, 10000.0)}

    def test_alarms_no_longer_in_the_topology_are_left_alone_with_a_warning(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        old = ObservedAlarm(
            name="chalkdr-prod-old",
            region="us-east-1",
            evaluation_periods=1,
            comparison_operator="LessThanThreshold",
        )
        alarms = {**obs.alarms.alarms, "us-east-1": (*obs.alarms.alarms["us-east-1"], old)}
        plan = plan_for(t, w.updated(obs, "alarms", alarms=alarms))
        assert plan.empty
        assert plan.warnings == (
            "us-east-1: alarm chalkdr-prod-old is no longer in the topology (left alone)",
        )


class TestNotifications:
    """Alarms notify the region's SNS topic; PutMetricAlarm replaces the whole configuration
    (CloudWatch API reference), so an update carries the actions an operator added."""

    def test_alarms_notify_the_regions_topic(self, w: Any) -> None:
        t = w.topology()
        for a in desired_state(t, w.facts(t)).of(AlarmSpec):
            assert a.alarm_actions == (t.region(a.region).alarm_topic_arn,)

    def test_a_missing_topic_is_an_update_that_keeps_the_operators_actions(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        pager = "arn:aws:sns:us-west-2:123456789012:pager"
        alarms = {
            r: tuple(
                a.model_copy(update={"alarm_actions": (pager,), "ok_actions": (pager,)})
                if a.metric_name == "MessageLag"
                else a
                for a in v
            )
            for r, v in obs.alarms.alarms.items()
        }
        (change,) = plan_for(t, w.updated(obs, "alarms", alarms=alarms)).pending
        topic = t.region("us-west-2").alarm_topic_arn
        assert w.diff(change) == {"alarm_actions": ([pager], sorted([pager, topic]))}
        assert change.spec.alarm_actions == (pager, topic) and change.spec.ok_actions == (pager,)

    def test_operator_added_actions_alone_are_not_drift(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        extra = "arn:aws:sns:us-east-1:123456789012:team"
        alarms = {
            r: tuple(a.model_copy(update={"alarm_actions": (*a.alarm_actions, extra)}) for a in v)
            if r == "us-east-1"
            else v
            for r, v in obs.alarms.alarms.items()
        }
        assert plan_for(t, w.updated(obs, "alarms", alarms=alarms)).empty

    def test_silent_alarms_have_no_actions_and_say_so(self, w: Any) -> None:
        t = w.topology(lambda d: d.update(silent_alarms=True))
        plan = plan_for(t, w.facts(t))
        assert "cloudwatch: silent_alarms is set: the replication-lag alarms notify nobody" in plan.warnings
        assert {a.alarm_actions for a in desired_state(t, w.facts(t)).of(AlarmSpec)} == {()}

    def test_the_aurora_alarm_names_both_dimensions_of_the_metric(self, w: Any) -> None:
        t = w.topology()
        (aurora,) = [a for a in desired_state(t, w.facts(t)).of(AlarmSpec) if a.namespace == "AWS/RDS"]
        assert aurora.dimensions == {"DBClusterIdentifier": "chalk-meta-west", "SourceRegion": "us-east-1"}
