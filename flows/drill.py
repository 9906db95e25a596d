"""The DR drill: rehearse a regional failure, measure RTO/RPO from evidence, put everything back.

Runbook: lock → sweep → pre-flight → approval → canary → inject → observe → hold → undo +
failback → post-flight. Each phase is a small function of the run context (flows/runbook.py).
The fault's undo runs in a `finally`, and every fault leaves a durable marker that the next
drill's sweep repairs after a hard kill. The DrillReport is the flow's result and is rendered as
artifacts and events.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect import flow
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Completed
from prefect.states import Failed

from chalkdr.deploy import LastGood
from chalkdr.drill import AbortAfter
from chalkdr.drill import DrillSettings
from chalkdr.drill import HoldSeconds
from chalkdr.drill import LockWaitSeconds
from chalkdr.drill import ObserveTimeout
from chalkdr.drill import ProbeInterval
from chalkdr.drill import Scenario
from chalkdr.drill import SloOverrides
from chalkdr.drill import evaluate_slos
from chalkdr.drill import new_drill_id
from chalkdr.drill import rpo_exposure_s
from chalkdr.errors import DrillAborted
from chalkdr.errors import PreflightFailed
from chalkdr.observe import Direction
from chalkdr.observe import Milestones
from chalkdr.observe import Observation
from chalkdr.observe import milestones
from chalkdr.report import DrillReport
from chalkdr.report import Journal
from chalkdr.report import PhaseStatus
from chalkdr.report import render_markdown
from chalkdr.report import timeline_rows
from chalkdr.topology import Topology
from flows.runbook import RunContext
from flows.runbook import execute_runbook
from flows.runbook import load_topology_parameter
from flows.runbook import phase_events
from tasks.chalk import read_last_good
from tasks.faults import Fault
from tasks.faults import inject_fault
from tasks.faults import make_fault
from tasks.faults import sweep_leftovers
from tasks.faults import undo_fault
from tasks.locks import kill_switch_reason
from tasks.probes import await_steady_state
from tasks.probes import delete_canaries
from tasks.probes import measure_canary_replication
from tasks.probes import observe_until
from tasks.probes import read_canary
from tasks.probes import read_replication_lags
from tasks.route53 import discover_routing

__all__ = ["DrillApproval", "drill"]

SETTLED_PROBES = 3  # active-active: consecutive answers from the healthy regions that settle it
Drill = RunContext[DrillSettings, DrillReport]


class DrillApproval(RunInput):
    """The form an operator fills in to let a drill inject its fault."""

    approve: bool = False
    approver: str = ""
    comment: str = ""


@dataclass
class FaultRun:
    """One injected fault and what the phases after injection learn about it."""

    fault: Fault
    injected_at: float | None = None  # monotonic
    held_canary: str | None = None  # replication-paused: a write made while replication is held


def publish_report(report: DrillReport) -> None:
    """Artifacts and the closing event; a plain call, not a task, to keep orchestration cheap."""
    create_markdown_artifact(
        markdown=render_markdown(report),
        key=f"drill-{report.environment}",
        description=f"DR drill {report.drill_id} ({report.scenario}): {report.outcome.value}",
    )
    create_table_artifact(
        table=timeline_rows(report),
        key=f"drill-{report.environment}-timeline",
        description=f"Timeline of drill {report.drill_id}",
    )
    emit_event(
        event="chalkdr.drill.finished",
        resource={
            "prefect.resource.id": f"chalkdr.drill.{report.drill_id}",
            "chalkdr.environment": report.environment,
        },
        payload={"outcome": report.outcome.value, "passed": report.passed, "rto_s": report.rto_s},
    )


def _new_report(t: Topology, settings: DrillSettings) -> DrillReport:
    return DrillReport(
        drill_id=new_drill_id(time.time(), uuid.uuid4().hex),
        environment=t.environment,
        scenario=settings.scenario.value,
        routing=t.routing.value,
        primary_region=t.primary.aws_region,
        secondary_regions=[r.aws_region for r in t.secondaries],
        dry_run=settings.dry_run,
        time_scale=t.time_scale,
        probe_interval_s=settings.probe_interval_seconds,
        expected_failover_s=round(settings.expected_failover_real_s(t), 3),
    )


@flow(name="drill", persist_result=True, validate_parameters=True)
def drill(
    topology: str | dict[str, Any],
    scenario: Scenario = Scenario.QUERY_SERVERS_DOWN,
    failback: bool = True,
    hold_seconds: HoldSeconds = 5.0,
    probe_interval_seconds: ProbeInterval = 1.0,
    slo: SloOverrides | None = None,
    dry_run: bool = False,
    require_approval: bool = False,
    fis_experiment_template_id: str | None = None,
    abort_after_failed_probes: AbortAfter = 5,
    observe_timeout_seconds: ObserveTimeout = None,
    wait_for_lock_seconds: LockWaitSeconds = 10.0,
) -> Any:
    """Rehearse a regional failure of `topology`'s primary and report RTO/RPO with evidence.

    `failback=False` still undoes the fault (a drill never leaves a region broken) but skips
    observing the way back. `dry_run` runs everything except the injection.
    """
    settings = DrillSettings(
        scenario=scenario,
        failback=failback,
        hold_seconds=hold_seconds,
        probe_interval_seconds=probe_interval_seconds,
        slo=slo or SloOverrides(),
        dry_run=dry_run,
        require_approval=require_approval,
        fis_experiment_template_id=fis_experiment_template_id,
        abort_after_failed_probes=abort_after_failed_probes,
        observe_timeout_seconds=observe_timeout_seconds,
        wait_for_lock_seconds=wait_for_lock_seconds,
    )
    t = load_topology_parameter(topology)
    report = _new_report(t, settings)
    journal = Journal(report, on_phase_end=phase_events("drill", report))
    execute_runbook(
        t,
        settings,
        journal,
        _runbook,
        lock=f"drill-{t.environment}",
        wait_for_lock_s=settings.wait_for_lock_seconds,
        publish=publish_report,
    )
    summary = (
        f"drill {report.drill_id}: {report.outcome.value}"
        + (f", RTO {report.rto_s:.2f} s" if report.rto_s is not None else "")
        + (f" — {report.outcome_reason}" if report.outcome_reason else "")
    )
    if report.outcome is PhaseStatus.COMPLETED:
        return Completed(message=summary, data=report)
    return Failed(message=summary, data=report)


def _runbook(ctx: Drill) -> None:
    try:
        sweep(ctx)
        parity = preflight(ctx)
        approve(ctx)
        canary(ctx)
        if ctx.settings.dry_run:
            for name in ("inject", "observe", "hold", "failback"):
                ctx.journal.skip(name, "dry run")
            postflight(ctx, parity)
            return
        run = FaultRun(_make_fault(ctx))
        try:
            inject(ctx, run)
            observe_failover(ctx, run)
            hold(ctx, run)
        finally:
            undo_and_failback(ctx, run)
        postflight(ctx, parity)
        judge(ctx)
    finally:
        _delete_canaries(ctx)


# -- the phases, in runbook order ---------------------------------------------------------------


def sweep(ctx: Drill) -> None:
    """Read the live routing from Route 53 and repair whatever a crashed drill left behind."""
    with ctx.journal.phase("sweep") as rec:
        ctx.routing = discover_routing(ctx.topology, ctx.clients)  # as it is, not as configured
        ctx.report.swept = sweep_leftovers(ctx.topology, ctx.clients, ctx.routing)
        rec.detail["restored"] = len(ctx.report.swept)


def preflight(ctx: Drill) -> LastGood | None:
    """Steady state before anything is touched; after a sweep, wait (bounded) for it to settle."""
    with ctx.journal.phase("preflight") as rec:
        parity = read_last_good(ctx.topology.environment)
        steady, problems = await_steady_state(
            ctx.probes,
            ctx.live_routing,
            timeout_s=ctx.settings.observe_timeout_s(ctx.topology) if ctx.report.swept else 0,
            interval_s=ctx.settings.probe_interval_seconds,
            expected_deployments=parity.deployment_ids if parity else None,
            expected_sha=parity.sha if parity else None,
        )
        rec.detail["problems"] = problems
        if problems:
            raise PreflightFailed(problems)
        ctx.report.rpo.replication_lag_at_injection_ms = {n: lag.value for n, lag in steady.lags.items()}
    return parity


def approve(ctx: Drill) -> None:
    """Pause for an operator's approval when the settings ask for it."""
    if not ctx.settings.require_approval:
        ctx.journal.skip("approval", "not required")
        return
    report = ctx.report
    with ctx.journal.phase("approval"):
        description = (
            f"Drill {report.drill_id}: scenario {report.scenario} on {report.primary_region} "
            f"({report.environment}). Pre-flight passed; expected failover "
            f"{ctx.settings.expected_failover_real_s(ctx.topology):.1f} s. Approve to inject."
        )
        answer = pause_flow_run(
            wait_for_input=DrillApproval.with_initial_data(description=description), timeout=3600
        )
        report.approver, report.approval_comment = answer.approver or None, answer.comment or None
        if not answer.approve:
            raise DrillAborted(f"not approved by {answer.approver or 'operator'}")


