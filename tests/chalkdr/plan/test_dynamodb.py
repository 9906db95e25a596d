"""DynamoDB in the plan: a replica of every online-store table in every region."""

from __future__ import annotations

from typing import Any

from chalkdr.plan import Action
from chalkdr.plan import ObservedTable
from chalkdr.plan import ResourceKind
from chalkdr.plan import plan_for


def _tables(w: Any, obs: Any, **by_region: tuple[ObservedTable, ...]) -> Any:
    return w.updated(obs, "dynamodb", tables={**obs.dynamodb.tables, **by_region})


class TestReplicas:
    def test_a_fresh_world_adds_the_secondary_replica(self, w: Any) -> None:
        t = w.topology()
        (change,) = w.of_kind(plan_for(t, w.facts(t)), ResourceKind.GLOBAL_TABLE)
        assert (change.action, change.id, change.region) == (Action.UPDATE, "chalk-online-store", "us-east-1")
        assert w.diff(change) == {"replica_regions": (["us-east-1"], ["us-east-1", "us-west-2"])}

    def test_deleted_replica_is_an_update_of_the_global_table(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        table = obs.dynamodb.tables["us-east-1"][0].model_copy(
            update={"replica_regions": (), "replica_status": {}}
        )
        (change,) = plan_for(t, _tables(w, obs, **{"us-east-1": (table,), "us-west-2": ()})).pending
        assert (change.kind, change.action, change.id) == (
            ResourceKind.GLOBAL_TABLE,
            Action.UPDATE,
            "chalk-online-store",
        )
        assert w.diff(change) == {"replica_regions": (["us-east-1"], ["us-east-1", "us-west-2"])}

    def test_a_replica_being_deleted_counts_as_missing(self, w: Any) -> None:
        t = w.topology()
        obs = w.converged(t)
        table = obs.dynamodb.tables["us-east-1"][0].model_copy(
            update={"replica_status": {"us-west-2": "DELETING"}}
        )
        (change,) = plan_for(t, _tables(w, obs, **{"us-east-1": (table,)})).pending
        assert change.kind is ResourceKind.GLOBAL_TABLE
        assert w.diff(change) == {"replica_regions": (["us-east-1"], ["us-east-1", "us-west-2"])}


class TestErrors:
    def test_a_missing_online_store_table_is_an_error(self, w: Any) -> None:
        t = w.topology()
        plan = plan_for(t, _tables(w, w.facts(t), **{"us-east-1": ()}))
        assert (
            "us-east-1: DynamoDB table chalk-online-store not found (dynamodb:DescribeTable); "
            "the online store is Chalk's to create, its replicas are ours"
        ) in plan.errors
        assert w.of_kind(plan, ResourceKind.GLOBAL_TABLE) == []

    def test_a_standalone_table_in_a_secondary_region_blocks_the_replica(self, w: Any) -> None:
        t = w.topology()
        standalone = ObservedTable(
            table="chalk-online-store", region="us-west-2", status="ACTIVE", arn="arn:x"
        )
        plan = plan_for(t, _tables(w, w.facts(t), **{"us-west-2": (standalone,)}))
        assert any(
            "us-west-2: DynamoDB table chalk-online-store exists there as a separate table" in e
            for e in plan.errors
        )


class TestReplicaPrerequisites:
    """What UpdateTable refuses before it adds a replica (DynamoDB Developer Guide, global tables
    version 2019.11.21 prerequisites), named by the plan before any call."""

    def test_the_replica_gets_the_key_of_its_own_region(self, w: Any) -> None:
        t = w.topology()
        (change,) = w.of_kind(plan_for(t, w.facts(t)), ResourceKind.GLOBAL_TABLE)
        assert change.spec.replica_kms_keys == {"us-west-2": t.region("us-west-2").online_store_kms_key}

    def test_a_customer_key_without_a_replica_key_is_an_error(self, w: Any) -> None:
        d_topology = w.topology(lambda d: d["regions"][1].pop("online_store_kms_key"))
        plan = plan_for(d_topology, w.facts(d_topology))
        assert w.of_kind(plan, ResourceKind.GLOBAL_TABLE) == []
        (error,) = plan.errors
        assert error.startswith("us-west-2: DynamoDB table chalk-online-store is encrypted with a customer")
        assert "set online_store_kms_key for region us-west-2" in error

    def test_a_table_encrypted_by_dynamodb_needs_no_replica_key(self, w: Any) -> None:
        t = w.topology(lambda d: d["regions"][1].pop("online_store_kms_key"))
        obs = w.facts(t)
        (table,) = obs.dynamodb.tables["us-east-1"]
        owned = table.model_copy(update={"kms_key_arn": None, "kms_customer_managed": False})
        plan = plan_for(t, _tables(w, obs, **{"us-east-1": (owned,)}))
        assert plan.errors == () and len(w.of_kind(plan, ResourceKind.GLOBAL_TABLE)) == 1

    def test_provisioned_capacity_without_auto_scaling_is_an_error(self, w: Any) -> None:
        t = w.topology()
        obs = w.facts(t)
        (table,) = obs.dynamodb.tables["us-east-1"]
        fixed = table.model_copy(update={"billing_mode": "PROVISIONED", "write_autoscaled": False})
        plan = plan_for(t, _tables(w, obs, **{"us-east-1": (fixed,)}))
        assert any("provisioned write capacity without auto scaling" in e for e in plan.errors)
        scaled = fixed.model_copy(update={"write_autoscaled": True})
        assert plan_for(t, _tables(w, obs, **{"us-east-1": (scaled,)})).errors == ()
