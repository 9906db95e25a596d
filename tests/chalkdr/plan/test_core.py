"""The shared plan machinery: the comparison rule, stage graphs, critical paths, waits, rendering."""

from __future__ import annotations

from typing import Any

import pytest

from chalkdr.plan import Action
from chalkdr.plan import FieldDiff
from chalkdr.plan import ResourceKind
from chalkdr.plan import StageDef
from chalkdr.plan import WaitPolicy
from chalkdr.plan import apply_stages
from chalkdr.plan import compare
from chalkdr.plan import critical_path_s
from chalkdr.plan import plan_for
from chalkdr.plan import plan_table_rows
from chalkdr.plan import render_plan_markdown
from chalkdr.plan.core import stages_for


class TestCompare:
    def test_absent_is_a_create_listing_every_value_that_is_set(self) -> None:
        action, diffs = compare(None, {"a": 1, "b": None, "c": [], "d": False})
        assert action is Action.CREATE
        assert diffs == [FieldDiff(field="a", new=1), FieldDiff(field="d", new=False)]

    def test_equal_is_a_noop_and_a_difference_an_update(self) -> None:
        assert compare({"a": 1}, {"a": 1}) == (Action.NOOP, [])
        assert compare({"a": 1, "b": 2}, {"a": 1, "b": 3}) == (
            Action.UPDATE,
            [FieldDiff(field="b", old=2, new=3)],
        )

    def test_a_changed_immutable_field_is_a_replace(self) -> None:
        action, diffs = compare(
            {"arn": "x", "topics": ["a"]}, {"arn": "y", "topics": ["a"]}, immutable=["arn"]
        )
        assert action is Action.REPLACE and diffs == [FieldDiff(field="arn", old="x", new="y")]


class TestStagesFor:
    def test_dependencies_on_undeclared_or_cyclic_stages_are_refused(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.facts(t))
        unknown = [StageDef(name="a", kind=ResourceKind.ALARM, concurrent=True, depends_on=("nope",))]
        with pytest.raises(ValueError, match="undeclared stages: nope"):
            stages_for(plan, unknown)
        backwards = [
            StageDef(name="a", kind=ResourceKind.ALARM, concurrent=True, depends_on=("b",)),
            StageDef(name="b", kind=ResourceKind.RECORD, concurrent=False),
        ]
        with pytest.raises(ValueError, match="declared before a stage it depends on"):
            stages_for(plan, backwards)
        cycle = [
            StageDef(name="a", kind=ResourceKind.ALARM, concurrent=True, depends_on=("b",)),
            StageDef(name="b", kind=ResourceKind.GLOBAL_TABLE, concurrent=True, depends_on=("a",)),
        ]
        with pytest.raises(ValueError, match="declared before a stage it depends on"):
            stages_for(plan, cycle)  # a cycle cannot be declared dependencies-first


class TestCriticalPath:
    def test_the_longest_chain_of_durations_wins(self, w: Any) -> None:
        t = w.topology()
        stages = apply_stages(plan_for(t, w.facts(t)))
        durations = {
            "route53-health-checks": 1.0,
            "route53-records": 2.0,  # chain 3.0
            "dynamodb-replicas": 5.0,
            "msk-replicators": 1.0,
            "aurora-global-cluster": 1.5,
            "aurora-secondaries": 1.5,  # chain 3.0
            "cloudwatch-alarms": 0.5,  # after dynamodb: 5.5
        }
        assert critical_path_s(stages, durations) == pytest.approx(5.5)
        assert critical_path_s([], {}) == 0.0


def test_wait_policy_polls_until_done_and_times_out_naming_what_it_saw() -> None:
    fast = WaitPolicy(time_scale=1000.0, timeout_s=50.0, first_poll_s=1.0, poll_s=10.0)
    seen = iter(["CREATING", "CREATING", "RUNNING"])
    assert fast.poll(lambda: next(seen), lambda s: s == "RUNNING", lambda s: f"x still {s}") == "RUNNING"
    with pytest.raises(TimeoutError, match=r"^x still CREATING after 50 s$"):
        fast.poll(lambda: "CREATING", lambda s: s == "RUNNING", lambda s: f"x still {s}")


def test_wait_policy_backs_off_to_its_poll_interval() -> None:
    waits = WaitPolicy(time_scale=10.0, first_poll_s=1.0, poll_s=8.0)
    assert [waits.delay_real_s(a) for a in range(6)] == [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]


class TestRendering:
    def test_markdown_shows_counts_diffs_slo_and_eks(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        hcs = tuple(h.model_copy(update={"failure_threshold": 7}) for h in obs.route53.health_checks)
        text = render_plan_markdown(plan_for(t, w.updated(obs, "route53", health_checks=hcs)))
        assert text.startswith("# Provision plan: prod (failover routing)")
        assert "**0 to create, 2 to update, 0 to replace" in text
        assert "failure_threshold: 7 → 3" in text
        assert "Expected failover time: 10 s x 3 + 60 s TTL = 90 s (RTO SLO 120 s)" in text
        assert "## EKS (verified, never changed)" in text and "| chalk-prod-east | us-east-1 | yes |" in text

    def test_markdown_warns_when_the_slo_cannot_be_met(self, w: Any) -> None:
        def slow(d: dict[str, Any]) -> None:
            d["slo"]["rto_seconds"] = 60

        t = w.topology(slow)
        text = render_plan_markdown(plan_for(t, w.converged(t)))
        assert "> **SLO warning:**" in text and "None: AWS already matches the topology." in text

    def test_table_rows_list_every_resource(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.facts(t))
        rows = plan_table_rows(plan)
        assert len(rows) == len(plan.changes) == 18
        assert set(rows[0]) == {"action", "kind", "resource", "region", "diff"}
        assert rows[0] == {
            "action": "create",
            "kind": "route53-health-check",
            "resource": "chalkdr-prod-us-east-1",
            "region": "us-east-1",
            "diff": "health_check: — → HTTPS prod-east.query.example.com:443",
        }
