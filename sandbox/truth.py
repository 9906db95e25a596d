"""Ground truth: what the sandbox itself did and when, to check what the drill measured."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["GroundTruth"]


class GroundTruth:
    """An append-only, timestamped log of state changes inside the sandbox.

    The drill measures RTO from the outside (probes through the failover URL); this log records
    the same transitions from the inside (health-check verdict flips, the edge switching
    target, replicas catching up), with epoch timestamps comparable across processes on one
    machine. It is served on the control API (`GET /_sandbox/truth`) and optionally mirrored to
    a JSONL file so a benchmark can read it after the fact.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._path = path

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"ts": time.time(), "kind": kind, **fields}
        with self._lock:
            self._events.append(event)
            if self._path is not None:
                with self._path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(event, default=str) + "\n")
        return event

    def events(self, kind: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e
                for e in self._events
                if (kind is None or e["kind"] == kind) and (since is None or e["ts"] >= since)
            ]