def canary(ctx: Drill) -> None:
    """Write the canary in the primary and measure how long the secondaries take to read it."""
    timeout_s = ctx.settings.observe_timeout_s(ctx.topology)
    with ctx.journal.phase("canary") as rec:
        lag, missing = measure_canary_replication(ctx.probes, ctx.report.drill_id, timeout_s=timeout_s)
        ctx.report.rpo.canary_replication_lag_s = lag
        rec.detail.update(lag_s=lag, missing=missing)
        if missing:
            raise PreflightFailed([f"canary not replicated to {', '.join(missing)} within {timeout_s:.0f} s"])
        ctx.journal.event("canary", "replicated", f"{lag:.3f} s")


def inject(ctx: Drill, run: FaultRun) -> None:
    """Read the lags that decide RPO at the moment of the fault, then inject it."""
    with ctx.journal.phase("inject"):
        # Approval may have taken a while since pre-flight: the lag that counts is the one now.
        lags = read_replication_lags(ctx.topology, ctx.clients)
        ctx.report.rpo.replication_lag_at_injection_ms = {n: lag.value for n, lag in lags.items()}
        run.injected_at = time.monotonic()
        inject_fault(run.fault)
        ctx.journal.event("inject", "fault injected", run.fault.target, mono=run.injected_at)


