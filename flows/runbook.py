"""What every runbook (drill, failover, failback) shares: the run context its phases receive,
the environment lock, the kill switch, the outcome of a run and its phase events.

A runbook is a function of one `RunContext` whose phases are small functions of it too: the
topology, the validated settings, the journal (its report), the AWS clients and the probes, and
the routing discovered from Route 53. `execute_runbook` runs it inside the environment's lock and
turns the way it ends into the report's outcome, so no phase catches or formats another's errors.
While it holds the lock, the run is recorded as the holder in the Variable `chalkdr-runbook-<env>`
(tasks/locks.py): a run killed hard stays recorded, and the next holder's sweep marks it Crashed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import ExitStack
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import Generic
from typing import TypeVar

from prefect import get_run_logger
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.events import emit_event

from chalkdr.clients import AwsClients
from chalkdr.drill import DEFAULT_LOCK_WAIT_S
from chalkdr.drill import Routing
from chalkdr.errors import ChalkDrError
from chalkdr.errors import DrillAborted
from chalkdr.errors import PreflightFailed
from chalkdr.report import Journal
from chalkdr.report import PhaseRecord
from chalkdr.report import PhaseStatus
from chalkdr.report import RunReport
from chalkdr.topology import Topology
from chalkdr.topology import load_topology
from chalkdr.topology import parse_topology
from chalkdr.topology import topology_file_in
from tasks.locks import RunRef
from tasks.locks import claim_lock_record
from tasks.locks import ensure_lock
from tasks.locks import kill_switch_reason
from tasks.locks import release_lock_record
from tasks.probes import ProbeSet

__all__ = [
    "DEFAULT_LOCK_WAIT_S",
    "TOPOLOGY_DIR_ENV",
    "LockBusy",
    "RunContext",
    "TopologyRefused",
    "configured_topology",
    "deployed_run",
    "emit_finished",
    "environment_lock_name",
    "execute_runbook",
    "hold_environment_lock",
    "load_topology_parameter",
    "phase_events",
    "phase_listener",
]

S = TypeVar("S")
R = TypeVar("R", bound=RunReport)
# The shortest lease Prefect allows: a runbook killed hard blocks its environment for about a
# minute (until the server revokes the lease), and the next run's sweep repairs what it left and
# marks the dead run Crashed.
LOCK_LEASE_S = 60
# Where a deployed run's topology files live on the worker (put there by the operator).
TOPOLOGY_DIR_ENV = "CHALK_DR_TOPOLOGY_DIR"


class LockBusy(DrillAborted):
    """Another runbook holds the environment's lock (a drill, a failover or a failback)."""


class TopologyRefused(ChalkDrError):
    """A deployed run named its topology in a way only a local caller may."""


def deployed_run() -> bool:
    """Whether this run belongs to a deployment: its parameters came through the Prefect API."""
    ctx = FlowRunContext.get()
    return ctx is not None and ctx.flow_run is not None and ctx.flow_run.deployment_id is not None


def configured_topology(name: str) -> Topology:
    """The topology file `name` in the worker's $CHALK_DR_TOPOLOGY_DIR; unset, a deployed run
    cannot start."""
    directory = os.environ.get(TOPOLOGY_DIR_ENV)
    if not directory:
        raise TopologyRefused(
            f"${TOPOLOGY_DIR_ENV} is not set on this worker: a deployed run reads its topology "
            "from that directory only"
        )
    return load_topology(topology_file_in(directory, name))


def load_topology_parameter(topology: str | dict[str, Any] | Topology) -> Topology:
    """A flow's `topology` parameter: a YAML path, the topology as a mapping, or a Topology.

    A deployed run (its parameters came through the Prefect API, from anyone holding an API key)
    may only name a file in the worker's $CHALK_DR_TOPOLOGY_DIR: a mapping or a path elsewhere
    could point the run's credentials and secrets at any host.
    """
    if isinstance(topology, Topology):
        return topology
    if deployed_run():
        if not isinstance(topology, str):
            raise TopologyRefused(
                "a deployed run takes its topology as the name of a file in "
                f"${TOPOLOGY_DIR_ENV}, not a mapping"
            )
        return configured_topology(topology)
    if isinstance(topology, dict):
        return parse_topology(topology, source="<topology parameter>")
    return load_topology(Path(topology))


@dataclass
class RunContext(Generic[S, R]):
    """Everything a runbook's phases work with; each phase reads and writes only through it."""

    topology: Topology
    settings: S
    journal: Journal[R]
    clients: AwsClients
    probes: ProbeSet
    routing: Routing | None = None  # what Route 53 routes today; discovered by the first phase

    @property
    def report(self) -> R:
        return self.journal.report

    @property
    def live_routing(self) -> Routing:
        if self.routing is None:
            raise RuntimeError("routing was not discovered yet (the sweep phase reads it)")
        return self.routing


def _run_resource(kind: str, report: RunReport) -> dict[str, str]:
    """The run as an event's resource: `chalkdr.<kind>.<run id>`, with its environment."""
    return {
        "prefect.resource.id": f"chalkdr.{kind}.{report.run_id}",
        "chalkdr.environment": report.environment,
    }


def emit_finished(kind: str, report: RunReport, payload: dict[str, Any]) -> None:
    """The closing event `chalkdr.<kind>.finished`, with the outcome and what `payload` adds."""
    emit_event(
        event=f"chalkdr.{kind}.finished",
        resource=_run_resource(kind, report),
        payload={"outcome": report.outcome.value, **payload},
    )


