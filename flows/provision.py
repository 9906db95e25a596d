"""The provision flow: converge AWS to a topology's failover plumbing: read, plan, approve, apply, verify.

Safe to re-run at any time; that is how drift is caught. Every region is read concurrently,
the plan is a pure function of what was read (chalkdr.plan), `plan` mode stops after
publishing it, and `apply` changes only what the plan lists, stage by stage in dependency
order. Transient AWS errors are retried by botocore (standard mode, exponential backoff); a
permanent one (AccessDenied, ValidationException) fails the run at once, naming the API call
and resource, and no later stage starts. Afterwards everything is read again and the plan must
be empty.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from typing import Any
from typing import Literal
from typing import TypeVar

from prefect import flow
from prefect import get_run_logger
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.flow_runs import pause_flow_run
from prefect.futures import PrefectFuture
from prefect.futures import wait
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

from chalkdr.audit import AuditRecord
from chalkdr.clients import AwsClients
from chalkdr.drill import DEFAULT_LOCK_WAIT_S
from chalkdr.drill import LockWaitSeconds
from chalkdr.errors import ChalkDrError
from chalkdr.plan import Change
from chalkdr.plan import ChangeResult
from chalkdr.plan import ObservedAlarm
from chalkdr.plan import ObservedAlarms
from chalkdr.plan import ObservedAlb
from chalkdr.plan import ObservedAurora
from chalkdr.plan import ObservedDbCluster
from chalkdr.plan import ObservedDynamoDb
from chalkdr.plan import ObservedEks
from chalkdr.plan import ObservedEksClusters
from chalkdr.plan import ObservedMsk
from chalkdr.plan import ObservedMskCluster
from chalkdr.plan import ObservedReplicator
from chalkdr.plan import ObservedState
from chalkdr.plan import ObservedTable
from chalkdr.plan import Plan
from chalkdr.plan import PlanError
from chalkdr.plan import RecordSpec
from chalkdr.plan import ResourceKind
from chalkdr.plan import Stage
from chalkdr.plan import WaitPolicy
from chalkdr.plan import alarm_prefix
from chalkdr.plan import apply_stages
from chalkdr.plan import critical_path_s
from chalkdr.plan import online_store_tables
from chalkdr.plan import plan_for
from chalkdr.plan import plan_table_rows
from chalkdr.plan import render_plan_markdown
from chalkdr.topology import RegionConfig
from chalkdr.topology import Topology
from flows.runbook import hold_environment_lock
from flows.runbook import load_topology_parameter
from tasks.arc import ensure_arc_cluster
from tasks.arc import ensure_control_panel
from tasks.arc import ensure_routing_control
from tasks.arc import ensure_routing_control_states
from tasks.arc import ensure_safety_rule
from tasks.arc import read_arc
from tasks.audit import ApplyContext
from tasks.audit import publish_audit_table
from tasks.aurora import ensure_global_cluster
from tasks.aurora import ensure_secondary_cluster
from tasks.aurora import read_db_cluster
from tasks.aurora import read_global_cluster
from tasks.cloudwatch import ensure_alarm
from tasks.cloudwatch import read_alarms
from tasks.dynamodb import ensure_replicas
from tasks.dynamodb import read_tables
from tasks.kube import read_eks
from tasks.msk import ensure_replicator
from tasks.msk import read_msk
from tasks.retry import retry_options
from tasks.route53 import delete_stale_health_checks
from tasks.route53 import ensure_health_check
from tasks.route53 import ensure_records
from tasks.route53 import read_alb
from tasks.route53 import read_route53

__all__ = ["ApprovalForm", "ConvergenceError", "ProvisionReport", "provision", "read_world"]

Mode = Literal["plan", "apply"]
_V = TypeVar("_V")
# Enough threads to read every (region, system) pair of a 4-region topology at once.
_READ_WORKERS = 32
# How often a paused run checks for the reviewer's answer (Prefect's default is 10 s).
_APPROVAL_POLL_S = 3


class ApprovalForm(RunInput):
    """What a reviewer answers when the flow pauses with the plan (rendered as a form in the UI)."""

    approve: bool = Field(default=False, description="Apply the plan shown above")
    approver: str = Field(default="", description="Who approves (recorded in the audit trail)")
    comment: str = Field(default="", description="Why (recorded in the audit trail)")


class Approval(BaseModel):
    model_config = ConfigDict(frozen=True)

    approved: bool
    approver: str
    comment: str


class ConvergenceError(ChalkDrError):
    """After apply, reading AWS again still yields changes: something fought the apply."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        lines = [f"- {c.action.value} {c.kind.value} {c.id} ({c.region})" for c in plan.pending]
        super().__init__(f"{plan.environment}: not converged after apply:\n" + "\n".join(lines))


