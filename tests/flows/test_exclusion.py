"""One lock per environment: a provision apply never runs beside a drill (it would reset the
drill's fault), a plan run never waits for one, and a lock that would not exclude fails closed."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.concurrency.sync import concurrency

from flows.provision import provision
from flows.runbook import LockBusy
from flows.runbook import environment_lock_name
from tasks.locks import LockMisconfigured
from tasks.locks import ensure_lock

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(240)]


def test_a_provision_apply_waits_for_a_drill_and_then_gives_up_naming_the_lock(world: Any) -> None:
    name = ensure_lock(environment_lock_name(world.topology.environment))
    with concurrency(name, occupy=1, strict=True), pytest.raises(LockBusy) as refused:
        provision(
            topology=str(world.topology_path), mode="apply", require_approval=False, wait_for_lock_seconds=2
        )
    assert str(refused.value) == (
        "another drill, failover, failback, sweep or provision apply of demo holds the lock drill-demo"
    )


def test_a_plan_run_reads_while_a_drill_holds_the_lock(world: Any) -> None:
    name = ensure_lock(environment_lock_name(world.topology.environment))
    with concurrency(name, occupy=1, strict=True):
        state = provision(
            topology=str(world.topology_path), mode="plan", wait_for_lock_seconds=0, return_state=True
        )
    report = state.result(raise_on_failure=False)
    assert report.outcome == "in-sync", report.plan.summary()


@pytest.mark.parametrize(
    ("limit", "active", "state"),
    [(2, True, "active with limit 2"), (1, False, "inactive with limit 1")],
)
def test_a_lock_that_would_not_exclude_fails_closed(limit: int, active: bool, state: str) -> None:
    name = f"drill-misconfigured-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit, active=active))
    with pytest.raises(LockMisconfigured) as refused:
        ensure_lock(name)
    assert str(refused.value) == (
        f"the global concurrency limit {name} must be active with limit 1 to exclude other runs (it is "
        f"{state}): `prefect gcl update {name} --limit 1 --enable`"
    )


def test_a_missing_lock_is_created_with_one_slot() -> None:
    name = f"drill-new-{uuid.uuid4().hex[:6]}"
    assert ensure_lock(name) == name
    with get_client(sync_client=True) as client:
        made = client.read_global_concurrency_limit_by_name(name)
    assert (made.limit, made.active) == (1, True)
