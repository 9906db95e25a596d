"""The sweep flow against the sandbox world: it repairs what dead runs left behind, marks the dead
ones Crashed naming itself, leaves a run that still sends heartbeats alone, and publishes its
report in the backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter
from prefect.client.schemas.filters import ArtifactFilterKey
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.objects import StateType
from prefect.events import emit_event
from prefect.events.filters import EventFilter
from prefect.events.filters import EventNameFilter
from prefect.events.filters import EventResourceFilter
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY
from prefect.settings import temporary_settings
from prefect.states import Cancelled
from prefect.states import Paused
from prefect.states import Running
from prefect.variables import Variable

from chalkdr.clients import AwsClients
from chalkdr.report import PhaseStatus
from flows.sweep import SweepReport
from flows.sweep import sweep
from sandbox.harness import poll
from tasks.faults import InvertHealthCheck
from tasks.faults import ScaleQueryServersDown
from tasks.locks import KILL_SWITCH_VARIABLE
from tasks.locks import LockRecord
from tasks.locks import RunRef
from tasks.locks import read_lock_record
from tasks.locks import runbook_variable

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(240)]


@flow(name="drill")
def stand_in_drill(topology: str) -> None:
    """Only its name matters: the runs below are created in the backend, never executed."""


@pytest.fixture
def stand_in_runs() -> Iterator[Any]:
    """Make flow runs of a flow named `drill` in a given state; all end Cancelled afterwards, so
    no other test sees them live."""
    made: list[FlowRun] = []

    def make(state: Any) -> FlowRun:
        with get_client(sync_client=True) as client:
            run = client.create_flow_run(stand_in_drill, parameters={"topology": "t.yaml"})
            client.set_flow_run_state(run.id, state, force=True)
            made.append(run)
            return client.read_flow_run(run.id)

    yield make
    with get_client(sync_client=True) as client:
        for run in made:
            if client.read_flow_run(run.id).state_type in (StateType.RUNNING, StateType.PAUSED):
                client.set_flow_run_state(run.id, Cancelled(message="test cleanup"), force=True)


def primary_replicas(world: Any) -> int:
    body = httpx.get(f"{world.aws_endpoint}/_sandbox/world", timeout=10, trust_env=False).json()
    return int(body["regions"]["us-east-1"]["query_ready_replicas"])


def state_of(run: FlowRun) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run.id).state


def heartbeat(run: FlowRun) -> None:
    emit_event(
        event="prefect.flow-run.heartbeat", resource={"prefect.resource.id": f"prefect.flow-run.{run.id}"}
    )


def heartbeats_seen(run: FlowRun) -> int:
    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(
                event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
            ),
            limit=50,
        )
    return len(page.events)


def secondary_health_check(world: Any) -> str:
    checks = boto3.client("route53", region_name="us-east-1").list_health_checks()["HealthChecks"]
    return next(c["Id"] for c in checks if "-us-west-2-" in c["CallerReference"])


def test_sweep_repairs_leftovers_and_marks_dead_runs_crashed(world: Any, stand_in_runs: Any) -> None:
    t = world.topology
    clients = AwsClients.for_topology(t)
    # A drill that died mid-injection: Running in the backend, its query servers still at zero.
    dead = stand_in_runs(Running())
    ScaleQueryServersDown(clients, t.primary, "d-dead-one", flow_run_id=str(dead.id)).inject()
    # A drill killed while it waited for approval, before injecting: only the lock record names
    # it (a holder that never released the lock, as a killed one leaves it).
    paused = stand_in_runs(Paused())
    ref = RunRef(
        flow_run_id=str(paused.id),
        flow_run_name=paused.name,
        kind="drill",
        run_id="d-paused-one",
        lock=f"drill-{t.environment}",
        started_wall=time.time(),
    )
    Variable.set(
        runbook_variable(t.environment), LockRecord(holder=ref).model_dump(mode="json"), overwrite=True
    )
    # A run whose fault is left (it lost the lock) but whose process still sends heartbeats.
    alive = stand_in_runs(Running())
    hc_id = secondary_health_check(world)
    InvertHealthCheck(clients, hc_id, "us-west-2", "d-alive-one", flow_run_id=str(alive.id)).inject()
    stop = threading.Event()

    def keep_beating() -> None:
        while not stop.is_set():
            heartbeat(alive)
            stop.wait(2.0)

    beating = threading.Thread(target=keep_beating, daemon=True)
    beating.start()
    # The kill switch stops faults, never their undo: the sweep runs with it engaged.
    Variable.set(KILL_SWITCH_VARIABLE, {"engaged": True, "reason": "incident"}, overwrite=True)
    try:
        poll(
            lambda: primary_replicas(world) == 0, timeout=30, what="the stand-in fault took the primary down"
        )
        poll(lambda: heartbeats_seen(alive), timeout=30, what="the live run's heartbeats reached the backend")
        # Heartbeats on here: a run silent for two intervals (60 s) is dead, one beating is not.
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
            state = sweep(topology=str(world.topology_path), return_state=True)
    finally:
        stop.set()
        beating.join(5)
        Variable.set(KILL_SWITCH_VARIABLE, {"engaged": False}, overwrite=True)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, SweepReport), report
    assert state.is_completed(), state.message
    assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason

    # Repaired, each line naming the run whose marker it was.
    restored = (
        "deployment us-east-1/chalk/chalk-query-server: replicas restored to 2 "
        f"(drill d-dead-one, flow run {dead.id})"
    )
    assert restored in report.swept
    assert (
        f"route53 health check {hc_id}: Inverted reset to false (drill d-alive-one, flow run {alive.id})"
        in report.swept
    )
    poll(lambda: primary_replicas(world) == 2, timeout=30, what="the primary's query servers back")
    assert (
        not boto3.client("route53", region_name="us-east-1")
        .get_health_check(HealthCheckId=hc_id)["HealthCheck"]["HealthCheckConfig"]
        .get("Inverted")
    )

    # The dead runs are Crashed in the backend, the message naming the sweep that found them.
    with get_client(sync_client=True) as client:
        me = client.read_flow_run(state.state_details.flow_run_id)
    for run, why in ((dead, "it left behind: " + restored), (paused, "lost its lease without releasing it")):
        crashed = state_of(run)
        assert crashed.type is StateType.CRASHED, (run.name, crashed)
        assert crashed.message.startswith(f"chalk-dr: marked Crashed by sweep {report.sweep_id}"), (
            crashed.message
        )
        assert f"flow run {me.name!r}, {me.id}" in crashed.message
        assert why in crashed.message
    marked = [line for line in report.swept if "marked Crashed" in line]
    assert len(marked) == 2, report.swept
    assert any(line.startswith("drill d-paused-one") and "(was Paused)" in line for line in marked)
    assert any(str(dead.id) in line and "(was Running)" in line for line in marked)
    # ...and the one still beating is left Running.
    assert state_of(alive).type is StateType.RUNNING
    # The lock record is settled: no suspects, no holder (the sweep released the lock).
    assert read_lock_record(t.environment) == LockRecord()

    # The report is in the backend, as a keyed artifact.
    def artifact() -> Any:
        import asyncio

        async def read() -> list[Any]:
            async with get_client() as client:
                return list(
                    await client.read_artifacts(
                        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"sweep-{t.environment}"]))
                    )
                )

        return [a for a in asyncio.run(read()) if report.sweep_id in (a.description or "")]

    (published,) = poll(artifact, timeout=30, what="the sweep's artifact")
    assert "marked Crashed" in str(published.data) and "replicas restored to 2" in str(published.data)


def test_a_sweep_with_nothing_left_completes_and_says_so(world: Any) -> None:
    state = sweep(topology=str(world.topology_path), return_state=True)
    report = state.result()
    assert isinstance(report, SweepReport)
    assert report.outcome is PhaseStatus.COMPLETED and report.swept == [] and report.unrepaired == []
    assert state.message == f"sweep {report.sweep_id}: completed, 0 swept"


def test_a_sweep_never_runs_beside_another_runbook(world: Any) -> None:
    """It takes the environment's lock: while another runbook holds it, the sweep gives up
    without touching anything, and says so (the live runbook swept when it started)."""
    from prefect.concurrency.sync import concurrency

    from tasks.locks import ensure_lock

    name = ensure_lock(f"drill-{world.topology.environment}")
    with concurrency(name, occupy=1, strict=True):
        state = sweep(topology=str(world.topology_path), wait_for_lock_seconds=2.0, return_state=True)
    report = state.result()
    assert state.is_completed()
    assert report.outcome is PhaseStatus.ABORTED and report.phases["sweep"].status is PhaseStatus.PENDING
    assert report.outcome_reason == (
        f"another drill, failover, failback, sweep or provision apply of demo holds the lock {name}"
    )
