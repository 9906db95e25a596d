"""Incident recovery without I/O: the settings, the assessment rules, the report and its rendering.

The recovery flows (flows/recovery.py: failover, failback) gather facts through tasks/recovery.py
and the drill's probes, and ask this module what they mean: whether the target region can take
the traffic, what to ask the approver, what the report says. A failover moves the metadata plane
(Aurora global database writer), the capacity and the traffic of a failed region to a target
region; a failback moves them back and restores the capacity recorded before the failover.

    RunReport (chalkdr.report)
    └── RecoveryReport            what both flows record
        ├── FailoverReport        lock → assess → approval → capacity → metadata → persistence →
        │                         traffic → verify
        └── FailbackReport        lock → precheck → approval → metadata → traffic → verify → capacity
"""

from __future__ import annotations

import re
import time
from enum import StrEnum
from typing import Annotated
from typing import ClassVar

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import PrivateAttr

from chalkdr.drill import DEFAULT_LOCK_WAIT_S
from chalkdr.drill import LagReading
from chalkdr.failover import expected_failover_seconds
from chalkdr.observe import Milestones
from chalkdr.report import LagAtInjection
from chalkdr.report import RunReport
from chalkdr.topology import RegionConfig
from chalkdr.topology import Topology

__all__ = [
    "FAILBACK_PHASES",
    "FAILOVER_PHASES",
    "Assessment",
    "AuroraSwitch",
    "CapacityChange",
    "FailbackReport",
    "FailoverReport",
    "RecoveryMode",
    "RecoveryReport",
    "RecoverySettings",
    "RegionReading",
    "TrafficChange",
    "aurora_problems",
    "default_target",
    "describe_assessment",
    "lag_problems",
    "mode_problems",
    "new_recovery_id",
    "region_of_arn",
    "render_recovery_markdown",
    "target_problems",
]

FAILOVER_PHASES = ("lock", "assess", "approval", "capacity", "metadata", "persistence", "traffic", "verify")
# Failback verifies the client view before it scales anything down: the capacity failover added
# in the other region stays until the clients are seen back on the recovered region.
FAILBACK_PHASES = ("lock", "precheck", "approval", "metadata", "traffic", "verify", "capacity")


class RecoveryMode(StrEnum):
    """graceful: the failed region still answers; Aurora switchover (RPO 0) after its lag is near
    zero, MSK Replicator drained. ungraceful: Aurora failover with AllowDataLoss; the lags at the
    decision are recorded as what was accepted."""

    GRACEFUL = "graceful"
    UNGRACEFUL = "ungraceful"


VerifyObservations = Annotated[
    int,
    Field(
        ge=1, le=100, description="Consecutive answers from the target through the failover name that verify"
    ),
]
RecoveryProbeInterval = Annotated[
    float, Field(gt=0, le=60, description="Seconds between observations of DNS, queries and Route 53")
]
RecoveryTimeout = Annotated[
    float | None,
    Field(
        default=None,
        gt=0,
        le=7200,
        description="Real seconds each wait may take (default: 3x the configured worst case + 30 s)",
    ),
]
SwitchoverLag = Annotated[
    float,
    Field(gt=0, le=60_000, description="Aurora replication lag (ms) below which a switchover starts"),
]
DrainedMessages = Annotated[
    float,
    Field(ge=0, description="MSK Replicator MessageLag at or below which persistence counts as drained"),
]
MinReplicas = Annotated[
    int | None,
    Field(
        default=None,
        ge=1,
        le=1000,
        description="Query-server replicas the target needs at least (default: the failed region's count)",
    ),
]


