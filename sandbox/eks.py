"""The sandbox's EKS: DescribeCluster points each cluster at its region's Kubernetes emulator.

moto creates and describes clusters (ACTIVE at once) but its endpoint is a placeholder
(`https://<random>.gr7.<region>.eks.amazonaws.com/`) and its certificateAuthority data is not a
PEM. Product code builds its Kubernetes client from exactly these two fields, so the sandbox
rewrites them: the endpoint becomes the region's emulator URL (plain HTTP on 127.0.0.1), and
the CA is left empty, since there is no TLS to verify. Nothing else in the answer changes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from urllib.parse import unquote

from sandbox.aws import AwsCall
from sandbox.aws import SandboxAwsApp
from sandbox.clock import SandboxClock
from sandbox.truth import GroundTruth

__all__ = ["EksSim"]

_DESCRIBE_CLUSTER = re.compile(r"^/clusters/(?P<name>[^/]+)$")


class EksSim:
    """Rewrites DescribeCluster for the (region, cluster name) pairs that have an emulator."""

    def __init__(
        self,
        app: SandboxAwsApp,
        *,
        clock: SandboxClock,
        truth: GroundTruth,
        endpoints: Mapping[tuple[str, str], str],
    ) -> None:
        self._clock = clock
        self._truth = truth
        self._endpoints = {key: url.rstrip("/") for key, url in endpoints.items()}
        app.observe("eks", self._describe_cluster)

    def start(self, endpoint_url: str) -> None:
        return None

    def stop(self) -> None:
        return None

    def _describe_cluster(self, call: AwsCall, status: int, body: bytes) -> bytes | None:
        match = _DESCRIBE_CLUSTER.match(call.path)
        if call.method != "GET" or match is None or status != 200:
            return None
        url = self._endpoints.get((call.region, unquote(match["name"])))
        if url is None:
            return None
        payload = json.loads(body)
        cluster = payload["cluster"]
        cluster["endpoint"] = url
        cluster["certificateAuthority"] = {}
        cluster["status"] = "ACTIVE"
        return json.dumps(payload).encode("utf-8")
