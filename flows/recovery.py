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

from chalkdr.audit import AuditRecord
from chalkdr.drill import DEFAULT_LOCK_WAIT_S
from chalkdr.drill import LagReading
from chalkdr.drill import LockWaitSeconds
from chalkdr.drill import Routing
from chalkdr.errors import AwsCallError
from chalkdr.errors import DrillAborted
from chalkdr.observe import Direction
from chalkdr.observe import Observation
from chalkdr.observe import milestones
from chalkdr.recovery import CapacityChange
from chalkdr.recovery import FailbackReport
from chalkdr.recovery import FailoverReport
from chalkdr.recovery import MinReplicas
from chalkdr.recovery import RecoveryMode
from chalkdr.recovery import RecoveryProbeInterval
from chalkdr.recovery import RecoveryReport
from chalkdr.recovery import RecoverySettings
from chalkdr.recovery import RecoveryTimeout
from chalkdr.recovery import TrafficChange
from chalkdr.recovery import VerifyObservations
from chalkdr.recovery import default_target
from chalkdr.recovery import describe_assessment
from chalkdr.recovery import lag_problems
from chalkdr.recovery import mode_problems
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
from tasks.arc_routing import State
from tasks.arc_routing import arc_directory
from tasks.arc_routing import read_routing_control_states
from tasks.arc_routing import region_states
from tasks.arc_routing import set_routing_control_states
from tasks.audit import emit_audit_event
from tasks.faults import SweepIncomplete
from tasks.faults import sweep_leftovers
from tasks.locks import read_lock_record
from tasks.probes import observe_until
from tasks.probes import read_replication_lags
from tasks.recovery import assess_regions
from tasks.recovery import await_ready
from tasks.recovery import cancel_running_drill
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
    stop_drill: bool = True,
) -> Any:
    """Move `from_region`'s traffic, metadata plane and load to `to_region` (default: the other
    region behind the failover name). `force` goes on past an unhealthy target (recorded).

    Args:
        topology: The topology: on a deployed run, the name of a file in the worker's
            $CHALK_DR_TOPOLOGY_DIR (e.g. topology.yaml).
        from_region: The region that failed (or is being evacuated), e.g. us-east-1.
        mode: graceful: the failed region still answers; Aurora switchover (RPO 0) once its lag is
            near zero, and MSK Replicator drained first. ungraceful: the region is gone; Aurora
            failover with data loss allowed, the replication lags at the decision recorded as the
            RPO evidence.
        require_approval: Pause before changing anything, with the assessment in the approval
            form (who approved is recorded).
        force: Go on although the assessment found the target unfit (the problems are recorded in
            the report as forced past).
        to_region: Where to fail over to; default: the other region behind the failover name.
        min_replicas: Query-server replicas the target must have before traffic moves; default:
            the failed region's count (when it can be read).
        probe_interval_seconds: Seconds between the client-view probes that verify the result.
        verify_observations: Consecutive good answers from the target, through the failover name,
            that prove the failover.
        timeout_seconds: Real seconds each wait may take (capacity, writer, drain, clients);
            default: 3x the configured worst case + 30 s.
        wait_for_lock_seconds: Seconds to wait for another runbook of this environment (a sweep,
            a provision apply) to release the environment's lock.
        stop_drill: Cancel a drill of this environment that is running, and undo what it left,
            before failing over (an incident does not wait for a rehearsal).
    """
    settings = RecoverySettings(
        mode=mode,
        require_approval=require_approval,
        force=force,
        min_replicas=min_replicas,
        probe_interval_seconds=probe_interval_seconds,
        verify_observations=verify_observations,
        timeout_seconds=timeout_seconds,
        wait_for_lock_seconds=wait_for_lock_seconds,
        stop_drill=stop_drill,
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
    if settings.stop_drill and (stopped := cancel_running_drill(t.environment, report.recovery_id)):
        report.drill_cancelled = stopped.describe()
        report.changes.append(f"drill {stopped.run_id} cancelled (flow run {stopped.flow_run_id})")
        journal.event("lock", "drill cancelled", report.drill_cancelled)
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
    check inversion removed (or every ARC routing control On), clients verified on it, then the
    capacity failover added elsewhere restored to the counts recorded before it.

    Args:
        topology: The topology: on a deployed run, the name of a file in the worker's
            $CHALK_DR_TOPOLOGY_DIR (e.g. topology.yaml).
        to_region: The recovered region to bring back, e.g. us-east-1; it must serve, with ready
            capacity, its Aurora cluster replicating within the guard.
        require_approval: Pause before changing anything, with the pre-check in the approval form
            (who approved is recorded).
        probe_interval_seconds: Seconds between the client-view probes that verify the result.
        verify_observations: Consecutive good answers from the recovered region, through the
            failover name, that prove the failback.
        timeout_seconds: Real seconds each wait may take (writer, clients, capacity); default: 3x
            the configured worst case + 30 s.
        wait_for_lock_seconds: Seconds to wait for another runbook of this environment to release
            the environment's lock.
    """
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
        _undo_drill_leftovers(ctx)
        a = assess_regions(ctx.probes, _target(ctx), _others(ctx))
        failed = a.others[0]
        a.problems = target_problems(a.target) + mode_problems(failed, ctx.settings.mode)
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


def _undo_drill_leftovers(ctx: Failover) -> None:
    """Undo what a drill left (its inverted health check, its scaled-down Deployment, its FIS
    experiment) when this failover cancelled one, or the lock record names dead runs: the
    sweep's own repair, under the lock this run holds. Not otherwise: the hourly sweep covers
    the rest, and an incident failover should not spend its time reading for leftovers."""
    report = ctx.report
    if report.drill_cancelled is None and not read_lock_record(ctx.topology.environment).suspects:
        return
    if ctx.routing is None:
        report.notes.append(
            "a drill's leftovers could not be swept: the failover name's routing is unreadable"
        )
        return
    try:
        report.swept = sweep_leftovers(ctx.topology, ctx.clients, ctx.routing)
    except SweepIncomplete as exc:
        report.swept = list(exc.repaired)
        report.notes.append(f"a drill's leftovers were not all undone: {'; '.join(exc.failures)}")
    for line in report.swept:
        report.changes.append(f"swept: {line}")
        ctx.journal.event("assess", "swept", line)


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
                line = _capacity_line(change)
                report.changes.append(line)
                ctx.journal.event("capacity", "scaled", line)
        for change in report.capacity:
            change.ready = await_ready(
                ctx.clients,
                target,
                change.deployment,
                ctx.settings.timeout_s(ctx.topology),
                at_least=change.desired,
            )
        rec.detail["deployments"] = [c.model_dump() for c in report.capacity]


def _capacity_line(change: CapacityChange) -> str:
    where = f"{change.region}/{change.deployment}"
    if change.hpa:
        return f"{where}: HPA {change.hpa} minReplicas {change.previous} -> {change.desired}"
    return f"{where}: replicas {change.previous} -> {change.desired}"


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
    """Move the failover name's answer to the target without the failed region's control plane.

    With ARC routing controls (topology `recovery.arc`): the failed region's control Off and the
    target's On, in one update through the cluster's endpoints in turn (tasks/arc_routing.py);
    no Route 53 control-plane call. Otherwise: invert the failed region's health check (a Route
    53 control-plane call, us-east-1), tagged with this recovery. When that control plane does
    not answer, nothing is changed and the report says so: Route 53's health checks (its data
    plane) fail a region that is really down over by themselves, and verify shows whether they
    did.
    """
    report = ctx.report
    with ctx.journal.phase("traffic") as rec:
        report.traffic_mono = time.monotonic()
        if ctx.topology.recovery.arc is not None:
            try:
                _traffic_arc(ctx, {r: "Off" for r in report.from_regions} | {report.to_region: "On"})
                rec.detail["changes"] = [c.model_dump() for c in report.traffic]
                return
            except (DrillAborted, AwsCallError) as exc:
                note = f"ARC routing controls could not be set ({exc}); trying the health-check inversion"
                report.notes.append(note)
                ctx.journal.event("traffic", "arc unavailable", note)
        if ctx.routing is None:
            _discover(ctx, "traffic")
        if ctx.routing is None:
            report.traffic_via, report.control_plane_used = "health-check-failover", False
            rec.reason = (
                "routing unreadable (Route 53's control plane): nothing changed; "
                "verify shows where clients are"
            )
            report.notes.append(rec.reason)
            return
        for region in report.from_regions:
            change = invert_health_check(ctx.clients, ctx.routing, region, report.recovery_id)
            report.traffic.append(change)
            if change.action == "inverted":
                report.changes.append(f"route53 health check {change.health_check_id} ({region}): inverted")
            ctx.journal.event("traffic", change.action, change.note or change.health_check_id or region)
        moved = any(c.action in ("inverted", "already inverted") for c in report.traffic)
        report.traffic_via = "route53-health-check" if moved else "health-check-failover"
        report.control_plane_used = any(c.action == "inverted" for c in report.traffic)
        if not moved:
            report.notes.append(
                "the Route 53 control plane was not used: Route 53's health checks must move traffic"
            )
        rec.detail["changes"] = [c.model_dump() for c in report.traffic]


def _traffic_arc(ctx: Recovery, wanted: dict[str, State]) -> None:
    """Set the routing controls to `wanted` (region -> On/Off) unless they already are."""
    report = ctx.report
    directory = arc_directory(ctx.clients, ctx.topology, report.notes)
    avoid = [r for r, state in wanted.items() if state == "Off"]
    read = read_routing_control_states(ctx.clients, directory, avoid=avoid)
    current = region_states(directory, read)
    if read.endpoint is None:
        report.notes.append(f"routing-control states unreadable before the change: {'; '.join(read.errors)}")
    report.traffic_via, report.control_plane_used = "arc-routing-control", False
    if all(current.get(r) == s for r, s in wanted.items()):
        for region, state in wanted.items():
            report.traffic.append(
                TrafficChange(region=region, via="arc-routing-control", action=f"already {state}")
            )
        ctx.journal.event(
            "traffic", "routing controls already set", ", ".join(f"{r}={s}" for r, s in wanted.items())
        )
        return
    endpoint = set_routing_control_states(ctx.clients, directory, wanted, avoid=avoid)
    unanswered = [e for e in read.errors if not e.startswith(f"{endpoint.region}:")]
    note = f"endpoints that did not answer the read: {'; '.join(unanswered)}" if unanswered else None
    for region, state in wanted.items():
        report.traffic.append(
            TrafficChange(
                region=region,
                via="arc-routing-control",
                action=f"set {state}" if current.get(region) != state else f"already {state}",
                endpoint=endpoint.region,
                note=note,
            )
        )
        if current.get(region) != state:
            report.changes.append(f"arc routing control {directory.controls[region]} ({region}): {state}")
    emit_audit_event(
        AuditRecord(
            system="arc",
            action="update-routing-control-states",
            resource=directory.control_panel_arn,
            region=endpoint.region,
            api_call="route53-recovery-cluster:UpdateRoutingControlStates",
            detail={"states": dict(wanted), "endpoint": endpoint.endpoint, "recovery_id": report.recovery_id},
        )
    )
    ctx.journal.event(
        "traffic",
        "routing controls set",
        f"{', '.join(f'{r}={s}' for r, s in wanted.items())} via {endpoint.region}",
    )


def fallback_routing(ctx: Recovery) -> Routing:
    """The client's view without Route 53's control plane: each region's addresses from its own
    hostname (a regional name aliases the region's load balancer, as the failover record does),
    resolved through the clients' resolver. No record or health check is known from it."""
    addresses = {}
    for r in ctx.topology.regions:
        found = ctx.probes.resolver.resolve(r.query_hostname)
        if found.ok:
            addresses[r.aws_region] = found.addresses
    return Routing(record=ctx.topology.route53.failover_record, routes={}, addresses=addresses)


def verify(ctx: Recovery) -> None:
    """The client's view: `verify_observations` consecutive queries through the failover name
    answered by the target (the drill's probes, fresh connections, uncached DNS). RTO: from the
    run's start to the first of them."""
    report, settings = ctx.report, ctx.settings
    target = report.to_region
    with ctx.journal.phase("verify") as rec:
        if ctx.routing is None:
            _discover(ctx, "verify")
        if ctx.routing is None:
            ctx.routing = fallback_routing(ctx)
            report.notes.append(
                "the failover records are unreadable (Route 53's control plane): answers are attributed "
                "by the regions' own hostnames' addresses"
            )
            if target not in ctx.routing.addresses:
                raise DrillAborted(
                    f"{target}'s own hostname does not resolve: the client view cannot be attributed"
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
        if ctx.topology.recovery.arc is not None:
            # The provisioned layout: every region's routing control On (Route 53 then routes by
            # the failover records and the /healthz checks again).
            _traffic_arc(ctx, {r.aws_region: "On" for r in ctx.topology.regions})
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
                    line = _capacity_line(change)
                    report.changes.append(line)
                    ctx.journal.event("capacity", "restored", line)
        for change in report.capacity:
            region = ctx.topology.region(change.region)
            change.ready = await_ready(
                ctx.clients, region, change.deployment, ctx.settings.timeout_s(ctx.topology)
            )
        rec.detail["deployments"] = [c.model_dump() for c in report.capacity]
