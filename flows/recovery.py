"""Incident recovery: fail a Chalk environment over to another region when one is down, and back.

failover: lock → assess → approval → capacity → metadata (Aurora) → persistence → traffic → verify.
failback: lock → precheck → approval → metadata (Aurora) → traffic → verify → capacity.

Both are runbooks of the drill's machinery (flows/runbook.py): one RunContext, the journal behind
their report, the drill's probes for the client's view, and the environment's lock `drill-<env>`,
so a recovery excludes drills, sweeps, provision applies and other recoveries. Each phase reads
first and changes only what differs, so a run started again after any phase (after a crash, or
after it completed) finishes without repeating a step: no second Aurora switchover.

The kill switch (`chalkdr-kill-switch`) does not stop a recovery (`kill_switch=False`): it exists
to stop rehearsals that inject faults, and operators engage it precisely during an incident
("reason": "incident"), which is when a failover must be able to run. What guards a recovery is
its approval form and its assessment, not the switch.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Completed
from prefect.states import Failed

from chalkdr.drill import DEFAULT_LOCK_WAIT_S
from chalkdr.drill import LagReading
from chalkdr.drill import LockWaitSeconds
from chalkdr.errors import DrillAborted
from chalkdr.observe import Direction
from chalkdr.observe import Observation
from chalkdr.observe import milestones
from chalkdr.recovery import FailbackReport
from chalkdr.recovery import FailoverReport
from chalkdr.recovery import MinReplicas
from chalkdr.recovery import RecoveryMode
from chalkdr.recovery import RecoveryProbeInterval
from chalkdr.recovery import RecoveryReport
from chalkdr.recovery import RecoverySettings
from chalkdr.recovery import RecoveryTimeout
from chalkdr.recovery import VerifyObservations
from chalkdr.recovery import default_target
from chalkdr.recovery import describe_assessment
from chalkdr.recovery import lag_problems
from chalkdr.recovery import new_recovery_id
from chalkdr.recovery import render_recovery_markdown
from chalkdr.recovery import target_problems
from chalkdr.report import Journal
from chalkdr.report import LagAtInjection
from chalkdr.report import PhaseStatus
from chalkdr.topology import RegionConfig
from chalkdr.topology import Topology
from flows.runbook import RunContext
from flows.runbook import emit_finished
from flows.runbook import execute_runbook
from flows.runbook import load_topology_parameter
from flows.runbook import phase_events
from tasks.probes import observe_until
from tasks.probes import read_replication_lags
from tasks.recovery import assess_regions
from tasks.recovery import await_ready
from tasks.recovery import ensure_capacity
from tasks.recovery import invert_health_check
from tasks.recovery import move_aurora_writer
from tasks.recovery import remove_inversion
from tasks.recovery import restore_capacity
from tasks.route53 import discover_routing

__all__ = ["RecoveryApproval", "failback", "failover"]

Failover = RunContext[RecoverySettings, FailoverReport]
Failback = RunContext[RecoverySettings, FailbackReport]
Recovery = RunContext[RecoverySettings, Any]


class RecoveryApproval(RunInput):
    """The form an operator fills in to let a failover or failback change anything."""

    approve: bool = False
    approver: str = ""
    comment: str = ""


def publish_report(report: RecoveryReport) -> None:
    """The keyed markdown artifact `<kind>-<env>` and the closing event; a plain call, not a task."""
    create_markdown_artifact(
        markdown=render_recovery_markdown(report),
        key=f"{report.kind}-{report.environment}",
        description=(
            f"{report.kind} {report.recovery_id} ({', '.join(report.from_regions)} -> {report.to_region}): "
            f"{report.outcome.value}"
        ),
    )
    emit_finished(
        report.kind,
        report,
        {"to_region": report.to_region, "from_regions": report.from_regions, "rto_s": report.rto_s},
    )


def _finish(report: RecoveryReport) -> Any:
    summary = (
        f"{report.kind} {report.recovery_id}: {report.outcome.value}"
        + (f", RTO {report.rto_s:.2f} s" if report.rto_s is not None else "")
        + (f" — {report.outcome_reason}" if report.outcome_reason else "")
    )
    if report.outcome is PhaseStatus.COMPLETED:
        return Completed(message=summary, data=report)
    return Failed(message=summary, data=report)


@flow(name="failover", persist_result=True, validate_parameters=True)
def failover(
    topology: str | dict[str, Any],
    from_region: str,
    mode: RecoveryMode = RecoveryMode.GRACEFUL,
    require_approval: bool = True,
    force: bool = False,
    to_region: str | None = None,
    min_replicas: MinReplicas = None,
    probe_interval_seconds: RecoveryProbeInterval = 1.0,
    verify_observations: VerifyObservations = 3,
    timeout_seconds: RecoveryTimeout = None,
    wait_for_lock_seconds: LockWaitSeconds = DEFAULT_LOCK_WAIT_S,
) -> Any:
    """Move `from_region`'s traffic, metadata plane and load to `to_region` (default: the other
    region behind the failover name). `force` goes on past an unhealthy target (recorded)."""
    settings = RecoverySettings(
        mode=mode,
        require_approval=require_approval,
        force=force,
        min_replicas=min_replicas,
        probe_interval_seconds=probe_interval_seconds,
        verify_observations=verify_observations,
        timeout_seconds=timeout_seconds,
        wait_for_lock_seconds=wait_for_lock_seconds,
    )
    t = load_topology_parameter(topology)
    _known(t, from_region, to_region)
    target = t.region(to_region) if to_region else default_target(t, from_region)
    if target.aws_region == from_region:
        raise ValueError(f"to_region {target.aws_region} is the region failing over")
    report = FailoverReport(
        recovery_id=new_recovery_id("failover", time.time(), uuid.uuid4().hex),
        environment=t.environment,
        to_region=target.aws_region,
        from_regions=[from_region],
        mode=mode,
        force=force,
        time_scale=t.time_scale,
        probe_interval_s=probe_interval_seconds,
    )
    journal = Journal(report, on_phase_end=phase_events("failover", report))
    execute_runbook(
        t,
        settings,
        journal,
        _failover,
        wait_for_lock_s=settings.wait_for_lock_seconds,
        publish=publish_report,
        kill_switch=False,  # a recovery answers an incident; the kill switch stops rehearsals
    )
    return _finish(report)


@flow(name="failback", persist_result=True, validate_parameters=True)
def failback(
    topology: str | dict[str, Any],
    to_region: str,
    require_approval: bool = True,
    probe_interval_seconds: RecoveryProbeInterval = 1.0,
    verify_observations: VerifyObservations = 3,
    timeout_seconds: RecoveryTimeout = None,
    wait_for_lock_seconds: LockWaitSeconds = DEFAULT_LOCK_WAIT_S,
) -> Any:
    """Bring `to_region` (recovered) back: Aurora switchover to it (RPO 0), the failover's health
    check inversion removed, clients verified on it, then the capacity failover added elsewhere
    restored to the counts recorded before it."""
    settings = RecoverySettings(
        mode=RecoveryMode.GRACEFUL,
        require_approval=require_approval,
        probe_interval_seconds=probe_interval_seconds,
        verify_observations=verify_observations,
        timeout_seconds=timeout_seconds,
        wait_for_lock_seconds=wait_for_lock_seconds,
    )
    t = load_topology_parameter(topology)
    _known(t, to_region)
    target = t.region(to_region)
    report = FailbackReport(
        recovery_id=new_recovery_id("failback", time.time(), uuid.uuid4().hex),
        environment=t.environment,
        to_region=target.aws_region,
        from_regions=[r.aws_region for r in t.regions if r is not target],
        time_scale=t.time_scale,
        probe_interval_s=probe_interval_seconds,
    )
    journal = Journal(report, on_phase_end=phase_events("failback", report))
    execute_runbook(
        t,
        settings,
        journal,
        _failback,
        wait_for_lock_s=settings.wait_for_lock_seconds,
        publish=publish_report,
        kill_switch=False,  # as for failover: a failback is part of the incident's response
    )
    return _finish(report)


def _known(t: Topology, *regions: str | None) -> None:
    known = [r.aws_region for r in t.regions]
    for region in regions:
        if region is not None and region not in known:
            raise ValueError(f"{region} is not a region of {t.environment} ({', '.join(known)})")


# -- the runbooks -------------------------------------------------------------------------------


def _failover(ctx: Failover) -> None:
    assess(ctx)
    approve(ctx, "failover")
    capacity(ctx)
    metadata(ctx)
    persistence(ctx)
    traffic(ctx)
    verify(ctx)


def _failback(ctx: Failback) -> None:
    precheck(ctx)
    approve(ctx, "failback")
    metadata(ctx)
    traffic_back(ctx)
    verify(ctx)
    restore(ctx)


# -- failover's phases ----------------------------------------------------------------------------


def _target(ctx: Recovery) -> RegionConfig:
    return ctx.topology.region(ctx.report.to_region)


def _others(ctx: Recovery) -> list[RegionConfig]:
    return [ctx.topology.region(r) for r in ctx.report.from_regions]


def _discover(ctx: Recovery, phase: str) -> None:
    try:
        ctx.routing = discover_routing(ctx.topology, ctx.clients, ctx.probes.resolver)
    except Exception as exc:  # noqa: BLE001 - recorded; traffic and verify say what they could not do
        ctx.journal.event(phase, "routing unreadable", f"{type(exc).__name__}: {exc}")


def assess(ctx: Failover) -> None:
    """The target must serve through its own hostname, have ready query servers and an Aurora
    cluster that can take over; the failed region is read as far as it answers. Refused (nothing
    changed) unless so, or unless forced."""
    report = ctx.report
    with ctx.journal.phase("assess") as rec:
        _discover(ctx, "assess")
        a = assess_regions(ctx.probes, _target(ctx), _others(ctx))
        a.problems = target_problems(a.target)
        failed = a.others[0]
        if failed.errors:
            a.notes.append(f"{failed.region} could not be read in full: {'; '.join(failed.errors)}")
        if ctx.routing is None:
            a.notes.append("the failover name's routing could not be read from Route 53")
        report.assessment = a
        rec.detail.update(problems=a.problems, notes=a.notes, writer_region=a.writer_region)
        if a.problems and not ctx.settings.force:
            raise DrillAborted(
                f"refused, nothing changed: {'; '.join(a.problems)} (force=true goes on regardless)"
            )
        if a.problems:
            report.forced_past = list(a.problems)
            ctx.journal.event("assess", "forced past", "; ".join(a.problems))


def approve(ctx: Recovery, kind: str) -> None:
    """Pause for an operator's approval, the assessment in the form's description."""
    report = ctx.report
    if not ctx.settings.require_approval:
        ctx.journal.skip("approval", "not required")
        return
    with ctx.journal.phase("approval"):
        assert report.assessment is not None
        heading = (
            f"{kind.capitalize()} {report.recovery_id} of {report.environment}: "
            f"{', '.join(report.from_regions)} -> {report.to_region}"
            + (f", mode {report.mode.value}" if kind == "failover" else "")
            + (" (FORCED past the problems below)" if report.forced_past else "")
            + ". Approve to change Kubernetes, Aurora and Route 53."
        )
        answer = pause_flow_run(
            wait_for_input=RecoveryApproval.with_initial_data(
                description=describe_assessment(report.assessment, heading=heading)
            ),
            timeout=3600,
        )
        report.approver, report.approval_comment = answer.approver or None, answer.comment or None
        if not answer.approve:
            raise DrillAborted(f"not approved by {answer.approver or 'operator'}")


def capacity(ctx: Failover) -> None:
    """The target's query servers to at least the failed region's count (or `min_replicas`), its
    persistence workers to at least the failed region's (one at least: they consume the target's
    replicated topic once writes land there), each previous count recorded on the Deployment; then
    wait until they are ready. Before any traffic moves."""
    report, target = ctx.report, _target(ctx)
    assert report.assessment is not None
    failed = report.assessment.others[0]
    with ctx.journal.phase("capacity") as rec:
        wanted = {
            target.eks.query_server_deployment: ctx.settings.min_replicas
            or (failed.query_servers[1] if failed.query_servers else None),
            target.eks.persistence_deployment: failed.persistence_workers[1]
            if failed.persistence_workers
            else 1,
        }
        if wanted[target.eks.query_server_deployment] is None:
            rec.detail["note"] = (
                f"{failed.region}'s query-server count unreadable and no min_replicas: "
                "the target's count is kept"
            )
        for deployment, need in wanted.items():
            change = ensure_capacity(ctx.clients, target, deployment, max(1, need or 0), report.recovery_id)
            report.capacity.append(change)
            if change.changed:
                line = f"{target.aws_region}/{deployment}: replicas {change.previous} -> {change.desired}"
                report.changes.append(line)
                ctx.journal.event("capacity", "scaled", line)
        for change in report.capacity:
            change.ready = await_ready(
                ctx.clients, target, change.deployment, ctx.settings.timeout_s(ctx.topology)
            )
        rec.detail["deployments"] = [c.model_dump() for c in report.capacity]


def metadata(ctx: Recovery) -> None:
    """The Aurora writer to the target: graceful after its lag is near zero (switchover, RPO 0),
    ungraceful at once (failover, AllowDataLoss); skipped when the target is the writer already.
    The lags of every replicated store at this decision are recorded as the RPO evidence."""
    report, target = ctx.report, _target(ctx)
    with ctx.journal.phase("metadata") as rec:
        report.lags_at_decision = _lags_now(ctx, rec.detail)
        switch = move_aurora_writer(
            ctx.clients,
            ctx.topology,
            target,
            mode=ctx.settings.mode,
            max_lag_ms=ctx.settings.switchover_max_lag_ms,
            timeout_s=ctx.settings.timeout_s(ctx.topology),
            recovery_id=report.recovery_id,
            read_from=report.from_regions,
        )
        report.aurora = switch
        if switch.lag_at_decision_ms is not None:
            report.lags_at_decision[f"aurora:{target.aurora_cluster_id}"] = LagAtInjection(
                value=switch.lag_at_decision_ms, unit="ms"
            )
        if switch.operation is None:
            rec.status, rec.reason = PhaseStatus.SKIPPED, switch.skipped
            ctx.journal.event("metadata", "writer already in place", switch.skipped or "")
            return
        gid = ctx.topology.aurora.global_cluster_id
        line = f"aurora {gid}: {switch.operation} {switch.from_writer} -> {switch.to_writer}"
        report.changes.append(line)
        ctx.journal.event(
            "metadata", f"aurora {switch.operation}", f"writer moved after {switch.writer_moved_after_s} s"
        )


def _lags_now(ctx: Recovery, detail: dict[str, Any]) -> dict[str, LagAtInjection]:
    try:
        lags = read_replication_lags(ctx.topology, ctx.clients)
    except Exception as exc:  # noqa: BLE001 - the failed region's CloudWatch may not answer
        detail["lags_error"] = f"{type(exc).__name__}: {exc}"
        return {}
    return {
        name: LagAtInjection(value=lag.value, unit=lag.unit)
        for name, lag in lags.items()
        if not name.startswith("aurora:")  # Aurora's lag is the target's own, read at the call
    }


def _msk_message_lags(lags: dict[str, LagReading] | dict[str, LagAtInjection]) -> dict[str, float | None]:
    return {
        name: lag.value
        for name, lag in lags.items()
        if name.startswith("msk:") and name.endswith(":message-lag")
    }


def persistence(ctx: Failover) -> None:
    """MSK Replicator's lag at the decision is the RPO evidence; graceful waits (bounded) until
    it has drained, so the target's workers resume with everything the failed region took."""
    report, settings = ctx.report, ctx.settings
    with ctx.journal.phase("persistence") as rec:
        at_decision = _msk_message_lags(report.lags_at_decision)
        threshold = settings.msk_drained_message_lag

        def drained(values: dict[str, float | None]) -> bool:
            return bool(values) and all(v is not None and v <= threshold for v in values.values())

        if settings.mode is RecoveryMode.UNGRACEFUL:
            report.msk_drained = drained(at_decision)
            rec.detail["accepted_message_lag"] = at_decision
            ctx.journal.event(
                "persistence", "lag accepted", ", ".join(f"{k}={v}" for k, v in at_decision.items())
            )
            return
        deadline = time.monotonic() + settings.timeout_s(ctx.topology)
        while True:
            values = _msk_message_lags(read_replication_lags(ctx.topology, ctx.clients))
            if drained(values):
                break
            if time.monotonic() >= deadline:
                report.msk_drained = False
                raise DrillAborted(
                    f"MSK Replicator did not drain to {threshold:g} messages within the timeout ({values}); "
                    "run failover again, or with mode ungraceful to accept the lag"
                )
            time.sleep(settings.probe_interval_seconds)
        report.msk_drained = True
        rec.detail["message_lag"] = values
        ctx.journal.event("persistence", "drained", ", ".join(f"{k}={v}" for k, v in values.items()))


