"""CloudWatch, as the simulators publish to it: real put_metric_data calls to the sandbox endpoint.

Simulated services publish their metrics (ReplicationLatency, MessageLag,
AuroraGlobalDBReplicationLag) through the same API a real service's metrics reach product
code through, so product code reads them exactly as it would on AWS. `recent_datapoints` reads
one series back the same way (GetMetricStatistics), for what checks them against ground truth.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import boto3
from botocore.config import Config

__all__ = ["MetricSink", "recent_datapoints"]

_MAX_DATUMS_PER_CALL = 500  # PutMetricData's limit


class MetricSink:
    """One CloudWatch client per region against the sandbox endpoint, made on first use."""

    def __init__(self) -> None:
        self._endpoint_url: str | None = None
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def bind(self, endpoint_url: str) -> None:
        self._endpoint_url = endpoint_url

    @property
    def bound(self) -> bool:
        return self._endpoint_url is not None

    def _client(self, region: str) -> Any:
        with self._lock:
            if region not in self._clients:
                self._clients[region] = boto3.session.Session().client(
                    "cloudwatch",
                    region_name=region,
                    endpoint_url=self._endpoint_url,
                    aws_access_key_id="testing",
                    aws_secret_access_key="testing",
                    config=Config(
                        retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=5
                    ),
                )
            return self._clients[region]

    def put(self, region: str, namespace: str, data: list[dict[str, Any]]) -> None:
        client = self._client(region)
        for i in range(0, len(data), _MAX_DATUMS_PER_CALL):
            client.put_metric_data(Namespace=namespace, MetricData=data[i : i + _MAX_DATUMS_PER_CALL])


def recent_datapoints(
    cloudwatch: Any,
    namespace: str,
    metric: str,
    dimensions: dict[str, str],
    *,
    minutes: float = 10,
    statistics: Sequence[str] = ("Maximum",),
) -> list[dict[str, Any]]:
    """What a consumer reads back of one series (GetMetricStatistics on `cloudwatch`, a client of
    the series' region): its 60 s datapoints from `minutes` ago to a minute ahead, in any order."""
    now = datetime.now(UTC)
    return list(
        cloudwatch.get_metric_statistics(
            Namespace=namespace,
            MetricName=metric,
            Dimensions=[{"Name": name, "Value": value} for name, value in dimensions.items()],
            StartTime=now - timedelta(minutes=minutes),
            EndTime=now + timedelta(minutes=1),
            Period=60,
            Statistics=list(statistics),
        )["Datapoints"]
    )
