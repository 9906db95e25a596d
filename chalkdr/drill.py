"""Drill decisions that need no I/O: scenarios, the routing map, steady state, SLO verdicts.

The drill flow gathers facts (tasks/probes.py) and asks this module what they mean, so the
rules — the >18% checker rule, what counts as steady state, how RTO is judged — are tested
without AWS or Prefect and reused by the incident (recovery) flow.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import model_validator

from chalkdr.failover import expected_failover_seconds
from chalkdr.observe import Observation
from chalkdr.query import QueryAnswer
from chalkdr.report import RpoEvidence
from chalkdr.report import SloVerdict
from chalkdr.topology import Topology

__all__ = [
    "ALLOWED_FIS_ACTIONS",
    "DEFAULT_LOCK_WAIT_S",
    "PAUSE_TAKES_EFFECT_MAX_AWS_S",
    "AbortAfter",
    "DrillSettings",
    "HoldSeconds",
    "LagReading",
    "LockWaitSeconds",
    "ObserveTimeout",
    "ProbeInterval",
    "RegionRoute",
    "Routing",
    "Scenario",
    "SloOverrides",
    "SteadyState",
    "SteadyStateWait",
    "abort_reason",
    "evaluate_slos",
    "health_verdict",
    "new_drill_id",
    "rpo_estimate",
    "rpo_exposure_s",
    "steady_state_notes",
    "steady_state_problems",
]

# FIS actions reference, aws:dynamodb:global-table-pause-replication: "Tables may continue to be
# replicated for up to 5 minutes after action begins." The drill waits (in AWS seconds) that long
# at most for evidence that the pause holds writes back.
PAUSE_TAKES_EFFECT_MAX_AWS_S = 300.0
HEALTHY_SHARE = 0.18  # Route 53: healthy when MORE than 18% of checkers report healthy


class Scenario(StrEnum):
    HEALTH_CHECK_INVERTED = "health-check-inverted"
    QUERY_SERVERS_DOWN = "query-servers-down"
    REPLICATION_PAUSED = "replication-paused"
    FIS_EXPERIMENT = "fis-experiment"

    @property
    def moves_traffic(self) -> bool:
        """Whether the fault should make Route 53 fail over (replication-paused only exposes RPO)."""
        return self is not Scenario.REPLICATION_PAUSED


class SloOverrides(BaseModel):
    """Per-run SLO targets; empty fields fall back to the topology's SLOs."""

    model_config = ConfigDict(extra="forbid")

    rto_seconds: float | None = Field(default=None, gt=0, description="Override the topology's RTO SLO")
    rpo_seconds: float | None = Field(default=None, ge=0, description="Override the topology's RPO SLO")


# The drill's parameters with their bounds, shared by the settings model and the flow's signature
# (so the Prefect form shows the same bounds the model enforces).
ProbeInterval = Annotated[
    float, Field(gt=0, le=60, description="Seconds between observations of Route 53, DNS and a real query")
]
HoldSeconds = Annotated[
    float, Field(ge=0, le=3600, description="Seconds to keep the fault in place after failover was observed")
]
AbortAfter = Annotated[
    int,
    Field(
        ge=1, le=1000, description="Consecutive observations of the secondaries failing that abort the drill"
    ),
]
ObserveTimeout = Annotated[
    float | None,
    Field(
        default=None,
        gt=0,
        le=7200,
        description="Real seconds to wait for each transition (default: 3x the configured worst case + 30 s)",
    ),
]
# The FIS actions a drill may run from an operator's template (scenario fis-experiment): faults
# whose effect ends when the experiment stops, so the drill's undo (StopExperiment) and a sweep
# restore the region. Irreversible ones (aws:ec2:terminate-instances, aws:rds:failover-db-cluster,
# ...) are refused. Action ids: AWS FIS actions reference
# (https://docs.aws.amazon.com/fis/latest/userguide/fis-actions-reference.html).
ALLOWED_FIS_ACTIONS = frozenset(
    {
        "aws:cloudwatch:assert-alarm-state",
        "aws:dynamodb:global-table-pause-replication",
        "aws:dynamodb:encrypted-global-table-pause-replication",
        "aws:eks:pod-cpu-stress",
        "aws:eks:pod-delete",
        "aws:eks:pod-io-stress",
        "aws:eks:pod-memory-stress",
        "aws:eks:pod-network-blackhole-port",
        "aws:eks:pod-network-latency",
        "aws:eks:pod-network-packet-loss",
        "aws:fis:inject-api-internal-error",
        "aws:fis:inject-api-throttle-error",
        "aws:fis:inject-api-unavailable-error",
        "aws:fis:wait",
        "aws:network:disrupt-connectivity",
    }
)
# Longer than a runbook lock's lease (60 s, flows/runbook.py) plus the server's lease-revocation
# loop (15 s): a runbook started right after one was killed hard waits the dead run's lease out,
# then its sweep repairs what that run left and marks it Crashed, instead of giving up on a lock
# nobody alive holds.
DEFAULT_LOCK_WAIT_S = 90.0
LockWaitSeconds = Annotated[
    float, Field(ge=0, le=3600, description="Seconds to wait for another runbook of this environment to end")
]
SteadyStateWait = Annotated[
    float,
    Field(
        ge=0,
        le=3600,
        description=(
            "Seconds pre-flight may wait for steady state to be reached (0: judge it once). For a drill "
            "started right after provisioning, while a new MSK replicator still copies its backlog"
        ),
    ),
]