def observe_failover(ctx: Drill, run: FaultRun) -> None:
    """Observe traffic leave the faulted region (or, for replication-paused, write a held canary)."""
    with ctx.journal.phase("observe") as rec:
        if not ctx.settings.scenario.moves_traffic:
            run.held_canary = f"{ctx.report.drill_id}-held"
            measure_canary_replication.fn(ctx.probes, run.held_canary, timeout_s=0)  # write, don't wait
            ctx.journal.event("observe", "canary written during pause", run.held_canary)
            return
        assert run.injected_at is not None
        others = ctx.report.secondary_regions
        obs, aborted = _observe(ctx, _failed_over(ctx), ctx.settings.observe_timeout_s(ctx.topology))
        m = milestones(
            obs,
            start_mono=run.injected_at,
            direction=Direction.FAILOVER,
            faulted_region=ctx.report.primary_region,
            target_regions=others,
        )
        ctx.report.failover = m
        ctx.report.rto_s = m.settled_s if ctx.topology.active_active else m.first_good_answer_s
        _milestone_events(ctx.journal, m, run.injected_at, "observe")
        rec.detail["observations"] = len(obs)
        if aborted:
            raise DrillAborted(aborted)
        if ctx.report.rto_s is None:
            timeout_s = ctx.settings.observe_timeout_s(ctx.topology)
            raise DrillAborted(f"no good answer from {', '.join(others)} within {timeout_s:.0f} s")


def hold(ctx: Drill, run: FaultRun) -> None:
    """Keep the fault in place, still observing (and still able to abort)."""
    with ctx.journal.phase("hold"):
        _, aborted = _observe(ctx, lambda _obs: False, ctx.settings.hold_seconds)
        if aborted:
            raise DrillAborted(aborted)
        if run.held_canary is not None:
            held = not read_canary(ctx.probes, run.held_canary, ctx.report.secondary_regions)
            ctx.report.rpo.writes_held_back = held
            ctx.journal.event("hold", "writes held back" if held else "writes replicated anyway")


def undo_and_failback(ctx: Drill, run: FaultRun) -> None:
    """Undo the fault (always), then observe traffic come back unless the settings skip that."""
    settings, report = ctx.settings, ctx.report
    t_undo = time.monotonic()
    try:
        with ctx.journal.phase("failback") as rec:
            restored = undo_fault(run.fault)
            ctx.journal.event("failback", "fault undone", "; ".join(restored), mono=t_undo)
            rec.detail["restored"] = restored
            if run.injected_at is None:
                return
            if run.held_canary is not None:
                timeout_s = settings.observe_timeout_s(ctx.topology)
                _, missing = measure_canary_replication.fn(
                    ctx.probes, run.held_canary, timeout_s=timeout_s, write=False
                )
                report.rpo.exposure_s = None if missing else round(time.monotonic() - run.injected_at, 3)
            elif not settings.failback:
                rec.reason = "failback observation skipped (fault undone)"
            else:
                _observe_failback(ctx, t_undo)
    finally:
        if settings.scenario.moves_traffic:
            report.rpo.exposure_s = rpo_exposure_s(report.rpo)


def postflight(ctx: Drill, parity: LastGood | None) -> None:
    """Steady state again, within the observation timeout, or the drill says what is not back."""
    with ctx.journal.phase("postflight") as rec:
        _, problems = await_steady_state(
            ctx.probes,
            ctx.live_routing,
            timeout_s=ctx.settings.observe_timeout_s(ctx.topology),
            interval_s=ctx.settings.probe_interval_seconds,
            expected_deployments=parity.deployment_ids if parity else None,
            expected_sha=parity.sha if parity else None,
        )
        rec.detail["problems"] = problems
        if problems:
            raise DrillAborted("post-flight: steady state not restored: " + "; ".join(problems))