class ProvisionReport(BaseModel):
    """One provision run: the plan, the approval, every change made, the verification."""

    environment: str
    mode: Mode
    outcome: Literal["planned", "drift", "in-sync", "applied", "rejected", "failed"] = "planned"
    plan: Plan
    approval: Approval | None = None
    applied: list[ChangeResult] = Field(default_factory=list)
    verify_plan: Plan | None = None
    error: str | None = None
    timings_s: dict[str, float] = Field(default_factory=dict)

    @property
    def audit(self) -> list[AuditRecord]:
        return [record for result in self.applied for record in result.audit]

    @property
    def verified(self) -> bool:
        return self.verify_plan is not None and self.verify_plan.empty


# -- read ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionReading:
    """One region's part of every system's observed model."""

    alb: ObservedAlb | None
    tables: tuple[ObservedTable, ...]
    msk_cluster: ObservedMskCluster | None
    replicators: tuple[ObservedReplicator, ...]
    db_cluster: ObservedDbCluster | None
    alarms: tuple[ObservedAlarm, ...]
    eks: ObservedEks


@task(task_run_name="read-region-{region.aws_region}", cache_policy=NO_CACHE, **retry_options())
def read_region(clients: AwsClients, topology: Topology, region: RegionConfig) -> RegionReading:
    """One region's whole state, its reads run concurrently inside one task.

    One task per region (not per region and system) keeps Prefect's per-task cost from growing
    with the number of systems, so adding regions costs little more wall time than one: the
    regions are read side by side and each region's six reads overlap inside its task.
    """
    tables = online_store_tables(topology)
    with ThreadPoolExecutor(max_workers=6, thread_name_prefix=f"read-{region.aws_region}") as pool:
        alb = pool.submit(read_alb.fn, clients, region)
        observed_tables = pool.submit(read_tables.fn, clients, region.aws_region, tables)
        msk = pool.submit(read_msk.fn, clients, region, topology.msk.replicator_name)
        db = pool.submit(read_db_cluster.fn, clients, region.aws_region, region.aurora_cluster_id)
        alarms = pool.submit(read_alarms.fn, clients, region.aws_region, alarm_prefix(topology.environment))
        eks = pool.submit(read_eks.fn, clients, region)
        cluster, replicators = msk.result()
        return RegionReading(
            alb=alb.result(),
            tables=tuple(observed_tables.result()),
            msk_cluster=cluster,
            replicators=tuple(replicators),
            db_cluster=db.result(),
            alarms=tuple(alarms.result()),
            eks=eks.result(),
        )


def _present(values: Mapping[str, _V | None]) -> dict[str, _V]:
    return {k: v for k, v in values.items() if v is not None}


