"""DynamoDB global tables (version 2019.11.21) for the sandbox: replicas, asynchronous replication, lag.

moto stores tables per region but ignores `UpdateTable(ReplicaUpdates=...)`, so nothing is ever
replicated. This simulator adds what the failover drill depends on, as AWS documents it:

- `ReplicaUpdates` Create/Delete build or remove the replica table in the other region (same key
  schema, attributes, billing mode, indexes; existing items copied), with the replica CREATING or
  DELETING for a short while and the table UPDATING meanwhile. `DescribeTable` in every region
  of the global table reports `GlobalTableVersion` and `Replicas` (the *other* regions, as AWS
  lists them).
- Every successful write is replicated asynchronously to every other replica after a lag,
  last-writer-wins by write time; replicated writes are applied to moto's backend directly, so
  they are never seen by the observer and never replicated again.
- Replication can be paused per table and receiving region (what FIS
  `aws:dynamodb:global-table-pause-replication` does); writes queue up and drain on resume.
- `ReplicationLatency` (AWS/DynamoDB; TableName + ReceivingRegion; Milliseconds) is published to
  the source region's CloudWatch, so lag is observable the way product code observes it on AWS.

Replication lag is a measurement, not a configured AWS duration, so the metric is published in
real milliseconds: the drill compares it with lags it measures itself (the canary) on the same
clock. Only configured durations (RequestInterval, TTL) are scaled by the sandbox clock.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import defaultdict
from collections import deque
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import boto3
from moto.dynamodb.exceptions import ResourceNotFoundException
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from werkzeug.wrappers import Response

from sandbox.aws import ACCOUNT_ID
from sandbox.aws import AwsCall
from sandbox.aws import SandboxAwsApp
from sandbox.aws import json_error
from sandbox.aws import json_reply
from sandbox.clock import SandboxClock
from sandbox.simulator import Loop
from sandbox.simulator import LoopingSim
from sandbox.truth import GroundTruth

__all__ = ["GLOBAL_TABLE_VERSION", "DynamoDbSim"]

GLOBAL_TABLE_VERSION = "2019.11.21"
METRIC_NAMESPACE = "AWS/DynamoDB"
METRIC_NAME = "ReplicationLatency"
OPERATOR = "operator"  # the holder name used by the /_sandbox control routes

_WRITE_OPS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
_READ_OPS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"})
_LOCAL_REGION_ERROR = (
    "Cannot add, delete, or update the local region through ReplicaUpdates. "
    "Use CreateTable, DeleteTable, or UpdateTable as required."
)
_REPLICA_NOT_FOUND = (
    "Replica specified in the Replica Update or Replica Delete action of the request was not found."
)

Link = tuple[str, str, str]  # (table name, source region, receiving region)


@dataclass
class _Replica:
    region: str
    status: str  # CREATING | ACTIVE | DELETING
    table: Table  # moto's object: identity tells a live replica from a reset world
    ready_at: float = 0.0  # monotonic time the CREATING/DELETING phase ends


@dataclass
class _GlobalTable:
    name: str
    replicas: dict[str, _Replica] = field(default_factory=dict)

    def busy(self) -> bool:
        return any(r.status != "ACTIVE" for r in self.replicas.values())


@dataclass
class _Pending:
    """One write waiting to reach one receiving region."""

    due: float  # monotonic
    key: dict[str, Any]
    key_id: str
    write_ts: float  # epoch seconds of the original write


def _written_keys(op: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(TableName, item-or-key) for each item a successful write call touched."""
    if op == "PutItem":
        return [(body["TableName"], body.get("Item") or {})]
    if op in ("UpdateItem", "DeleteItem"):
        return [(body["TableName"], body.get("Key") or {})]
    out: list[tuple[str, dict[str, Any]]] = []
    if op == "BatchWriteItem":
        for table, requests in (body.get("RequestItems") or {}).items():
            for request in requests:
                if "PutRequest" in request:
                    out.append((table, request["PutRequest"].get("Item") or {}))
                elif "DeleteRequest" in request:
                    out.append((table, request["DeleteRequest"].get("Key") or {}))
    elif op == "TransactWriteItems":
        for entry in body.get("TransactItems") or []:
            if "Put" in entry:
                out.append((entry["Put"]["TableName"], entry["Put"].get("Item") or {}))
            for kind in ("Update", "Delete"):
                if kind in entry:
                    out.append((entry[kind]["TableName"], entry[kind].get("Key") or {}))
    return out


