"""Failover time by configuration: the formula, and the warning when the RTO SLO cannot be met."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from chalkdr.failover import expected_failover_seconds
from chalkdr.failover import failover_estimate
from chalkdr.failover import slo_warning
from chalkdr.topology import Topology
from chalkdr.topology import parse_topology

EXAMPLE = Path(__file__).resolve().parents[2] / "deployments" / "topology.example.yaml"


def topology(*, interval: int = 10, threshold: int = 3, rto: float = 120) -> Topology:
    """The example with these settings; the TTL is always the ALB's 60 s (an alias has none)."""
    d: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    d["route53"]["health_check"].update(request_interval=interval, failure_threshold=threshold)
    d["slo"]["rto_seconds"] = rto
    return parse_topology(d)


class TestExpectedFailover:
    def test_interval_times_threshold_plus_ttl(self) -> None:
        assert expected_failover_seconds(topology(interval=10, threshold=3)) == 90.0
        assert expected_failover_seconds(topology(interval=30, threshold=2)) == 120.0

    def test_estimate_carries_the_parts_and_the_time_scale(self) -> None:
        est = failover_estimate(topology(interval=10, threshold=2, rto=120))
        assert (est.request_interval_s, est.failure_threshold, est.ttl_s) == (10, 2, 60)
        assert est.expected_s == 80 and est.meets_slo and est.warning is None
        assert est.formula == "10 s x 2 + 60 s TTL = 80 s (RTO SLO 120 s)"
        assert est.time_scale == 1.0


class TestSloWarning:
    def test_no_warning_when_the_slo_is_reachable(self) -> None:
        assert slo_warning(topology(rto=90)) is None  # exactly at the SLO is fine

    def test_warns_with_remedies_when_configuration_is_too_slow(self) -> None:
        warning = slo_warning(topology(interval=30, threshold=3, rto=100))
        assert warning is not None
        assert "150 s" in warning and "RTO SLO of 100 s" in warning
        assert "cannot be met by configuration" in warning
        assert "lower failure_threshold (now 3)" in warning
        assert "request_interval 10" in warning and "TTL 60 s" in warning
        assert "record_ttl_seconds" not in warning  # the ALB's TTL is not ours to lower
        est = failover_estimate(topology(interval=30, threshold=3, rto=100))
        assert not est.meets_slo and est.warning == warning

    def test_says_when_even_the_fastest_configuration_cannot_meet_it(self) -> None:
        warning = slo_warning(topology(interval=10, threshold=1, rto=30))
        assert warning is not None and "even the fastest Route 53 configuration" in warning

    def test_a_measured_time_can_be_judged_with_the_same_words(self) -> None:
        t = topology(interval=10, threshold=2, rto=120)
        assert slo_warning(t, expected_s=100) is None
        warning = slo_warning(t, expected_s=130)
        assert warning is not None and "expected failover 130 s" in warning
