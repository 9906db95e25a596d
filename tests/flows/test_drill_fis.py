"""FIS in a drill: the pause chalk-dr creates stops on the environment's replication-lag alarms and
is deleted after use; an operator's template runs only when marked for the environment and made
of reversible actions, and is refused in pre-flight, before anything is touched, otherwise."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from chalkdr.report import DrillReport
from chalkdr.report import PhaseStatus
from tasks.faults import DRILL_TAG

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(240)]


def templates(region: str) -> list[dict[str, Any]]:
    fis = boto3.client("fis", region_name=region)
    return [
        t
        for page in fis.get_paginator("list_experiment_templates").paginate()
        for t in page["experimentTemplates"]
    ]


def test_the_pause_stops_on_the_lag_alarms_and_its_template_is_deleted(
    world: Any, run_drill: Callable[..., DrillReport]
) -> None:
    t = world.topology
    region = t.primary.aws_region
    report = run_drill(world, scenario="replication-paused", hold_seconds=1.0)
    assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
    fis = boto3.client("fis", region_name=region)
    (summary,) = [
        e
        for page in fis.get_paginator("list_experiments").paginate()
        for e in page["experiments"]
        if e["tags"].get(DRILL_TAG) == report.drill_id
    ]
    assert summary["tags"]["chalk-dr:environment"] == t.environment
    experiment = fis.get_experiment(id=summary["id"])["experiment"]
    alarms = boto3.client("cloudwatch", region_name=region).describe_alarms(
        AlarmNames=[
            f"chalkdr-{t.environment}-dynamodb-{table}-{region}-to-{s.aws_region}-replication-latency"
            for table in t.primary.online_store_tables
            for s in t.secondaries
        ]
    )["MetricAlarms"]
    assert len(alarms) == len(t.primary.online_store_tables) * len(t.secondaries)
    assert sorted(c["value"] for c in experiment["stopConditions"]) == sorted(a["AlarmArn"] for a in alarms)
    assert {c["source"] for c in experiment["stopConditions"]} == {"aws:cloudwatch:alarm"}
    # The template the drill made is gone; the sweep would delete a crashed drill's.
    assert summary["experimentTemplateId"] not in {tpl["id"] for tpl in templates(region)}


@pytest.mark.parametrize(
    ("action", "tags", "reason"),
    [
        ("aws:fis:wait", {}, "is not tagged for chalk-dr and demo"),
        (
            "aws:ec2:terminate-instances",
            None,
            "runs actions a drill may not run: aws:ec2:terminate-instances",
        ),
    ],
)
def test_an_operators_template_that_is_not_ours_or_not_reversible_is_refused_in_preflight(
    world: Any, run_drill: Callable[..., DrillReport], action: str, tags: dict[str, str] | None, reason: str
) -> None:
    t = world.topology
    marked = {"chalk-dr:managed": "true", "chalk-dr:environment": t.environment}
    tpl = boto3.client("fis", region_name=t.primary.aws_region).create_experiment_template(
        clientToken=uuid.uuid4().hex,
        description="an operator's experiment",
        roleArn=t.fis_role_arn or "arn:aws:iam::123456789012:role/fis",
        stopConditions=[{"source": "none"}],
        actions={"a": {"actionId": action, "parameters": {"duration": "PT1M"}}},
        tags=marked if tags is None else tags,
    )["experimentTemplate"]["id"]
    report = run_drill(world, scenario="fis-experiment", fis_experiment_template_id=tpl)
    assert report.outcome is PhaseStatus.ABORTED
    assert reason in (report.outcome_reason or ""), report.outcome_reason
    assert report.phases["inject"].status is PhaseStatus.PENDING