def _tables_named(op: str, body: dict[str, Any]) -> list[str]:
    """Every table a data-plane call addresses (by name or ARN)."""
    if op in ("BatchWriteItem", "BatchGetItem"):
        return list((body.get("RequestItems") or {}).keys())
    if op in ("TransactWriteItems", "TransactGetItems"):
        return [
            part["TableName"]
            for entry in body.get("TransactItems") or []
            for part in entry.values()
            if isinstance(part, dict) and "TableName" in part
        ]
    return [body["TableName"]] if "TableName" in body else []


def _in_use(name: str) -> Response:
    return json_error(
        "ResourceInUseException",
        f"Attempt to change a resource which is still in use: Table is being updated: {name}",
    )


class DynamoDbSim(LoopingSim):
    """Global tables on top of moto's per-region DynamoDB backends."""

    def __init__(
        self,
        app: SandboxAwsApp,
        *,
        clock: SandboxClock,
        truth: GroundTruth,
        replication_lag_s: float = 0.3,
        replica_create_s: float = 0.2,
        replica_delete_s: float = 0.2,
        metrics_period_s: float = 1.0,
        tick_s: float = 0.02,
    ) -> None:
        self._clock = clock
        self._truth = truth
        self._lag = replication_lag_s
        self._create_s = replica_create_s
        self._delete_s = replica_delete_s
        self._metrics_period = metrics_period_s
        self._tick = tick_s
        self._regions = frozenset(boto3.session.Session().get_available_regions("dynamodb"))
        self._lock = threading.RLock()
        self._tables: dict[str, _GlobalTable] = {}
        self._queues: dict[Link, deque[_Pending]] = defaultdict(deque)
        self._last_write: dict[tuple[str, str, str], float] = {}  # (table, region, key) -> write ts
        self._observed: dict[Link, list[float]] = defaultdict(list)  # real-second latencies this period
        # (table, region, direction "in"|"out") -> holders of a pause
        self._holds: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        super().__init__()
        app.intercept("dynamodb", self._intercept)
        app.observe("dynamodb", self._observe)
        app.control("POST", "/_sandbox/dynamodb/pause", self._control_pause)
        app.control("POST", "/_sandbox/dynamodb/resume", self._control_resume)

    # -- lifecycle -------------------------------------------------------------------------------

    def loops(self) -> list[Loop]:
        return [
            ("dynamodb-replication", self._replicate, lambda: self._tick),
            ("dynamodb-metrics", self._publish_metrics, lambda: self._metrics_period),
        ]

    # -- public API (FisSim, world wiring) -------------------------------------------------------

    def replica_regions(self, table_name: str) -> list[str]:
        """Regions holding a replica of `table_name`, or [] when it is not a global table."""
        with self._lock:
            table = self._live(table_name)
            return sorted(table.replicas) if table else []

    def pause(
        self, table_name: str, receiving_region: str, *, holder: str = OPERATOR, outbound: bool = False
    ) -> None:
        """Stop applying writes into `receiving_region` (and, with outbound, out of it) until resumed.

        Pauses are held per holder, so an FIS experiment ending cannot lift an operator's pause
        (or another experiment's) on the same replica.
        """
        with self._lock:
            self._holds[(table_name, receiving_region, "in")].add(holder)
            if outbound:
                self._holds[(table_name, receiving_region, "out")].add(holder)
        self._truth.record(
            "dynamodb.paused", table=table_name, region=receiving_region, holder=holder, outbound=outbound
        )

    def resume(self, table_name: str, receiving_region: str, *, holder: str = OPERATOR) -> None:
        """Release `holder`'s pause; queued writes drain on the next replication tick."""
        with self._lock:
            released = False
            for direction in ("in", "out"):
                holders = self._holds.get((table_name, receiving_region, direction))
                if holders is not None and holder in holders:
                    holders.discard(holder)
                    released = True
            pending = sum(
                len(q)
                for (table, src, dst), q in self._queues.items()
                if table == table_name and receiving_region in (src, dst)
            )
        if released:
            self._truth.record(
                "dynamodb.resumed", table=table_name, region=receiving_region, holder=holder, pending=pending
            )

    # -- moto access -----------------------------------------------------------------------------

    @staticmethod
    def _backend(region: str) -> DynamoDBBackend:
        return dynamodb_backends[ACCOUNT_ID][region]

    def _lookup(self, region: str, name_or_arn: str) -> Table | None:
        try:
            return self._backend(region).get_table(name_or_arn)
        except ResourceNotFoundException:
            return None

    def _live(self, table_name: str) -> _GlobalTable | None:
        """The global table, unless moto was reset (or a replica deleted) behind our back."""
        table = self._tables.get(table_name)
        if table is None:
            return None
        for region, replica in list(table.replicas.items()):
            if self._backend(region).tables.get(table_name) is not replica.table:
                self._forget_replica(table, region)
        if len(table.replicas) < 2 and not table.busy():
            self._tables.pop(table_name, None)
            return None
        return table

    def _forget_replica(self, table: _GlobalTable, region: str) -> None:
        """Drop a replica and everything queued, measured or remembered for it."""
        table.replicas.pop(region, None)
        for links in (self._queues, self._observed):
            for link in [link for link in links if link[0] == table.name and region in link[1:]]:
                del links[link]
        for write in [w for w in self._last_write if w[0] == table.name and w[1] == region]:
            del self._last_write[write]

    # -- interceptor: control-plane calls moto ignores, data-plane on non-ACTIVE replicas ---------

    def _intercept(self, call: AwsCall) -> Response | None:
        op = call.target
        if op not in _WRITE_OPS and op not in _READ_OPS and op not in ("UpdateTable", "DeleteTable"):
            return None
        body = call.json()
        with self._lock:
            if op == "UpdateTable" and body.get("ReplicaUpdates"):
                return self._replica_updates(call.region, body)
            if op in ("UpdateTable", "DeleteTable"):
                table = self._lookup(call.region, body.get("TableName", ""))
                gt = self._live(table.name) if table else None
                return _in_use(gt.name) if gt is not None and gt.busy() else None
            if not any(gt.busy() for gt in self._tables.values()):
                return None  # every replica is ACTIVE: nothing to refuse
            for name in _tables_named(op, body):
                table = self._lookup(call.region, name)
                gt = self._live(table.name) if table else None
                replica = gt.replicas.get(call.region) if gt else None
                if replica is not None and replica.status != "ACTIVE":
                    return json_error(
                        "ResourceNotFoundException", f"Requested resource not found: Table: {name} not found"
                    )
        return None

    def _replica_updates(self, region: str, body: dict[str, Any]) -> Response | None:
        """Validate and start ReplicaUpdates; on success moto answers and `_observe` adds Replicas."""
        name = body.get("TableName", "")
        source = self._lookup(region, name)
        if source is None:
            return json_error(
                "ResourceNotFoundException", f"Requested resource not found: Table: {name} not found"
            )
        updates = body["ReplicaUpdates"]
        if len(updates) != 1 or len(updates[0]) != 1:
            return json_error(
                "ValidationException",
                "One or more parameter values were invalid: only one replica can be created, updated "
                "or deleted per UpdateTable request",
            )
        kind, spec = next(iter(updates[0].items()))
        target = (spec or {}).get("RegionName", "")
        if target == region:
            return json_error("ValidationException", _LOCAL_REGION_ERROR)
        if target not in self._regions:
            return json_error(
                "ValidationException", f"1 validation error detected: Invalid AWS region: {target}"
            )
        gt = self._live(source.name)
        if gt is not None and gt.busy():
            return _in_use(source.name)
        if kind == "Create":
            if (gt is not None and target in gt.replicas) or source.name in self._backend(target).tables:
                return json_error(
                    "ValidationException",
                    f"Failed to create a the new replica of table with name: '{source.name}' because one "
                    "or more replicas already existed as tables.",
                )
            refused = self._replica_prerequisites(source, region, spec or {})
            if refused is not None:
                return refused
            self._create_replica(gt, source, region, target, kms_key=(spec or {}).get("KMSMasterKeyId"))
            return None
        if gt is None or target not in gt.replicas:
            return json_error("ValidationException", _REPLICA_NOT_FOUND)
        if kind == "Delete":
            replica = gt.replicas[target]
            replica.status, replica.ready_at = "DELETING", time.monotonic() + self._delete_s
            self._truth.record("dynamodb.replica", table=gt.name, region=target, status="DELETING")
        return None  # "Update": per-replica settings are not simulated; accepted as AWS does

    def _replica_prerequisites(self, source: Table, region: str, spec: dict[str, Any]) -> Response | None:
        """What AWS refuses before adding a replica (observed on AWS, globaltables prerequisites):

        - a table encrypted with a customer managed KMS key: every new replica names its own key
          ("One or more parameter values were invalid: KMSMasterKeyId must be specified for each
          replica.");
        - write capacity must be on-demand or auto scaled ("Table write capacity should either be
          Pay-Per-Request or AutoScaled."): a provisioned table needs an Application Auto Scaling
          target *and* a scaling policy on dynamodb:table:WriteCapacityUnits.
        """
        sse = source.sse_specification or {}
        customer_key = _customer_managed(region, str(sse.get("KMSMasterKeyId") or ""))
        if sse.get("Enabled") and customer_key and not spec.get("KMSMasterKeyId"):
            return json_error(
                "ValidationException",
                "One or more parameter values were invalid: "
                "KMSMasterKeyId must be specified for each replica.",
            )
        if source.billing_mode != "PAY_PER_REQUEST" and not _write_autoscaled(region, source.name):
            return json_error(
                "ValidationException", "Table write capacity should either be Pay-Per-Request or AutoScaled."
            )
        return None

    def _create_replica(
        self, gt: _GlobalTable | None, source: Table, region: str, target: str, *, kms_key: str | None = None
    ) -> None:
        if gt is None:
            gt = self._tables[source.name] = _GlobalTable(source.name)
            gt.replicas[region] = _Replica(region, "ACTIVE", source)
        # 2019.11.21 turns Streams on (NEW_AND_OLD_IMAGES) for the replication it runs itself.
        streams = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
        if not (source.stream_specification or {}).get("StreamEnabled"):
            source.set_stream_specification(dict(streams))
        provisioned = source.billing_mode != "PAY_PER_REQUEST"
        throughput = (
            {k: source.throughput[k] for k in ("ReadCapacityUnits", "WriteCapacityUnits")}
            if provisioned
            else None
        )
        gsis = [
            {
                "IndexName": gsi.name,
                "KeySchema": copy.deepcopy(gsi.schema),
                "Projection": copy.deepcopy(gsi.projection),
                **({"ProvisionedThroughput": copy.deepcopy(gsi.throughput)} if provisioned else {}),
            }
            for gsi in source.global_indexes
        ]
        lsis = [
            {
                "IndexName": i.name,
                "KeySchema": copy.deepcopy(i.schema),
                "Projection": copy.deepcopy(i.projection),
            }
            for i in source.indexes
        ]
        replica = self._backend(target).create_table(
            source.name,
            schema=copy.deepcopy(source.schema),
            throughput=throughput,
            attr=copy.deepcopy(source.attr),
            global_indexes=gsis,
            indexes=lsis,
            streams=dict(streams),
            billing_mode=source.billing_mode or "PROVISIONED",
            sse_specification={"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": kms_key}
            if kms_key
            else None,
            tags=[],
            deletion_protection_enabled=False,
            warm_throughput=None,
        )
        for item in source.all_items():  # the initial sync; later writes queue until ACTIVE
            replica.put_item(copy.deepcopy(item.to_json()["Attributes"]))
        gt.replicas[target] = _Replica(target, "CREATING", replica, time.monotonic() + self._create_s)
        self._truth.record("dynamodb.replica", table=gt.name, region=target, status="CREATING", source=region)

    # -- observer: enqueue replicated writes, describe the global table --------------------------

    def _observe(self, call: AwsCall, status: int, body: bytes) -> bytes | None:
        op = call.target
        if status != 200:
            return None
        if op in _WRITE_OPS:
            if self._tables:
                self._enqueue(call.region, op, call.json())
            return None
        if op == "DeleteTable":
            self._on_deleted(call.region, call.json().get("TableName", ""))
            return None
        if op in ("DescribeTable", "UpdateTable"):
            return self._describe(call.region, body, "Table" if op == "DescribeTable" else "TableDescription")
        return None

    def _enqueue(self, region: str, op: str, body: dict[str, Any]) -> None:
        written_at = time.time()
        due = time.monotonic() + self._lag
        with self._lock:
            for name, attrs in _written_keys(op, body):
                table = self._lookup(region, name)
                gt = self._live(table.name) if table else None
                if table is None or gt is None or region not in gt.replicas:
                    continue
                key = {a: attrs[a] for a in table.table_key_attrs if a in attrs}
                key_id = json.dumps(key, sort_keys=True)
                self._last_write[(gt.name, region, key_id)] = written_at
                for target, replica in gt.replicas.items():
                    if target != region and replica.status in ("CREATING", "ACTIVE"):
                        self._queues[(gt.name, region, target)].append(_Pending(due, key, key_id, written_at))

    def _on_deleted(self, region: str, name_or_arn: str) -> None:
        """DeleteTable on a replica removes that replica from the global table, as on AWS."""
        name = name_or_arn.rsplit("/", 1)[-1]
        with self._lock:
            gt = self._tables.get(name)
            if gt is not None and region in gt.replicas:
                self._forget_replica(gt, region)
                self._truth.record("dynamodb.replica", table=name, region=region, status="DELETED")
                self._live(name)

    def _describe(self, region: str, body: bytes, key: str) -> bytes | None:
        try:
            doc = json.loads(body)
            desc = doc[key]
        except (ValueError, KeyError):
            return None
        with self._lock:
            gt = self._live(desc.get("TableName", ""))
            own = gt.replicas.get(region) if gt else None
            if gt is None or own is None:
                return None
            if own.status != "ACTIVE":
                desc["TableStatus"] = own.status
            else:
                desc["TableStatus"] = "UPDATING" if gt.busy() else "ACTIVE"
            desc["GlobalTableVersion"] = GLOBAL_TABLE_VERSION
            desc["Replicas"] = [
                {"RegionName": r, "ReplicaStatus": replica.status}
                for r, replica in sorted(gt.replicas.items())
                if r != region
            ]
        return json.dumps(doc).encode()

    # -- replication loop ------------------------------------------------------------------------

    def _paused(self, link: Link) -> bool:
        table, source, target = link
        return bool(self._holds.get((table, target, "in")) or self._holds.get((table, source, "out")))

    def _replicate(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._advance_replicas(now)
            for link, queue in list(self._queues.items()):
                gt = self._tables.get(link[0])
                if gt is None or link[1] not in gt.replicas or link[2] not in gt.replicas:
                    del self._queues[link]
                    continue
                receiver = gt.replicas[link[2]]
                if receiver.status == "DELETING":
                    queue.clear()
                if receiver.status != "ACTIVE" or self._paused(link):
                    continue
                while queue and queue[0].due <= now:
                    self._apply(gt, link, queue.popleft())

    def _advance_replicas(self, now: float) -> None:
        for gt in list(self._tables.values()):
            for region, replica in list(gt.replicas.items()):
                if replica.status == "ACTIVE" or replica.ready_at > now:
                    continue
                if replica.status == "CREATING":
                    replica.status = "ACTIVE"
                    self._truth.record("dynamodb.replica", table=gt.name, region=region, status="ACTIVE")
                elif replica.status == "DELETING":
                    backend = self._backend(region)
                    if backend.tables.get(gt.name) is replica.table:
                        backend.tables.pop(gt.name, None)
                    self._forget_replica(gt, region)
                    self._truth.record("dynamodb.replica", table=gt.name, region=region, status="DELETED")
            self._live(gt.name)

    def _apply(self, gt: _GlobalTable, link: Link, pending: _Pending) -> None:
        """Copy the source's current item (or its absence) to the receiver, last writer wins."""
        name, source_region, target_region = link
        lag = time.time() - pending.write_ts
        self._observed[link].append(lag)
        if self._last_write.get((name, target_region, pending.key_id), 0.0) > pending.write_ts:
            return  # the receiver has a newer write of its own for this key
        source, target = gt.replicas[source_region].table, gt.replicas[target_region].table
        hash_key = DynamoType(pending.key[source.hash_key_attr])
        range_key = DynamoType(pending.key[source.range_key_attr]) if source.range_key_attr else None
        current = source.get_item(hash_key, range_key)
        if current is None:
            target.delete_item(hash_key, range_key)
        else:
            target.put_item(copy.deepcopy(current.to_json()["Attributes"]))
        self._last_write[(name, target_region, pending.key_id)] = pending.write_ts
        self._truth.record(
            "dynamodb.replicated",
            table=name,
            source=source_region,
            target=target_region,
            key=pending.key,
            lag_s=round(lag, 4),
        )

    # -- CloudWatch ------------------------------------------------------------------------------

    def _latency_datum(self, link: Link, now: float) -> dict[str, Any] | None:
        """ReplicationLatency for one link this period, in AWS milliseconds, or None.

        Paused with writes waiting: the age of the oldest, so the lag visibly grows. Items
        applied: their latency statistics. Idle: no datapoint at all. The metric is "the elapsed
        time between when an item is written to a replica table, and when that item appears in
        another replica" (V2globaltables_monitoring): with no item written there is nothing to
        measure, and product code must read a gap as "no data", not as zero lag.
        """
        queue = self._queues.get(link)
        observed = self._observed.pop(link, [])
        datum: dict[str, Any] = {
            "MetricName": METRIC_NAME,
            "Dimensions": [
                {"Name": "TableName", "Value": link[0]},
                {"Name": "ReceivingRegion", "Value": link[2]},
            ],
            "Unit": "Milliseconds",
        }
        if queue and self._paused(link):
            datum["Value"] = self._aws_ms(now - queue[0].write_ts)
        elif observed:
            values = [self._aws_ms(v) for v in observed]
            datum["StatisticValues"] = {
                "SampleCount": float(len(values)),
                "Sum": sum(values),
                "Minimum": min(values),
                "Maximum": max(values),
            }
        else:
            return None
        return datum

    def _aws_ms(self, real_s: float) -> float:
        return round(real_s * 1000.0, 3)

    def _publish_metrics(self) -> None:
        if self._endpoint_url is None:
            return
        now = time.time()
        by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
        with self._lock:
            for gt in list(self._tables.values()):
                active = [r for r, replica in gt.replicas.items() if replica.status == "ACTIVE"]
                for source in active:
                    for target in active:
                        if source != target:
                            datum = self._latency_datum((gt.name, source, target), now)
                            if datum is not None:
                                by_source[source].append(datum)
        for region, data in by_source.items():
            self._cloudwatch.put(region, METRIC_NAMESPACE, data)

    # -- control routes --------------------------------------------------------------------------

    def _control_pause(self, call: AwsCall) -> Response:
        return self._control(call, pause=True)

    def _control_resume(self, call: AwsCall) -> Response:
        return self._control(call, pause=False)

    def _control(self, call: AwsCall, *, pause: bool) -> Response:
        try:
            req = call.json()
            table, region = str(req["table"]), str(req["region"])
        except (ValueError, KeyError, TypeError):
            return json_reply({"error": 'expected JSON {"table": ..., "region": ...}'}, status=400)
        if region not in self.replica_regions(table):
            return json_reply({"error": f"{table} has no replica in {region}"}, status=404)
        if pause:
            self.pause(table, region)
        else:
            self.resume(table, region)
        return json_reply({"table": table, "region": region, "paused": pause})


def _write_autoscaled(region: str, table: str) -> bool:
    """Whether Application Auto Scaling scales this table's write capacity (a target and a policy)."""
    from moto.applicationautoscaling.models import applicationautoscaling_backends

    backend = applicationautoscaling_backends[ACCOUNT_ID][region]
    resource, dimension = f"table/{table}", "dynamodb:table:WriteCapacityUnits"
    targets = backend.targets.get(dimension, {}) if isinstance(backend.targets, dict) else {}
    has_target = resource in targets
    has_policy = any(
        p.resource_id == resource and p.scalable_dimension == dimension for p in backend.policies.values()
    )
    return has_target and has_policy


def _customer_managed(region: str, key: str) -> bool:
    """Whether `key` is a customer managed KMS key (not alias/aws/dynamodb, DynamoDB's own)."""
    from moto.kms.models import kms_backends

    if not key:
        return False
    kms = kms_backends[ACCOUNT_ID][region]
    aws_managed = (
        kms.get_key_id_from_alias("alias/aws/dynamodb") if kms.alias_exists("alias/aws/dynamodb") else None
    )
    key_id = key.rsplit("/", 1)[-1]
    return key_id != aws_managed and key != "alias/aws/dynamodb"
