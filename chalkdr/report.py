"""Runbook journals (`RunReport`, the drill's `DrillReport`) and their rendering: one record per run.

Like a chaos-engineering journal, the report is created at the start with a slot for every
phase; each phase writes only its own slot and a failure becomes data (status + reason)
instead of a crash. Rendering reads only the report, so what the UI shows is exactly what was
recorded. Unlike chaostoolkit's default policy, the undo (rollback) always runs. The drill and
the recovery flows (failover, failback) share the base record and the `Journal` that writes it;
each declares its own phases.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Any
from typing import ClassVar
from typing import Generic
from typing import TypeVar

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

from chalkdr.errors import DrillAborted
from chalkdr.observe import Milestones
from chalkdr.population import PopulationOutage

__all__ = [
    "PHASES",
    "DrillReport",
    "Journal",
    "PhaseRecord",
    "PhaseStatus",
    "RpoEvidence",
    "RunReport",
    "SloVerdict",
    "TimelineEntry",
    "render_markdown",
    "timeline_rows",
]

PHASES = (
    "lock",
    "sweep",
    "preflight",
    "approval",
    "canary",
    "inject",
    "observe",
    "hold",
    "failback",
    "postflight",
)


class PhaseStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"


class PhaseRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: PhaseStatus = PhaseStatus.PENDING
    started_wall: float | None = None
    ended_wall: float | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_wall is None or self.ended_wall is None:
            return None
        return round(self.ended_wall - self.started_wall, 3)


class TimelineEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    wall: float
    offset_s: float  # from the drill's start, on the monotonic clock
    phase: str
    event: str
    detail: str = ""


class LagAtInjection(BaseModel):
    """One replication series' latest value when the fault was injected (None: no datapoint)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float | None
    unit: str  # ms or messages


class RpoEvidence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    canary_replication_lag_s: float | None = None  # write in primary -> readable in the replica
    # Every replicated store's lag at injection, named (DynamoDB per direction, MSK Replicator
    # latency and message lag, Aurora global): what a permanent loss of the primary would lose.
    lags_at_injection: dict[str, LagAtInjection] = Field(default_factory=dict)
    # The largest time-valued of them (or the canary lag), and which series it is.
    estimate_from: str | None = None
    writes_held_back: bool = False  # replication-paused: writes not yet replicated at failover
    # replication-paused: seconds from the FIS action's start until a canary write was seen held
    # back (AWS: the pause may take up to 5 minutes to take effect); None = never seen held.
    pause_effective_after_s: float | None = None
    pause_probe_writes: int = 0  # canaries written to find that moment
    exposure_s: float | None = None  # the window of writes a region loss would have lost


class SloVerdict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    target: float
    measured: float | None
    passed: bool


class RunReport(BaseModel):
    """What every runbook run records: its phases (one slot each, declared by the subclass), the
    timeline, the outcome and who approved it."""

    model_config = ConfigDict(extra="forbid")
    PHASES: ClassVar[tuple[str, ...]] = ()

    environment: str
    time_scale: float = 1.0
    started_wall: float = Field(default_factory=time.time)
    ended_wall: float | None = None
    outcome: PhaseStatus = PhaseStatus.PENDING
    outcome_reason: str | None = None
    phases: dict[str, PhaseRecord] = Field(default_factory=dict)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    approver: str | None = None
    approval_comment: str | None = None

    def model_post_init(self, context: Any, /) -> None:
        for name in self.PHASES:  # every slot present from the start
            self.phases.setdefault(name, PhaseRecord())

    @property
    def run_id(self) -> str:
        raise NotImplementedError


class DrillReport(RunReport):
    """Everything one drill did and proved. Returned as the flow result and rendered as artifacts."""

    PHASES: ClassVar[tuple[str, ...]] = PHASES

    drill_id: str
    scenario: str
    routing: str
    primary_region: str
    secondary_regions: list[str]
    dry_run: bool = False
    probe_interval_s: float
    failover: Milestones | None = None
    failback: Milestones | None = None
    # The client population's view of each transition (chalkdr.population).
    failover_population: PopulationOutage | None = None
    failback_population: PopulationOutage | None = None
    rto_s: float | None = None
    expected_failover_s: float | None = None
    rpo: RpoEvidence = Field(default_factory=RpoEvidence)
    slos: list[SloVerdict] = Field(default_factory=list)
    swept: list[str] = Field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.drill_id

    @property
    def passed(self) -> bool:
        return self.outcome is PhaseStatus.COMPLETED and all(s.passed for s in self.slos)