class DrillSettings(BaseModel):
    """A drill's parameters, validated once at the start; every phase reads them from here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scenario: Scenario = Scenario.QUERY_SERVERS_DOWN
    failback: bool = True
    hold_seconds: HoldSeconds = 5.0
    probe_interval_seconds: ProbeInterval = 1.0
    slo: SloOverrides = Field(default_factory=SloOverrides)
    dry_run: bool = False
    require_approval: bool = False
    fis_experiment_template_id: str | None = None
    abort_after_failed_probes: AbortAfter = 5
    observe_timeout_seconds: ObserveTimeout = None
    wait_for_lock_seconds: LockWaitSeconds = DEFAULT_LOCK_WAIT_S
    steady_state_wait_seconds: SteadyStateWait = 0.0

    @model_validator(mode="after")
    def _template_for_fis(self) -> DrillSettings:
        if self.scenario is Scenario.FIS_EXPERIMENT and not self.fis_experiment_template_id:
            raise ValueError("scenario fis-experiment needs fis_experiment_template_id")
        return self

    def expected_failover_real_s(self, topology: Topology) -> float:
        """The configured worst case (interval x threshold + TTL) in this environment's real seconds."""
        return expected_failover_seconds(topology) / topology.time_scale

    def observe_timeout_s(self, topology: Topology) -> float:
        """How long one transition (failover, failback, settling) may take before the drill gives up."""
        return self.observe_timeout_seconds or 3 * self.expected_failover_real_s(topology) + 30

    def rto_target_s(self, topology: Topology) -> float:
        return self.slo.rto_seconds or topology.slo.rto_seconds

    def rpo_target_s(self, topology: Topology) -> float:
        return self.slo.rpo_seconds if self.slo.rpo_seconds is not None else topology.slo.rpo_seconds


def new_drill_id(now: float, suffix: str) -> str:
    """Sortable, tag-safe id: `d` + UTC timestamp + a random suffix (tags allow [a-z0-9-])."""
    import time as _time

    stamp = _time.strftime("%Y%m%dt%H%M%S", _time.gmtime(now))
    return f"d{stamp}-{re.sub(r'[^a-z0-9]', '', suffix.lower())[:6]}"


def health_verdict(checker_statuses: Sequence[str]) -> bool | None:
    """Route 53's rule from the checkers' reports: healthy when more than 18% say Success."""
    if not checker_statuses:
        return None
    ok = sum(1 for s in checker_statuses if s.startswith("Success"))
    return ok / len(checker_statuses) > HEALTHY_SHARE


