"""The lifecycle every background simulator shares: its loops, and the metrics it publishes."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence

from sandbox.clock import Ticker
from sandbox.metrics import MetricSink

__all__ = ["LoopingSim"]

Loop = tuple[str, Callable[[], None], Callable[[], float]]  # name, body, period in real seconds


class LoopingSim:
    """Base for simulators that advance state and publish CloudWatch metrics on loops.

    Subclasses say which loops they run (`loops()`); starting binds the metric sink to the
    sandbox endpoint and starts them, stopping ends them, and `errors` reports what the loops
    survived (a simulator that died silently would make a region look healthy forever).
    """

    def __init__(self) -> None:
        self._tickers: list[Ticker] = []
        self._endpoint_url: str | None = None
        self._cloudwatch = MetricSink()

    def loops(self) -> Sequence[Loop]:
        raise NotImplementedError

    def start(self, endpoint_url: str) -> None:
        self._endpoint_url = endpoint_url
        self._cloudwatch.bind(endpoint_url)
        self._tickers = [Ticker(name, body, period).start() for name, body, period in self.loops()]

    def stop(self) -> None:
        for ticker in self._tickers:
            ticker.stop()
        self._tickers = []

    @property
    def errors(self) -> list[BaseException]:
        return [e for t in self._tickers for e in t.errors]