def read_world(clients: AwsClients, topology: Topology) -> ObservedState:
    """Read every region concurrently and resolve every future.

    A read that still fails after its retries fails the flow; nothing is planned from half a
    picture.
    """
    primary = topology.primary.aws_region
    route53 = read_route53.submit(clients, topology)
    global_cluster = read_global_cluster.submit(clients, primary, topology.aurora.global_cluster_id)
    arc = read_arc.submit(clients, topology)  # reads nothing without recovery.arc
    per_region = {r.aws_region: read_region.submit(clients, topology, r) for r in topology.regions}
    futures: list[PrefectFuture[Any]] = [route53, global_cluster, arc, *per_region.values()]
    wait(futures)
    failed = [f for f in futures if f.state.is_failed() or f.state.is_crashed()]
    if failed:
        failed[0].result()  # raises the first read's error, as classified
    read = {region: f.result() for region, f in per_region.items()}
    return ObservedState(
        route53=route53.result().model_copy(update={"albs": _present({r: x.alb for r, x in read.items()})}),
        dynamodb=ObservedDynamoDb(tables={r: x.tables for r, x in read.items()}),
        msk=ObservedMsk(
            clusters=_present({r: x.msk_cluster for r, x in read.items()}),
            replicators={r: x.replicators for r, x in read.items()},
        ),
        aurora=ObservedAurora(
            clusters=_present({r: x.db_cluster for r, x in read.items()}),
            global_cluster=global_cluster.result(),
        ),
        alarms=ObservedAlarms(alarms={r: x.alarms for r, x in read.items()}),
        eks=ObservedEksClusters(clusters={r: x.eks for r, x in read.items()}),
        arc=arc.result(),
    )


# -- plan / approve -----------------------------------------------------------------------------


def _publish_plan(plan: Plan, *, verify: bool = False) -> None:
    env = plan.environment
    key = f"provision-verify-{env}" if verify else f"provision-plan-{env}"
    create_markdown_artifact(markdown=render_plan_markdown(plan), key=key, description=plan.summary())
    if not verify:
        create_table_artifact(
            table=plan_table_rows(plan), key=f"provision-plan-table-{env}", description=plan.summary()
        )


def _ask_approval(plan: Plan, timeout_s: int) -> Approval:
    listing = "\n".join(f"- **{c.action.value}** {c.kind.value} `{c.id}` ({c.region})" for c in plan.pending)
    description = (
        f"## Approve provision of {plan.environment}?\n\n{plan.summary()}\n\n{listing}\n\n"
        f"Full plan: artifact `provision-plan-{plan.environment}`."
    )
    answer = pause_flow_run(
        wait_for_input=ApprovalForm.with_initial_data(description=description, approve=False),
        timeout=timeout_s,
        poll_interval=_APPROVAL_POLL_S,
    )
    return Approval(approved=answer.approve, approver=answer.approver, comment=answer.comment)


# -- apply --------------------------------------------------------------------------------------


def _run_stage(
    stage: Stage, submit: Callable[[Change], PrefectFuture[ChangeResult]], results: list[ChangeResult]
) -> None:
    """Run a stage's changes (concurrently, or one after another) and fail after they settle.

    Changes already in flight in the same stage finish (a sent AWS call cannot be recalled); in
    a sequential stage nothing after the failed change starts.
    """
    if stage.concurrent:
        futures = [submit(c) for c in stage.changes]
        wait(futures)
        errors: list[PrefectFuture[ChangeResult]] = []
        for f in futures:
            if f.state.is_completed():
                results.append(f.result())
            else:
                errors.append(f)
        if errors:
            errors[0].result()  # raise the first failure
        return
    for change in stage.changes:
        results.append(submit(change).result())


