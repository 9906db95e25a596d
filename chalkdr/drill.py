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
from chalkdr.query import QueryAnswer
from chalkdr.report import RpoEvidence
from chalkdr.report import SloVerdict
from chalkdr.topology import Topology

__all__ = [
    "CANARY_FEATURE",
    "CANARY_NAMESPACE",
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
    "canary_item",
    "evaluate_slos",
    "health_verdict",
    "new_drill_id",
    "rpo_exposure_s",
    "steady_state_problems",
]

# The canary lives in the online store like any feature row: namespace `chalkdr_canary`,
# primary key = the drill id, one feature `chalkdr_canary.value`.
CANARY_NAMESPACE = "chalkdr_canary"
CANARY_FEATURE = f"{CANARY_NAMESPACE}.value"
CANARY_INPUT = f"{CANARY_NAMESPACE}.id"
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
LockWaitSeconds = Annotated[
    float, Field(ge=0, le=3600, description="Seconds to wait for another runbook of this environment to end")
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
    wait_for_lock_seconds: LockWaitSeconds = 10.0

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


def canary_item(drill_id: str, written_wall: float) -> dict[str, dict[str, str]]:
    """The DynamoDB item for a drill's canary, tagged with the drill id so sweeps can find it."""
    return {
        "pk": {"S": f"{CANARY_NAMESPACE}.{drill_id}"},
        CANARY_FEATURE: {"S": drill_id},
        f"{CANARY_NAMESPACE}.written_at": {"N": f"{written_wall:.3f}"},
        "chalk-dr:drill-id": {"S": drill_id},
    }


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
    health_check_id: str | None
    role: str  # PRIMARY / SECONDARY / weight=N / latency
    set_identifier: str


class Routing(BaseModel):
    """How the failover name routes today, read from Route 53 itself (not from our config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record: str
    routes: dict[str, RegionRoute]

    def region_of_answer(self, answer: str | None) -> str | None:
        if not answer:
            return None
        name = answer.lower().rstrip(".").removeprefix("dualstack.")
        for r in self.routes.values():
            if r.alb_dns.lower().rstrip(".").removeprefix("dualstack.") == name:
                return r.region
        return None


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
    elif len(set(served_ids.values())) > 1:
        detail = ", ".join(f"{r}={d}" for r, d in sorted(served_ids.items()))
        problems.append(f"regions serve different deployments: {detail}")
    for region, (ready, desired) in sorted(s.capacity.items()):
        if desired == 0 or ready < desired:
            problems.append(f"{region}: query-server capacity {ready}/{desired} ready")
    return problems


def evaluate_slos(
    *,
    rto_target_s: float,
    rpo_target_s: float,
    rto_measured_s: float | None,
    rpo_measured_s: float | None,
    traffic_moved: bool,
) -> list[SloVerdict]:
    """RTO passes when failover completed within target; RPO when the exposure stayed within it."""
    verdicts = []
    if traffic_moved:
        verdicts.append(
            SloVerdict(
                name="RTO",
                target=rto_target_s,
                measured=rto_measured_s,
                passed=rto_measured_s is not None and rto_measured_s <= rto_target_s,
            )
        )
    verdicts.append(
        SloVerdict(
            name="RPO",
            target=rpo_target_s,
            measured=rpo_measured_s,
            passed=rpo_measured_s is not None and rpo_measured_s <= rpo_target_s,
        )
    )
    return verdicts


def rpo_exposure_s(rpo: RpoEvidence) -> float | None:
    """Writes at risk if the primary had been lost at injection: the larger of the observed
    canary replication lag and the online store's published replication lag at that moment."""
    dynamo = [
        v / 1000
        for k, v in rpo.replication_lag_at_injection_ms.items()
        if k.startswith("dynamodb:") and v is not None
    ]
    candidates = [*dynamo] + (
        [rpo.canary_replication_lag_s] if rpo.canary_replication_lag_s is not None else []
    )
    return round(max(candidates), 3) if candidates else None
