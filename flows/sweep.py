"""The sweep: repair at once what a dead runbook left behind, and mark the dead run Crashed.

Runbook: lock → sweep. The drill sweeps when it starts; this flow does the same repair without
waiting for the next drill: deployed hourly and run by an automation whenever a drill, failover
or failback ends Failed or Crashed (deployments/automations.py), so a primary left broken by a
killed drill never waits a week for the next game day. It takes the environment's lock like any
runbook (so it never undoes a live drill's fault), but the kill switch does not refuse it: the
kill switch stops faults, never their undo. The SweepReport is the flow's result, the keyed
markdown artifact `sweep-<env>` and the event `chalkdr.sweep.finished`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from typing import ClassVar

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed
from prefect.states import Failed
from pydantic import Field

from chalkdr.drill import LockWaitSeconds
from chalkdr.report import Journal
from chalkdr.report import PhaseStatus
from chalkdr.report import RunReport
from flows.runbook import DEFAULT_LOCK_WAIT_S
from flows.runbook import RunContext
from flows.runbook import emit_finished
from flows.runbook import execute_runbook
from flows.runbook import load_topology_parameter
from flows.runbook import phase_events
from tasks.faults import SweepIncomplete
from tasks.faults import sweep_leftovers
from tasks.route53 import discover_routing

__all__ = ["SweepReport", "render_sweep", "sweep"]


class SweepReport(RunReport):
    """What one sweep repaired, which dead runs it marked Crashed, and what it could not repair."""

    PHASES: ClassVar[tuple[str, ...]] = ("lock", "sweep")

    sweep_id: str
    swept: list[str] = Field(default_factory=list)  # repaired, then runs marked Crashed
    unrepaired: list[str] = Field(default_factory=list)  # each with its error; markers kept

    @property
    def run_id(self) -> str:
        return self.sweep_id


Sweep = RunContext[None, SweepReport]


def new_sweep_id(now: float, suffix: str) -> str:
    """Sortable, tag-safe: `s` + UTC timestamp + a random suffix, like a drill id."""
    return "s" + time.strftime("%Y%m%dt%H%M%S", time.gmtime(now)) + "-" + suffix[:6]


def render_sweep(report: SweepReport) -> str:
    lines = [
        f"# Sweep `{report.sweep_id}` — {report.environment}: {report.outcome.value}",
        "",
        f"- outcome: **{report.outcome.value}**"
        + (f" — {report.outcome_reason}" if report.outcome_reason else ""),
        "",
        "## Repaired, and dead runs marked Crashed",
        "",
    ]
    lines += [f"- {s}" for s in report.swept] or ["- nothing was left behind"]
    if report.unrepaired:
        lines += ["", "## Not repaired (markers kept: the next sweep tries again)", ""]
        lines += [f"- {s}" for s in report.unrepaired]
    lines += ["", "## Phases", "", "| phase | status | duration | note |", "|---|---|---|---|"]
    for name in report.PHASES:
        p = report.phases[name]
        duration = "—" if p.duration_s is None else f"{p.duration_s:.2f} s"
        lines.append(f"| {name} | {p.status.value} | {duration} | {p.reason or ''} |")
    return "\n".join(lines) + "\n"


def publish_sweep(report: SweepReport) -> None:
    create_markdown_artifact(
        markdown=render_sweep(report),
        key=f"sweep-{report.environment}",
        description=f"Sweep {report.sweep_id}: {report.outcome.value}, {len(report.swept)} swept",
    )
    emit_finished("sweep", report, {"swept": report.swept, "unrepaired": report.unrepaired})


@flow(name="sweep", persist_result=True, validate_parameters=True)
def sweep(
    topology: str | dict[str, Any], wait_for_lock_seconds: LockWaitSeconds = DEFAULT_LOCK_WAIT_S
) -> Any:
    """Repair what a crashed drill, failover or failback of `topology` left behind, now.

    Ends Failed when something could not be repaired (its marker stays for the next sweep);
    Completed when everything is back, or when another runbook holds the lock (a live runbook
    swept when it started, and a dead one's lease lapses within the wait).

    Args:
        topology: The topology to sweep. From a deployment: the name of a YAML file in the worker's
            $CHALK_DR_TOPOLOGY_DIR (the automation after a failed runbook passes that run's own);
            a mapping or a path elsewhere is refused. From Python, also a path or a mapping.
        wait_for_lock_seconds: Seconds to wait for a drill, failover, failback or provision apply
            of the environment to release its lock; past it the sweep ends Completed without
            repairing (a live runbook repairs its own faults).
    """
    t = load_topology_parameter(topology)
    report = SweepReport(
        sweep_id=new_sweep_id(time.time(), uuid.uuid4().hex),
        environment=t.environment,
        time_scale=t.time_scale,
    )
    journal = Journal(report, on_phase_end=phase_events("sweep", report))
    execute_runbook(
        t,
        None,
        journal,
        _runbook,
        wait_for_lock_s=wait_for_lock_seconds,
        publish=publish_sweep,
        kill_switch=False,
    )
    summary = (
        f"sweep {report.sweep_id}: {report.outcome.value}, {len(report.swept)} swept"
        + (f", {len(report.unrepaired)} not repaired" if report.unrepaired else "")
        + (f" — {report.outcome_reason}" if report.outcome_reason else "")
    )
    if report.outcome is PhaseStatus.COMPLETED or _lock_busy(report):
        return Completed(message=summary, data=report)
    return Failed(message=summary, data=report)


def _lock_busy(report: SweepReport) -> bool:
    """Aborted in the lock phase: another runbook holds the lock (the kill switch never stops a sweep)."""
    return report.outcome is PhaseStatus.ABORTED and report.phases["lock"].status is PhaseStatus.ABORTED


def _runbook(ctx: Sweep) -> None:
    with ctx.journal.phase("sweep") as rec:
        ctx.routing = discover_routing(ctx.topology, ctx.clients, ctx.probes.resolver)
        try:
            ctx.report.swept = sweep_leftovers(ctx.topology, ctx.clients, ctx.routing)
        except SweepIncomplete as exc:
            ctx.report.swept, ctx.report.unrepaired = exc.repaired, exc.failures
            raise
        rec.detail["swept"] = len(ctx.report.swept)