def judge(ctx: Drill) -> None:
    """The SLO verdicts from what was measured (RTO only when the scenario moves traffic)."""
    t, settings, report = ctx.topology, ctx.settings, ctx.report
    report.slos = evaluate_slos(
        rto_target_s=settings.rto_target_s(t),
        rpo_target_s=settings.rpo_target_s(t),
        rto_measured_s=report.rto_s,
        rpo_measured_s=report.rpo.exposure_s,
        traffic_moved=settings.scenario.moves_traffic,
    )


# -- what the phases share ----------------------------------------------------------------------


def _make_fault(ctx: Drill) -> Fault:
    s = ctx.settings
    return make_fault(
        s.scenario,
        topology=ctx.topology,
        clients=ctx.clients,
        routing=ctx.live_routing,
        drill_id=ctx.report.drill_id,
        fis_template_id=s.fis_experiment_template_id,
        duration_s=s.observe_timeout_s(ctx.topology) + s.hold_seconds,
    )


def _observe(
    ctx: Drill, done: Callable[[Sequence[Observation]], bool], timeout_s: float
) -> tuple[list[Observation], str | None]:
    return observe_until(
        ctx.probes,
        ctx.live_routing,
        interval_s=ctx.settings.probe_interval_seconds,
        timeout_s=timeout_s,
        done=done,
        abort=_abort_check(ctx),
        drill_id=ctx.report.drill_id,
    )


def _abort_check(ctx: Drill) -> Callable[[Sequence[Observation]], str | None]:
    others = ctx.report.secondary_regions
    n = ctx.settings.abort_after_failed_probes

    def abort(obs: Sequence[Observation]) -> str | None:
        if reason := kill_switch_reason():
            return reason
        if len(obs) < n:
            return None
        # Route 53's own verdict on the secondaries, not failed queries: right after the DNS flip,
        # resolvers still hold the old answer for the TTL, so failures then are expected.
        if all(all(o.health.get(r) is False for r in others) for o in obs[-n:]):
            down = ", ".join(others)
            return f"secondary failing too: Route 53 reports {down} unhealthy for {n} consecutive probes"
        return None

    return abort


def _failed_over(ctx: Drill) -> Callable[[Sequence[Observation]], bool]:
    primary, others = ctx.report.primary_region, ctx.report.secondary_regions

    def done(obs: Sequence[Observation]) -> bool:
        o = obs[-1]
        if not ctx.topology.active_active:
            return o.query.ok and o.query.region in others and o.query.canary_value is not None
        # Active-active: the healthy regions were answering all along; done once Route 53 has
        # dropped the faulted region and the last few answers all came from the others.
        recent = obs[-SETTLED_PROBES:]
        return (
            len(recent) == SETTLED_PROBES
            and o.health.get(primary) is False
            and all(x.query.ok and x.query.region in others for x in recent)
        )

    return done


def _observe_failback(ctx: Drill, t_undo: float) -> None:
    primary = ctx.report.primary_region

    def back(obs: Sequence[Observation]) -> bool:
        o = obs[-1]
        return o.query.ok and o.query.region == primary and o.health.get(primary) is True

    timeout_s = ctx.settings.observe_timeout_s(ctx.topology)
    obs, _ = observe_until(
        ctx.probes,
        ctx.live_routing,
        interval_s=ctx.settings.probe_interval_seconds,
        timeout_s=timeout_s,
        done=back,
        abort=lambda _o: None,
        drill_id=ctx.report.drill_id,
    )
    m = milestones(
        obs, start_mono=t_undo, direction=Direction.FAILBACK, faulted_region=primary, target_regions=[primary]
    )
    ctx.report.failback = m
    _milestone_events(ctx.journal, m, t_undo, "failback")
    if m.first_good_answer_s is None:
        raise DrillAborted(f"traffic did not return to {primary} within {timeout_s:.0f} s after the undo")


def _milestone_events(journal: Journal[DrillReport], m: Milestones, start: float, phase: str) -> None:
    for label, value in (
        ("Route 53 health flipped", m.health_flip_s),
        ("DNS answer flipped", m.dns_flip_s),
        ("first good answer", m.first_good_answer_s),
        ("canary served", m.canary_served_s),
    ):
        if value is not None:
            journal.event(phase, label, f"+{value:.2f} s", mono=start + value)


def _delete_canaries(ctx: Drill) -> None:
    try:
        delete_canaries(ctx.probes, [ctx.report.drill_id, f"{ctx.report.drill_id}-held"])
    except Exception as exc:  # noqa: BLE001 - cleanup must not mask the drill's own outcome
        get_run_logger().warning("canary rows of %s not deleted: %s", ctx.report.drill_id, exc)
