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
from prefect.artifacts import create_markdown_artifact
from prefect.artifacts import create_table_artifact
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Completed
from prefect.states import Failed

from chalkdr.deploy import LastGood
from chalkdr.drill import PAUSE_TAKES_EFFECT_MAX_AWS_S
from chalkdr.drill import AbortAfter
from chalkdr.drill import DrillSettings
from chalkdr.drill import HoldSeconds
from chalkdr.drill import LagReading
from chalkdr.drill import LockWaitSeconds
from chalkdr.drill import ObserveTimeout
from chalkdr.drill import ProbeInterval
from chalkdr.drill import Scenario
from chalkdr.drill import SloOverrides
from chalkdr.drill import SteadyStateWait
from chalkdr.drill import abort_reason
from chalkdr.drill import evaluate_slos
from chalkdr.drill import new_drill_id
from chalkdr.drill import rpo_estimate
from chalkdr.drill import steady_state_notes
from chalkdr.errors import DrillAborted
from chalkdr.errors import PreflightFailed
from chalkdr.observe import Direction
from chalkdr.observe import Milestones
from chalkdr.observe import Observation
from chalkdr.observe import milestones
from chalkdr.population import PopulationOutage
from chalkdr.population import Sample
from chalkdr.population import population_outage
from chalkdr.report import DrillReport
from chalkdr.report import Journal
from chalkdr.report import LagAtInjection
from chalkdr.report import PhaseStatus
from chalkdr.report import population_rows
from chalkdr.report import render_markdown
from chalkdr.report import timeline_rows
from chalkdr.topology import ALB_ALIAS_TTL_S
from chalkdr.topology import Topology
from flows.runbook import DEFAULT_LOCK_WAIT_S
from flows.runbook import RunContext
from flows.runbook import emit_finished
from flows.runbook import execute_runbook
from flows.runbook import load_topology_parameter
from flows.runbook import phase_events
from tasks.chalk import read_last_good
from tasks.faults import Fault
from tasks.faults import check_fis_template
from tasks.faults import inject_fault
from tasks.faults import make_fault
from tasks.faults import recoveries_in_effect
from tasks.faults import sweep_leftovers
from tasks.faults import undo_fault
from tasks.locks import kill_switch_reason
from tasks.probes import await_steady_state
from tasks.probes import canary_served
from tasks.probes import measure_canary_replication
from tasks.probes import observe_until
from tasks.route53 import discover_routing

__all__ = ["DrillApproval", "drill"]

