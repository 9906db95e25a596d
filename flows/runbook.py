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

import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import Generic
from typing import TypeVar

from prefect import get_run_logger
from prefect.concurrency.sync import concurrency
from prefect.events import emit_event

from chalkdr.clients import AwsClients
from chalkdr.drill import Routing
from chalkdr.errors import DrillAborted
from chalkdr.errors import PreflightFailed
from chalkdr.report import Journal
from chalkdr.report import PhaseRecord
from chalkdr.report import PhaseStatus
from chalkdr.report import RunReport
from chalkdr.topology import Topology
from chalkdr.topology import load_topology
from chalkdr.topology import parse_topology
from tasks.locks import claim_lock_record
from tasks.locks import ensure_lock
from tasks.locks import kill_switch_reason
from tasks.locks import release_lock_record
from tasks.probes import ProbeSet

__all__ = ["LockBusy", "RunContext", "execute_runbook", "load_topology_parameter", "phase_events"]

S = TypeVar("S")
R = TypeVar("R", bound=RunReport)
# The shortest lease Prefect allows: a runbook killed hard blocks its environment for about a
# minute (until the server revokes the lease), and the next run's sweep repairs what it left and
# marks the dead run Crashed.
LOCK_LEASE_S = 60


class LockBusy(DrillAborted):
    """Another runbook holds the environment's lock (a drill, a failover or a failback)."""


def load_topology_parameter(topology: str | dict[str, Any] | Topology) -> Topology:
    """A flow's `topology` parameter: a YAML path, the topology as a mapping, or a Topology."""
    if isinstance(topology, Topology):
        return topology
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


def phase_events(kind: str, report: RunReport) -> Callable[[str, PhaseRecord], None]:
    """A `chalkdr.<kind>.phase.<name>` event as each phase ends, naming the run as its resource."""

    def emit(name: str, rec: PhaseRecord) -> None:
        emit_event(
            event=f"chalkdr.{kind}.phase.{name}",
            resource={
                "prefect.resource.id": f"chalkdr.{kind}.{report.run_id}",
                "chalkdr.environment": report.environment,
            },
            payload={
                "phase": name,
                "status": rec.status.value,
                "reason": rec.reason,
                "duration_s": rec.duration_s,
            },
        )

    return emit


@contextmanager
def _environment_lock(
    journal: Journal[Any], name: str, wait_s: float, *, kill_switch: bool = True
) -> Iterator[None]:
    report = journal.report
    with journal.phase("lock") as rec:
        if kill_switch and (reason := kill_switch_reason()):
            raise DrillAborted(f"refused: {reason}")
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
                f"another drill, failover or failback of {report.environment} holds the lock {name}"
            ) from None
        try:
            # Who holds the lock, in the backend: a run killed hard leaves its record behind,
            # and the next holder's sweep marks it Crashed (tasks/locks.py).
            me = claim_lock_record(report.environment, lock=name, kind=_kind(report), run_id=report.run_id)
            rec.detail["holder"] = me.describe()
        except BaseException:
            held.__exit__(None, None, None)
            raise
    try:
        yield
    finally:
        try:
            release_lock_record(report.environment, report.run_id)
        finally:
            held.__exit__(None, None, None)


def _kind(report: RunReport) -> str:
    """drill for a DrillReport, sweep for a SweepReport, ..."""
    return type(report).__name__.removesuffix("Report").lower() or "runbook"


def execute_runbook(
    topology: Topology,
    settings: S,
    journal: Journal[R],
    runbook: Callable[[RunContext[S, R]], None],
    *,
    lock: str,
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
        with _environment_lock(journal, lock, wait_for_lock_s, kill_switch=kill_switch):
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