# (kind, report, phase name, its record): called in this process as each runbook phase ends.
PhaseListener = Callable[[str, RunReport, str, PhaseRecord], None]
_PHASE_LISTENERS: list[PhaseListener] = []


@contextmanager
def phase_listener(listener: PhaseListener) -> Iterator[None]:
    """Call `listener(kind, report, name, record)` as each phase of every runbook run in this
    process ends, beside its phase event, for as long as the block runs.

    Why: events reach the API asynchronously (seconds later) and not at all without a server
    that keeps them, so an in-process caller that shows progress while it waits (the `chalk-dr`
    terminal command) listens here instead. A listener that raises is logged and ignored: a
    display never fails a runbook.
    """
    _PHASE_LISTENERS.append(listener)
    try:
        yield
    finally:
        _PHASE_LISTENERS.remove(listener)


def phase_events(kind: str, report: RunReport) -> Callable[[str, PhaseRecord], None]:
    """A `chalkdr.<kind>.phase.<name>` event as each phase ends, naming the run as its resource;
    then every `phase_listener` of this process is told."""

    def emit(name: str, rec: PhaseRecord) -> None:
        emit_event(
            event=f"chalkdr.{kind}.phase.{name}",
            resource=_run_resource(kind, report),
            payload={
                "phase": name,
                "status": rec.status.value,
                "reason": rec.reason,
                "duration_s": rec.duration_s,
            },
        )
        for listener in list(_PHASE_LISTENERS):
            try:
                listener(kind, report, name, rec)
            except Exception:  # noqa: BLE001 - a display's error is logged, never the runbook's
                get_run_logger().warning("phase listener %r failed", listener, exc_info=True)

    return emit


def environment_lock_name(environment: str) -> str:
    """The one lock of an environment: drills, failover, failback, sweeps and provision applies
    exclude each other (a provision apply during a drill would reset the drill's fault)."""
    return f"drill-{environment}"


@contextmanager
def hold_environment_lock(
    environment: str,
    wait_s: float,
    *,
    kind: str,
    run_id: str,
    on_held: Callable[[RunRef], None] | None = None,
) -> Iterator[RunRef]:
    """Hold the environment's lock (strict, leased) and record this run as its holder in the
    backend; `LockBusy` when another run keeps it past `wait_s`. A run killed hard leaves its
    record behind, and the next holder's sweep marks it Crashed (tasks/locks.py)."""
    name = environment_lock_name(environment)
    held = concurrency(
        ensure_lock(name),
        occupy=1,
        strict=True,
        timeout_seconds=max(wait_s, 2.0),
        lease_duration=LOCK_LEASE_S,
    )
    try:
        held.__enter__()
    except TimeoutError:
        raise LockBusy(
            f"another drill, failover, failback, sweep or provision apply of {environment} "
            f"holds the lock {name}"
        ) from None
    try:
        me = claim_lock_record(environment, lock=name, kind=kind, run_id=run_id)
        if on_held is not None:
            on_held(me)
    except BaseException:
        held.__exit__(None, None, None)
        raise
    try:
        yield me
    finally:
        try:
            release_lock_record(environment, run_id)
        finally:
            held.__exit__(None, None, None)


@contextmanager
def _environment_lock(journal: Journal[Any], wait_s: float, *, kill_switch: bool = True) -> Iterator[None]:
    report = journal.report
    with ExitStack() as stack:
        with journal.phase("lock") as rec:
            if kill_switch and (reason := kill_switch_reason()):
                raise DrillAborted(f"refused: {reason}")
            stack.enter_context(
                hold_environment_lock(
                    report.environment,
                    wait_s,
                    kind=_kind(report),
                    run_id=report.run_id,
                    on_held=lambda me: rec.detail.update(holder=me.describe()),
                )
            )
        yield


def _kind(report: RunReport) -> str:
    """drill for a DrillReport, sweep for a SweepReport, ..."""
    return type(report).__name__.removesuffix("Report").lower() or "runbook"


def execute_runbook(
    topology: Topology,
    settings: S,
    journal: Journal[R],
    runbook: Callable[[RunContext[S, R]], None],
    *,
    wait_for_lock_s: float,
    publish: Callable[[R], None],
    kill_switch: bool = True,
) -> R:
    """Run `runbook` inside the environment's lock; however it ends, record the outcome
    (completed, aborted with the reason, failed with the error) and publish the report.

    Only the lock phase's own wait can be "another run holds the lock": a TimeoutError from
    anywhere else is a failure of the run, named as such. `kill_switch=False` is for runbooks
    that only repair (the sweep): the kill switch stops faults, never their undo.
    """
    report = journal.report
    logger = get_run_logger()
    try:
        with _environment_lock(journal, wait_for_lock_s, kill_switch=kill_switch):
            clients = AwsClients.for_topology(topology)
            probes = ProbeSet.for_topology(topology, clients)
            try:
                runbook(RunContext(topology, settings, journal, clients, probes))
            finally:
                probes.close()
        report.outcome = PhaseStatus.COMPLETED
    except (PreflightFailed, DrillAborted) as exc:
        report.outcome, report.outcome_reason = PhaseStatus.ABORTED, str(exc)
    except Exception as exc:
        logger.exception("%s failed", type(report).__name__)
        report.outcome, report.outcome_reason = PhaseStatus.FAILED, f"{type(exc).__name__}: {exc}"
    finally:
        report.ended_wall = time.time()
        publish(report)
    return report
