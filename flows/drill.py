"""The DR drill: rehearse a regional failure, measure RTO/RPO from evidence, put everything back.

Runbook: lock → sweep → pre-flight → approval → canary → inject → observe → hold → undo +
failback → post-flight. The fault's undo runs in a `finally` (and as the transaction's
rollback), and every fault leaves a durable marker that the next drill's sweep repairs after a
hard kill. The DrillReport is the flow's result and is rendered as artifacts and events.
"""

from __future__ import annotations

import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.concurrency.sync import concurrency
from prefect.events import emit_event
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Completed, Failed, State

from chalkdr.clients import AwsClients
from chalkdr.deploy import LastGood
from chalkdr.drill import Scenario, SloOverrides, evaluate_slos, new_drill_id, rpo_exposure_s
from chalkdr.errors import DrillAborted, PreflightFailed
from chalkdr.failover import expected_failover_seconds
from chalkdr.observe import Direction, Observation, milestones
from chalkdr.query import ChalkQueryClient
from chalkdr.report import DrillReport, Journal, PhaseRecord, PhaseStatus, render_markdown, timeline_rows
from chalkdr.topology import Topology, load_topology, parse_topology
from tasks.chalk import read_last_good, region_secret
from tasks.faults import Fault, inject_fault, make_fault, sweep_leftovers, undo_fault
from tasks.locks import ensure_lock, kill_switch_reason
from tasks.probes import (
    ProbeSet,
    await_steady_state,
    delete_canaries,
    measure_canary_replication,
    observe_until,
    read_canary,
    read_replication_lags,
)
from tasks.route53 import discover_routing

__all__ = ["DrillApproval", "drill"]

SETTLED_PROBES = 3  # active-active: consecutive answers from the healthy regions that settle it


class DrillApproval(RunInput):
    """The form an operator fills in to let a drill inject its fault."""

    approve: bool = False
    approver: str = ""
    comment: str = ""


def _topology(topology: str | dict[str, Any]) -> Topology:
    if isinstance(topology, dict):
        return parse_topology(topology, source="<topology parameter>")
    return load_topology(Path(topology))


def _probes(t: Topology, clients: AwsClients) -> ProbeSet:
    regional = {
        r.aws_region: ChalkQueryClient(
            base_url=r.url,
            api_server=str(r.chalk.api_server),
            client_id=r.chalk.client_id,
            client_secret=region_secret(r),
            environment_id=r.chalk.environment_id,
        )
        for r in t.regions
    }
    p = t.primary
    failover = ChalkQueryClient(
        base_url=t.route53.url,
        client_id=p.chalk.client_id,
        client_secret=region_secret(p),
        environment_id=p.chalk.environment_id,
    )
    return ProbeSet(topology=t, clients=clients, regional=regional, failover=failover)


def _phase_event(report: DrillReport) -> Any:
    def emit(name: str, rec: PhaseRecord) -> None:
        emit_event(
            event=f"chalkdr.drill.phase.{name}",
            resource={
                "prefect.resource.id": f"chalkdr.drill.{report.drill_id}",
                "chalkdr.environment": report.environment,
                "chalkdr.scenario": report.scenario,
            },
            payload={
                "phase": name,
                "status": rec.status.value,
                "reason": rec.reason,
                "duration_s": rec.duration_s,
            },
        )

    return emit


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


