"""The drill in an active-active (weighted) topology: the milestone is that only healthy regions answer."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from chalkdr.report import DrillReport
from chalkdr.report import PhaseStatus
from flows.drill import drill

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def weighted_world(world_factory: Any, prefect_backend: None) -> Any:
    return world_factory("--routing", "weighted", "--environment", "demo-aa").provision()


def test_weighted_records_and_failover_to_the_healthy_region(
    weighted_world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in weighted_world.env.items():
        monkeypatch.setenv(k, v)
    topology = weighted_world.topology
    records = boto3.client("route53", region_name="us-east-1").list_resource_record_sets(
        HostedZoneId=topology.route53.zone_id
    )["ResourceRecordSets"]
    failover_name = topology.route53.failover_record + "."
    weights = sorted(r.get("Weight") for r in records if r["Name"] == failover_name)
    assert weights == [100, 100]

    state = drill(
        topology=str(weighted_world.topology_path),
        scenario="query-servers-down",
        hold_seconds=1.0,
        probe_interval_seconds=0.5,
        return_state=True,
    )
    report = state.result(raise_on_failure=False)
    assert isinstance(report, DrillReport)
    assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
    assert report.routing == "weighted"
    assert report.failover is not None and report.failover.settled_s is not None
    # Active-active: the RTO is when the last client (of the modelled population) is served
    # again; about half of them were on the faulted region of two.
    population = report.failover_population
    assert population is not None and population.recovered_s is not None
    assert report.rto_s == population.recovered_s
    assert 0.3 <= population.peak_share <= 0.7, population.peak_share
    ttl = 60 / weighted_world.topology.time_scale
    assert population.max_outage_s <= report.expected_failover_s + ttl
    assert report.failback is not None and report.failback.first_good_answer_s is not None
