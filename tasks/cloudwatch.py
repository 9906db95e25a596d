"""Tasks for Amazon CloudWatch: the replication-lag alarms provision keeps in line with the topology's guards.

Alarms are found by the `chalkdr-<env>-` name prefix and read with their tags (whose they are).
PutMetricAlarm replaces an alarm whole, so an update is the same call as a create; tags are
given on create, since PutMetricAlarm applies `Tags` only when it creates the alarm and ignores
them on an update (CloudWatch API reference, PutMetricAlarm: "To change the tags of an existing
alarm, use TagResource"), which is how an adopted alarm is tagged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from chalkdr.classify import aws_call
from chalkdr.clients import AwsClients
from chalkdr.plan import Action
from chalkdr.plan import AlarmSpec
from chalkdr.plan import Change
from chalkdr.plan import ChangeResult
from chalkdr.plan import ObservedAlarm
from chalkdr.plan import tag_list
from tasks.audit import ApplyContext
from tasks.retry import retry_options

__all__ = ["ensure_alarm", "read_alarms"]


def _alarm(region: str, raw: Mapping[str, Any], tags: Mapping[str, str]) -> ObservedAlarm:
    return ObservedAlarm(
        tags=dict(tags),
        name=raw["AlarmName"],
        region=region,
        namespace=raw.get("Namespace"),
        metric_name=raw.get("MetricName"),
        dimensions={d["Name"]: d["Value"] for d in raw.get("Dimensions", [])},
        statistic=raw.get("Statistic"),
        period=raw.get("Period"),
        evaluation_periods=raw["EvaluationPeriods"],  # required by PutMetricAlarm: always there
        datapoints_to_alarm=raw.get("DatapointsToAlarm"),
        threshold=raw.get("Threshold"),
        comparison_operator=raw["ComparisonOperator"],
        treat_missing_data=raw.get("TreatMissingData"),
        alarm_actions=tuple(raw.get("AlarmActions", [])),
        ok_actions=tuple(raw.get("OKActions", [])),
        insufficient_data_actions=tuple(raw.get("InsufficientDataActions", [])),
    )


@task(task_run_name="read-alarms-{region}", cache_policy=NO_CACHE, **retry_options())
def read_alarms(clients: AwsClients, region: str, prefix: str) -> list[ObservedAlarm]:
    """Every metric alarm in `region` whose name starts with `prefix`, with its tags."""
    cloudwatch = clients.cloudwatch(region)
    raw: list[Mapping[str, Any]] = []
    with aws_call("cloudwatch", "DescribeAlarms", f"{region}/{prefix}*"):
        for page in cloudwatch.get_paginator("describe_alarms").paginate(
            AlarmNamePrefix=prefix, AlarmTypes=["MetricAlarm"]
        ):
            raw += page.get("MetricAlarms", [])
    found = []
    for alarm in raw:
        with aws_call("cloudwatch", "ListTagsForResource", alarm["AlarmArn"]):
            tags = cloudwatch.list_tags_for_resource(ResourceARN=alarm["AlarmArn"]).get("Tags", [])
        found.append(_alarm(region, alarm, {t["Key"]: t["Value"] for t in tags}))
    return found


@task(task_run_name="ensure-alarm-{change.id}", cache_policy=NO_CACHE)
def ensure_alarm(apply: ApplyContext, change: Change) -> ChangeResult:
    spec = change.typed_spec(AlarmSpec)
    params: dict[str, Any] = {
        "AlarmName": spec.name,
        "AlarmDescription": spec.description,
        "ActionsEnabled": True,
        "Namespace": spec.namespace,
        "MetricName": spec.metric_name,
        "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(spec.dimensions.items())],
        "Statistic": spec.statistic,
        "Period": spec.period,
        "EvaluationPeriods": spec.evaluation_periods,
        "DatapointsToAlarm": spec.datapoints_to_alarm,
        "Threshold": float(spec.threshold),
        "ComparisonOperator": spec.comparison_operator,
        "TreatMissingData": spec.treat_missing_data,
        # PutMetricAlarm replaces the whole configuration: the spec carries every action to keep.
        "AlarmActions": list(spec.alarm_actions),
        "OKActions": list(spec.ok_actions),
        "InsufficientDataActions": list(spec.insufficient_data_actions),
    }
    if change.action is Action.CREATE:
        params["Tags"] = tag_list(spec.tags)
    cloudwatch = apply.clients.cloudwatch(spec.region)
    trail = apply.trail("cloudwatch")
    if change.adoption:  # PutMetricAlarm ignores Tags on an existing alarm
        with aws_call("cloudwatch", "TagResource", spec.arn):
            cloudwatch.tag_resource(ResourceARN=spec.arn, Tags=tag_list(spec.tags))  # type: ignore[arg-type]
        trail.record("adopt-alarm", spec.arn, spec.region, "cloudwatch:TagResource", **change.adoption)
    if not change.only_adopts:
        with aws_call("cloudwatch", "PutMetricAlarm", f"{spec.region}/{spec.name}"):
            cloudwatch.put_metric_alarm(**params)
        trail.record(
            f"{change.action.value}-alarm",
            spec.arn,
            spec.region,
            "cloudwatch:PutMetricAlarm",
            metric=f"{spec.namespace}/{spec.metric_name}",
        )
    return change.result(trail.records)