KILL_SWITCH_EVERY_S = 1.0
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
    held_canary: str | None = None  # replication-paused: a write seen held back by the pause
    held_written_at: float | None = None  # monotonic, when that write was made
    # What each region answered through its own hostname just before the injection (steady state).
    available_before: dict[str, bool] | None = None


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
    # Everything a drill-history row needs (flows/history.py reads it when a run's persisted
    # result cannot be read, for as long as the event is retained).
    targets = {s.name: s.target for s in report.slos}
    emit_finished(
        "drill",
        report,
        {
            "passed": report.passed,
            "rto_s": report.rto_s,
            "drill_id": report.drill_id,
            "scenario": report.scenario,
            "rpo_s": report.rpo.exposure_s,
            "rto_slo_s": targets.get("RTO"),
            "rpo_slo_s": targets.get("RPO"),
            "started_wall": report.started_wall,
        },
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
    wait_for_lock_seconds: LockWaitSeconds = DEFAULT_LOCK_WAIT_S,
    steady_state_wait_seconds: SteadyStateWait = 0.0,
) -> Any:
    """Rehearse a regional failure of `topology`'s primary and report RTO/RPO with evidence.

    `failback=False` still undoes the fault (a drill never leaves a region broken) but skips
    observing the way back. `dry_run` runs everything except the injection.

    Args:
        topology: The topology to drill. From a deployment: the name of a YAML file in the worker's
            $CHALK_DR_TOPOLOGY_DIR (e.g. topology.example.yaml); a mapping or a path elsewhere is
            refused. From Python, also a path or the topology as a mapping.
        scenario: The fault injected in the primary. query-servers-down: its query-server
            Deployment scaled to 0 (Route 53 fails over on /healthz). health-check-inverted: its
            Route 53 health check inverted (traffic moves while the primary still serves).
            replication-paused: DynamoDB replication paused by an FIS experiment (measures RPO;
            traffic stays). fis-experiment: an operator's FIS template (needs
            fis_experiment_template_id).
        failback: Observe the way back after the undo and report it. Off, the fault is still undone:
            a drill never leaves a region broken.
        hold_seconds: Seconds to keep the fault in place after the failover was observed, still
            observing (and still able to abort).
        probe_interval_seconds: Seconds between observations (Route 53 verdicts, DNS answers and a
            real query through the failover name) outside the window where the flip is expected;
            inside it the drill probes every 0.1 s.
        slo: RTO/RPO targets for this run only; empty fields keep the topology's `slo:`.
        dry_run: Run every phase except the injection (lock, sweep, pre-flight, approval, canary,
            post-flight): proves the drill could run, changes nothing.
        require_approval: Pause after pre-flight until someone answers the approval form (approve,
            approver, comment); the form's description names the scenario, the region and the
            expected failover time.
        fis_experiment_template_id: Scenario fis-experiment only: the FIS experiment template to run.
            It must be tagged chalk-dr:managed=true and chalk-dr:environment=<env>, with reversible
            actions only.
        abort_after_failed_probes: Consecutive observations of the secondaries failing (unhealthy,
            or Route 53's verdict on them unreadable) that abort the drill and undo the fault.
        observe_timeout_seconds: Real seconds to wait for each transition (failover, failback).
            Empty: three times the configured worst case plus 30 s.
        wait_for_lock_seconds: Seconds to wait for another drill, sweep, failover, failback or
            provision apply of the environment to release its lock before giving up.
        steady_state_wait_seconds: Seconds pre-flight may wait for steady state (0: judge it once).
            For a drill started right after provisioning, while a new MSK replicator still copies
            its backlog.
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
        steady_state_wait_seconds=steady_state_wait_seconds,
    )
    t = load_topology_parameter(topology)
    report = _new_report(t, settings)
    journal = Journal(report, on_phase_end=phase_events("drill", report))
    execute_runbook(
        t,
        settings,
        journal,
        _runbook,
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
    # The canaries are feature rows written through Chalk, keyed by the drill id; Chalk's
    # clients cannot delete a row and chalk-dr does not reach behind Chalk to do it, so they stay
    # (a few bytes per drill, in a feature class of their own).
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


# -- the phases, in runbook order ---------------------------------------------------------------


def sweep(ctx: Drill) -> None:
    """Read the live routing from Route 53 and repair whatever a crashed drill left behind."""
    with ctx.journal.phase("sweep") as rec:
        # as it is, not as configured; the ALB addresses as the clients' resolvers give them
        ctx.routing = discover_routing(ctx.topology, ctx.clients, ctx.probes.resolver)
        ctx.report.swept = sweep_leftovers(ctx.topology, ctx.clients, ctx.routing)
        rec.detail["restored"] = len(ctx.report.swept)


def preflight(ctx: Drill) -> LastGood | None:
    """Steady state before anything is touched; after a sweep, wait (bounded) for it to settle."""
    with ctx.journal.phase("preflight") as rec:
        parity = read_last_good(ctx.topology.environment)
        steady, problems = await_steady_state(
            ctx.probes,
            ctx.live_routing,
            # After a repair, at least the time the repair takes to show; and what the caller allows.
            timeout_s=max(
                ctx.settings.observe_timeout_s(ctx.topology) if ctx.report.swept else 0.0,
                ctx.settings.steady_state_wait_seconds,
            ),
            interval_s=ctx.settings.probe_interval_seconds,
            expected_deployments=parity.deployment_ids if parity else None,
            expected_sha=parity.sha if parity else None,
            # After a repair, resolvers may hold the repaired-away answer for a whole TTL.
            stable_for_s=_ttl_s(ctx) if ctx.report.swept else 0.0,
        )
        problems += _fault_problems(ctx)
        rec.detail["problems"] = problems
        notes = steady_state_notes(steady)
        if notes:
            rec.detail["notes"] = notes
            for note in notes:
                ctx.journal.event("preflight", "not checked", note)
        if problems:
            raise PreflightFailed(problems)
        ctx.report.rpo.lags_at_injection = _lags_now(steady.lags)
    return parity


def _fault_problems(ctx: Drill) -> list[str]:
    """What refuses the fault itself before anything is touched: a failover still in effect (a
    drill never rehearses on a layout mid-incident), or an operator's FIS template that is not
    marked for this environment or whose actions are not reversible."""
    s = ctx.settings
    problems = recoveries_in_effect(ctx.clients, ctx.live_routing)
    if s.scenario is not Scenario.FIS_EXPERIMENT:
        return problems
    if not s.fis_experiment_template_id:
        return [*problems, "scenario fis-experiment needs fis_experiment_template_id"]
    return problems + check_fis_template(ctx.topology, ctx.clients, s.fis_experiment_template_id)


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
    """Check the kill switch and steady state once more, read the lags that decide RPO at the
    moment of the fault, then inject it."""
    with ctx.journal.phase("inject"):
        # Approval may have waited an hour since pre-flight: what counts is the state now.
        if reason := kill_switch_reason():
            raise DrillAborted(reason)
        steady, problems = await_steady_state.fn(
            ctx.probes, ctx.live_routing, timeout_s=0, interval_s=ctx.settings.probe_interval_seconds
        )
        if problems:
            raise PreflightFailed(["just before injection: " + p for p in problems])
        ctx.report.rpo.lags_at_injection = _lags_now(steady.lags)
        run.available_before = {r: a.ok for r, a in steady.served.items()}
        run.injected_at = time.monotonic()
        inject_fault(run.fault)
        ctx.journal.event("inject", "fault injected", run.fault.target, mono=run.injected_at)


def observe_failover(ctx: Drill, run: FaultRun) -> None:
    """Observe traffic leave the faulted region (or, for replication-paused, write a held canary)."""
    with ctx.journal.phase("observe") as rec:
        if not ctx.settings.scenario.moves_traffic:
            _await_pause_effective(ctx, run)
            return
        assert run.injected_at is not None
        others = ctx.report.secondary_regions
        obs, aborted = _observe(
            ctx,
            _failed_over(ctx),
            ctx.settings.observe_timeout_s(ctx.topology),
            start=run.injected_at,
            fast=_flip_window(ctx, failback=False),
        )
        m = milestones(
            obs,
            start_mono=run.injected_at,
            direction=Direction.FAILOVER,
            faulted_region=ctx.report.primary_region,
            target_regions=others,
        )
        ctx.report.failover = m
        population = population_outage(
            _samples(obs, run.injected_at, before=run.available_before), ttl_s=_ttl_s(ctx)
        )
        ctx.report.failover_population = population
        publish_population(ctx.report, population, "failover")
        # Failover: the first good answer from the secondary (the earliest any client moves; the
        # population says when the last one did). Active-active: until no client fails.
        ctx.report.rto_s = population.recovered_s if ctx.topology.active_active else m.first_good_answer_s
        _milestone_events(ctx.journal, m, run.injected_at, "observe")
        rec.detail["observations"] = len(obs)
        if aborted:
            raise DrillAborted(aborted)
        _refuse_unmeasurable(ctx, obs, run.injected_at)
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
            served = [
                r for r in ctx.report.secondary_regions if canary_served(ctx.probes, run.held_canary, r)
            ]
            held = not served
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
                assert run.held_written_at is not None
                # The window a region loss would have lost: from the held write until it replicated.
                exposure = time.monotonic() - run.held_written_at
                report.rpo.exposure_s = None if missing else round(exposure, 3)
            elif not settings.failback:
                rec.reason = "failback observation skipped (fault undone)"
            else:
                _observe_failback(ctx, t_undo)
    finally:
        if settings.scenario.moves_traffic:
            report.rpo.exposure_s, report.rpo.estimate_from = rpo_estimate(report.rpo)


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


def _lags_now(lags: dict[str, LagReading]) -> dict[str, LagAtInjection]:
    return {name: LagAtInjection(value=lag.value, unit=lag.unit) for name, lag in lags.items()}


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
    ctx: Drill,
    done: Callable[[Sequence[Observation]], bool],
    timeout_s: float,
    *,
    start: float | None = None,
    fast: tuple[float, float] | None = None,
) -> tuple[list[Observation], str | None]:
    return observe_until(
        ctx.probes,
        ctx.live_routing,
        interval_s=ctx.settings.probe_interval_seconds,
        timeout_s=timeout_s,
        done=done,
        abort=_abort_check(ctx, time.monotonic() if start is None else start),
        canary_id=ctx.report.drill_id,
        fast=fast,
        focus=ctx.report.primary_region,
    )


def _abort_check(ctx: Drill, since: float) -> Callable[[Sequence[Observation]], str | None]:
    settings = ctx.settings
    # Queries may fail from the fault until the flip reaches clients: the configured worst case,
    # plus a few probe intervals of slack, and no longer.
    limit = settings.expected_failover_real_s(ctx.topology) + 3 * settings.probe_interval_seconds

    # The kill switch is a Prefect Variable (an API round trip): read it at most once a second,
    # so a slow API cannot stretch the fast polls around the flip.
    last_read = [float("-inf")]

    def abort(obs: Sequence[Observation]) -> str | None:
        now = time.monotonic()
        if now - last_read[0] >= KILL_SWITCH_EVERY_S:
            last_read[0] = now
            if reason := kill_switch_reason():
                return reason
        return abort_reason(
            obs,
            secondaries=ctx.report.secondary_regions,
            abort_after=settings.abort_after_failed_probes,
            failing_limit_s=limit,
            since_mono=since,
        )

    return abort


def _ttl_s(ctx: Drill) -> float:
    """The failover record's TTL in this environment's real seconds (an alias: the ELB's 60 s)."""
    return ALB_ALIAS_TTL_S / ctx.topology.time_scale


def _flip_window(ctx: Drill, *, failback: bool) -> tuple[float, float]:
    """Where the flip is expected, in real seconds after the fault (or the undo): from one
    check before Route 53 can have decided, to the configured worst case plus a second. The
    probe polls fast there (tasks/probes.observe_until)."""
    hc = ctx.topology.route53.health_check
    scale = ctx.topology.time_scale
    earliest = max(0.0, (hc.failure_threshold - 2) * hc.request_interval / scale)
    latest = ctx.settings.expected_failover_real_s(ctx.topology) + 1.0
    return (earliest, latest) if not failback else (0.0, latest)


def _samples(
    obs: Sequence[Observation], start: float, *, before: dict[str, bool] | None = None
) -> list[Sample]:
    """The population model's inputs, each at the moment its availability was measured.

    `before`: every region's availability measured just before the reference instant (the
    injection's last steady-state check). It becomes a sample at t = 0, with the first
    observation's answer set (Route 53 cannot move the answer before its checkers have failed
    several times): the fault cannot have acted earlier, so the first outage is placed between
    the injection and the first observation, not at that observation (which comes a good part of
    a second later: the injection itself is a task)."""
    samples = [
        Sample(
            t=round((o.available_mono if o.available_mono is not None else o.mono) - start, 3),
            answer=o.answer,
            available=o.available,
        )
        for o in obs
    ]
    if before is not None and samples and samples[0].t > 0:
        samples.insert(0, Sample(t=0.0, answer=samples[0].answer, available=before))
    return samples


def publish_population(report: DrillReport, population: PopulationOutage, direction: str) -> None:
    """The share of clients failing over time, as a table artifact beside the report."""
    create_table_artifact(
        table=population_rows(population),
        key=f"drill-{report.environment}-{direction}-clients",
        description=(
            f"Drill {report.drill_id} {direction}: share of {population.clients} modelled clients failing "
            f"(TTL {population.ttl_s:g} s); peak {100 * population.peak_share:.1f}%"
        ),
    )


def _refuse_unmeasurable(ctx: Drill, obs: Sequence[Observation], injected_at: float) -> None:
    """Failover routing: when the first look after the fault already saw the secondary, sooner
    than Route 53's checkers can fail a check (FailureThreshold - 1 intervals), clients were there
    before the fault, and no RTO can be claimed."""
    if ctx.topology.active_active or not obs:
        return
    first = obs[0]
    others = ctx.report.secondary_regions
    hc = ctx.topology.route53.health_check
    if ctx.settings.scenario is Scenario.HEALTH_CHECK_INVERTED:
        return  # Route 53 applies an inverted verdict at once: an immediate flip is the expected one
    too_soon = (hc.failure_threshold - 1) * hc.request_interval / ctx.topology.time_scale
    if first.mono - injected_at < too_soon and (first.dns_answer in others or first.query.region in others):
        ctx.report.rto_s = None
        raise DrillAborted(
            f"the failover name already answered from {first.query.region or first.dns_answer} "
            f"{first.mono - injected_at:.2f} s after the fault, before Route 53 could have flipped "
            f"({too_soon:.1f} s at the earliest): clients were elsewhere already; no RTO is claimed"
        )


def _failed_over(ctx: Drill) -> Callable[[Sequence[Observation]], bool]:
    """Done once the probe is served by the secondaries and a whole TTL has passed since the
    answer moved (so every client's cache has moved too: the population's curve is complete)."""
    primary, others = ctx.report.primary_region, ctx.report.secondary_regions
    settle = _ttl_s(ctx) + 2 * ctx.settings.probe_interval_seconds

    def moved_at(obs: Sequence[Observation]) -> float | None:
        for x in obs:
            if ctx.topology.active_active and x.health.get(primary) is False:
                return x.mono
            if not ctx.topology.active_active and x.dns_answer in others:
                return x.mono
        return None

    def done(obs: Sequence[Observation]) -> bool:
        o = obs[-1]
        anchor = moved_at(obs)
        if anchor is None or o.mono - anchor < settle:
            return False
        if not ctx.topology.active_active:
            return o.query.ok and o.query.region in others and o.query.canary_value is not None
        # Active-active: the healthy regions were answering all along; done once Route 53 has
        # dropped the faulted region and the last few answers all came from the others.
        recent = obs[-SETTLED_PROBES:]
        return len(recent) == SETTLED_PROBES and all(x.query.ok and x.query.region in others for x in recent)

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
        canary_id=ctx.report.drill_id,
        fast=_flip_window(ctx, failback=True),
        focus=primary,
    )
    m = milestones(
        obs, start_mono=t_undo, direction=Direction.FAILBACK, faulted_region=primary, target_regions=[primary]
    )
    ctx.report.failback = m
    population = population_outage(_samples(obs, t_undo), ttl_s=_ttl_s(ctx))
    ctx.report.failback_population = population
    publish_population(ctx.report, population, "failback")
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


