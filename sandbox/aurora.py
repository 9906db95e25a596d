"""Aurora global databases in the sandbox: switchover, failover and cross-region replication lag.

moto 5.2.5 stores global clusters and their members (in its us-east-1 backend, whatever region
the call names) but raises NotImplementedError for SwitchoverGlobalCluster and
FailoverGlobalCluster, ignores GlobalClusterIdentifier in DescribeGlobalClusters (so an unknown
identifier returns every global cluster instead of GlobalClusterNotFoundFault), and leaves no
writer when a global cluster is built from an existing cluster. This simulator answers those
calls on moto's own objects, so DescribeGlobalClusters and DescribeDBClusters keep agreeing:

- a switchover (planned, RPO 0) or failover (AllowDataLoss, unplanned) is accepted at once and
  completes `switch_after` real seconds later. Meanwhile the global cluster's Status is
  "switching-over" / "failing-over" and FailoverState walks pending -> switching-over /
  failing-over; at the end IsWriter flips, Status is "available" and FailoverState is gone
  (AWS: it is "empty unless a switchover or failover operation is scheduled or in progress");
- FailoverGlobalCluster follows the API reference: AllowDataLoss makes it a failover; without it
  (or with Switchover) it is a switchover; both together are InvalidParameterCombination;
- a secondary is refused as AWS refuses it: CreateDBCluster with GlobalClusterIdentifier for an
  encrypted global database without KmsKeyId ("For encrypted cross-region replica, kmsKeyId
  should be explicitly specified", InvalidParameterCombination), or with a database name, master
  user name or password (each refused with its own message, as AWS answers them: "Cannot specify
  database name for cross region replication cluster", "... user name ...", "... password ...";
  all InvalidParameterCombination); a named DB subnet group must exist in the region;
- a cluster with no DB instance cannot take over: a switchover or failover to it is refused
  (InvalidDBClusterStateFault; AWS's wording is not published, the code is what an AWS-validated
  LocalStack test records as the "invalid state" of a headless target);
- every secondary publishes AuroraGlobalDBReplicationLag (AWS/RDS, Milliseconds) with the
  dimensions DBClusterIdentifier and SourceRegion (Aurora's global-database labs: "the metrics
  group named DBClusterIdentifier, SourceRegion"), into its own region's CloudWatch; a consumer
  must find that dimension set (ListMetrics), not assume DBClusterIdentifier alone.
  `POST /_sandbox/aurora/lag` pins it.

Responses are serialized by moto's serializer against botocore's RDS model, so they parse as
AWS's GlobalCluster XML.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any

from moto.core.serialize import XFormedAttributePicker
from moto.core.serialize import get_serializer_class
from moto.core.utils import get_service_model
from moto.rds.models import DBCluster
from moto.rds.models import GlobalCluster
from moto.rds.models import RDSBackend
from moto.rds.models import rds_backends
from werkzeug.wrappers import Response

from sandbox.aws import ACCOUNT_ID
from sandbox.aws import AwsCall
from sandbox.aws import SandboxAwsApp
from sandbox.aws import json_reply
from sandbox.aws import query_error
from sandbox.clock import SandboxClock
from sandbox.simulator import Loop
from sandbox.simulator import LoopingSim
from sandbox.truth import GroundTruth

__all__ = ["AuroraSim", "create_primary_cluster"]

NAMESPACE = "AWS/RDS"
LAG_METRIC = "AuroraGlobalDBReplicationLag"
GLOBAL_REGION = "us-east-1"  # where moto keeps every global cluster
# A secondary inherits these from the primary; AWS refuses each with its own message.
_NOT_FOR_SECONDARIES = (
    ("DatabaseName", "database name"),
    ("MasterUsername", "user name"),
    ("MasterUserPassword", "password"),
)


@dataclass
class _Operation:
    """A switchover or failover in flight on one global cluster."""

    global_id: str
    kind: str  # switchover | failover
    from_arn: str
    to_arn: str
    running_at: float  # monotonic: FailoverState leaves "pending"
    done_at: float  # monotonic: the writer flips
    state: dict[str, Any]  # the FailoverState the global cluster shows while this is in flight

    @property
    def status(self) -> str:
        return "switching-over" if self.kind == "switchover" else "failing-over"


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _cluster_arn_parts(arn: str) -> tuple[str, str] | None:
    """(region, identifier) of `arn:aws:rds:<region>:<account>:cluster:<id>`."""
    parts = arn.split(":")
    if len(parts) == 7 and parts[2] == "rds" and parts[5] == "cluster":
        return parts[3], parts[6].lower()
    return None


def create_primary_cluster(rds: Any, cluster_id: str, kms_key: str) -> None:
    """A metadata-plane primary as Chalk's team creates it, through `rds` (a client of its region):
    an encrypted Aurora PostgreSQL 15.4 cluster (the customer managed key `kms_key`) and its
    writer instance."""
    rds.create_db_cluster(
        DBClusterIdentifier=cluster_id,
        Engine="aurora-postgresql",
        EngineVersion="15.4",
        MasterUsername="chalk",
        MasterUserPassword="sandbox-only-password",
        StorageEncrypted=True,
        KmsKeyId=kms_key,
    )
    rds.create_db_instance(
        DBInstanceIdentifier=f"{cluster_id}-1",
        DBClusterIdentifier=cluster_id,
        DBInstanceClass="db.r6g.large",
        Engine="aurora-postgresql",
    )


def _global_not_found(global_id: str) -> Response:
    return query_error("GlobalClusterNotFoundFault", f"Global cluster {global_id} not found.", status=404)


def _not_a_member(cluster_arn: str, gc: GlobalCluster) -> Response:
    return query_error(
        "DBClusterNotFoundFault",
        f"DBCluster {cluster_arn} is not a member of global cluster {gc.global_cluster_identifier}.",
        status=404,
    )


class AuroraSim(LoopingSim):
    """Switchover/failover and replication lag for Aurora global databases on top of moto's RDS."""

    def __init__(
        self,
        app: SandboxAwsApp,
        *,
        clock: SandboxClock,
        truth: GroundTruth,
        switch_after: float = 0.5,
        metric_period: float = 1.0,
        baseline_lag_ms: float = 90.0,
        account_id: str = ACCOUNT_ID,
        seed: int | None = None,
    ) -> None:
        self._clock = clock
        self._truth = truth
        self._switch_after = switch_after
        self._metric_period = metric_period
        self._baseline_lag = baseline_lag_ms
        self._account = account_id
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._operations: dict[str, _Operation] = {}  # by lower-cased global cluster id
        self._lag_overrides: dict[str, float] = {}  # by lower-cased DB cluster id
        super().__init__()
        app.intercept("rds", self._intercept)
        app.observe("rds", self._observe)
        app.control("POST", "/_sandbox/aurora/lag", self._control_lag)

    # -- lifecycle ---------------------------------------------------------------------------

    def loops(self) -> list[Loop]:
        return [
            ("aurora-state", self._advance, lambda: 0.05),
            ("aurora-metrics", self._publish_metrics, lambda: self._metric_period),
        ]

    # -- moto access -------------------------------------------------------------------------

    def _backend(self, region: str) -> RDSBackend:
        return rds_backends[self._account][region]

    def _global_clusters(self) -> Any:
        return self._backend(GLOBAL_REGION).global_clusters

    def _cluster_by_arn(self, arn: str) -> DBCluster | None:
        parts = _cluster_arn_parts(arn)
        if parts is None:
            return None
        region, ident = parts
        return self._backend(region).clusters.get(ident)

    def _resolve_cluster(self, ident: str, region: str) -> DBCluster | None:
        """A DB cluster by ARN (any region) or by identifier in the request's region."""
        if ident.startswith("arn:"):
            return self._cluster_by_arn(ident)
        return self._backend(region).clusters.get(ident.lower())

    @staticmethod
    def _reply(action: str, result: dict[str, Any]) -> Response:
        """Serialize `result` as AWS's XML for `action`, exactly as moto answers its own calls."""
        operation = get_service_model("rds").operation_model(action)
        serializer = get_serializer_class("rds", "query")(
            operation_model=operation, pretty_print=False, value_picker=XFormedAttributePicker()
        )
        out = serializer.serialize(result)
        return Response(out["body"], status=out["status_code"], headers=dict(out["headers"]))

    # -- state machine -----------------------------------------------------------------------

    def _advance(self) -> None:
        """Apply every phase change that is due; called by the ticker and before each RDS call."""
        now = time.monotonic()
        with self._lock:
            for key, op in list(self._operations.items()):
                gc = self._global_clusters().get(op.global_id)
                if gc is None or getattr(gc, "failover_state", None) is not op.state:
                    del self._operations[key]  # deleted, or moto was reset
                    continue
                if now >= op.done_at:
                    self._finish(gc, op)
                    del self._operations[key]
                elif now >= op.running_at:
                    op.state["Status"] = op.status

    def _finish(self, gc: GlobalCluster, op: _Operation) -> None:
        old, new = self._cluster_by_arn(op.from_arn), self._cluster_by_arn(op.to_arn)
        if old is not None:
            old.is_writer = False
        if new is not None:
            new.is_writer = True
        gc.status = "available"
        # moto's model has no FailoverState; its serializer picks up the attribute we add.
        setattr(gc, "failover_state", None)  # noqa: B010
        self._truth.record(
            "aurora.writer",
            global_cluster=gc.global_cluster_identifier,
            writer_arn=op.to_arn,
            previous_writer_arn=op.from_arn,
            operation=op.kind,
        )

    # -- request routing ---------------------------------------------------------------------

    def _intercept(self, call: AwsCall) -> Response | None:
        self._advance()
        action = call.action
        if action == "SwitchoverGlobalCluster":
            return self._switch(call, kind="switchover")
        if action == "FailoverGlobalCluster":
            allow, switch = call.form.get("AllowDataLoss"), call.form.get("Switchover")
            if allow is not None and switch is not None:
                return query_error(
                    "InvalidParameterCombination",
                    "AllowDataLoss and Switchover can't be specified together.",
                )
            return self._switch(call, kind="failover" if _is_true(allow) else "switchover")
        if action == "DescribeGlobalClusters":
            return self._describe(call)
        if action == "RemoveFromGlobalCluster":
            return self._remove(call)
        if action == "DeleteDBCluster":
            return self._guard_delete(call)
        if action == "CreateDBCluster" and call.form.get("GlobalClusterIdentifier"):
            return self._guard_secondary(call)
        return None

    def _guard_secondary(self, call: AwsCall) -> Response | None:
        """Refuse a cross-region secondary AWS would refuse (see the module docstring)."""
        form = call.form
        with self._lock:
            gc = self._global_clusters().get(form.get("GlobalClusterIdentifier", ""))
            writer = next((m for m in gc.members if m.is_writer), None) if gc is not None else None
        if writer is None or _cluster_arn_parts(writer.db_cluster_arn) == (
            call.region,
            writer.db_cluster_identifier,
        ):
            return None  # the first member, or one in the writer's own region
        for parameter, what in _NOT_FOR_SECONDARIES:
            if form.get(parameter):
                return query_error(
                    "InvalidParameterCombination",
                    f"Cannot specify {what} for cross region replication cluster",
                )
        if bool(getattr(writer, "storage_encrypted", False)) and not form.get("KmsKeyId"):
            return query_error(
                "InvalidParameterCombination",
                "For encrypted cross-region replica, kmsKeyId should be explicitly specified",
            )
        group = form.get("DBSubnetGroupName")
        if group and group not in self._backend(call.region).subnet_groups:
            return query_error("DBSubnetGroupNotFoundFault", f"DBSubnetGroup {group} not found.", status=404)
        return None

    def _observe(self, call: AwsCall, status: int, body: bytes) -> bytes | None:
        if status != 200:
            return None
        if call.action == "DeleteDBCluster":
            # moto detaches a deleted cluster only when it lives in us-east-1; drop the others too.
            with self._lock:
                for gc in self._global_clusters().values():
                    gc.members[:] = [m for m in gc.members if self._cluster_by_arn(m.db_cluster_arn) is m]
            return None
        if call.action != "CreateGlobalCluster" or not call.form.get("SourceDBClusterIdentifier"):
            return None
        # CreateGlobalCluster from an existing cluster: moto attaches it without making it the writer.
        with self._lock:
            gc = self._global_clusters().get(call.form.get("GlobalClusterIdentifier", ""))
            if gc is None or not gc.members:
                return None
            source = gc.members[0]
            source.is_writer = True
            source.global_cluster_identifier = gc.global_cluster_identifier
            return self._reply("CreateGlobalCluster", {"GlobalCluster": gc}).get_data()

    def _switch(self, call: AwsCall, *, kind: str) -> Response:
        global_id = call.form.get("GlobalClusterIdentifier", "")
        target_id = call.form.get("TargetDbClusterIdentifier", "")
        with self._lock:
            gc = self._global_clusters().get(global_id)
            if gc is None:
                return _global_not_found(global_id)
            target = self._resolve_cluster(target_id, call.region)
            if target is None:
                return query_error("DBClusterNotFoundFault", f"DBCluster {target_id} not found.", status=404)
            if target not in gc.members:
                return _not_a_member(target.db_cluster_arn, gc)
            busy = self._busy(gc)
            if busy is not None:
                return busy
            if not self._has_instance(target):
                return query_error(
                    "InvalidDBClusterStateFault",
                    f"DBCluster {target.db_cluster_arn} has no DB instances: a global database cannot switch "
                    "over or fail over to a cluster without a DB instance.",
                )
            if target.is_writer:
                return query_error(
                    "InvalidParameterValue",
                    f"DBCluster {target.db_cluster_arn} is already the primary cluster of global cluster "
                    f"{gc.global_cluster_identifier}; choose a secondary cluster.",
                )
            writer = next((m for m in gc.members if m.is_writer), None)
            now = time.monotonic()
            from_arn = writer.db_cluster_arn if writer is not None else ""
            op = _Operation(
                global_id=gc.global_cluster_identifier,
                kind=kind,
                from_arn=from_arn,
                to_arn=target.db_cluster_arn,
                running_at=now + self._switch_after * 0.2,
                done_at=now + self._switch_after,
                state={
                    "Status": "pending",
                    "FromDbClusterArn": from_arn,
                    "ToDbClusterArn": target.db_cluster_arn,
                    "IsDataLossAllowed": kind == "failover",
                },
            )
            gc.status = op.status
            gc.failover_state = op.state
            self._operations[gc.global_cluster_identifier.lower()] = op
            self._truth.record(
                "aurora.operation",
                global_cluster=gc.global_cluster_identifier,
                operation=kind,
                from_arn=op.from_arn,
                to_arn=op.to_arn,
            )
            return self._reply(call.action, {"GlobalCluster": gc})

    def _has_instance(self, cluster: DBCluster) -> bool:
        parts = _cluster_arn_parts(cluster.db_cluster_arn)
        if parts is None:
            return False
        region, ident = parts
        return any(
            getattr(i, "db_cluster_identifier", None) == ident
            for i in self._backend(region).databases.values()
        )

    def _busy(self, gc: GlobalCluster) -> Response | None:
        if gc.global_cluster_identifier.lower() in self._operations or gc.status != "available":
            return query_error(
                "InvalidGlobalClusterStateFault",
                f"Global cluster {gc.global_cluster_identifier} is in {gc.status} state; "
                "another switchover or failover is in progress.",
            )
        return None

    def _refuse_leaving(self, gc: GlobalCluster, cluster: DBCluster, refusal: str) -> Response | None:
        """Why `cluster` may not leave `gc` now (detached or deleted), or None: no member leaves
        during a switchover or failover, and the primary not while it has secondaries (`refusal`:
        AWS's wording for the call)."""
        busy = self._busy(gc)
        if busy is not None:
            return busy
        if cluster.is_writer and len(gc.members) > 1:
            return query_error("InvalidGlobalClusterStateFault", refusal)
        return None

    def _remove(self, call: AwsCall) -> Response:
        """RemoveFromGlobalCluster ("detach"): the cluster becomes a standalone read-write cluster."""
        global_id = call.form.get("GlobalClusterIdentifier", "")
        member_arn = call.form.get("DbClusterIdentifier", "")
        if _cluster_arn_parts(member_arn) is None:
            return query_error("InvalidParameterValue", f"Malformed db cluster arn {member_arn}.")
        with self._lock:
            gc = self._global_clusters().get(global_id)
            if gc is None:
                return _global_not_found(global_id)
            cluster = self._cluster_by_arn(member_arn)
            if cluster is None or cluster not in gc.members:
                return _not_a_member(member_arn, gc)
            refused = self._refuse_leaving(
                gc,
                cluster,
                "Unable to remove the primary cluster of a global cluster while there are other "
                "global cluster members.",
            )
            if refused is not None:
                return refused
            gc.members.remove(cluster)
            cluster.is_writer = False
            cluster.global_cluster_identifier = None
            self._truth.record(
                "aurora.detached", global_cluster=gc.global_cluster_identifier, cluster_arn=member_arn
            )
            return self._reply("RemoveFromGlobalCluster", {"GlobalCluster": gc})

    def _guard_delete(self, call: AwsCall) -> Response | None:
        """AWS refuses to delete a global database's primary while it still has secondaries."""
        ident = call.form.get("DBClusterIdentifier", "")
        with self._lock:
            cluster = self._resolve_cluster(ident, call.region)
            if cluster is None:
                return None
            for gc in self._global_clusters().values():
                if cluster not in gc.members:
                    continue
                refused = self._refuse_leaving(
                    gc,
                    cluster,
                    "Unable to delete cluster that is a primary member of global cluster while there are "
                    "other global cluster members",
                )
                if refused is not None:
                    return refused
        return None

    def _describe(self, call: AwsCall) -> Response:
        form = call.form
        global_id = form.get("GlobalClusterIdentifier")
        regions: set[str] | None = None
        i = 1
        while f"Filters.Filter.{i}.Name" in form:
            name = form[f"Filters.Filter.{i}.Name"]
            if name != "region":
                return query_error("InvalidParameterValue", f"Unrecognized filter name: {name}.")
            values = {v for k, v in form.items() if k.startswith(f"Filters.Filter.{i}.Values.")}
            regions = values if regions is None else regions & values
            i += 1
        with self._lock:
            if global_id:
                gc = self._global_clusters().get(global_id)
                if gc is None:
                    return _global_not_found(global_id)
                found = [gc]
            else:
                found = list(self._global_clusters().values())
            if regions is not None:
                found = [
                    gc
                    for gc in found
                    if any((_cluster_arn_parts(m.db_cluster_arn) or ("",))[0] in regions for m in gc.members)
                ]
            try:
                max_records = int(form.get("MaxRecords", "100"))
                start = int(form.get("Marker", "0") or "0")
            except ValueError:
                return query_error("InvalidParameterValue", "Invalid MaxRecords or Marker.")
            if not 20 <= max_records <= 100:
                return query_error("InvalidParameterValue", "MaxRecords must be between 20 and 100.")
            page = found[start : start + max_records]
            result: dict[str, Any] = {"GlobalClusters": page}
            if start + max_records < len(found):
                result["Marker"] = str(start + max_records)
            return self._reply("DescribeGlobalClusters", result)

    # -- replication lag ---------------------------------------------------------------------

    def _control_lag(self, call: AwsCall) -> Response:
        """Operator route: pin a secondary's AuroraGlobalDBReplicationLag (null returns to baseline)."""
        try:
            body = call.json()
            ident = str(body["db_cluster_identifier"]).lower()
        except (ValueError, KeyError, TypeError):
            return json_reply({"error": "body must be JSON with db_cluster_identifier"}, status=400)
        lag = body.get("lag_ms")
        with self._lock:
            known = any(
                ident == (_cluster_arn_parts(m.db_cluster_arn) or ("", ""))[1]
                for gc in self._global_clusters().values()
                for m in gc.members
            )
            if not known:
                return json_reply({"error": f"{ident} is not a member of any global cluster"}, status=404)
            if lag is None:
                self._lag_overrides.pop(ident, None)
            else:
                self._lag_overrides[ident] = float(lag)
        self._truth.record("aurora.lag", db_cluster_identifier=ident, lag_ms=lag)
        return json_reply({"db_cluster_identifier": ident, "lag_ms": lag})

    def _publish_metrics(self) -> None:
        if self._endpoint_url is None:
            return
        self._advance()
        now = datetime.now(UTC)
        by_region: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            members: set[str] = set()
            for gc in list(self._global_clusters().values()):
                for member in gc.members:
                    parts = _cluster_arn_parts(member.db_cluster_arn)
                    if parts is None:
                        continue
                    region, ident = parts
                    current = self._backend(region).clusters.get(ident)
                    if current is None or current is not member:
                        continue  # deleted since it joined
                    members.add(ident)
                    if current.is_writer:
                        continue
                    writer = next((m for m in gc.members if m.is_writer), None)
                    source_region = (_cluster_arn_parts(writer.db_cluster_arn) or ("",))[0] if writer else ""
                    lag = self._lag_overrides.get(ident)
                    if lag is None:
                        lag = max(1.0, self._baseline_lag * (1 + self._rng.uniform(-0.3, 0.3)))
                    by_region.setdefault(region, []).append(
                        {
                            "MetricName": LAG_METRIC,
                            "Dimensions": [
                                {"Name": "DBClusterIdentifier", "Value": ident},
                                {"Name": "SourceRegion", "Value": source_region},
                            ],
                            "Timestamp": now,
                            "Value": lag,
                            "Unit": "Milliseconds",
                        }
                    )
            for ident in set(self._lag_overrides) - members:
                del self._lag_overrides[ident]  # a pin dies with its cluster (or a moto reset)
        for region, data in by_region.items():
            self._cloudwatch.put(region, NAMESPACE, data)