def run_stage_graph(stages: Sequence[Stage], run: Callable[[Stage], None], timings: dict[str, float]) -> None:
    """Run every stage as soon as the stages it depends on have finished; independent ones overlap.

    A stage that fails stops every stage that depends on it (directly or not); stages that do
    not depend on it still run, so one broken system does not leave the others half-done. The
    first failure (in stage order) is raised once nothing is running any more. Each stage runs
    in a thread of its own with a copy of the flow's context, so its Prefect tasks belong to
    this flow run.
    """
    logger = get_run_logger()
    done: set[str] = set()
    failed: dict[str, BaseException] = {}
    blocked: set[str] = set()
    running: dict[Future[None], Stage] = {}

    def timed(stage: Stage) -> None:
        started = time.monotonic()
        try:
            run(stage)
        finally:
            timings[f"stage:{stage.name}"] = time.monotonic() - started

    with ThreadPoolExecutor(max_workers=max(len(stages), 1), thread_name_prefix="stage") as pool:

        def start_ready() -> None:
            claimed = done | set(failed) | blocked | {s.name for s in running.values()}
            for stage in stages:
                if stage.name in claimed:
                    continue
                if any(d in failed or d in blocked for d in stage.depends_on):
                    blocked.add(stage.name)
                    claimed.add(stage.name)
                    logger.error("stage %s not started: a stage it depends on failed", stage.name)
                elif all(d in done for d in stage.depends_on):
                    logger.info("stage %s: %d change(s)", stage.name, len(stage.changes))
                    running[pool.submit(contextvars.copy_context().run, timed, stage)] = stage
                    claimed.add(stage.name)

        start_ready()
        while running:
            finished, _ = futures_wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                stage = running.pop(future)
                error = future.exception()
                if error is None:
                    done.add(stage.name)
                else:
                    failed[stage.name] = error
            start_ready()
    for stage in stages:
        if stage.name in failed:
            raise failed[stage.name]


def _apply(apply: ApplyContext, plan: Plan, results: list[ChangeResult], timings: dict[str, float]) -> None:
    stages = apply_stages(plan)
    # The ids (ARNs) later stages need, by each spec's `ref`: what exists already, and what each
    # stage makes as it finishes (a new health check for the records, a routing control's ARN for
    # its RECOVERY_CONTROL check, a cluster's for its control panel).
    refs = {c.spec.ref: c.current_id for c in plan.changes if c.current_id}
    try:
        run_stage_graph(stages, lambda s: _apply_stage(apply, s, results, refs), timings)
    finally:
        durations = {s.name: timings.get(f"stage:{s.name}", 0.0) for s in stages}
        timings["critical_path"] = critical_path_s(stages, durations)


# The task that applies a change of each kind (the cleanup half of a replace has its own).
_APPLY_TASKS: dict[ResourceKind, Any] = {
    ResourceKind.HEALTH_CHECK: ensure_health_check,
    ResourceKind.ROUTING_CONTROL_HEALTH_CHECK: ensure_health_check,
    ResourceKind.CALCULATED_HEALTH_CHECK: ensure_health_check,
    ResourceKind.GLOBAL_TABLE: ensure_replicas,
    ResourceKind.REPLICATOR: ensure_replicator,
    ResourceKind.GLOBAL_CLUSTER: ensure_global_cluster,
    ResourceKind.SECONDARY_CLUSTER: ensure_secondary_cluster,
    ResourceKind.ALARM: ensure_alarm,
    ResourceKind.ARC_CLUSTER: ensure_arc_cluster,
    ResourceKind.ARC_CONTROL_PANEL: ensure_control_panel,
    ResourceKind.ARC_ROUTING_CONTROL: ensure_routing_control,
    ResourceKind.ARC_ROUTING_CONTROL_STATES: ensure_routing_control_states,
    ResourceKind.ARC_SAFETY_RULE: ensure_safety_rule,
}
# Kinds whose tasks also take the ids earlier stages resolved (`refs`).
_TAKES_REFS = frozenset(
    {
        ResourceKind.HEALTH_CHECK,
        ResourceKind.ROUTING_CONTROL_HEALTH_CHECK,
        ResourceKind.CALCULATED_HEALTH_CHECK,
        ResourceKind.ARC_CLUSTER,
        ResourceKind.ARC_CONTROL_PANEL,
        ResourceKind.ARC_ROUTING_CONTROL,
        ResourceKind.ARC_ROUTING_CONTROL_STATES,
        ResourceKind.ARC_SAFETY_RULE,
    }
)


