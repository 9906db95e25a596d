"""The Prefect automations chalk-dr relies on, created idempotently by name.

Run after `prefect --no-prompt deploy --all`, against the same server:

    python -m deployments.automations [--sweep-deployment sweep/sweep-hourly]

- `Crash zombie flows`: Prefect's own remedy for runs whose process died (docs.prefect.io, "How to
  detect and respond to zombie flows"), exactly as the docs give it: after each
  `prefect.flow-run.heartbeat`, expect another heartbeat or a terminal state of the same run within
  90 s, else set the run Crashed. The deployments in prefect.yaml send a heartbeat every 60 s
  (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`); open-source Prefect has no managed version of this.
- `chalk-dr: sweep after a failed runbook`: when a drill, failover or failback run ends Failed or
  Crashed, run the sweep deployment at once with that run's own topology parameter, so what it
  left broken is repaired now rather than at the next hourly sweep. Crashed states that chalk-dr
  set itself are skipped: the run that set them has repaired already (tasks/locks.py).

Each is created when missing, updated in place when it differs, and left alone when it matches;
duplicates of the name are deleted, so the name stays unique.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.actions import RunDeployment
from prefect.events.schemas.automations import AutomationCore
from prefect.events.schemas.automations import EventTrigger
from prefect.events.schemas.automations import Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectNotFound

from tasks.locks import MARKED_CRASHED_PREFIX

__all__ = [
    "RUNBOOK_FLOWS",
    "SWEEP_DEPLOYMENT",
    "ZOMBIE_AUTOMATION",
    "ensure_automations",
    "sweep_on_failure_automation",
    "zombie_automation",
]

ZOMBIE_AUTOMATION = "Crash zombie flows"
SWEEP_AUTOMATION = "chalk-dr: sweep after a failed runbook"
SWEEP_DEPLOYMENT = "sweep/sweep-hourly"  # prefect.yaml: flow `sweep`, deployment `sweep-hourly`
RUNBOOK_FLOWS = ("drill", "failover", "failback")  # the flows whose failure may leave a fault behind


def zombie_automation() -> Automation:
    """Prefect's zombie-run automation, as its documentation gives it."""
    return Automation(
        name=ZOMBIE_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=90),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message="Flow run marked as crashed due to missing heartbeats.",
            )
        ],
    )


def sweep_on_failure_automation(sweep_deployment_id: UUID) -> Automation:
    """Run the sweep deployment with the failed runbook's topology when one ends Failed or Crashed."""
    return Automation(
        name=SWEEP_AUTOMATION,
        description=(
            "When a drill, failover or failback ends Failed or Crashed, sweep its environment at once: "
            "undo what it left injected and mark it Crashed if it died still shown Running."
        ),
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match=ResourceSpecification(
                {
                    "prefect.resource.id": "prefect.flow-run.*",
                    # chalk-dr's own Crashed marks come from a run that repaired already
                    "prefect.state-message": f"!{MARKED_CRASHED_PREFIX}*",
                }
            ),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "flow", "prefect.resource.name": list(RUNBOOK_FLOWS)}
            ),
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=sweep_deployment_id,
                # a single expression keeps its type (a path, or the topology as a mapping)
                parameters={"topology": "{{ flow_run.parameters.topology }}"},
            )
        ],
    )


def _comparable(automation: AutomationCore) -> Any:
    """What the automation does, without its ids, with sets in a stable order."""
    data = automation.model_dump(mode="json", exclude={"id", "owner_resource"})
    data["trigger"].pop("id", None)

    def stable(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: stable(v) for k, v in value.items()}
        if isinstance(value, list):
            items = [stable(v) for v in value]
            return sorted(items) if all(isinstance(v, str) for v in items) else items
        return value

    return stable(data)


def _ensure(desired: Automation) -> str:
    # owner_resource left unset: the server's update endpoint refuses it (extra_forbidden)
    core = AutomationCore(**desired.model_dump(exclude={"id", "owner_resource"}))
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(desired.name)
        if not existing:
            client.create_automation(core)
            return "created"
        # Keep one that already matches, else the least recently updated (the server lists
        # them most recently updated first): the copy that stood longest is the one to keep.
        matching = [a for a in existing if _comparable(a) == _comparable(core)]
        keep = matching[0] if matching else existing[-1]
        duplicates = [a for a in existing if a.id != keep.id]
        for extra in duplicates:
            client.delete_automation(extra.id)
        if _comparable(keep) == _comparable(core):
            return "unchanged" if not duplicates else f"unchanged ({len(duplicates)} duplicate(s) deleted)"
        client.update_automation(keep.id, core)
        return "updated" if not duplicates else f"updated ({len(duplicates)} duplicate(s) deleted)"


def ensure_automations(*, sweep_deployment: str = SWEEP_DEPLOYMENT) -> dict[str, str]:
    """Create or converge both automations; returns what was done to each, by name."""
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(sweep_deployment)
        except ObjectNotFound:
            raise SystemExit(
                f"deployment {sweep_deployment} not found: deploy first (prefect --no-prompt deploy --all)"
            ) from None
    return {
        ZOMBIE_AUTOMATION: _ensure(zombie_automation()),
        SWEEP_AUTOMATION: _ensure(sweep_on_failure_automation(deployment.id)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sweep-deployment",
        default=SWEEP_DEPLOYMENT,
        help=f"the sweep deployment as flow/deployment (default {SWEEP_DEPLOYMENT})",
    )
    args = parser.parse_args(argv)
    for name, outcome in ensure_automations(sweep_deployment=args.sweep_deployment).items():
        print(f"{name}: {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
