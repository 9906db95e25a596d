"""Provisioning touches only what it owns (issue 12): ownership tags, ownership TXT records, adopt."""

from __future__ import annotations

from typing import Any

import pytest

from chalkdr.errors import TopologyError
from chalkdr.plan import Action
from chalkdr.plan import AlarmSpec
from chalkdr.plan import GlobalClusterSpec
from chalkdr.plan import GlobalTableSpec
from chalkdr.plan import HealthCheckSpec
from chalkdr.plan import ObservedRecord
from chalkdr.plan import RecordSpec
from chalkdr.plan import ReplicatorSpec
from chalkdr.plan import ResourceKind
from chalkdr.plan import SecondaryClusterSpec
from chalkdr.plan import desired_state
from chalkdr.plan import ownership_record_name
from chalkdr.plan import ownership_value
from chalkdr.plan import plan_for
from chalkdr.plan import record_owner

HC, REC = ResourceKind.HEALTH_CHECK, ResourceKind.RECORD
FAILOVER = "chalk-failover.example.com"
OTHER = {"chalk-dr:managed": "true", "chalk-dr:environment": "staging"}


def adopting(**lists: list[str]) -> Any:
    def mutate(d: dict[str, Any]) -> None:
        d["adopt"] = lists

    return mutate


def without(obs: Any, name: str) -> Any:
    """`obs` without the ownership TXT record of `name`."""
    records = tuple(r for r in obs.route53.records if r.name != f"_chalk-dr-a.{name}.")
    return obs.model_copy(update={"route53": obs.route53.model_copy(update={"records": records})})


class TestWhatChalkDrCreatesCarriesItsOwner:
    def test_every_tagged_resource_names_the_environment(self, w: Any) -> None:
        t = w.topology()
        desired = desired_state(t, w.facts(t))
        for spec_type in (HealthCheckSpec, GlobalTableSpec, ReplicatorSpec, GlobalClusterSpec, AlarmSpec):
            specs = desired.of(spec_type)
            assert specs and all(s.tags.items() >= w.OURS.items() for s in specs), spec_type
        assert desired.of(SecondaryClusterSpec)[0].tags == w.OURS

    def test_each_name_gets_one_ownership_txt_record_in_external_dns_format(self, w: Any) -> None:
        t = w.topology()
        owners = [r for r in desired_state(t, w.facts(t)).of(RecordSpec) if r.type == "TXT"]
        assert [(r.name, r.owner_of, r.values, r.ttl) for r in owners] == [
            (f"_chalk-dr-a.{n}", n, ('"heritage=chalk-dr,chalk-dr/owner=prod"',), 300)
            for n in (FAILOVER, "prod-east.query.example.com", "prod-west.query.example.com")
        ]
        # written in the same atomic batch as the records of the name it owns
        assert {r.batch_name for r in owners} == {
            r.batch_name for r in desired_state(t, w.facts(t)).of(RecordSpec) if r.type == "A"
        }

    def test_the_owner_is_read_back_only_from_chalk_drs_heritage(self) -> None:
        assert ownership_record_name("Chalk-Failover.Example.com.") == f"_chalk-dr-a.{FAILOVER}"
        assert record_owner((ownership_value("prod"),)) == "prod"
        assert record_owner(('"heritage=external-dns,external-dns/owner=prod"',)) is None
        assert record_owner(('"v=spf1 -all"', '"heritage=chalk-dr,chalk-dr/owner=x"')) == "x"
        assert record_owner(()) is None


