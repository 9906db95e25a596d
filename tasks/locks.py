"""Tasks for the orchestrator's own guard rails: environment locks, the record of who holds them,
the global kill switch, and marking runs that died holding a lock as Crashed.

An environment's lock is a global concurrency limit held with a short lease. Beside it, the
Prefect Variable `chalkdr-runbook-<env>` records the run holding it (flow run, kind, run id,
since when). A run that ends releases both; a run killed hard releases neither: its lease lapses
on the server, the next run to acquire the lock finds the dead holder still recorded and keeps it
as a suspect, and that run's sweep marks the suspect Crashed (with a message naming itself) when
Prefect still shows it live and it sends no heartbeats.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from datetime import timedelta

from prefect import get_run_logger
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import StateType
from prefect.events import emit_event
from prefect.events.filters import EventFilter
from prefect.events.filters import EventNameFilter
from prefect.events.filters import EventOccurredFilter
from prefect.events.filters import EventResourceFilter
from prefect.exceptions import ObjectAlreadyExists
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY
from prefect.states import Crashed
from prefect.variables import Variable
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationError

from chalkdr.errors import ChalkDrError

__all__ = [
    "KILL_SWITCH_VARIABLE",
    "LIVE_STATES",
    "MARKED_CRASHED_PREFIX",
    "LockMisconfigured",
    "LockRecord",
    "RunRef",
    "claim_lock_record",
    "crash_dead_runs",
    "ensure_lock",
    "kill_switch_reason",
    "read_lock_record",
    "release_lock_record",
    "runbook_variable",
]

# A Prefect Variable; any truthy value (true, "on", {"engaged": true, "reason": ...}) engages it.
KILL_SWITCH_VARIABLE = "chalkdr-kill-switch"
RUNBOOK_VARIABLE_PREFIX = "chalkdr-runbook-"
# Every Crashed state chalk-dr sets starts so; the sweep-on-failure automation skips those (the
# run that set it has repaired already: deployments/automations.py).
MARKED_CRASHED_PREFIX = "chalk-dr: marked Crashed by"
# What Prefect shows for a run that may still be executing; a dead one stays in them for ever.
LIVE_STATES = frozenset({StateType.RUNNING, StateType.PENDING, StateType.PAUSED})
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"


def ensure_lock(name: str, *, limit: int = 1) -> str:
    """Make sure a global concurrency limit exists (Prefect never creates one on use) and is one
    that excludes: active, with `limit` slots. Fails closed otherwise.

    Acquire it with `concurrency(name, occupy=1, strict=True)`: without strict, a missing limit
    silently runs unguarded (PREFECT-NOTES.md). An inactive limit, or one raised to 2 slots by
    hand, would let two runbooks of an environment run at once (a provision apply resetting a
    drill's fault, two drills inverting each other's checks): refused, naming the fix.
    """
    with get_client(sync_client=True) as client:
        try:
            found = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run created it first
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            found = client.read_global_concurrency_limit_by_name(name)
    if not found.active or found.limit != limit:
        raise LockMisconfigured(
            f"the global concurrency limit {name} must be active with limit {limit} to exclude other runs "
            f"(it is {'active' if found.active else 'inactive'} with limit {found.limit}): "
            f"`prefect gcl update {name} --limit {limit} --enable`"
        )
    return name


class LockMisconfigured(ChalkDrError):
    """An environment's lock exists but would not exclude (inactive, or more than one slot)."""


def kill_switch_reason() -> str | None:
    """Why the kill switch is engaged, or None. Read on every observation, so it must be cheap."""
    value = Variable.get(KILL_SWITCH_VARIABLE, default=None)
    if not value or (isinstance(value, str) and value.lower() in {"off", "false", "0", "no"}):
        return None
    if isinstance(value, dict):
        if not value.get("engaged", True):
            return None
        return str(value.get("reason") or "kill switch engaged")
    return f"kill switch engaged ({value})"


# -- who holds an environment's lock ----------------------------------------------------------