class RecoverySettings(BaseModel):
    """A recovery run's parameters, validated once at the start; every phase reads them here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: RecoveryMode = RecoveryMode.GRACEFUL
    require_approval: bool = True
    force: bool = False
    min_replicas: MinReplicas = None
    probe_interval_seconds: RecoveryProbeInterval = 1.0
    verify_observations: VerifyObservations = 3
    timeout_seconds: RecoveryTimeout = None
    switchover_max_lag_ms: SwitchoverLag = 1000.0
    msk_drained_message_lag: DrainedMessages = 10.0
    wait_for_lock_seconds: float = Field(default=DEFAULT_LOCK_WAIT_S, ge=0, le=3600)
    stop_drill: bool = True  # cancel a running drill of the environment, then undo what it left

    def timeout_s(self, topology: Topology) -> float:
        """How long one wait (ready replicas, writer moved, lag drained, clients moved) may take."""
        if self.timeout_seconds is not None:
            return self.timeout_seconds
        return 3 * expected_failover_seconds(topology) / topology.time_scale + 30


def new_recovery_id(kind: str, now: float, suffix: str) -> str:
    """Sortable, tag-safe id: `f` (failover) or `b` (failback) + UTC timestamp + a random suffix."""
    stamp = time.strftime("%Y%m%dt%H%M%S", time.gmtime(now))
    prefix = "b" if kind == "failback" else "f"
    return f"{prefix}{stamp}-{re.sub(r'[^a-z0-9]', '', suffix.lower())[:6]}"


def region_of_arn(arn: str | None) -> str | None:
    """The region of an ARN (`arn:aws:rds:<region>:...`), or None."""
    if not arn:
        return None
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 and parts[0] == "arn" and parts[3] else None


class RegionReading(BaseModel):
    """One region as far as it could be read: a failed region may not answer at all, and every
    read that failed is recorded in `errors` (never fatal for the failed region)."""

    model_config = ConfigDict(extra="forbid")

    region: str
    healthz: bool | None = None  # GET /healthz through the region's own hostname
    healthz_detail: str | None = None
    query_ok: bool | None = None  # the probe query through the region's own hostname
    query_error: str | None = None
    deployment_id: str | None = None
    query_servers: tuple[int, int] | None = None  # (ready, desired)
    persistence_workers: tuple[int, int] | None = None  # (ready, desired)
    aurora_cluster_arn: str | None = None
    aurora_status: str | None = None
    aurora_instances: int | None = None
    aurora_is_writer: bool | None = None
    aurora_lag_ms: float | None = None  # AuroraGlobalDBReplicationLag, a secondary only
    errors: list[str] = Field(default_factory=list)


class Assessment(BaseModel):
    """What the assess (or failback's precheck) phase saw, and what it concluded."""

    model_config = ConfigDict(extra="forbid")

    target: RegionReading
    others: list[RegionReading] = Field(default_factory=list)  # the failed region (failover), the rest
    writer_region: str | None = None  # the Aurora global cluster's writer, by its member's ARN
    global_cluster_status: str | None = None
    lags: dict[str, LagReading] = Field(default_factory=dict)
    problems: list[str] = Field(default_factory=list)  # why the target cannot take over
    notes: list[str] = Field(default_factory=list)  # what was seen but does not refuse


def aurora_problems(r: RegionReading, *, must_be_secondary: bool) -> list[str]:
    """Why the region's Aurora cluster cannot become the writer (nothing when it already is)."""
    if r.aurora_is_writer and not must_be_secondary:
        return []
    if r.aurora_status is None:
        return [f"{r.region}: its Aurora cluster could not be read"]
    problems = []
    if r.aurora_status != "available":
        problems.append(f"{r.region}: Aurora cluster is {r.aurora_status}, not available")
    if not r.aurora_instances:
        problems.append(f"{r.region}: Aurora cluster has no DB instance: it cannot be promoted")
    return problems


def target_problems(r: RegionReading) -> list[str]:
    """Why `r` cannot take the traffic now: it must serve through its own hostname, have ready
    query servers, and an Aurora cluster that can be (or is) the writer."""
    problems = []
    if not r.healthz:
        problems.append(f"{r.region}: /healthz is not serving ({r.healthz_detail or 'no answer'})")
    if not r.query_ok:
        problems.append(f"{r.region}: the probe query through its own hostname failed ({r.query_error})")
    if r.query_servers is None:
        problems.append(f"{r.region}: query-server capacity could not be read")
    elif r.query_servers[0] == 0:
        problems.append(f"{r.region}: no query server is ready ({r.query_servers[0]}/{r.query_servers[1]})")
    return problems + aurora_problems(r, must_be_secondary=False)


def mode_problems(failed: RegionReading, mode: RecoveryMode) -> list[str]:
    """A graceful failover needs the failed region's AWS side. SwitchoverGlobalCluster (RDS API
    reference) "demotes the current primary cluster to a secondary" and synchronizes "all
    secondary clusters ... with the primary at the beginning of the process", and is "intended
    for controlled environments": the old writer must take part. When the failed region's
    Aurora cluster cannot be read as available, only an ungraceful failover
    (FailoverGlobalCluster with AllowDataLoss) can move the writer."""
    if mode is not RecoveryMode.GRACEFUL or failed.aurora_status == "available":
        return []
    seen = failed.aurora_status or "unreadable"
    return [
        f"{failed.region}: its Aurora cluster is {seen}, and a graceful switchover needs it available; "
        "run with mode ungraceful (Aurora failover with data loss, the lags recorded)"
    ]


def lag_problems(a: Assessment, topology: Topology) -> list[str]:
    """Failback's replication guard: every lag within its guard, and the recovered region's
    Aurora cluster (a secondary now) publishing a lag within the guard: in sync."""
    problems = []
    for name, lag in sorted(a.lags.items()):
        if lag.value is None:
            a.notes.append(f"{name}: no replication-lag data in CloudWatch")
        elif lag.value > lag.limit:
            problems.append(
                f"{name}: replication lag {lag.value:.0f} {lag.unit} exceeds the guard {lag.limit:.0f}"
            )
    r = a.target
    if not r.aurora_is_writer:
        guard = topology.guards.max_aurora_replication_lag_ms
        if r.aurora_lag_ms is None:
            problems.append(
                f"{r.region}: no Aurora replication lag published: cannot tell its cluster is in sync"
            )
        elif r.aurora_lag_ms > guard:
            problems.append(
                f"{r.region}: Aurora replication lag {r.aurora_lag_ms:.0f} ms exceeds the guard {guard:.0f}"
            )
    return problems


def default_target(topology: Topology, from_region: str) -> RegionConfig:
    """Where a failover of `from_region` goes by default: the secondary behind the failover name
    when the primary fails, the primary when a secondary does."""
    failed = topology.region(from_region)
    if failed is topology.primary:
        return topology.secondaries[0]
    return topology.primary


def _pair(v: tuple[int, int] | None) -> str:
    return "unreadable" if v is None else f"{v[0]}/{v[1]} ready"


def describe_assessment(a: Assessment, *, heading: str) -> str:
    """The assessment as the approval form's description (markdown)."""
    lines = [heading, ""]
    for r in [a.target, *a.others]:
        role = "target" if r is a.target else "other"
        lines.append(
            f"- **{r.region}** ({role}): /healthz {'ok' if r.healthz else 'failing'}, query "
            f"{'ok' if r.query_ok else 'failing'}, query servers {_pair(r.query_servers)}, persistence "
            f"workers {_pair(r.persistence_workers)}, Aurora {r.aurora_status or 'unreadable'}"
            + (" (writer)" if r.aurora_is_writer else "")
            + (f"; read errors: {'; '.join(r.errors)}" if r.errors else "")
        )
    lines.append(f"- Aurora writer now in {a.writer_region or 'unknown'} ({a.global_cluster_status or '?'})")
    for name, lag in sorted(a.lags.items()):
        value = "no data" if lag.value is None else f"{lag.value:.0f} {lag.unit}"
        lines.append(f"- lag {name}: {value} (guard {lag.limit:.0f})")
    lines += [f"- problem: {p}" for p in a.problems] + [f"- note: {n}" for n in a.notes]
    return "\n".join(lines)


class CapacityChange(BaseModel):
    """One Deployment the recovery scaled (or restored), with the count it had before."""

    model_config = ConfigDict(extra="forbid")

    region: str
    deployment: str
    previous: int  # spec.replicas before failover touched it (the durable annotation's value)
    desired: int
    ready: int | None = None
    changed: bool = False  # False: it was already at least `desired` (nothing done)
    # Set when a HorizontalPodAutoscaler manages the Deployment: its name, and its minReplicas
    # (and maxReplicas) before and after. `previous`/`desired` are then the HPA's minReplicas:
    # patching spec.replicas would be scaled back by the HPA, so its floor is what moves.
    hpa: str | None = None
    hpa_max_previous: int | None = None
    hpa_max_desired: int | None = None


class AuroraSwitch(BaseModel):
    """The metadata plane's move: which call, from which writer to which, or why none was made."""

    model_config = ConfigDict(extra="forbid")

    operation: str | None = None  # switchover | failover (AllowDataLoss) | None: no call made
    from_writer: str | None = None
    to_writer: str | None = None
    skipped: str | None = None  # why no call was made (already the writer, ...)
    lag_at_decision_ms: float | None = None  # the target's AuroraGlobalDBReplicationLag then
    waited_for_lag_s: float | None = None
    writer_moved_after_s: float | None = None


class TrafficChange(BaseModel):
    """What the traffic phase did to the failover name's routing."""

    model_config = ConfigDict(extra="forbid")

    region: str
    health_check_id: str | None = None
    action: str  # inverted | already inverted | inversion removed | nothing to remove | none |
    # routing controls set | control plane unavailable | ...
    note: str | None = None
    via: str = "route53-health-check"  # route53-health-check | arc-routing-control | none
    endpoint: str | None = None  # the ARC cluster endpoint (region) that took the update


class RecoveryReport(RunReport):
    """Everything one failover or failback did and proved; the flow's persisted result."""

    recovery_id: str
    to_region: str
    from_regions: list[str]
    mode: RecoveryMode = RecoveryMode.GRACEFUL
    force: bool = False
    forced_past: list[str] = Field(default_factory=list)  # problems a forced run went past
    probe_interval_s: float = 1.0
    assessment: Assessment | None = None
    capacity: list[CapacityChange] = Field(default_factory=list)
    aurora: AuroraSwitch | None = None
    # Every replicated store's lag at the decision (DynamoDB, MSK latency and message lag, Aurora):
    # the RPO evidence (what an ungraceful failover accepted; what a graceful one waited out).
    lags_at_decision: dict[str, LagAtInjection] = Field(default_factory=dict)
    msk_drained: bool | None = None
    traffic: list[TrafficChange] = Field(default_factory=list)
    # How traffic was moved: arc-routing-control | route53-health-check | health-check-failover
    # (nothing changed: the control plane did not answer, Route 53's own health checks moved it).
    traffic_via: str | None = None
    control_plane_used: bool | None = None  # a Route 53 control-plane (us-east-1) call changed routing
    notes: list[str] = Field(default_factory=list)  # what the run saw but did not fail on
    drill_cancelled: str | None = None  # the drill this failover cancelled to take the lock
    swept: list[str] = Field(default_factory=list)  # what a cancelled or dead drill left, undone
    client_view: Milestones | None = None  # from the traffic change
    rto_s: float | None = None  # the run's start → the first good answer from the target
    changes: list[str] = Field(default_factory=list)  # every mutation, one line each
    # When the traffic phase began (monotonic, this process): the client view's reference instant.
    _traffic_mono: float | None = PrivateAttr(default=None)

    @property
    def traffic_mono(self) -> float | None:
        return self._traffic_mono

    @traffic_mono.setter
    def traffic_mono(self, value: float | None) -> None:
        self._traffic_mono = value

    @property
    def run_id(self) -> str:
        return self.recovery_id

    @property
    def kind(self) -> str:
        return "failback" if isinstance(self, FailbackReport) else "failover"


class FailoverReport(RecoveryReport):
    PHASES: ClassVar[tuple[str, ...]] = FAILOVER_PHASES


class FailbackReport(RecoveryReport):
    PHASES: ClassVar[tuple[str, ...]] = FAILBACK_PHASES


def _s(v: float | None, unit: str = "s") -> str:
    return "—" if v is None else f"{v:.2f} {unit}"


def render_recovery_markdown(report: RecoveryReport) -> str:
    kind = report.kind
    lines = [
        f"# {kind} `{report.recovery_id}` — {report.environment}: {report.outcome.value}",
        "",
        f"- {', '.join(report.from_regions)} → **{report.to_region}**"
        + (f", mode **{report.mode.value}**" if kind == "failover" else ""),
        f"- outcome: **{report.outcome.value}**"
        + (f" — {report.outcome_reason}" if report.outcome_reason else ""),
    ]
    if report.force:
        lines.append(
            "- **forced**" + (f" past: {'; '.join(report.forced_past)}" if report.forced_past else "")
        )
    if report.approver:
        lines.append(
            f"- approved by {report.approver}"
            + (f": {report.approval_comment}" if report.approval_comment else "")
        )
    if report.time_scale != 1:
        lines.append(f"- **time was scaled x{report.time_scale:g}** (simulated environment)")
    if report.assessment is not None:
        lines += ["", "## Assessment", "", describe_assessment(report.assessment, heading="").strip()]
    lines += ["", "## Result", "", "| measure | value |", "|---|---|"]
    lines.append(f"| RTO (run start → first good answer from {report.to_region}) | {_s(report.rto_s)} |")
    if report.client_view is not None:
        m = report.client_view
        lines += [
            f"| DNS answer moved (after the traffic change) | {_s(m.dns_flip_s)} |",
            f"| first good answer via failover URL (after the traffic change) "
            f"| {_s(m.first_good_answer_s)} |",
            f"| failed probes | {m.failed_probes} of {m.observations} |",
        ]
    a = report.aurora
    if a is not None:
        done = a.skipped or f"{a.operation}: {a.from_writer} → {a.to_writer}"
        lines.append(f"| Aurora writer | {done} |")
        lines.append(f"| Aurora lag at the decision | {_s(a.lag_at_decision_ms, 'ms')} |")
    if report.msk_drained is not None:
        lines.append(f"| MSK Replicator drained | {'yes' if report.msk_drained else 'no'} |")
    for name, lag in sorted(report.lags_at_decision.items()):
        lines.append(f"| lag at the decision: {name} | {_s(lag.value, lag.unit)} |")
    for c in report.capacity:
        what = f"{c.previous} → {c.desired}" if c.changed else f"kept ({c.previous} ≥ {c.desired})"
        if c.hpa:
            lines.append(f"| {c.region}/{c.deployment} HPA {c.hpa} minReplicas | {what} |")
        else:
            lines.append(f"| {c.region}/{c.deployment} replicas | {what} |")
    if report.traffic_via is not None:
        lines.append(f"| traffic moved by | {report.traffic_via} |")
    if report.control_plane_used is not None:
        used = "yes" if report.control_plane_used else "no (not needed, or it did not answer)"
        lines.append(f"| Route 53 control plane used | {used} |")
    for t in report.traffic:
        what = (
            f"routing control via endpoint {t.endpoint}"
            if t.via == "arc-routing-control"
            else (f"health check {t.health_check_id or '—'}")
        )
        lines.append(f"| traffic: {t.region} {what} | {t.action}" + (f" ({t.note})" if t.note else "") + " |")
    lines += ["", "## Phases", "", "| phase | status | duration | note |", "|---|---|---|---|"]
    for name in report.PHASES:
        p = report.phases[name]
        lines.append(f"| {name} | {p.status.value} | {_s(p.duration_s)} | {p.reason or ''} |")
    lines += ["", "## Changes made", ""] + ([f"- {c}" for c in report.changes] or ["- none"])
    if report.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in report.notes)]
    return "\n".join(lines) + "\n"