def _fmt(v: float | None, unit: str = "s") -> str:
    return "—" if v is None else f"{v:.2f} {unit}"


def timeline_rows(report: DrillReport) -> list[dict[str, str]]:
    return [
        {
            "t+ (s)": f"{e.offset_s:.2f}",
            "wall (UTC)": time.strftime("%H:%M:%S", time.gmtime(e.wall)) + f".{int(e.wall % 1 * 1000):03d}",
            "phase": e.phase,
            "event": e.event,
            "detail": e.detail,
        }
        for e in report.timeline
    ]


def _milestone_lines(m: Milestones | None, title: str, ref: str) -> list[str]:
    if m is None:
        return [f"### {title}", "", "not observed", ""]
    window = "—" if m.error_window_s is None else f"{m.error_window_s[0]:.2f} to {m.error_window_s[1]:.2f} s"
    return [
        f"### {title} (seconds after {ref})",
        "",
        "| milestone | seconds |",
        "|---|---|",
        f"| Route 53 health flipped | {_fmt(m.health_flip_s)} |",
        f"| DNS answer flipped | {_fmt(m.dns_flip_s)} |",
        f"| first good answer via failover URL | {_fmt(m.first_good_answer_s)} |",
        f"| canary served | {_fmt(m.canary_served_s)} |",
        f"| only healthy regions answering from | {_fmt(m.settled_s)} |",
        f"| failed probes | {m.failed_probes} of {m.observations} |",
        f"| error window | {window} |",
        f"| token exchanges failed at the API server | {m.token_failures} of {m.token_probes} |",
        "",
    ]


_BARS = " ▁▂▃▄▅▆▇█"


def sparkline(curve: Sequence[tuple[float, float]], width: int = 48) -> str:
    """The share-failing curve as one line of block characters: each slot shows the worst share
    sampled in it, or, when no sample fell in it, the share in force (the last one before it)."""
    if not curve:
        return ""
    t0, t1 = curve[0][0], curve[-1][0]
    span = (t1 - t0) or 1.0
    slots: list[float | None] = [None] * width
    for t, share in curve:
        i = min(width - 1, int((t - t0) / span * width))
        slots[i] = max(slots[i] or 0.0, share)
    filled: list[float] = []
    for s in slots:
        filled.append(s if s is not None else (filled[-1] if filled else 0.0))
    return "".join(_BARS[min(len(_BARS) - 1, round(s * (len(_BARS) - 1)))] for s in filled)


def population_rows(p: PopulationOutage) -> list[dict[str, str]]:
    """The share-failing curve as table rows (one per observation), for an artifact."""
    return [{"t+ (s)": f"{t:.2f}", "clients failing": f"{100 * share:.1f}%"} for t, share in p.curve]


def _population_lines(p: PopulationOutage | None, title: str) -> list[str]:
    if p is None:
        return []
    curve = sparkline(p.curve)
    span = f"{p.curve[0][0]:.1f} to {p.curve[-1][0]:.1f} s" if p.curve else "—"
    return [
        f"#### {title}: the client population ({p.clients} modelled clients, TTL {p.ttl_s:g} s)",
        "",
        "| measure | value |",
        "|---|---|",
        f"| peak share of clients failing | {100 * p.peak_share:.1f}% |",
        f"| clients that failed at least once | {100 * p.affected_share:.1f}% |",
        f"| client outage: mean / p95 / max | {p.mean_outage_s:.2f} / {p.p95_outage_s:.2f} / "
        f"{p.max_outage_s:.2f} s |",
        f"| client-seconds lost per client | {p.mean_outage_s:.2f} s |",
        f"| every client served again at | {_fmt(p.recovered_s)} |",
        "",
        f"share failing over {span}: `{curve}`" if curve else "",
        "",
    ]