def _apply_stage(
    apply: ApplyContext, stage: Stage, results: list[ChangeResult], refs: dict[str, str]
) -> None:
    if stage.kind is ResourceKind.RECORD:
        # One atomic batch per record name (PRIMARY and SECONDARY change together, and the
        # name's ownership TXT record with them).
        by_name: dict[str, list[Change]] = {}
        for c in stage.changes:
            by_name.setdefault(c.typed_spec(RecordSpec).batch_name, []).append(c)
        for name, changes in by_name.items():
            results.extend(ensure_records(apply, name, changes, dict(refs)))
        return
    mine: list[ChangeResult] = []
    if stage.cleanup:
        _run_stage(stage, lambda c: delete_stale_health_checks.submit(apply, c), mine)
    elif stage.kind in _TAKES_REFS:
        known = dict(refs)  # what the stages this one depends on made
        _run_stage(stage, lambda c: _APPLY_TASKS[stage.kind].submit(apply, c, known), mine)
    else:
        _run_stage(stage, lambda c: _APPLY_TASKS[stage.kind].submit(apply, c), mine)
    results.extend(mine)
    if not stage.cleanup:  # later stages need the new ids
        refs.update({r.ref: r.resource_id for r in mine if r.ref and r.resource_id})


def _publish_audit(report: ProvisionReport) -> None:
    who = (
        f"approved by {report.approval.approver or '(unnamed)'}: {report.approval.comment}"
        if report.approval
        else "no approval step"
    )
    publish_audit_table(
        report.audit,
        key=f"provision-audit-{report.environment}",
        description=f"provision {report.environment}: {len(report.audit)} change(s) made, {who}",
    )


# -- the flow -----------------------------------------------------------------------------------


@flow(name="provision", task_runner=ThreadPoolTaskRunner(max_workers=_READ_WORKERS))  # type: ignore[arg-type]
def provision(
    topology: str | dict[str, Any] | Topology,
    mode: Mode = "plan",
    require_approval: bool = True,
    approval_timeout_s: int = 3600,
    wait_timeout_s: float = 3600.0,
    clients: AwsClients | None = None,
    wait_for_lock_seconds: LockWaitSeconds = DEFAULT_LOCK_WAIT_S,
) -> ProvisionReport:
    """Converge AWS to the topology's failover plumbing; `plan` mode changes nothing, and ends
    Failed (outcome "drift", the plan as the message, the report as the result) unless AWS is
    already converged: that is what makes a scheduled plan run a drift alarm.

    An apply holds the environment's lock (the one drills, failover and failback hold), so it
    never resets a live drill's fault; a plan run only reads and never waits for it.

    Args:
        topology: The topology to converge to. From a deployment: the name of a YAML file in the
            worker's $CHALK_DR_TOPOLOGY_DIR (e.g. topology.example.yaml); a mapping or a path
            elsewhere is refused. From Python, also a path, a mapping or a Topology.
        mode: plan: read every region and publish the plan, changing nothing (a non-empty plan ends
            the run Failed: drift). apply: also make the changes along the stage graph, then
            re-read and re-plan to verify.
        require_approval: Apply only: pause with the plan until someone answers the approval form
            (approve, approver, comment: recorded in the audit trail). Off, the plan is applied
            as soon as it is made.
        approval_timeout_s: Apply only: seconds to wait for the approval form before the run ends
            with nothing applied.
        wait_timeout_s: Upper bound of each wait for AWS's asynchronous work (a new replica,
            replicator or Aurora secondary), in configured AWS seconds (a time-scaled sandbox waits
            proportionally less).
        clients: For embedding only (tests, benchmarks): an AwsClients object made in Python, e.g.
            with botocore event hooks. Leave it empty in a form or an API call: it cannot be
            written as JSON (any value but null fails the run's parameter validation), and an empty
            one is made from the topology (its per-region role_arn, the worker's AWS credentials).
        wait_for_lock_seconds: Apply only: seconds to wait for a drill, sweep, failover or failback
            of the environment to release its lock before giving up.
    """
    topo = load_topology_parameter(topology)
    aws = clients or AwsClients.for_topology(topo)
    if mode == "plan":  # reads only: never waits for a drill
        return _converge(topo, aws, mode, require_approval, approval_timeout_s, wait_timeout_s)
    # An apply holds the environment's lock from its first read to its verify: a drill, failover
    # or failback resets nothing here, and an apply never undoes a live drill's fault.
    with hold_environment_lock(
        topo.environment,
        wait_for_lock_seconds,
        kind="provision",
        run_id=flow_run.get_id() or f"provision-{uuid.uuid4().hex[:8]}",
    ):
        return _converge(topo, aws, mode, require_approval, approval_timeout_s, wait_timeout_s)


