"""Client-side pacing for APIs with a documented request rate, so chalk-dr stays under it.

Route 53's API is throttled per account (all callers in the account share it: a drill that
polls health-check status can starve a colleague's deploy). The Knowledge Center states a hard
limit of five requests per second per account ("How do I avoid Route 53 API throttling
errors?", repost.aws/knowledge-center/route-53-avoid-throttling-errors); the current guide
(docs.aws.amazon.com/Route53/latest/DeveloperGuide/throttling-api-requests.html) describes an
account token bucket plus one per operation, with GetHealthCheckStatus refilling at one request
per second. chalk-dr paces itself to the stricter of the two: at most 5 requests per second in
total and 1 GetHealthCheckStatus per second, per process. botocore's retry mode still handles a
Throttling answer caused by someone else's calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["ROUTE53_PACE", "Pacer", "TokenBucket"]


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `acquire` waits for one."""

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Take a token (possibly going into debt); how long the caller must wait for it."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self) -> float:
        """Block until a token is available; returns the seconds waited."""
        wait = self._reserve()
        if wait > 0:
            time.sleep(wait)
        return wait


class Pacer:
    """One account-wide bucket and optional per-operation buckets for one service's API.

    Register with `client.meta.events.register(f"before-call.{service}", pacer)`: botocore calls
    it before every attempt (retries included), which is what the service counts.
    """

    def __init__(self, account: tuple[float, float], operations: Mapping[str, tuple[float, float]]) -> None:
        self.account = TokenBucket(*account)
        self.operations = {op: TokenBucket(*spec) for op, spec in operations.items()}
        self._lock = threading.Lock()
        self.calls = 0
        self.waited_s = 0.0

    def __call__(self, model: Any = None, **_: Any) -> None:
        op = self.operations.get(getattr(model, "name", ""))
        waited = op.acquire() if op is not None else 0.0
        waited += self.account.acquire()
        with self._lock:
            self.calls += 1
            self.waited_s += waited


# (rate per second, burst) for the account, then per operation.
ROUTE53_PACE: tuple[tuple[float, float], dict[str, tuple[float, float]]] = (
    (5.0, 5.0),
    {"GetHealthCheckStatus": (1.0, 1.0), "GetHealthCheckLastFailureReason": (1.0, 1.0)},
)