class RegionRoute(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str
    alb_dns: str
    # The check whose verdict says whether the region is healthy: the record's own, or when the
    # record carries a CALCULATED check (ARC), its HTTPS child (Route 53 has no status API for a
    # calculated check). Drills invert and read this one.
    health_check_id: str | None
    role: str  # PRIMARY / SECONDARY / weight=N / latency
    set_identifier: str
    record_health_check_id: str | None = None  # the record's CALCULATED check, with ARC
    routing_control_arn: str | None = None  # the RECOVERY_CONTROL child's routing control, with ARC


class Routing(BaseModel):
    """How the failover name routes today, read from Route 53 itself (not from our config), and
    the addresses each region's load balancer resolves to: a DNS answer is attributed to a region
    by its addresses, never by comparing names (an alias is answered with addresses)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record: str
    routes: dict[str, RegionRoute]
    addresses: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # region -> its ALB's addresses

    def region_of(self, address: str | None) -> str | None:
        """The region whose load balancer answers on `address`, or None."""
        if not address:
            return None
        return next((region for region, found in self.addresses.items() if address in found), None)

    def region_of_answer(self, addresses: Sequence[str]) -> str | None:
        """The region an answer points at; None when it is empty, unknown or spans regions."""
        regions = {self.region_of(a) for a in addresses}
        return regions.pop() if len(regions) == 1 else None


class LagReading(BaseModel):
    """The latest value of one replication-lag series and the guard that applies to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float | None  # None = no datapoint in the window
    limit: float
    unit: str  # ms or messages


class SteadyState(BaseModel):
    """Everything pre-flight (and post-flight) looks at, as gathered by the probes."""

    model_config = ConfigDict(extra="forbid")

    healthz: dict[str, bool] = Field(default_factory=dict)
    route53_health: dict[str, bool | None] = Field(default_factory=dict)
    dns_region: str | None = None
    expected_dns_regions: list[str] = Field(default_factory=list)
    lags: dict[str, LagReading] = Field(default_factory=dict)
    served: dict[str, QueryAnswer] = Field(default_factory=dict)
    capacity: dict[str, tuple[int, int]] = Field(default_factory=dict)  # region -> (ready, desired)
    # Deployment ids per region from the last dual-region apply proven in parity (flows/chalk_apply).
    # Chalk gives each region its own id for the same code, so with a record, parity means "each
    # region serves what that apply deployed to it"; without one, every region must serve one id.
    expected_deployments: dict[str, str] = Field(default_factory=dict)
    expected_sha: str | None = None
    # The client's view: the region that answered each of several consecutive queries through
    # the failover name (None: the query failed), and the regions that should be answering.
    client_view: list[str | None] = Field(default_factory=list)
    expected_client_regions: list[str] = Field(default_factory=list)
    # Topology regions the failover name has no route with a health check for.
    unrouted: list[str] = Field(default_factory=list)


def steady_state_problems(s: SteadyState, *, require_lag_data: bool = False) -> list[str]:
    """Every reason the system is not in steady state; empty means it is safe to inject."""
    problems: list[str] = []
    for region, ok in sorted(s.healthz.items()):
        if not ok:
            problems.append(f"{region}: /healthz is not serving")
    for region, healthy in sorted(s.route53_health.items()):
        if healthy is None:
            problems.append(f"{region}: Route 53 health-check status unavailable")
        elif not healthy:
            problems.append(f"{region}: Route 53 health check is unhealthy")
    for region in s.unrouted:
        problems.append(
            f"{region}: the failover name has no record with a health check for it (run provision)"
        )
    if s.expected_client_regions and s.client_view:
        elsewhere = [r for r in s.client_view if r not in s.expected_client_regions]
        if elsewhere:
            seen = ", ".join(sorted({r or "no answer" for r in elsewhere}))
            expected = " or ".join(s.expected_client_regions)
            problems.append(
                f"clients are not on {expected} yet: {len(elsewhere)} of {len(s.client_view)} queries "
                f"through the failover name were answered by {seen}"
            )
    if s.expected_dns_regions and s.dns_region not in s.expected_dns_regions:
        expected = " or ".join(s.expected_dns_regions)
        problems.append(f"failover name resolves to {s.dns_region or 'nothing'}, expected {expected}")
    for name, lag in sorted(s.lags.items()):
        if lag.value is None:
            if require_lag_data:
                problems.append(f"{name}: no replication-lag data in CloudWatch")
        elif lag.value > lag.limit:
            problems.append(
                f"{name}: replication lag {lag.value:.0f} {lag.unit} exceeds the guard {lag.limit:.0f}"
            )
    failed = {r: a for r, a in s.served.items() if not a.ok}
    for region, answer in sorted(failed.items()):
        problems.append(
            f"{region}: query through its own hostname failed ({answer.error or answer.status_code})"
        )
    served_ids = {r: a.deployment_id for r, a in s.served.items() if a.ok}
    if s.expected_deployments:
        for region, served in sorted(served_ids.items()):
            want = s.expected_deployments.get(region)
            if served != want:
                problems.append(
                    f"{region} serves deployment {served}, but the last proven apply "
                    f"(sha {s.expected_sha or '?'}) deployed {want or 'nothing'} there: regions out of parity"
                )
    for region, (ready, desired) in sorted(s.capacity.items()):
        if desired == 0 or ready < desired:
            problems.append(f"{region}: query-server capacity {ready}/{desired} ready")
    return problems


def abort_reason(
    obs: Sequence[Observation],
    *,
    secondaries: Sequence[str],
    abort_after: int,
    failing_limit_s: float,
    since_mono: float,
) -> str | None:
    """Why a drill must stop now, from its observations; None to go on.

    - Route 53 reports every secondary unhealthy for `abort_after` consecutive observations
      (failures of queries alone are expected right after the flip, while caches hold the old
      answer, so they are not a reason by themselves);
    - Route 53's verdict on the secondaries stays unreadable for `abort_after` observations
      (the drill would be blind to the one signal that says the secondary is failing too);
    - queries through the failover name have failed without a break for longer than
      `failing_limit_s` (the configured worst case plus a few probe intervals): a secondary
      whose /healthz passes but which answers errors.
    """
    recent = obs[-abort_after:] if len(obs) >= abort_after else []
    if recent and all(all(o.health.get(r) is False for r in secondaries) for o in recent):
        down = ", ".join(secondaries)
        return (
            f"secondary failing too: Route 53 reports {down} unhealthy for {abort_after} consecutive probes"
        )
    # (a region absent from `health` has not been read yet; None means its read failed)
    if recent and all(all(r in o.health and o.health[r] is None for r in secondaries) for o in recent):
        return (
            f"Route 53's verdict on {', '.join(secondaries)} unreadable for {abort_after} consecutive "
            "probes: the drill cannot tell whether the secondary is failing too"
        )
    failing_since = None
    for o in obs:
        if o.mono < since_mono:
            continue
        if o.query.ok:
            failing_since = None
        elif failing_since is None:
            failing_since = o.mono
    if failing_since is not None and obs and obs[-1].mono - failing_since > failing_limit_s:
        return (
            f"queries through the failover name have failed for {obs[-1].mono - failing_since:.1f} s, "
            f"longer than the worst case allows ({failing_limit_s:.1f} s): the secondary is not serving"
        )
    return None


def steady_state_notes(s: SteadyState) -> list[str]:
    """What pre-flight could not judge, said rather than guessed: without a proven dual-region
    apply there is nothing to compare deployment ids with (Chalk gives each region's deployment
    its own id, so equal ids cannot be the test)."""
    if s.expected_deployments or not s.served:
        return []
    served = ", ".join(f"{r}={a.deployment_id}" for r, a in sorted(s.served.items()) if a.ok)
    return [
        "deployment parity not checked: no chalk-apply run has proven what each region should serve "
        f"(serving {served or 'nothing readable'}); run the chalk-apply flow to record it"
    ]


def evaluate_slos(
    *,
    rto_target_s: float,
    rpo_target_s: float,
    rto_measured_s: float | None,
    rpo_measured_s: float | None,
    traffic_moved: bool,
) -> list[SloVerdict]:
    """RTO passes when failover completed within target; RPO when the exposure stayed within it."""

    def verdict(name: str, target: float, measured: float | None) -> SloVerdict:
        # not measured is not a pass
        return SloVerdict(
            name=name, target=target, measured=measured, passed=measured is not None and measured <= target
        )

    rpo = verdict("RPO", rpo_target_s, rpo_measured_s)
    return [verdict("RTO", rto_target_s, rto_measured_s), rpo] if traffic_moved else [rpo]


def rpo_estimate(rpo: RpoEvidence) -> tuple[float | None, str | None]:
    """Writes at risk if the primary were lost for good at injection, in seconds, and the series
    that says so: the largest of every replicated store's time-valued lag at that moment
    (DynamoDB per direction, MSK Replicator latency, Aurora global replication) and the measured
    canary lag. Message counts (MSK MessageLag) are not seconds; the report lists them beside.
    (None, None) when nothing was measured."""
    candidates: list[tuple[float, str]] = [
        (lag.value / 1000, name)
        for name, lag in rpo.lags_at_injection.items()
        if lag.unit == "ms" and lag.value is not None
    ]
    if rpo.canary_replication_lag_s is not None:
        candidates.append((rpo.canary_replication_lag_s, "canary write served by the secondaries"))
    if not candidates:
        return None, None
    value, name = max(candidates)
    return round(value, 3), name


def rpo_exposure_s(rpo: RpoEvidence) -> float | None:
    """The estimate alone (see `rpo_estimate`)."""
    return rpo_estimate(rpo)[0]