@flow(name="drill", persist_result=True, validate_parameters=True)
def drill(
    topology: str | dict[str, Any],
    scenario: Scenario = Scenario.QUERY_SERVERS_DOWN,
    failback: bool = True,
    hold_seconds: float = 5.0,
    probe_interval_seconds: float = 1.0,
    slo: SloOverrides | None = None,
    dry_run: bool = False,
    require_approval: bool = False,
    fis_experiment_template_id: str | None = None,
    abort_after_failed_probes: int = 5,
    observe_timeout_seconds: float | None = None,
    wait_for_lock_seconds: float = 10.0,
) -> State:
    """Rehearse a regional failure of `topology`'s primary and report RTO/RPO with evidence.

    `failback=False` still undoes the fault (a drill never leaves a region broken) but skips
    observing the way back. `dry_run` runs everything except the injection.
    """
    t = _topology(topology)
    slo = slo or SloOverrides()
    drill_id = new_drill_id(time.time(), uuid.uuid4().hex)
    report = DrillReport(
        drill_id=drill_id,
        environment=t.environment,
        scenario=scenario.value,
        routing=t.routing.value,
        primary_region=t.primary.aws_region,
        secondary_regions=[r.aws_region for r in t.secondaries],
        dry_run=dry_run,
        time_scale=t.time_scale,
        probe_interval_s=probe_interval_seconds,
        expected_failover_s=round(expected_failover_seconds(t) / t.time_scale, 3),
    )
    journal = Journal(report, on_phase_end=_phase_event(report))
    logger = get_run_logger()
    try:
        with ExitStack() as held:
            with journal.phase("lock"):
                if reason := kill_switch_reason():
                    raise DrillAborted(f"refused: {reason}")
                lock = ensure_lock(f"drill-{t.environment}")
                # The shortest lease Prefect allows: a drill killed hard blocks its environment for
                # about a minute (until the server revokes the lease), or until an operator runs
                # `prefect gcl update drill-<env> --active-slots 0`.
                held.enter_context(
                    concurrency(
                        lock,
                        occupy=1,
                        strict=True,
                        timeout_seconds=max(wait_for_lock_seconds, 2.0),
                        lease_duration=60,
                    )
                )
            _run(
                t,
                journal,
                scenario=scenario,
                failback=failback,
                hold_s=hold_seconds,
                interval_s=probe_interval_seconds,
                slo=slo,
                dry_run=dry_run,
                require_approval=require_approval,
                fis_template_id=fis_experiment_template_id,
                abort_after=abort_after_failed_probes,
                observe_timeout_s=observe_timeout_seconds,
            )
        report.outcome = PhaseStatus.COMPLETED
    except TimeoutError:
        report.outcome, report.outcome_reason = (
            PhaseStatus.ABORTED,
            f"another drill holds the lock for {t.environment}",
        )
        report.phases["lock"].status = PhaseStatus.ABORTED
    except PreflightFailed as exc:
        report.outcome, report.outcome_reason = PhaseStatus.ABORTED, str(exc)
    except DrillAborted as exc:
        report.outcome, report.outcome_reason = PhaseStatus.ABORTED, str(exc)
    except Exception as exc:
        logger.exception("drill failed")
        report.outcome, report.outcome_reason = PhaseStatus.FAILED, f"{type(exc).__name__}: {exc}"
    finally:
        report.ended_wall = time.time()
        publish_report(report)
    summary = (
        f"drill {drill_id}: {report.outcome.value}"
        + (f", RTO {report.rto_s:.2f} s" if report.rto_s is not None else "")
        + (f" — {report.outcome_reason}" if report.outcome_reason else "")
    )
    if report.outcome is PhaseStatus.COMPLETED:
        return Completed(message=summary, data=report)
    return Failed(message=summary, data=report)


