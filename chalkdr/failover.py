"""Route 53 failover timing: how long a regional outage takes to reach clients, by configuration.

With health-check-driven DNS failover, clients move only after Route 53 has declared the
endpoint unhealthy (FailureThreshold consecutive failed checks, RequestInterval seconds apart)
and resolvers have dropped the cached answer (60 s: Route 53 answers an alias to a load balancer
with the ELB's own TTL, and an alias record has no TTL of its own to lower).
That sum is a floor set by configuration alone: no drill can beat it, so a plan that cannot
meet the RTO SLO must say so before anyone relies on it. The provision plan shows it, and the
drill compares its measured RTO with the same number.
"""

from __future__ import annotations

from pydantic import BaseModel
from pydantic import ConfigDict

from chalkdr.topology import ALB_ALIAS_TTL_S
from chalkdr.topology import Topology

__all__ = ["FailoverEstimate", "expected_failover_seconds", "failover_estimate", "slo_warning"]

# The fastest configuration Route 53 allows: a 10 s interval and a threshold of 1.
_FASTEST_INTERVAL_S = 10
_LOWEST_THRESHOLD = 1


class FailoverEstimate(BaseModel):
    """The configured failover time beside the RTO SLO (configured/AWS seconds, never scaled)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_interval_s: int
    failure_threshold: int
    ttl_s: int
    expected_s: float
    rto_slo_s: float
    meets_slo: bool
    warning: str | None = None
    time_scale: float = 1.0

    @property
    def formula(self) -> str:
        return (
            f"{self.request_interval_s} s x {self.failure_threshold} + {self.ttl_s} s TTL "
            f"= {self.expected_s:g} s (RTO SLO {self.rto_slo_s:g} s)"
        )


def expected_failover_seconds(topology: Topology) -> float:
    """RequestInterval x FailureThreshold + TTL, in configured (AWS) seconds.

    Route 53 needs FailureThreshold consecutive failed checks, one per RequestInterval, before
    it marks the endpoint unhealthy; resolvers may then keep serving the old answer for the
    record's TTL. This is the floor a drill's measured RTO is compared against; checker
    spread, probe latency and client retries only add to it.
    """
    hc = topology.route53.health_check
    return float(hc.request_interval * hc.failure_threshold + ALB_ALIAS_TTL_S)


def slo_warning(topology: Topology, *, expected_s: float | None = None) -> str | None:
    """A warning when the failover time exceeds the RTO SLO, with what would fix it; else None.

    `expected_s` defaults to the configured time; the drill passes a measured RTO to reuse the
    same wording and remedies.
    """
    hc = topology.route53.health_check
    ttl = ALB_ALIAS_TTL_S
    rto = topology.slo.rto_seconds
    expected = expected_failover_seconds(topology) if expected_s is None else expected_s
    if expected <= rto:
        return None
    fastest = _FASTEST_INTERVAL_S * _LOWEST_THRESHOLD + ttl
    remedies: list[str] = []
    if hc.failure_threshold > _LOWEST_THRESHOLD:
        remedies.append(f"lower failure_threshold (now {hc.failure_threshold})")
    if hc.request_interval > _FASTEST_INTERVAL_S:
        remedies.append("use request_interval 10 (replaces the health checks)")
    head = (
        f"expected failover {expected:g} s (request_interval {hc.request_interval} s x "
        f"failure_threshold {hc.failure_threshold} + TTL {ttl} s) exceeds the RTO SLO of {rto:g} s"
    )
    if fastest > rto:
        return (
            f"{head}; even the fastest Route 53 configuration (10 s x 1 + TTL {ttl} s = {fastest} s) "
            "cannot meet it: the SLO cannot be met by DNS failover as configured"
        )
    return f"{head}: the SLO cannot be met by configuration; " + ", or ".join(remedies)


def failover_estimate(topology: Topology) -> FailoverEstimate:
    hc = topology.route53.health_check
    expected = expected_failover_seconds(topology)
    warning = slo_warning(topology)
    return FailoverEstimate(
        request_interval_s=hc.request_interval,
        failure_threshold=hc.failure_threshold,
        ttl_s=ALB_ALIAS_TTL_S,
        expected_s=expected,
        rto_slo_s=topology.slo.rto_seconds,
        meets_slo=warning is None,
        warning=warning,
        time_scale=topology.time_scale,
    )
