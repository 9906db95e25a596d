"""Pieces of the sandbox started in-process, for tests and benchmarks: the AWS endpoint with the
simulators a test needs, and the one deadline-bounded poll every wait uses.

A test that needs DynamoDB global tables, say, runs
`with AwsSandbox(lambda app, truth: [DynamoDbSim(app, ...)]) as aws:` and talks to `aws.client(...)`
exactly as product code talks to AWS; the whole world (`sandbox.world`) is for flow tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from typing import Protocol
from typing import TypeVar

import boto3
import httpx
from botocore.config import Config

from sandbox.aws import AwsServer
from sandbox.aws import SandboxAwsApp
from sandbox.truth import GroundTruth

__all__ = ["AwsSandbox", "poll"]

_T = TypeVar("_T")
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def poll(
    check: Callable[[], _T], *, timeout: float = 5.0, what: str = "condition", every: float = 0.05
) -> _T:
    """`check()`'s first truthy value; an AssertionError naming `what` once `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout:g} s (last value: {value!r})")
        time.sleep(every)


class Simulator(Protocol):
    def start(self, endpoint_url: str) -> None: ...

    def stop(self) -> None: ...


class AwsSandbox:
    """The sandbox AWS endpoint on loopback with the simulators `make` builds on its app."""

    def __init__(
        self, make: Callable[[SandboxAwsApp, GroundTruth], Sequence[Simulator]] = lambda a, t: ()
    ) -> None:
        self.truth = GroundTruth()
        self.app = SandboxAwsApp(self.truth)
        self.simulators = list(make(self.app, self.truth))
        self._server = AwsServer(self.app)

    @property
    def endpoint(self) -> str:
        return self._server.endpoint_url

    def client(self, service: str, region: str = "us-east-1", *, attempts: int = 1) -> Any:
        """A boto3 client for this endpoint; one attempt by default, so errors surface as they are.

        botocore's `max_attempts` counts retries after the first attempt; `total_max_attempts`
        counts every attempt, which is what `attempts` means here."""
        make: Any = boto3.client  # a plain str service name, not one of the stubs' literals
        return make(
            service,
            region_name=region,
            endpoint_url=self.endpoint,
            config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}),
            **CREDENTIALS,
        )

    def set_unreachable(self, region: str, unreachable: bool = True) -> None:
        """The fault "a region's AWS API unreachable" (see sandbox/aws.py), in-process."""
        self.app.set_unreachable(region, unreachable)

    def control(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An operator call to one of the sandbox's `/_sandbox/` routes."""
        return httpx.request(method, f"{self.endpoint}{path}", timeout=10, trust_env=False, **kwargs)

    def __enter__(self) -> AwsSandbox:
        self._server.start()
        for sim in self.simulators:
            sim.start(self.endpoint)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sim in reversed(self.simulators):
            sim.stop()
        # moto's backends are process-wide: forget what this world made before the next one starts
        httpx.post(f"{self.endpoint}/moto-api/reset", timeout=10, trust_env=False)
        self._server.stop()