def _converge(
    topo: Topology,
    aws: AwsClients,
    mode: Mode,
    require_approval: bool,
    approval_timeout_s: int,
    wait_timeout_s: float,
) -> ProvisionReport:
    """Read, plan, and in apply mode approve, apply and verify (the flow's body)."""
    logger = get_run_logger()
    timings: dict[str, float] = {}  # shared with the report below: each phase adds its wall time

    t0 = time.monotonic()
    observed = read_world(aws, topo)
    timings["read"] = time.monotonic() - t0
    t0 = time.monotonic()
    plan = plan_for(topo, observed)
    timings["plan"] = time.monotonic() - t0
    _publish_plan(plan)
    logger.info("plan: %s", plan.summary())
    for warning in plan.warnings:
        logger.warning("plan: %s", warning)
    report = ProvisionReport(environment=topo.environment, mode=mode, plan=plan)
    report.timings_s = timings  # assigned, not validated: pydantic would copy the dict
    if mode == "plan":
        if plan.empty and not plan.errors:
            report.outcome = "in-sync"
            return report
        # A plan with changes (or errors) is drift: the run ends Failed so the hourly check alerts,
        # with the plan as the reason and the report as the result.
        report.outcome = "drift"
        reason = "; ".join(plan.errors) if plan.errors else plan.summary()
        return Failed(message=f"drift in {topo.environment}: {reason}", data=report)  # type: ignore[return-value]
    if plan.errors:
        raise PlanError(topo.environment, plan.errors)
    if plan.empty:
        report.outcome = "in-sync"
        report.verify_plan = plan
        _publish_audit(report)  # evidence that this apply changed nothing
        return report

    if require_approval:
        report.approval = _ask_approval(plan, approval_timeout_s)
        if not report.approval.approved:
            logger.warning("plan rejected by %s: %s", report.approval.approver, report.approval.comment)
            report.outcome = "rejected"
            return report
    detail: dict[str, Any] = (
        {"approver": report.approval.approver, "comment": report.approval.comment}
        if report.approval
        else {"approval": "not required"}
    )
    waits = WaitPolicy(time_scale=topo.time_scale, timeout_s=wait_timeout_s)
    t0 = time.monotonic()
    try:
        _apply(ApplyContext(aws, waits=waits, audit_detail=detail), plan, report.applied, timings)
    except Exception as exc:
        report.outcome, report.error = "failed", str(exc)
        raise
    finally:
        timings["apply"] = time.monotonic() - t0
        _publish_audit(report)

    t0 = time.monotonic()
    report.verify_plan = plan_for(topo, read_world(aws, topo))
    timings["verify"] = time.monotonic() - t0
    _publish_plan(report.verify_plan, verify=True)
    if not report.verify_plan.empty:
        report.outcome, report.error = "failed", "not converged after apply"
        raise ConvergenceError(report.verify_plan)
    report.outcome = "applied"
    logger.info("applied %d change(s); verified: the plan is now empty", len(plan.pending))
    return report