def traffic(ctx: Failover) -> None:
    """Invert the failed region's health check (tagged with this recovery): Route 53 then answers
    the failover name with the target. No health check, or no control plane: said, not failed;
    verify tells whether clients moved anyway (health-check failover of a region really down)."""
    report = ctx.report
    with ctx.journal.phase("traffic") as rec:
        report.traffic_mono = time.monotonic()
        if ctx.routing is None:
            _discover(ctx, "traffic")
        if ctx.routing is None:
            rec.reason = "routing unreadable: nothing changed; verify shows where clients are"
            return
        for region in report.from_regions:
            change = invert_health_check(ctx.clients, ctx.routing, region, report.recovery_id)
            report.traffic.append(change)
            if change.action == "inverted":
                report.changes.append(f"route53 health check {change.health_check_id} ({region}): inverted")
            ctx.journal.event("traffic", change.action, change.note or change.health_check_id or region)
        rec.detail["changes"] = [c.model_dump() for c in report.traffic]


def verify(ctx: Recovery) -> None:
    """The client's view: `verify_observations` consecutive queries through the failover name
    answered by the target (the drill's probes, fresh connections, uncached DNS). RTO: from the
    run's start to the first of them."""
    report, settings = ctx.report, ctx.settings
    target = report.to_region
    with ctx.journal.phase("verify") as rec:
        if ctx.routing is None:
            raise DrillAborted(
                "the failover name's routing is unreadable: the client view cannot be attributed"
            )
        n = settings.verify_observations

        def served(obs: Sequence[Observation]) -> bool:
            recent = obs[-n:]
            return len(recent) == n and all(o.query.ok and o.query.region == target for o in recent)

        start = report.traffic_mono or time.monotonic()
        obs, _ = observe_until(
            ctx.probes,
            ctx.routing,
            interval_s=settings.probe_interval_seconds,
            timeout_s=settings.timeout_s(ctx.topology),
            done=served,
            abort=_never,
            canary_id=None,
            focus=report.from_regions[0],
        )
        report.client_view = milestones(
            obs,
            start_mono=start,
            direction=Direction.FAILOVER,
            faulted_region=report.from_regions[0],
            target_regions=[target],
        )
        rec.detail["observations"] = len(obs)
        if not served(obs):
            raise DrillAborted(
                f"clients were not served by {target} through the failover name "
                f"{n} times in a row within {settings.timeout_s(ctx.topology):.0f} s"
            )
        first = obs[-n]
        report.rto_s = round(first.mono - ctx.journal.mono0, 3)
        ctx.journal.event("verify", f"clients on {target}", f"RTO {report.rto_s:.2f} s", mono=first.mono)


