"""deployments/automations.py against the Prefect test harness: both automations are created once
(a second run changes nothing), read back as specified, converged in place when changed, and the
sweep-on-failure one really starts a sweep of a failed drill's topology."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter
from prefect.client.schemas.filters import DeploymentFilterId
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.actions import RunDeployment
from prefect.events.schemas.automations import AutomationCore
from prefect.events.schemas.automations import EventTrigger
from prefect.events.schemas.automations import Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.states import Crashed
from prefect.states import Running

from sandbox.harness import poll
from tasks.locks import MARKED_CRASHED_PREFIX

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "chalkdr_automations", ROOT / "deployments" / "automations.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


automations = _load()
NAMES = (automations.ZOMBIE_AUTOMATION, automations.SWEEP_AUTOMATION)


@flow(name="sweep")
def stand_in_sweep(topology: str) -> None:
    """The sweep deployment's flow, by name; its runs are only scheduled here, never executed."""


@flow(name="drill")
def failing_drill(topology: str) -> None:
    raise RuntimeError("the drill failed")


@pytest.fixture
def sweep_deployment() -> Iterator[Any]:
    """The sweep deployment as prefect.yaml names it; it and the automations are removed after."""
    name = f"sweep-hourly-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(stand_in_sweep)
        deployment_id = client.create_deployment(flow_id=flow_id, name=name, paused=False)
        deployment = client.read_deployment(deployment_id)
    try:
        yield deployment
    finally:
        with get_client(sync_client=True) as client:
            for run in client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            ):
                client.delete_flow_run(run.id)
            client.delete_deployment(deployment_id)
            for automation_name in NAMES:
                for automation in client.read_automations_by_name(automation_name):
                    client.delete_automation(automation.id)


def read_back(name: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_automations_by_name(name)


def test_both_are_created_once_and_read_back_as_specified(sweep_deployment: Any) -> None:
    full_name = f"sweep/{sweep_deployment.name}"
    assert automations.ensure_automations(sweep_deployment=full_name) == dict.fromkeys(NAMES, "created")
    assert automations.ensure_automations(sweep_deployment=full_name) == dict.fromkeys(NAMES, "unchanged")

    (zombie,) = read_back(automations.ZOMBIE_AUTOMATION)  # exactly one: no duplicate
    trigger = zombie.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.expect == {
        "prefect.flow-run.heartbeat",
        "prefect.flow-run.Completed",
        "prefect.flow-run.Failed",
        "prefect.flow-run.Cancelled",
        "prefect.flow-run.Crashed",
    }
    assert trigger.match == ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]})
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.posture is Posture.Proactive
    assert trigger.threshold == 1 and trigger.within == timedelta(seconds=90)
    (action,) = zombie.actions
    assert isinstance(action, ChangeFlowRunState)
    assert action.state is StateType.CRASHED
    assert action.message == "Flow run marked as crashed due to missing heartbeats."

    (sweeper,) = read_back(automations.SWEEP_AUTOMATION)
    trigger = sweeper.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert trigger.posture is Posture.Reactive and trigger.threshold == 1
    assert trigger.match_related == ResourceSpecification(
        {"prefect.resource.role": "flow", "prefect.resource.name": ["drill", "failover", "failback"]}
    )
    (run,) = sweeper.actions
    assert isinstance(run, RunDeployment)
    assert run.deployment_id == sweep_deployment.id
    assert run.parameters == {"topology": "{{ flow_run.parameters.topology }}"}


def test_a_changed_automation_is_converged_in_place(sweep_deployment: Any) -> None:
    full_name = f"sweep/{sweep_deployment.name}"
    automations.ensure_automations(sweep_deployment=full_name)
    (zombie,) = read_back(automations.ZOMBIE_AUTOMATION)
    edited = AutomationCore(**zombie.model_dump(exclude={"id", "owner_resource"}))
    assert isinstance(edited.trigger, EventTrigger)
    edited.trigger.within = timedelta(seconds=30)
    with get_client(sync_client=True) as client:
        client.update_automation(zombie.id, edited)
        client.create_automation(edited)  # and a duplicate by name
    result = automations.ensure_automations(sweep_deployment=full_name)
    assert result[automations.ZOMBIE_AUTOMATION] == "updated (1 duplicate(s) deleted)"
    (converged,) = read_back(automations.ZOMBIE_AUTOMATION)
    assert converged.id == zombie.id and converged.trigger.within == timedelta(seconds=90)


def test_a_missing_sweep_deployment_is_named() -> None:
    with pytest.raises(SystemExit, match="deployment sweep/nowhere not found: deploy first"):
        automations.ensure_automations(sweep_deployment="sweep/nowhere")


def test_a_failed_drill_starts_a_sweep_of_its_topology(sweep_deployment: Any) -> None:
    automations.ensure_automations(sweep_deployment=f"sweep/{sweep_deployment.name}")
    marked, failed = f"marked-{uuid.uuid4().hex[:6]}.yaml", f"failed-{uuid.uuid4().hex[:6]}.yaml"
    with get_client(sync_client=True) as client:
        # A drill chalk-dr itself marked Crashed, from a run that has repaired already: no sweep.
        run = client.create_flow_run(failing_drill, parameters={"topology": marked})
        client.set_flow_run_state(run.id, Running(), force=True)
        client.set_flow_run_state(
            run.id, Crashed(message=f"{MARKED_CRASHED_PREFIX} drill d-x (flow run 'y', z): ..."), force=True
        )
    state = failing_drill(topology=failed, return_state=True)
    assert state.is_failed()

    def sweeps() -> list[Any]:
        with get_client(sync_client=True) as client:
            return list(
                client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[sweep_deployment.id]))
                )
            )

    (started,) = poll(
        lambda: [r for r in sweeps() if r.parameters.get("topology") == failed],
        timeout=60,
        what="a sweep run for the failed drill's topology",
        every=0.5,
    )
    assert started.state_type is StateType.SCHEDULED
    assert [r.parameters for r in sweeps()] == [{"topology": failed}]  # none for the marked one
