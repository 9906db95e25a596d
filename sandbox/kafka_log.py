"""Kafka's data plane in the sandbox: topics as append-only logs per MSK cluster, consumer groups.

MSK's control plane (clusters, replicators) is the MskSim's; this is what flows through them:
Chalk's persistence path (an upload is produced to a topic of the region's cluster, the region's
persistence workers consume it into the online store) and what MSK Replicator copies between
clusters. Offsets are per (cluster, topic) and start at 0; a consumer group's committed offset
is the next record it will read, as in Kafka.

MSK Replicator keeps topic names IDENTICAL when configured so (TopicNameConfiguration), and
synchronises consumer-group offsets (SynchroniseConsumerGroupOffsets) so consumers in the
target resume where the source consumers were: `sync_group` translates a source offset to the
target offset of the first record not yet consumed there (AWS: "Consumer groups offsets are
synced ... so that consumers can resume"; msk-replicator-how-it-works).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from dataclasses import field
from typing import Any

__all__ = ["KafkaLog", "LogRecord"]


@dataclass(frozen=True)
class LogRecord:
    offset: int
    value: dict[str, Any]
    produced_at: float  # epoch seconds: replication latency is measured from here
    origin: tuple[str, int] | None = None  # (source cluster, source offset) for a replicated record


@dataclass
class _Topic:
    records: list[LogRecord] = field(default_factory=list)
    groups: dict[str, int] = field(default_factory=dict)  # group -> committed offset


class KafkaLog:
    """Every cluster's topics, thread-safe. Clusters are named by ARN."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._topics: dict[tuple[str, str], _Topic] = {}

    def _topic(self, cluster: str, topic: str) -> _Topic:
        return self._topics.setdefault((cluster, topic), _Topic())

    def produce(
        self,
        cluster: str,
        topic: str,
        value: dict[str, Any],
        *,
        origin: tuple[str, int] | None = None,
        produced_at: float | None = None,
    ) -> int:
        with self._lock:
            t = self._topic(cluster, topic)
            record = LogRecord(len(t.records), value, produced_at or time.time(), origin)
            t.records.append(record)
            return record.offset

    def read(self, cluster: str, topic: str, start: int, limit: int = 500) -> list[LogRecord]:
        with self._lock:
            return list(self._topic(cluster, topic).records[start : start + limit])

    def end_offset(self, cluster: str, topic: str) -> int:
        with self._lock:
            return len(self._topic(cluster, topic).records)

    def topics(self, cluster: str) -> list[str]:
        with self._lock:
            return sorted(name for c, name in self._topics if c == cluster)

    def committed(self, cluster: str, topic: str, group: str) -> int | None:
        with self._lock:
            return self._topic(cluster, topic).groups.get(group)

    def groups(self, cluster: str, topic: str) -> dict[str, int]:
        with self._lock:
            return dict(self._topic(cluster, topic).groups)

    def commit(self, cluster: str, topic: str, group: str, offset: int) -> None:
        with self._lock:
            self._topic(cluster, topic).groups[group] = offset

    def poll(self, cluster: str, topic: str, group: str, limit: int = 500) -> list[LogRecord]:
        """The group's next records (from its committed offset, or from the start); the caller
        commits what it has processed."""
        with self._lock:
            t = self._topic(cluster, topic)
            start = t.groups.get(group, 0)
            return list(t.records[start : start + limit])

    def sync_group(self, source: str, target: str, topic: str, group: str) -> None:
        """Set `group`'s offset in `target` to where its offset in `source` points, through the
        records replicated so far (never moving it backwards)."""
        with self._lock:
            src, dst = self._topic(source, topic), self._topic(target, topic)
            position = src.groups.get(group)
            if position is None:
                return
            # the first target record that came from a source offset the group has not consumed
            translated = next(
                (
                    r.offset
                    for r in dst.records
                    if r.origin is not None and r.origin[0] == source and r.origin[1] >= position
                ),
                len(dst.records),
            )
            if translated > dst.groups.get(group, -1):
                dst.groups[group] = translated

    def clear(self) -> None:
        with self._lock:
            self._topics.clear()