class TestRecords:
    def test_a_fresh_name_is_created_with_its_ownership_record(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.facts(t))
        assert plan.errors == ()
        txt = next(c for c in w.of_kind(plan, REC) if c.id == f"_chalk-dr-a.{FAILOVER} TXT")
        assert txt.action is Action.CREATE
        assert w.diff(txt)["values"] == (None, ['"heritage=chalk-dr,chalk-dr/owner=prod"'])

    def test_records_under_a_name_without_our_txt_record_are_an_error_naming_them(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, without(w.converged(t), FAILOVER))
        (error,) = plan.errors
        assert error.startswith(
            f"route53: DNS name {FAILOVER} (record {FAILOVER} A prod-us-east-1, {FAILOVER} A prod-us-west-2) "
            "exists and is not chalk-dr's for environment prod (it has no ownership TXT record "
            f"_chalk-dr-a.{FAILOVER} saying so)"
        )
        assert "adopt.records" in error
        assert not [c for c in w.of_kind(plan, REC) if c.spec.batch_name == FAILOVER]
        assert plan.empty  # nothing else to do, and the error blocks any apply

    def test_another_environments_txt_record_is_an_error(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        records = tuple(
            r.model_copy(update={"values": (ownership_value("staging"),)}) if r.type == "TXT" else r
            for r in obs.route53.records
        )
        plan = plan_for(t, w.updated(obs, "route53", records=records))
        assert len(plan.errors) == 3
        assert (
            "its ownership TXT record _chalk-dr-a.prod-east.query.example.com saying so names "
            in plan.errors[1]
        )
        assert "environment 'staging'" in plan.errors[1]

    def test_an_adopted_name_gets_its_ownership_record_recorded_as_adoption(self, w: Any) -> None:
        t = w.topology(adopting(records=[FAILOVER.upper() + "."]))  # normalised like every name
        plan = plan_for(t, without(w.converged(t), FAILOVER))
        assert plan.errors == ()
        (txt,) = plan.pending
        assert (txt.kind, txt.action, txt.id) == (REC, Action.CREATE, f"_chalk-dr-a.{FAILOVER} TXT")
        assert w.diff(txt)["owner"] == (None, "prod")
        assert txt.adoption == {"adopted_from": None, "owner": "prod"}

    def test_a_name_nobody_claims_with_only_other_set_identifiers_is_left_alone(self, w: Any) -> None:
        t = w.topology()
        stray = ObservedRecord(name=f"{FAILOVER}.", set_identifier="blue", weight=10, values=("10.0.0.1",))
        obs = w.facts(t)
        plan = plan_for(t, w.updated(obs, "route53", records=(stray,)))
        assert plan.errors == ()
        assert any("SetIdentifier blue" in x and "left alone" in x for x in plan.warnings)


class TestHealthChecks:
    def _untagged(self, w: Any, tags: dict[str, str], *mutations: Any) -> Any:
        t = w.topology(*mutations)
        obs = w.converged(t)
        hcs = tuple(
            h.model_copy(update={"tags": tags}) if h.id == "hc-us-west-2" else h
            for h in obs.route53.health_checks
        )
        return plan_for(t, w.updated(obs, "route53", health_checks=hcs))

    @pytest.mark.parametrize(
        ("tags", "why"),
        [
            ({}, "it has no chalk-dr:environment tag"),
            ({"chalk-dr:managed": "true"}, "it has no chalk-dr:environment tag"),
            (OTHER, "its chalk-dr:environment tag names environment 'staging'"),
        ],
        ids=["untagged", "managed only", "another environment"],
    )
    def test_a_check_that_is_not_ours_is_an_error_naming_it(
        self, w: Any, tags: dict[str, str], why: str
    ) -> None:
        plan = self._untagged(w, tags)
        (error,) = plan.errors
        assert error.startswith(
            f"us-west-2: Route 53 health check hc-us-west-2 (CallerReference chalkdr-prod-us-west-2-"
            f"{w.HASH_HTTPS_10}) exists and is not chalk-dr's for environment prod ({why})"
        )
        # neither the check nor the records that would carry it are planned
        assert [c.region for c in w.of_kind(plan, HC)] == ["us-east-1"]
        assert not [c for c in w.of_kind(plan, REC) if c.id.endswith("prod-us-west-2")]

    def test_an_adopted_check_is_tagged_and_the_adoption_is_in_the_change(self, w: Any) -> None:
        plan = self._untagged(w, {"team": "web"}, adopting(health_checks=["hc-us-west-2"]))
        assert plan.errors == ()
        (change,) = plan.pending
        assert (change.kind, change.action, change.current_id) == (HC, Action.UPDATE, "hc-us-west-2")
        assert w.diff(change) == {
            "tags": ({}, {**w.OURS, "Name": "chalkdr-prod-us-west-2"}),
            "owner": (None, "prod"),
        }

    def test_tags_an_operator_added_are_not_drift(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        hcs = tuple(
            h.model_copy(update={"tags": {**h.tags, "team": "web"}}) for h in obs.route53.health_checks
        )
        assert plan_for(t, w.updated(obs, "route53", health_checks=hcs)).empty


class TestAlarms:
    def test_an_alarm_that_is_not_ours_is_an_error_unless_adopted(self, w: Any) -> None:
        t = w.topology()
        name = "chalkdr-prod-msk-chalk-prod-east-to-west-message-lag"
        obs = w.changed(w.converged(t), "alarms", "alarms", tags={})
        plan = plan_for(t, obs)
        assert len(plan.errors) == 5
        assert f"us-west-2: CloudWatch alarm {name} exists and is not chalk-dr's" in "\n".join(plan.errors)
        assert w.of_kind(plan, ResourceKind.ALARM) == []

        adopted = w.topology(adopting(alarms=[name]))
        plan = plan_for(adopted, obs)
        assert len(plan.errors) == 4 and name not in "\n".join(plan.errors)
        (change,) = w.of_kind(plan, ResourceKind.ALARM)
        assert (change.id, change.action, w.diff(change)) == (name, Action.UPDATE, {"owner": (None, "prod")})


class TestReplicator:
    def test_a_replicator_of_our_name_that_is_not_ours_is_an_error(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, w.changed(w.converged(t), "msk", "replicators", tags=OTHER))
        (error,) = plan.errors
        assert error.startswith(
            "us-west-2: MSK replicator chalk-prod-east-to-west "
            f"(arn:aws:kafka:us-west-2:{w.ACCOUNT}:replicator/chalk-prod-east-to-west/x) exists and is not "
            "chalk-dr's for environment prod (its chalk-dr:environment tag names environment 'staging')"
        )
        assert w.of_kind(plan, ResourceKind.REPLICATOR) == []

    def test_an_adopted_replicator_is_tagged_in_place(self, w: Any) -> None:
        t = w.topology(adopting(replicators=["chalk-prod-east-to-west"]))
        (change,) = plan_for(t, w.changed(w.converged(t), "msk", "replicators", tags={})).pending
        assert (change.action, w.diff(change)) == (Action.UPDATE, {"owner": (None, "prod")})
        assert change.current_id is not None and change.spec.tags == w.OURS

    def test_a_first_replicator_says_it_copies_from_earliest(self, w: Any) -> None:
        t = w.topology()
        (change,) = w.of_kind(plan_for(t, w.facts(t)), ResourceKind.REPLICATOR)
        assert change.action is Action.CREATE
        assert w.diff(change)["starting_position"] == (None, "EARLIEST")

    def test_a_replacement_starts_from_latest_and_says_what_that_leaves_out(self, w: Any) -> None:
        t = w.topology()
        role = f"arn:aws:iam::{w.ACCOUNT}:role/old"
        plan = plan_for(t, w.changed(w.converged(t), "msk", "replicators", service_execution_role_arn=role))
        (change,) = plan.pending
        assert change.action is Action.REPLACE and change.spec.starting_position == "LATEST"
        (warning,) = plan.warnings
        assert warning.startswith(
            "us-west-2: MSK replicator chalk-prod-east-to-west is replaced (service_execution_role_arn "
            "cannot change in place) and the new one starts from LATEST: records produced to "
            "chalk-online-writes, chalk-persistence between"
        )

    def test_an_unwanted_replicator_of_ours_is_reported_and_left_alone(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        old = obs.msk.replicators["us-west-2"][0].model_copy(update={"name": "chalk-prod-east-to-west-old"})
        reps = {**obs.msk.replicators, "us-west-2": (*obs.msk.replicators["us-west-2"], old)}
        plan = plan_for(t, w.updated(obs, "msk", replicators=reps))
        assert plan.empty and plan.warnings == (
            "us-west-2: MSK replicator chalk-prod-east-to-west-old is this environment's but no longer in "
            "the topology (left alone)",
        )


class TestAdoptSetting:
    def test_by_default_nothing_is_adopted(self, w: Any) -> None:
        adopt = w.topology().adopt
        assert (adopt.records, adopt.health_checks, adopt.alarms, adopt.replicators) == ([], [], [], [])

    @pytest.mark.parametrize(
        ("adopt", "where", "reason"),
        [
            ({"recrods": [FAILOVER]}, "adopt.recrods", "unknown field"),
            ({"records": ["not a name"]}, "adopt.records", "not a DNS name"),
            ({"health_checks": ["x/y"]}, "adopt.health_checks", "not a Route 53 health check id"),
            ({"replicators": ["-x"]}, "adopt.replicators", "not an MSK Replicator name"),
            ({"records": ["www.example.com"]}, "", "adopt.records: www.example.com not a name this topology"),
        ],
        ids=["misspelt", "bad name", "bad id", "bad replicator", "foreign name"],
    )
    def test_a_bad_adopt_setting_names_the_file_and_field(
        self, w: Any, adopt: dict[str, Any], where: str, reason: str
    ) -> None:
        with pytest.raises(TopologyError) as err:
            w.topology(adopting(**adopt))
        (problem,) = err.value.problems
        assert problem.location == where and reason in problem.reason
        assert str(err.value).startswith("<topology>")