def render_markdown(report: DrillReport) -> str:
    verdict = "PASS" if report.passed else "FAIL"
    lines = [
        f"# DR drill `{report.drill_id}` — {report.environment}: {verdict}",
        "",
        f"- scenario **{report.scenario}**, routing {report.routing}, primary {report.primary_region}, "
        f"secondary {', '.join(report.secondary_regions)}",
        f"- outcome: **{report.outcome.value}**"
        + (f" — {report.outcome_reason}" if report.outcome_reason else ""),
        f"- probe interval {report.probe_interval_s:g} s"
        + (" · dry run (no fault injected)" if report.dry_run else ""),
    ]
    if report.time_scale != 1:
        lines.append(
            f"- **time was scaled x{report.time_scale:g}** (simulated environment): AWS durations "
            "(RequestInterval, TTL) elapsed faster; measured seconds are real seconds"
        )
    if report.approver:
        lines.append(
            f"- approved by {report.approver}"
            + (f": {report.approval_comment}" if report.approval_comment else "")
        )
    rto_meaning = (
        "injection → first good answer from the secondary"
        if report.routing == "failover"
        else "injection → every answer from the healthy regions"
    )
    lines += [
        "",
        "## Recovery",
        "",
        "| measure | value |",
        "|---|---|",
        f"| RTO ({rto_meaning}) | {_fmt(report.rto_s)} |",
        f"| configured worst case (interval x threshold + TTL) | {_fmt(report.expected_failover_s)} |",
        f"| canary replication lag | {_fmt(report.rpo.canary_replication_lag_s)} |",
        f"| RPO exposure | {_fmt(report.rpo.exposure_s)} |",
    ]
    if report.rpo.estimate_from:
        lines.append(f"| RPO estimate taken from | {report.rpo.estimate_from} |")
    for name, lag in sorted(report.rpo.lags_at_injection.items()):
        lines.append(f"| replication lag at injection: {name} | {_fmt(lag.value, lag.unit)} |")
    lines += ["", "## SLOs", "", "| SLO | target | measured | result |", "|---|---|---|---|"]
    for s in report.slos:
        lines.append(f"| {s.name} | {s.target:g} s | {_fmt(s.measured)} | {'pass' if s.passed else 'FAIL'} |")
    if not report.slos:
        lines.append("| — | — | — | not evaluated |")
    lines.append("")
    lines += _milestone_lines(report.failover, "Failover", "injection")
    lines += _population_lines(report.failover_population, "Failover")
    lines += _milestone_lines(report.failback, "Failback", "undo")
    lines += _population_lines(report.failback_population, "Failback")
    lines += ["## Phases", "", "| phase | status | duration | note |", "|---|---|---|---|"]
    for name in report.PHASES:
        p = report.phases[name]
        lines.append(f"| {name} | {p.status.value} | {_fmt(p.duration_s)} | {p.reason or ''} |")
    if report.swept:
        lines += ["", "## Swept leftovers of an earlier drill", ""] + [f"- {s}" for s in report.swept]
    return "\n".join(lines) + "\n"


R = TypeVar("R", bound=RunReport)


class Journal(Generic[R]):
    """Writes one run's report: phases open and close through it, events land on its timeline.

    Offsets are on the monotonic clock from the journal's creation; wall times are kept beside
    them so the timeline can be lined up with other systems' logs.
    """

    def __init__(self, report: R, *, on_phase_end: Callable[[str, PhaseRecord], None] | None = None) -> None:
        self.report = report
        # Both clocks read together, so a timeline entry's wall time is the moment it names.
        self.mono0, self.wall0 = time.monotonic(), time.time()
        report.started_wall = self.wall0
        self._on_phase_end = on_phase_end

    def event(self, phase: str, event: str, detail: str = "", *, mono: float | None = None) -> None:
        mono = time.monotonic() if mono is None else mono
        self.report.timeline.append(
            TimelineEntry(
                wall=self.wall0 + (mono - self.mono0),
                offset_s=round(mono - self.mono0, 3),
                phase=phase,
                event=event,
                detail=detail,
            )
        )

    @contextmanager
    def phase(self, name: str) -> Iterator[PhaseRecord]:
        rec = self.report.phases[name]
        rec.started_wall = time.time()
        rec.status = PhaseStatus.PENDING
        self.event(name, "start")
        try:
            yield rec
        except DrillAborted as exc:
            rec.status, rec.reason = PhaseStatus.ABORTED, str(exc)
            raise
        except KeyboardInterrupt:
            rec.status, rec.reason = PhaseStatus.INTERRUPTED, "interrupted"
            raise
        except Exception as exc:
            rec.status, rec.reason = PhaseStatus.FAILED, f"{type(exc).__name__}: {exc}"
            raise
        else:
            if rec.status is PhaseStatus.PENDING:
                rec.status = PhaseStatus.COMPLETED
        finally:
            rec.ended_wall = time.time()
            self.event(name, rec.status.value, rec.reason or "")
            if self._on_phase_end is not None:
                self._on_phase_end(name, rec)

    def skip(self, name: str, reason: str) -> None:
        rec = self.report.phases[name]
        rec.status, rec.reason = PhaseStatus.SKIPPED, reason
        if self._on_phase_end is not None:
            self._on_phase_end(name, rec)