def _run(
    t: Topology,
    journal: Journal,
    *,
    scenario: Scenario,
    failback: bool,
    hold_s: float,
    interval_s: float,
    slo: SloOverrides,
    dry_run: bool,
    require_approval: bool,
    fis_template_id: str | None,
    abort_after: int,
    observe_timeout_s: float | None,
) -> None:
    report = journal.report
    clients = AwsClients.for_topology(t)
    probes = _probes(t, clients)
    primary = t.primary.aws_region
    others = [r.aws_region for r in t.secondaries]
    expected_real = expected_failover_seconds(t) / t.time_scale
    timeout_s = observe_timeout_s or 3 * expected_real + 30
    try:
        with journal.phase("sweep") as rec:
            routing = discover_routing(t, clients)  # Route 53's records as they are, not as configured
            report.swept = sweep_leftovers(t, clients, routing)
            rec.detail["restored"] = len(report.swept)

        with journal.phase("preflight") as rec:
            parity = read_last_good(t.environment)
            steady, problems = await_steady_state(
                probes,
                routing,
                # After a sweep repaired something, let it settle (capacity, Route 53, DNS TTL);
                # otherwise steady state must hold at once.
                timeout_s=timeout_s if report.swept else 0,
                interval_s=interval_s,
                expected_deployments=parity.deployment_ids if parity else None,
                expected_sha=parity.sha if parity else None,
            )
            rec.detail["problems"] = problems
            if problems:
                raise PreflightFailed(problems)
            report.rpo.replication_lag_at_injection_ms = {n: lag.value for n, lag in steady.lags.items()}

        if require_approval:
            with journal.phase("approval") as rec:
                description = (
                    f"Drill {report.drill_id}: scenario {scenario.value} on {primary} ({t.environment}). "
                    f"Pre-flight passed; expected failover {expected_real:.1f} s. Approve to inject."
                )
                answer = pause_flow_run(
                    wait_for_input=DrillApproval.with_initial_data(description=description), timeout=3600
                )
                report.approver, report.approval_comment = answer.approver or None, answer.comment or None
                if not answer.approve:
                    raise DrillAborted(f"not approved by {answer.approver or 'operator'}")
        else:
            journal.skip("approval", "not required")

        with journal.phase("canary") as rec:
            lag, missing = measure_canary_replication(probes, report.drill_id, timeout_s=timeout_s)
            report.rpo.canary_replication_lag_s = lag
            rec.detail.update(lag_s=lag, missing=missing)
            if missing:
                raise PreflightFailed(
                    [f"canary not replicated to {', '.join(missing)} within {timeout_s:.0f} s"]
                )
            journal.event("canary", "replicated", f"{lag:.3f} s")

        if dry_run:
            for name in ("inject", "observe", "hold", "failback"):
                journal.skip(name, "dry run")
            _postflight(journal, probes, routing, timeout_s, interval_s, parity)
            report.slos = []
            return

        fault = make_fault(
            scenario,
            topology=t,
            clients=clients,
            routing=routing,
            drill_id=report.drill_id,
            fis_template_id=fis_template_id,
            duration_s=timeout_s + hold_s,
        )
        _inject_observe_undo(
            journal,
            probes,
            routing,
            fault,
            scenario=scenario,
            failback=failback,
            hold_s=hold_s,
            interval_s=interval_s,
            timeout_s=timeout_s,
            abort_after=abort_after,
            primary=primary,
            others=others,
            active_active=t.active_active,
        )
        _postflight(journal, probes, routing, timeout_s, interval_s, parity)
        rto_target = slo.rto_seconds or t.slo.rto_seconds
        rpo_target = slo.rpo_seconds if slo.rpo_seconds is not None else t.slo.rpo_seconds
        report.slos = evaluate_slos(
            rto_target_s=rto_target,
            rpo_target_s=rpo_target,
            rto_measured_s=report.rto_s,
            rpo_measured_s=report.rpo.exposure_s,
            traffic_moved=scenario.moves_traffic,
        )
    finally:
        try:
            delete_canaries(probes, [report.drill_id, f"{report.drill_id}-held"])
        except Exception as exc:  # noqa: BLE001 - cleanup must not mask the drill's own outcome
            get_run_logger().warning("canary rows of %s not deleted: %s", report.drill_id, exc)
        probes.close()


def _abort_check(primary: str, others: list[str], n: int) -> Any:
    def abort(obs: list[Observation]) -> str | None:
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