def _never(_obs: Sequence[Observation]) -> str | None:
    return None


# -- failback's phases ----------------------------------------------------------------------------


def precheck(ctx: Failback) -> None:
    """The recovered region serves through its own hostname with ready capacity, its Aurora
    cluster is an available secondary with an instance and its lag within the guard, and the
    replication lags are within their guards. Otherwise refused, nothing changed."""
    report = ctx.report
    with ctx.journal.phase("precheck") as rec:
        _discover(ctx, "precheck")
        a = assess_regions(ctx.probes, _target(ctx), _others(ctx))
        a.problems = target_problems(a.target) + lag_problems(a, ctx.topology)
        qs = a.target.query_servers
        if qs is not None and qs[0] < qs[1]:
            a.problems.append(f"{a.target.region}: query servers {qs[0]}/{qs[1]} ready")
        report.assessment = a
        rec.detail.update(problems=a.problems, notes=a.notes, writer_region=a.writer_region)
        if a.problems:
            raise DrillAborted(f"refused, nothing changed: {'; '.join(a.problems)}")


def traffic_back(ctx: Failback) -> None:
    """Remove the inversion a failover set on the recovered region's health check (only one
    marked by a recovery)."""
    report = ctx.report
    with ctx.journal.phase("traffic") as rec:
        report.traffic_mono = time.monotonic()
        if ctx.routing is None:
            raise DrillAborted("the failover name's routing is unreadable from Route 53")
        change = remove_inversion(ctx.clients, ctx.routing, report.to_region)
        report.traffic.append(change)
        if change.action == "inversion removed":
            report.changes.append(
                f"route53 health check {change.health_check_id} ({report.to_region}): restored"
            )
        ctx.journal.event("traffic", change.action, change.note or change.health_check_id or "")
        rec.detail["change"] = change.model_dump()


def restore(ctx: Failback) -> None:
    """Every other region's Deployments back to the counts a failover recorded before scaling."""
    report = ctx.report
    with ctx.journal.phase("capacity") as rec:
        for region in _others(ctx):
            for deployment in (region.eks.query_server_deployment, region.eks.persistence_deployment):
                change = restore_capacity(ctx.clients, region, deployment)
                if change is None:
                    continue
                report.capacity.append(change)
                if change.changed:
                    line = f"{region.aws_region}/{deployment}: replicas {change.previous} -> {change.desired}"
                    report.changes.append(line)
                    ctx.journal.event("capacity", "restored", line)
        for change in report.capacity:
            region = ctx.topology.region(change.region)
            change.ready = await_ready(
                ctx.clients, region, change.deployment, ctx.settings.timeout_s(ctx.topology)
            )
        rec.detail["deployments"] = [c.model_dump() for c in report.capacity]
