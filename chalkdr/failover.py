"""How long failover should take, by configuration alone, and whether that can meet the SLO."""

from __future__ import annotations

from chalkdr.topology import Topology

__all__ = ["expected_failover_seconds", "slo_warning"]


def expected_failover_seconds(topology: Topology) -> float:
    """RequestInterval x FailureThreshold + TTL, in configured (AWS) seconds.

    Route 53 needs FailureThreshold consecutive failed checks, one per RequestInterval, before
    it marks the endpoint unhealthy; resolvers may then keep serving the old answer for the
    record's TTL. This is the floor a drill's measured RTO is compared against; checker
    spread, probe latency and client retries only add to it.
    """
    hc = topology.route53.health_check
    return float(hc.request_interval * hc.failure_threshold + topology.route53.record_ttl_seconds)


def slo_warning(topology: Topology) -> str | None:
    """A warning when the configured detection + TTL alone already exceed the RTO SLO."""
    expected = expected_failover_seconds(topology)
    if expected > topology.slo.rto_seconds:
        hc = topology.route53.health_check
        return (
            f"RTO SLO {topology.slo.rto_seconds:g} s cannot be met by configuration: "
            f"RequestInterval {hc.request_interval} s x FailureThreshold {hc.failure_threshold} "
            f"+ TTL {topology.route53.record_ttl_seconds} s = {expected:g} s"
        )
    return None
