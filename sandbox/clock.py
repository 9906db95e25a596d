"""Sandbox time: one scale factor that makes AWS's slow clocks (RequestInterval, TTLs) fit a demo."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SandboxClock", "Ticker"]


@dataclass(frozen=True)
class SandboxClock:
    """Maps AWS durations onto wall time.

    A time_scale of 10 means ten AWS seconds pass in one real second: a 10 s RequestInterval
    elapses every 1 s and a 60 s TTL expires after 6 s. Everything the sandbox simulates with
    an AWS-documented duration goes through `real_seconds`, so reports can state the scale.
    """

    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {self.time_scale}")

    def real_seconds(self, aws_seconds: float) -> float:
        return aws_seconds / self.time_scale

    def aws_seconds(self, real_seconds: float) -> float:
        return real_seconds * self.time_scale

    @staticmethod
    def now() -> float:
        """Wall-clock epoch seconds: the clock shared with the drill process for ground truth."""
        return time.time()


class Ticker:
    """Runs `fn` every `period()` real seconds on a daemon thread until stopped.

    The period is a callable so that loops whose cadence depends on live state (the smallest
    RequestInterval among health checks) adapt without a restart. Exceptions are counted and
    kept, never allowed to kill the loop: a simulator that dies silently would make a region
    look healthy forever.
    """

    def __init__(self, name: str, fn: Callable[[], None], period: Callable[[], float]) -> None:
        self.name = name
        self._fn = fn
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sandbox-{name}", daemon=True)
        self.errors: list[BaseException] = []

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._fn()
            except Exception as exc:  # noqa: BLE001 - keep the simulation alive, keep the error
                self.errors.append(exc)
                del self.errors[:-20]
            self._stop.wait(max(self._period(), 0.005))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