def _inject_observe_undo(
    journal: Journal,
    probes: ProbeSet,
    routing: Any,
    fault: Fault,
    *,
    scenario: Scenario,
    failback: bool,
    hold_s: float,
    interval_s: float,
    timeout_s: float,
    abort_after: int,
    primary: str,
    others: list[str],
    active_active: bool,
) -> None:
    report = journal.report
    abort = _abort_check(primary, others, abort_after)
    t_inject: float | None = None
    held_canary: str | None = None
    try:
        with journal.phase("inject"):
            # The lag that decides RPO is the one at the moment of the fault (approval may have
            # taken a while since pre-flight).
            lags = read_replication_lags(probes.topology, probes.clients)
            report.rpo.replication_lag_at_injection_ms = {n: lag.value for n, lag in lags.items()}
            t_inject = time.monotonic()
            inject_fault(fault)
            journal.event("inject", "fault injected", fault.target, mono=t_inject)

        with journal.phase("observe") as rec:
            if scenario.moves_traffic:

                def failed_over(obs: list[Observation]) -> bool:
                    o = obs[-1]
                    if not active_active:
                        return o.query.ok and o.query.region in others and o.query.canary_value is not None
                    # Active-active: the healthy regions were answering all along; done once Route 53
                    # has dropped the faulted region and the last few answers all came from the others.
                    recent = obs[-SETTLED_PROBES:]
                    return (
                        len(recent) == SETTLED_PROBES
                        and o.health.get(primary) is False
                        and all(x.query.ok and x.query.region in others for x in recent)
                    )

                obs, aborted = observe_until(
                    probes,
                    routing,
                    interval_s=interval_s,
                    timeout_s=timeout_s,
                    done=failed_over,
                    abort=abort,
                    drill_id=report.drill_id,
                )
                m = milestones(
                    obs,
                    start_mono=t_inject,
                    direction=Direction.FAILOVER,
                    faulted_region=primary,
                    target_regions=others,
                )
                report.failover = m
                report.rto_s = m.settled_s if active_active else m.first_good_answer_s
                _milestone_events(journal, m, t_inject, "observe")
                rec.detail["observations"] = len(obs)
                if aborted:
                    raise DrillAborted(aborted)
                if report.rto_s is None:
                    raise DrillAborted(f"no good answer from {', '.join(others)} within {timeout_s:.0f} s")
            else:
                held_canary = f"{report.drill_id}-held"
                measure_canary_replication.fn(probes, held_canary, timeout_s=0)  # write only, don't wait
                journal.event("observe", "canary written during pause", held_canary)

        with journal.phase("hold"):
            obs, aborted = observe_until(
                probes,
                routing,
                interval_s=interval_s,
                timeout_s=hold_s,
                done=lambda _obs: False,
                abort=abort,
                drill_id=report.drill_id,
            )
            if aborted:
                raise DrillAborted(aborted)
            if held_canary is not None:
                report.rpo.writes_held_back = not read_canary(probes, held_canary, others)
                journal.event(
                    "hold", "writes held back" if report.rpo.writes_held_back else "writes replicated anyway"
                )
    finally:
        t_undo = time.monotonic()
        try:
            with journal.phase("failback") as rec:
                restored = undo_fault(fault)
                journal.event("failback", "fault undone", "; ".join(restored), mono=t_undo)
                rec.detail["restored"] = restored
                if held_canary is not None and t_inject is not None:
                    _lag, missing = measure_canary_replication.fn(
                        probes, held_canary, timeout_s=timeout_s, write=False
                    )
                    report.rpo.exposure_s = None if missing else round(time.monotonic() - t_inject, 3)
                elif failback and scenario.moves_traffic and t_inject is not None:
                    _observe_failback(journal, probes, routing, t_undo, interval_s, timeout_s, primary)
                elif not failback:
                    rec.reason = "failback observation skipped (fault undone)"
        finally:
            if scenario.moves_traffic:
                report.rpo.exposure_s = rpo_exposure_s(report.rpo)


def _observe_failback(
    journal: Journal,
    probes: ProbeSet,
    routing: Any,
    t_undo: float,
    interval_s: float,
    timeout_s: float,
    primary: str,
) -> None:
    def back(obs: list[Observation]) -> bool:
        o = obs[-1]
        return o.query.ok and o.query.region == primary and o.health.get(primary) is True

    obs, _ = observe_until(
        probes,
        routing,
        interval_s=interval_s,
        timeout_s=timeout_s,
        done=back,
        abort=lambda _o: None,
        drill_id=journal.report.drill_id,
    )
    m = milestones(
        obs, start_mono=t_undo, direction=Direction.FAILBACK, faulted_region=primary, target_regions=[primary]
    )
    journal.report.failback = m
    _milestone_events(journal, m, t_undo, "failback")
    if m.first_good_answer_s is None:
        raise DrillAborted(f"traffic did not return to {primary} within {timeout_s:.0f} s after the undo")


def _milestone_events(journal: Journal, m: Any, start: float, phase: str) -> None:
    for label, value in (
        ("Route 53 health flipped", m.health_flip_s),
        ("DNS answer flipped", m.dns_flip_s),
        ("first good answer", m.first_good_answer_s),
        ("canary served", m.canary_served_s),
    ):
        if value is not None:
            journal.event(phase, label, f"+{value:.2f} s", mono=start + value)


def _postflight(
    journal: Journal,
    probes: ProbeSet,
    routing: Any,
    timeout_s: float,
    interval_s: float,
    parity: LastGood | None,
) -> None:
    with journal.phase("postflight") as rec:
        _, problems = await_steady_state(
            probes,
            routing,
            timeout_s=timeout_s,
            interval_s=interval_s,
            expected_deployments=parity.deployment_ids if parity else None,
            expected_sha=parity.sha if parity else None,
        )
        rec.detail["problems"] = problems
        if problems:
            raise DrillAborted("post-flight: steady state not restored: " + "; ".join(problems))