class RunRef(BaseModel):
    """One runbook run, as the lock record names it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    flow_run_id: str | None
    flow_run_name: str | None = None
    kind: str  # drill, sweep, failover, failback
    run_id: str  # the report's id (a drill id, a sweep id)
    lock: str
    started_wall: float

    def describe(self) -> str:
        return f"{self.kind} {self.run_id} (flow run {self.flow_run_name!r}, {self.flow_run_id})"


class LockRecord(BaseModel):
    """The Variable `chalkdr-runbook-<env>`: the lock's holder, and earlier holders that lost their
    lease without releasing the lock (dead, unless they still send heartbeats)."""

    model_config = ConfigDict(extra="ignore")

    holder: RunRef | None = None
    suspects: list[RunRef] = Field(default_factory=list)


def runbook_variable(environment: str) -> str:
    return f"{RUNBOOK_VARIABLE_PREFIX}{environment}"


def read_lock_record(environment: str) -> LockRecord:
    value = Variable.get(runbook_variable(environment), default=None)
    if not value:
        return LockRecord()
    try:
        return LockRecord.model_validate(value)
    except ValidationError:
        get_run_logger().warning(
            "Variable %s is not a lock record; starting a new one", runbook_variable(environment)
        )
        return LockRecord()


def _write(environment: str, record: LockRecord) -> None:
    Variable.set(runbook_variable(environment), record.model_dump(mode="json"), overwrite=True)


def claim_lock_record(environment: str, *, lock: str, kind: str, run_id: str) -> RunRef:
    """Record the current flow run as the holder of `lock` (call it right after acquiring it).

    A holder still recorded did not release the lock, yet its lease lapsed (or an operator freed
    the slot): its process is gone or lost touch with the server, so it becomes a suspect.
    """
    me = RunRef(
        flow_run_id=flow_run.get_id(),
        flow_run_name=flow_run.get_name(),
        kind=kind,
        run_id=run_id,
        lock=lock,
        started_wall=time.time(),
    )
    record = read_lock_record(environment)
    suspects = [s for s in record.suspects if s.flow_run_id != me.flow_run_id]
    previous = record.holder
    if previous is not None and previous.flow_run_id != me.flow_run_id:
        suspects.append(previous)
        get_run_logger().warning(
            "%s held %s without releasing it and lost its lease: the sweep checks whether it is dead",
            previous.describe(),
            lock,
        )
    _write(environment, LockRecord(holder=me, suspects=suspects))
    return me


def release_lock_record(environment: str, run_id: str) -> None:
    """Forget the holder when it is this run (suspects stay until a sweep settles them)."""
    record = read_lock_record(environment)
    if record.holder is not None and record.holder.run_id == run_id:
        _write(environment, LockRecord(holder=None, suspects=record.suspects))


# -- marking dead runs Crashed ----------------------------------------------------------------


def _heartbeat_window_s() -> float | None:
    """Twice this process's heartbeat frequency (the deployments set 60 s): a run silent that long
    is dead. None when heartbeats are off here: then losing the lock's lease alone decides."""
    frequency = PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value()
    return None if frequency is None else 2.0 * float(frequency)


