"""Chalk's persistence workers in the sandbox: they consume a region's persistence topic into its
online store, while the region's persistence Deployment has ready replicas.

In Chalk's multi-region layout the primary's workers are active and the secondary's are passive
(scaled to zero): the secondary's online store is fed by DynamoDB Global Tables, and its MSK
cluster receives the topic through MSK Replicator with the consumer group's offsets synced, so
that after a failover its workers, once started, resume where the primary's stopped. Each
worker writes through the sandbox's DynamoDB endpoint (UpdateItem), so the write is replicated
exactly as any other write to a global table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from sandbox.kafka_log import KafkaLog
from sandbox.kafka_log import LogRecord
from sandbox.simulator import Loop
from sandbox.simulator import LoopingSim
from sandbox.truth import GroundTruth

__all__ = ["PERSISTENCE_GROUP", "PERSISTENCE_TOPIC", "PersistenceWorkers", "RegionStore", "item_key"]

PERSISTENCE_TOPIC = "chalk-persistence"
PERSISTENCE_GROUP = "chalk-persistence-workers"
_SERIALIZER = TypeSerializer()


def item_key(row: dict[str, Any]) -> str:
    """The online-store key of an uploaded row: "<namespace>.<primary key>" (one namespace a row)."""
    namespace = next(iter(row)).split(".", 1)[0]
    return f"{namespace}.{row[f'{namespace}.id']}"


def _attribute(value: Any) -> dict[str, Any]:
    if isinstance(value, float):
        value = Decimal(str(value))
    return dict(_SERIALIZER.serialize(value))


@dataclass
class RegionStore:
    """One region's persistence: its MSK cluster, its workers' readiness, its online store."""

    region: str
    cluster_arn: str
    running: Callable[[], bool]  # the persistence Deployment has ready replicas
    dynamodb: Any  # a boto3 client for this region, on the sandbox endpoint
    table: str


class PersistenceWorkers(LoopingSim):
    """Every region's workers on one loop; each consumes only while its Deployment is ready."""

    def __init__(
        self, log: KafkaLog, stores: list[RegionStore], *, truth: GroundTruth, tick_s: float = 0.02
    ) -> None:
        super().__init__()
        self._log = log
        self._stores = stores
        self._truth = truth
        self._tick = tick_s

    def loops(self) -> list[Loop]:
        return [("persistence-workers", self._work, lambda: self._tick)]

    def _work(self) -> None:
        for store in self._stores:
            try:
                running = store.running()
            except Exception:  # noqa: BLE001 - an unreachable Kubernetes API: no worker runs
                running = False
            if running:
                for record in self._log.poll(store.cluster_arn, PERSISTENCE_TOPIC, PERSISTENCE_GROUP):
                    self._write(store, record)
                    self._log.commit(
                        store.cluster_arn, PERSISTENCE_TOPIC, PERSISTENCE_GROUP, record.offset + 1
                    )

    def _write(self, store: RegionStore, record: LogRecord) -> None:
        row = record.value
        names = [f"#f{i}" for i in range(len(row))]
        store.dynamodb.update_item(
            TableName=store.table,
            Key={"pk": {"S": item_key(row)}},
            UpdateExpression="SET " + ", ".join(f"{n} = :v{i}" for i, n in enumerate(names)),
            ExpressionAttributeNames={n: fqn for n, fqn in zip(names, row, strict=True)},
            ExpressionAttributeValues={f":v{i}": _attribute(v) for i, v in enumerate(row.values())},
        )
        self._truth.record("chalk.persisted", region=store.region, key=item_key(row), offset=record.offset)