def _await_pause_effective(ctx: Drill, run: FaultRun) -> None:
    """Replication-paused: find the moment the pause holds writes back, from evidence.

    AWS: "Tables may continue to be replicated for up to 5 minutes after action begins" (FIS
    actions reference). So the drill writes a canary through Chalk, waits a window of three
    pre-flight canary lags (at least one probe interval) for the secondaries to serve it, and
    repeats until one is not served: that write is the held one, and what hold and failback
    measure. No held write within the documented bound aborts the drill (the pause did nothing
    observable, so no RPO claim can be made).
    """
    assert run.injected_at is not None
    settings, report = ctx.settings, ctx.report
    lag = report.rpo.canary_replication_lag_s or 0.0
    window = max(3 * lag, settings.probe_interval_seconds)
    budget = PAUSE_TAKES_EFFECT_MAX_AWS_S / ctx.topology.time_scale + window
    n = 0
    while True:
        n += 1
        canary_id = f"{report.drill_id}-held-{n}"
        written = time.monotonic()
        _, missing = measure_canary_replication.fn(ctx.probes, canary_id, timeout_s=window)
        report.rpo.pause_probe_writes = n
        if missing:
            run.held_canary, run.held_written_at = canary_id, written
            report.rpo.pause_effective_after_s = round(written - run.injected_at, 3)
            ctx.journal.event("observe", "write held back by the pause", canary_id, mono=written)
            return
        if time.monotonic() - run.injected_at >= budget:
            raise DrillAborted(
                f"replication kept up for {budget:.0f} s after the pause began ({n} canary writes, "
                "each replicated): the pause never took effect"
            )