def _last_heartbeat(client: SyncPrefectClient, flow_run_id: str, since: datetime) -> datetime | None:
    page = client.read_events(
        filter=EventFilter(
            event=EventNameFilter(name=[HEARTBEAT_EVENT]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
            occurred=EventOccurredFilter(since=since, until=datetime.now(UTC) + timedelta(minutes=1)),
        ),
        limit=1,
    )
    return max((e.occurred for e in page.events), default=None)


def _silent(client: SyncPrefectClient, flow_run_id: str, window_s: float) -> tuple[bool, datetime | None]:
    """Whether the run has sent no heartbeat for `window_s`, deciding from evidence: a heartbeat
    younger than the window is waited out (at most one window) for the next one."""
    start = datetime.now(UTC)
    last = _last_heartbeat(client, flow_run_id, start - timedelta(seconds=window_s))
    if last is None:
        return True, None
    deadline = last + timedelta(seconds=window_s)
    poll_s = min(5.0, window_s / 12)
    while datetime.now(UTC) < deadline:
        time.sleep(poll_s)
        newest = _last_heartbeat(client, flow_run_id, last + timedelta(microseconds=1))
        if newest is not None:
            return False, newest
        if client.read_flow_run(flow_run_id).state_type not in LIVE_STATES:
            return True, last  # it ended (or was marked) meanwhile
    return True, last


def crash_dead_runs(environment: str, leftovers: Mapping[str, Sequence[str]]) -> list[str]:
    """Mark Crashed every earlier run of `environment` that is dead yet still shown live, with a
    message naming the current run as the one that found it and repaired what it left.

    The candidates are the lock record's suspects and the runs whose fault markers the sweep just
    removed (`leftovers`: flow run id -> what was repaired). A candidate is dead when it holds no
    lock and sends no heartbeats (when heartbeats are configured here). Returns one line per
    candidate settled, for the report; suspects still alive stay suspects.
    """
    logger = get_run_logger()
    record = read_lock_record(environment)
    me_id = flow_run.get_id()
    me = record.holder if record.holder is not None and record.holder.flow_run_id == me_id else None
    repairer = me.describe() if me else f"flow run {flow_run.get_name()!r} ({me_id})"
    reasons: dict[str, list[str]] = {}
    known: dict[str, RunRef] = {}
    for suspect in record.suspects:
        if suspect.flow_run_id and suspect.flow_run_id != me_id:
            known[suspect.flow_run_id] = suspect
            reasons.setdefault(suspect.flow_run_id, []).append(
                f"it held the lock {suspect.lock} and lost its lease without releasing it"
            )
    for run_id, repaired in leftovers.items():
        if run_id and run_id != me_id:
            reasons.setdefault(run_id, []).append("it left behind: " + "; ".join(repaired))
    window_s = _heartbeat_window_s()
    lines: list[str] = []
    settled: set[str] = set()
    with get_client(sync_client=True) as client:
        for run_id, why in reasons.items():
            try:
                run = client.read_flow_run(run_id)
            except ObjectNotFound:
                settled.add(run_id)
                continue
            ref = known.get(run_id)
            who = ref.describe() if ref else f"flow run {run.name!r} ({run_id})"
            state = run.state
            if state is None or state.type not in LIVE_STATES:
                settled.add(run_id)
                if run_id in leftovers and state is not None:
                    lines.append(f"{who}: already {state.name} ({state.message or 'no message'})")
                continue
            silence = "heartbeats are off here: the lapsed lease decides"
            if window_s is not None:
                silent, last = _silent(client, run_id, window_s)
                if not silent:
                    logger.warning("%s still sends heartbeats (last %s): left as it is", who, last)
                    continue
                silence = (
                    f"no heartbeat since {last.isoformat(timespec='seconds')}"
                    if last
                    else f"no heartbeat in {window_s:g} s"
                )
            message = (
                f"{MARKED_CRASHED_PREFIX} {repairer} of environment {environment}: "
                f"{'; '.join(why)}; {silence}. That run repaired what this one left."
            )
            client.set_flow_run_state(run_id, Crashed(message=message), force=True)
            settled.add(run_id)
            line = f"{who}: marked Crashed (was {state.name}): {'; '.join(why)}"
            lines.append(line)
            logger.warning("%s", line)
            emit_event(
                event="chalkdr.runbook.marked-crashed",
                resource={
                    "prefect.resource.id": f"prefect.flow-run.{run_id}",
                    "prefect.resource.name": run.name,
                    "chalkdr.environment": environment,
                },
                payload={"message": message, "was": state.name},
            )
    remaining = [s for s in record.suspects if s.flow_run_id not in settled]
    if remaining != record.suspects:
        fresh = read_lock_record(environment)
        _write(environment, LockRecord(holder=fresh.holder, suspects=remaining))
    return lines
