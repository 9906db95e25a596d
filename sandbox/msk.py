"""Amazon MSK in the sandbox: clusters that become ACTIVE, bootstrap brokers, MSK Replicator and its metrics.

moto 5.2.5 keeps every MSK cluster CREATING, answers an unknown cluster ARN with a bare 500, and has
no GetBootstrapBrokers and no Replicator API. This simulator adds them on top of moto's own cluster
store (so DescribeCluster, ListClusters and their v2 twins all agree) and follows the Kafka API
shapes in botocore's model:

- a cluster turns ACTIVE `activate_after` real seconds after CreateCluster/CreateClusterV2;
- GetBootstrapBrokers answers per authentication mode (IAM 9098, SCRAM 9096, TLS 9094,
  plaintext 9092), and refuses a cluster that is not ACTIVE, as AWS does;
- a replicator is created in the TARGET cluster's region (AWS: "the replicator is created in the
  AWS Region of the target cluster"), goes CREATING -> RUNNING, UPDATING -> RUNNING after
  UpdateReplicationInfo (guarded by CurrentVersion), and DELETING -> gone;
- a replicator's prerequisites are checked as AWS documents them (msk-replicator-prepare-cluster):
  IAM access control on both clusters, at least three brokers, and for a cross-region replicator
  multi-VPC private connectivity with IAM on the source (UpdateConnectivity) and a cluster policy
  on the source allowing `kafka.amazonaws.com` kafka:CreateVpcConnection, GetBootstrapBrokers and
  DescribeClusterV2 (PutClusterPolicy). A replicator missing one is accepted, stays CREATING for
  a while and ends FAILED with StateInfo `{code: InvalidInput.InvalidKafkaCluster, message}`, as
  AWS's troubleshooting guide describes ("MSK Replicator state goes from CREATING to FAILED");
  the IAM and broker-count messages are AWS's (re:Post knowledge center), the other two follow
  their form since AWS does not publish them;
- GetClusterPolicy of a cluster without a policy is NotFoundException (moto answers 200 with
  empty strings); UpdateConnectivity and DescribeClusterV2 keep the connectivity settings;
- a RUNNING replicator copies records (sandbox/kafka_log.py) from the source cluster's topics to
  the target's under IDENTICAL names after its replication latency, from EARLIEST or LATEST as
  configured, and synchronises the consumer groups' offsets;
- every RUNNING replicator publishes `MessageLag` (Count: records not yet copied) in namespace
  AWS/Kafka by ReplicatorName into its region's CloudWatch, and `ReplicationLatency`
  (Milliseconds) only for periods in which it copied records, as latency is a property of
  records that were replicated. The operator can pin both over a guard with
  `POST /_sandbox/msk/lag`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import string
import threading
import time
import uuid
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from moto.kafka.models import FakeKafkaCluster
from moto.kafka.models import KafkaBackend
from moto.kafka.models import kafka_backends
from werkzeug.wrappers import Response

from sandbox.aws import ACCOUNT_ID
from sandbox.aws import AwsCall
from sandbox.aws import SandboxAwsApp
from sandbox.aws import json_reply
from sandbox.clock import SandboxClock
from sandbox.kafka_log import KafkaLog
from sandbox.simulator import Loop
from sandbox.simulator import LoopingSim
from sandbox.truth import GroundTruth

__all__ = ["REPLICATOR_POLICY_ACTIONS", "MskSim", "prepare_for_replicator"]

REPLICATORS_PATH = "/replication/v1/replicators"
NAMESPACE = "AWS/Kafka"
_NAME_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,127}$")
_ROLE_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")
# Sub-resources of a cluster ARN in the Kafka API paths; anything else after /clusters/ is the ARN.
_CLUSTER_SUBRESOURCES = (
    "/bootstrap-brokers",
    "/policy",
    "/nodes",
    "/operations",
    "/configuration",
    "/scram-secrets",
    "/client-vpc-connections",
    "/client-vpc-connection",
    "/connectivity",
    "/version",
    "/reboot-broker",
    "/nodes/count",
    "/nodes/storage",
    "/nodes/type",
    "/monitoring",
    "/security",
    "/storage-mode",
    "/rebalancing",
)


@dataclass(frozen=True)
class _ClusterConfig:
    """What decides a cluster's broker strings, taken from the create request."""

    serverless: bool
    brokers: int
    iam: bool
    scram: bool
    tls: bool  # mutual TLS, or unauthenticated access over TLS
    unauthenticated: bool
    client_broker: str  # TLS | TLS_PLAINTEXT | PLAINTEXT


@dataclass
class _Replicator:
    arn: str
    name: str
    region: str
    description: str | None
    kafka_clusters: list[dict[str, Any]]
    replication_info: list[dict[str, Any]]
    role_arn: str
    source_arn: str
    target_arn: str
    version: str
    created: datetime
    state: str
    due: float  # monotonic time of the next state change
    world: dict[str, FakeKafkaCluster]  # moto's cluster store at creation: a reset replaces it
    latency_ms: float | None = None  # an operator's pin
    message_lag: float | None = None  # an operator's pin
    extra: dict[str, Any] = field(default_factory=dict)
    failure: tuple[str, str] | None = None  # (code, message) it will end FAILED with
    copied: dict[str, int] = field(default_factory=dict)  # topic -> next source offset to copy
    latencies_ms: list[float] = field(default_factory=list)  # of records copied this metric period

    @property
    def topic_patterns(self) -> list[str]:
        return list(self.replication_info[0]["topicReplication"].get("topicsToReplicate") or [])

    @property
    def group_patterns(self) -> list[str]:
        return list(
            self.replication_info[0]["consumerGroupReplication"].get("consumerGroupsToReplicate") or []
        )


_SERVERLESS = _ClusterConfig(
    serverless=True, brokers=3, iam=True, scram=False, tls=False, unauthenticated=False, client_broker="TLS"
)


def _error(code: str, status: int, message: str, parameter: str | None = None) -> Response:
    """A restJson error as MSK sends it: the code in x-amzn-ErrorType, details in the body."""
    body: dict[str, Any] = {"message": message}
    if parameter:
        body["invalidParameter"] = parameter
    resp = json_reply(body, status=status, content_type="application/json")
    resp.headers["x-amzn-ErrorType"] = code
    return resp


def _bad_request(message: str, parameter: str | None = None) -> Response:
    return _error("BadRequestException", 400, message, parameter)


def _not_found(message: str, parameter: str | None = None) -> Response:
    return _error("NotFoundException", 404, message, parameter)


def _active(
    cluster: FakeKafkaCluster | None, arn: str, parameter: str, not_active: str
) -> FakeKafkaCluster | Response:
    """The cluster a call needs ACTIVE, or the call's refusal: NotFound, or `not_active` (AWS's
    wording for the call, formatted with the cluster's `arn` and `state`)."""
    if cluster is None:
        return _not_found(f"Cluster {arn} not found.", parameter)
    if cluster.state != "ACTIVE":
        return _bad_request(not_active.format(arn=arn, state=cluster.state), parameter)
    return cluster


def _ok(payload: dict[str, Any], status: int = 200) -> Response:
    return json_reply(payload, status=status, content_type="application/json")


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _short_id(arn: str, n: int = 6) -> str:
    """A stable DNS-safe id for an ARN (AWS hostnames carry one per cluster)."""
    return hashlib.sha256(arn.encode()).hexdigest()[:n]


def _new_version() -> str:
    """Replicator versions are opaque tokens that change on every update (optimistic locking)."""
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(14))


def _region_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[3] if len(parts) > 5 else ""


class MskSim(LoopingSim):
    """MSK cluster lifecycle, bootstrap brokers and MSK Replicator on top of moto's Kafka backend."""

    def __init__(
        self,
        app: SandboxAwsApp,
        *,
        clock: SandboxClock,
        truth: GroundTruth,
        activate_after: float = 0.2,
        replicator_ready_after: float = 0.3,
        replicator_delete_after: float = 0.2,
        metric_period: float = 1.0,
        baseline_latency_ms: float = 180.0,
        baseline_message_lag: float = 8.0,
        account_id: str = ACCOUNT_ID,
        seed: int | None = None,
        log: KafkaLog | None = None,
        fail_after: float | None = None,
    ) -> None:
        self._clock = clock
        self._truth = truth
        self.log = log or KafkaLog()
        self._fail_after = fail_after if fail_after is not None else replicator_ready_after * 3
        self._activate_after = activate_after
        self._ready_after = replicator_ready_after
        self._delete_after = replicator_delete_after
        self._metric_period = metric_period
        self._baseline_latency = baseline_latency_ms
        self._baseline_lag = baseline_message_lag
        self._account = account_id
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._pending_clusters: dict[str, float] = {}  # cluster ARN -> monotonic time it turns ACTIVE
        self._configs: dict[str, _ClusterConfig] = {}
        self._replicators: dict[str, _Replicator] = {}  # by ARN
        self._policies: dict[str, tuple[str, str]] = {}  # cluster ARN -> (policy JSON, version)
        self._vpc_iam: dict[str, bool] = {}  # cluster ARN -> multi-VPC connectivity with IAM on
        super().__init__()
        app.intercept("kafka", self._intercept)
        app.observe("kafka", self._observe)
        app.control("POST", "/_sandbox/msk/lag", self._control_lag)

    # -- lifecycle ---------------------------------------------------------------------------

    def loops(self) -> list[Loop]:
        return [
            ("msk-state", self._advance, lambda: 0.05),
            ("msk-replication", self._replicate, lambda: 0.02),
            ("msk-metrics", self._publish_metrics, lambda: self._metric_period),
        ]

    # -- moto access -------------------------------------------------------------------------

    def _backend(self, region: str) -> KafkaBackend:
        return kafka_backends[self._account][region]

    def _cluster(self, arn: str) -> FakeKafkaCluster | None:
        region = _region_of(arn)
        if not region:
            return None
        return self._backend(region).clusters.get(arn)

    # -- state machine -----------------------------------------------------------------------

    def _advance(self) -> None:
        """Apply every state change that is due; called by the ticker and before each request."""
        now = time.monotonic()
        with self._lock:
            for arn, due in list(self._pending_clusters.items()):
                if due > now:
                    continue
                del self._pending_clusters[arn]
                cluster = self._cluster(arn)
                if cluster is not None and cluster.state == "CREATING":
                    cluster.state = "ACTIVE"
                    self._truth.record(
                        "msk.cluster",
                        arn=arn,
                        name=cluster.cluster_name,
                        region=cluster.region_name,
                        state="ACTIVE",
                    )
            for arn, rep in list(self._replicators.items()):
                if self._backend(rep.region).clusters is not rep.world:
                    del self._replicators[arn]  # moto was reset: the replicator's world is gone
                    continue
                if rep.due > now:
                    continue
                if rep.state == "CREATING" and rep.failure is not None:
                    rep.state, rep.due = "FAILED", float("inf")
                    self._record(rep)
                elif rep.state in ("CREATING", "UPDATING"):
                    rep.state, rep.due = "RUNNING", float("inf")
                    self._record(rep)
                elif rep.state == "DELETING":
                    del self._replicators[arn]
                    self._backend(rep.region).tagger.delete_all_tags_for_resource(arn)
                    rep.state = "DELETED"
                    self._record(rep)

    def _record(self, rep: _Replicator) -> None:
        self._truth.record("msk.replicator", name=rep.name, state=rep.state, arn=rep.arn, region=rep.region)

    # -- the data path -------------------------------------------------------------------------

    def _replicate(self) -> None:
        """Copy what each RUNNING replicator's latency has let through; sync its groups' offsets."""
        now = time.time()
        with self._lock:
            running = [r for r in self._replicators.values() if r.state in ("RUNNING", "UPDATING")]
        for rep in running:
            latency_s = self._latency_ms(rep) / 1000.0
            for topic in self.log.topics(rep.source_arn):
                if not _matches(topic, rep.topic_patterns):
                    continue
                start = rep.copied.setdefault(topic, self._starting_offset(rep, topic))
                for record in self.log.read(rep.source_arn, topic, start):
                    if record.origin is not None and record.origin[0] == rep.target_arn:
                        # Replicated here from the target itself: with identical topic names MSK
                        # Replicator "uses Kafka headers to automatically avoid replicating data
                        # back to the topic it originated from" (msk-replicator-topic-naming).
                        rep.copied[topic] = record.offset + 1
                        continue
                    if record.produced_at + latency_s > now:
                        break
                    self.log.produce(
                        rep.target_arn,
                        topic,
                        record.value,
                        origin=(rep.source_arn, record.offset),
                        produced_at=record.produced_at,
                    )
                    rep.copied[topic] = record.offset + 1
                    rep.latencies_ms.append((now - record.produced_at) * 1000.0)
                for group in self.log.groups(rep.source_arn, topic):
                    if _matches(group, rep.group_patterns):
                        self.log.sync_group(rep.source_arn, rep.target_arn, topic, group)

    def _starting_offset(self, rep: _Replicator, topic: str) -> int:
        position = rep.replication_info[0]["topicReplication"].get("startingPosition") or {}
        return 0 if position.get("type") == "EARLIEST" else self.log.end_offset(rep.source_arn, topic)

    def _latency_ms(self, rep: _Replicator) -> float:
        if rep.latency_ms is not None:
            return rep.latency_ms
        return max(1.0, self._baseline_latency * (1 + self._rng.uniform(-0.25, 0.25)))

    def _message_lag(self, rep: _Replicator) -> float:
        if rep.message_lag is not None:
            return rep.message_lag
        return float(
            sum(
                self.log.end_offset(rep.source_arn, t)
                - rep.copied.get(t, self.log.end_offset(rep.source_arn, t))
                for t in self.log.topics(rep.source_arn)
                if _matches(t, rep.topic_patterns)
            )
        )

    def _prerequisite_failure(self, source: str, target: str) -> tuple[str, str] | None:
        """What AWS's replicator would fail on (msk-replicator-prepare-cluster), or None."""
        code = "InvalidInput.InvalidKafkaCluster"
        for arn in (source, target):
            cluster = self._cluster(arn)
            config = self._configs.get(arn) or (self._config_from_moto(cluster) if cluster else None)
            if config is None:
                continue
            if not config.iam:
                return code, f"IAM Auth is not enabled for the Amazon MSK Cluster {arn}"
            if not config.serverless and config.brokers < 3:
                return code, f"The specified Amazon MSK Cluster has less than 3 brokers. Cluster ARN: {arn}"
        if _region_of(source) == _region_of(target):
            return None  # same-region replication needs neither multi-VPC nor a cluster policy
        source_cluster = self._cluster(source)
        source_config = self._configs.get(source) or (
            self._config_from_moto(source_cluster) if source_cluster is not None else None
        )
        if source_config is not None and not source_config.serverless and not self._vpc_iam.get(source):
            return code, (
                "Multi-VPC private connectivity with IAM access control is not turned on for the source "
                f"Amazon MSK Cluster {source}"
            )
        if not _policy_allows_replicator(self._policies.get(source, ("", ""))[0], source):
            return code, (
                "The source Amazon MSK Cluster has no cluster policy allowing kafka.amazonaws.com "
                f"kafka:CreateVpcConnection, kafka:GetBootstrapBrokers and kafka:DescribeClusterV2: {source}"
            )
        return None

    # -- request routing ---------------------------------------------------------------------

    def _intercept(self, call: AwsCall) -> Response | None:
        self._advance()
        path = unquote(call.path)
        if path == REPLICATORS_PATH:
            if call.method == "POST":
                return self._create_replicator(call)
            if call.method == "GET":
                return self._list_replicators(call)
            return None
        if path.startswith(REPLICATORS_PATH + "/"):
            arn = path[len(REPLICATORS_PATH) + 1 :]
            if call.method == "PUT" and arn.endswith("/replication-info"):
                return self._update_replication_info(call, arn[: -len("/replication-info")])
            if call.method == "GET":
                return self._describe_replicator(call, arn)
            if call.method == "DELETE":
                return self._delete_replicator(call, arn)
            return None
        if path.startswith("/v1/tags/"):
            return self._replicator_tags(call, path[len("/v1/tags/") :])
        for prefix in ("/v1/clusters/", "/api/v2/clusters/"):
            if path.startswith(prefix):
                return self._cluster_call(call, path[len(prefix) :])
        return None

    def _observe(self, call: AwsCall, status: int, body: bytes) -> bytes | None:
        path = unquote(call.path)
        if status != 200:
            return None
        if call.method == "POST" and path in ("/v1/clusters", "/api/v2/clusters"):
            arn = json.loads(body or b"{}").get("clusterArn")
            if arn:
                with self._lock:
                    self._configs[arn] = self._config_from_request(call.json(), v2=path.startswith("/api/v2"))
                    self._pending_clusters[arn] = time.monotonic() + self._activate_after
            return None
        if call.method == "GET" and path.startswith("/api/v2/clusters/"):
            return self._describe_v2(path[len("/api/v2/clusters/") :], body)
        if call.method == "DELETE" and path.startswith("/v1/clusters/"):
            # AWS answers a delete with the cluster DELETING (moto: its state before the delete).
            payload = json.loads(body or b"{}")
            if "state" in payload:
                payload["state"] = "DELETING"
                return json.dumps(payload).encode()
        return None

    # -- clusters ----------------------------------------------------------------------------

    def _describe_v2(self, arn: str, body: bytes) -> bytes | None:
        """DescribeClusterV2 shows multi-VPC connectivity where AWS does: under the broker node
        group's ConnectivityInfo.VpcConnectivity.ClientAuthentication."""
        try:
            payload = json.loads(body or b"{}")
            nodes = payload["clusterInfo"]["provisioned"]["brokerNodeGroupInfo"]
        except (ValueError, KeyError, TypeError):
            return None
        with self._lock:
            iam = self._vpc_iam.get(arn, False)
        connectivity = nodes.setdefault("connectivityInfo", {})
        connectivity["vpcConnectivity"] = {
            "clientAuthentication": {
                "sasl": {"iam": {"enabled": iam}, "scram": {"enabled": False}},
                "tls": {"enabled": False},
            }
        }
        return json.dumps(payload).encode()

    @staticmethod
    def _config_from_request(req: dict[str, Any], *, v2: bool) -> _ClusterConfig:
        if v2 and "serverless" in req:
            return _SERVERLESS
        spec = req.get("provisioned", {}) if v2 else req
        auth = spec.get("clientAuthentication") or {}
        sasl = auth.get("sasl") or {}
        in_transit = (spec.get("encryptionInfo") or {}).get("encryptionInTransit") or {}
        iam = bool((sasl.get("iam") or {}).get("enabled"))
        scram = bool((sasl.get("scram") or {}).get("enabled"))
        mtls = bool((auth.get("tls") or {}).get("enabled", bool(auth.get("tls"))))
        # With no clientAuthentication at all, MSK provisions unauthenticated access.
        unauthenticated = bool((auth.get("unauthenticated") or {}).get("enabled")) or not (
            iam or scram or mtls
        )
        return _ClusterConfig(
            serverless=False,
            brokers=int(spec.get("numberOfBrokerNodes") or 3),
            iam=iam,
            scram=scram,
            tls=mtls or unauthenticated,
            unauthenticated=unauthenticated,
            client_broker=in_transit.get("clientBroker") or "TLS",
        )

    def _cluster_call(self, call: AwsCall, rest: str) -> Response | None:
        if rest.endswith("/policy"):
            return self._policy(call, rest[: -len("/policy")])
        if rest.endswith("/connectivity") and call.method == "PUT":
            return self._update_connectivity(call, rest[: -len("/connectivity")])
        if rest.endswith("/bootstrap-brokers"):
            return (
                self._bootstrap_brokers(call, rest[: -len("/bootstrap-brokers")])
                if call.method == "GET"
                else None
            )
        if call.method not in ("GET", "DELETE") or rest.endswith(_CLUSTER_SUBRESOURCES):
            return None
        if self._backend(call.region).clusters.get(rest) is None:
            # moto raises KeyError (HTTP 500, which botocore retries); AWS says NotFound.
            return _not_found(f"Cluster {rest} not found.", "clusterArn")
        return None

    def _policy(self, call: AwsCall, arn: str) -> Response | None:
        """PutClusterPolicy / GetClusterPolicy / DeleteClusterPolicy on the simulator's own store."""
        if self._backend(call.region).clusters.get(arn) is None:
            return _not_found(f"Cluster {arn} not found.", "clusterArn")
        with self._lock:
            if call.method == "PUT":
                try:
                    body = call.json()
                    json.loads(body["policy"])
                except (ValueError, KeyError, TypeError):
                    return _bad_request("policy must be a JSON policy document.", "policy")
                current = self._policies.get(arn)
                if body.get("currentVersion") is not None and (
                    current is None or current[1] != body["currentVersion"]
                ):
                    return _bad_request("currentVersion does not match.", "currentVersion")
                version = _new_version()
                self._policies[arn] = (body["policy"], version)
                return _ok({"currentVersion": version})
            if call.method == "GET":
                if arn not in self._policies:
                    return _not_found(f"Cluster {arn} has no cluster policy.", "clusterArn")
                policy, version = self._policies[arn]
                return _ok({"currentVersion": version, "policy": policy})
            if call.method == "DELETE":
                self._policies.pop(arn, None)
                return _ok({})
        return None

    def _update_connectivity(self, call: AwsCall, arn: str) -> Response:
        """UpdateConnectivity: multi-VPC private connectivity (VpcConnectivity.ClientAuthentication)."""
        cluster = self._backend(call.region).clusters.get(arn)
        if cluster is None:
            return _not_found(f"Cluster {arn} not found.", "clusterArn")
        try:
            body = call.json()
        except ValueError:
            return _bad_request("The request body is not valid JSON.")
        if not body.get("currentVersion"):
            return _bad_request("currentVersion is required.", "currentVersion")
        vpc = ((body.get("connectivityInfo") or {}).get("vpcConnectivity") or {}).get(
            "clientAuthentication"
        ) or {}
        iam = bool(((vpc.get("sasl") or {}).get("iam") or {}).get("enabled"))
        config = self._configs.get(arn) or self._config_from_moto(cluster)
        if iam and not config.iam:
            return _bad_request(
                "Multi-VPC IAM connectivity needs IAM access control enabled on the cluster.",
                "connectivityInfo",
            )
        with self._lock:
            self._vpc_iam[arn] = iam
        self._truth.record("msk.connectivity", arn=arn, vpc_iam=iam)
        return _ok({"clusterArn": arn, "clusterOperationArn": f"{arn}/operation/{uuid.uuid4()}"})

    def _bootstrap_brokers(self, call: AwsCall, arn: str) -> Response:
        cluster = _active(
            self._backend(call.region).clusters.get(arn),
            arn,
            "clusterArn",
            "You can't get bootstrap broker nodes for a cluster in {state} state.",
        )
        if isinstance(cluster, Response):
            return cluster
        config = self._configs.get(arn) or self._config_from_moto(cluster)
        sid = _short_id(arn)
        region = cluster.region_name
        if config.serverless:
            host = f"boot-{sid}.c{int(sid, 16) % 3 + 1}.kafka-serverless.{region}.amazonaws.com"
            return _ok({"bootstrapBrokerStringSaslIam": f"{host}:9098"})
        label = re.sub(r"[^a-z0-9-]", "-", cluster.cluster_name.lower())[:40].strip("-") or "cluster"
        hosts = [
            f"b-{i}.{label}.{sid}.c{int(sid, 16) % 3 + 1}.kafka.{region}.amazonaws.com"
            for i in range(1, min(config.brokers, 3) + 1)
        ]

        def joined(port: int) -> str:
            return ",".join(f"{h}:{port}" for h in hosts)

        tls_ok = config.client_broker in ("TLS", "TLS_PLAINTEXT")
        payload: dict[str, str] = {}
        if config.iam and tls_ok:
            payload["bootstrapBrokerStringSaslIam"] = joined(9098)
        if config.scram and tls_ok:
            payload["bootstrapBrokerStringSaslScram"] = joined(9096)
        if config.tls and tls_ok:
            payload["bootstrapBrokerStringTls"] = joined(9094)
        if config.unauthenticated and config.client_broker in ("PLAINTEXT", "TLS_PLAINTEXT"):
            payload["bootstrapBrokerString"] = joined(9092)
        return _ok(payload)

    @staticmethod
    def _config_from_moto(cluster: FakeKafkaCluster) -> _ClusterConfig:
        """For clusters created before the simulator was listening (their request was not seen)."""
        return (
            MskSim._config_from_request(
                {
                    "clientAuthentication": cluster.client_authentication,
                    "encryptionInfo": cluster.encryption_info,
                    "numberOfBrokerNodes": cluster.number_of_broker_nodes,
                },
                v2=False,
            )
            if cluster.cluster_type == "PROVISIONED"
            else _SERVERLESS
        )

    # -- replicators -------------------------------------------------------------------------

    def _create_replicator(self, call: AwsCall) -> Response:
        try:
            req = call.json()
        except ValueError:
            return _bad_request("The request body is not valid JSON.")
        name = req.get("replicatorName") or ""
        role = req.get("serviceExecutionRoleArn") or ""
        clusters = req.get("kafkaClusters") or []
        infos = req.get("replicationInfoList") or []
        description = req.get("description")
        if not _NAME_RE.match(name):
            return _bad_request(
                "Replicator name must be 1-128 letters, digits or '-', starting with a letter or digit.",
                "replicatorName",
            )
        if not _ROLE_RE.match(role):
            return _bad_request(f"Invalid IAM role ARN: {role!r}.", "serviceExecutionRoleArn")
        if description is not None and len(description) > 1024:
            return _bad_request("Description exceeds 1024 characters.", "description")
        if len(clusters) != 2:
            return _bad_request(
                "A replicator needs exactly two Kafka clusters: one source and one target.",
                "kafkaClusters",
            )
        arns: list[str] = []
        for entry in clusters:
            msk = entry.get("amazonMskCluster") or {}
            arn = msk.get("mskClusterArn")
            if not arn:
                return _bad_request(
                    "Each Kafka cluster must be an Amazon MSK cluster.",
                    "kafkaClusters",
                )
            if not (entry.get("vpcConfig") or {}).get("subnetIds"):
                return _bad_request(f"vpcConfig.subnetIds is required for {arn}.", "vpcConfig")
            arns.append(arn)
        if arns[0] == arns[1]:
            return _bad_request("Source and target clusters must differ.", "kafkaClusters")
        if len(infos) != 1:
            return _bad_request(
                "replicationInfoList must contain exactly one entry.",
                "replicationInfoList",
            )
        info = infos[0]
        source, target = info.get("sourceKafkaClusterArn"), info.get("targetKafkaClusterArn")
        if {source, target} != set(arns):
            return _bad_request(
                "sourceKafkaClusterArn and targetKafkaClusterArn must be the two clusters in kafkaClusters.",
                "replicationInfoList",
            )
        if not (info.get("topicReplication") or {}).get("topicsToReplicate"):
            return _bad_request("topicsToReplicate is required.", "topicReplication")
        if "consumerGroupsToReplicate" not in (info.get("consumerGroupReplication") or {}):
            return _bad_request("consumerGroupsToReplicate is required.", "consumerGroupReplication")
        if info.get("targetCompressionType") not in ("NONE", "GZIP", "SNAPPY", "LZ4", "ZSTD"):
            return _bad_request("Invalid targetCompressionType.", "targetCompressionType")
        with self._lock:
            for arn in arns:
                cluster = _active(
                    self._cluster(arn),
                    arn,
                    "mskClusterArn",
                    "Cluster {arn} is in {state} state; a replicator needs ACTIVE clusters.",
                )
                if isinstance(cluster, Response):
                    return cluster
            if _region_of(target) != call.region:
                return _bad_request(
                    f"The replicator must be created in the target cluster's region ({_region_of(target)}), "
                    f"not {call.region}.",
                    "targetKafkaClusterArn",
                )
            if any(r.name == name and r.region == call.region for r in self._replicators.values()):
                return _error(
                    "ConflictException", 409, f"A replicator named {name} already exists.", "replicatorName"
                )
            rep = self._new_replicator(call.region, req, arns, info)
            rep.failure = self._prerequisite_failure(source, target)
            if rep.failure is not None:
                rep.due = time.monotonic() + self._fail_after
            tags = req.get("tags") or {}
            if tags:
                self._backend(call.region).tag_resource(rep.arn, tags)
            self._replicators[rep.arn] = rep
            self._record(rep)
        return _ok({"replicatorArn": rep.arn, "replicatorName": rep.name, "replicatorState": rep.state})

    def _new_replicator(
        self, region: str, req: dict[str, Any], arns: list[str], info: dict[str, Any]
    ) -> _Replicator:
        name = req["replicatorName"]
        aliases = {arn: self._alias(arn) for arn in arns}
        kafka_clusters = [
            {**entry, "kafkaClusterAlias": aliases[arns[i]]} for i, entry in enumerate(req["kafkaClusters"])
        ]
        topic = {
            "copyAccessControlListsForTopics": True,
            "copyTopicConfigurations": True,
            "detectAndCopyNewTopics": True,
            "startingPosition": {"type": "LATEST"},
            "topicNameConfiguration": {"type": "PREFIXED_WITH_SOURCE_CLUSTER_ALIAS"},
            **info["topicReplication"],
        }
        groups = {
            "detectAndCopyNewConsumerGroups": True,
            "synchroniseConsumerGroupOffsets": True,
            "consumerGroupOffsetSyncMode": "LEGACY",
            **info["consumerGroupReplication"],
        }
        described = {
            "sourceKafkaClusterAlias": aliases[info["sourceKafkaClusterArn"]],
            "targetKafkaClusterAlias": aliases[info["targetKafkaClusterArn"]],
            "targetCompressionType": info["targetCompressionType"],
            "topicReplication": topic,
            "consumerGroupReplication": groups,
        }
        return _Replicator(
            arn=f"arn:aws:kafka:{region}:{self._account}:replicator/{name}/{uuid.uuid4()}-s1",
            name=name,
            region=region,
            description=req.get("description"),
            kafka_clusters=kafka_clusters,
            replication_info=[described],
            role_arn=req["serviceExecutionRoleArn"],
            source_arn=info["sourceKafkaClusterArn"],
            target_arn=info["targetKafkaClusterArn"],
            version=_new_version(),
            created=datetime.fromtimestamp(self._clock.now(), UTC),
            state="CREATING",
            due=time.monotonic() + self._ready_after,
            world=self._backend(region).clusters,
            extra={"logDelivery": req["logDelivery"]} if req.get("logDelivery") else {},
        )

    def _alias(self, arn: str) -> str:
        cluster = self._cluster(arn)
        name = cluster.cluster_name if cluster is not None else "cluster"
        return f"{name}-{_short_id(arn, 5)}"

    def _find(self, call: AwsCall, arn: str) -> _Replicator | None:
        rep = self._replicators.get(arn)
        return rep if rep is not None and rep.region == call.region else None

    def _describe_replicator(self, call: AwsCall, arn: str) -> Response:
        with self._lock:
            rep = self._find(call, arn)
            if rep is None:
                return _not_found(f"Replicator {arn} not found.", "replicatorArn")
            payload: dict[str, Any] = {
                "creationTime": _iso(rep.created),
                "currentVersion": rep.version,
                "isReplicatorReference": False,
                "kafkaClusters": rep.kafka_clusters,
                "replicationInfoList": rep.replication_info,
                "replicatorArn": rep.arn,
                "replicatorName": rep.name,
                "replicatorResourceArn": rep.arn,
                "replicatorState": rep.state,
                "serviceExecutionRoleArn": rep.role_arn,
                "tags": self._backend(rep.region).list_tags_for_resource(rep.arn),
                **rep.extra,
            }
            if rep.state == "FAILED" and rep.failure is not None:
                payload["stateInfo"] = {"code": rep.failure[0], "message": rep.failure[1]}
            if rep.description is not None:
                payload["replicatorDescription"] = rep.description
        return _ok(payload)

    def _list_replicators(self, call: AwsCall) -> Response:
        prefix = call.query.get("replicatorNameFilter", "")
        try:
            limit = int(call.query.get("maxResults", "100"))
            start = int(call.query.get("nextToken", "0"))
        except ValueError:
            return _bad_request("Invalid maxResults or nextToken.")
        if not 1 <= limit <= 100:
            return _bad_request("maxResults must be between 1 and 100.", "maxResults")
        with self._lock:
            reps = sorted(
                (
                    r
                    for r in self._replicators.values()
                    if r.region == call.region and r.name.startswith(prefix)
                ),
                key=lambda r: (r.created, r.name),
            )
            page = reps[start : start + limit]
            summaries = [
                {
                    "creationTime": _iso(r.created),
                    "currentVersion": r.version,
                    "isReplicatorReference": False,
                    "kafkaClustersSummary": [
                        {
                            "amazonMskCluster": c["amazonMskCluster"],
                            "kafkaClusterAlias": c["kafkaClusterAlias"],
                        }
                        for c in r.kafka_clusters
                    ],
                    "replicationInfoSummaryList": [
                        {
                            "sourceKafkaClusterAlias": i["sourceKafkaClusterAlias"],
                            "targetKafkaClusterAlias": i["targetKafkaClusterAlias"],
                        }
                        for i in r.replication_info
                    ],
                    "replicatorArn": r.arn,
                    "replicatorName": r.name,
                    "replicatorResourceArn": r.arn,
                    "replicatorState": r.state,
                }
                for r in page
            ]
        payload: dict[str, Any] = {"replicators": summaries}
        if start + limit < len(reps):
            payload["nextToken"] = str(start + limit)
        return _ok(payload)

    def _delete_replicator(self, call: AwsCall, arn: str) -> Response:
        with self._lock:
            rep = self._find(call, arn)
            if rep is None:
                return _not_found(f"Replicator {arn} not found.", "replicatorArn")
            version = call.query.get("currentVersion")
            if version is not None and version != rep.version:
                return _bad_request(
                    f"currentVersion {version} does not match the replicator's version {rep.version}.",
                    "currentVersion",
                )
            if rep.state != "DELETING":
                rep.state, rep.due = "DELETING", time.monotonic() + self._delete_after
                self._record(rep)
        return _ok({"replicatorArn": rep.arn, "replicatorState": rep.state})

    def _update_replication_info(self, call: AwsCall, arn: str) -> Response:
        """UpdateReplicationInfo: topics and consumer groups change; the clusters of a flow do not."""
        try:
            req = call.json()
        except ValueError:
            return _bad_request("The request body is not valid JSON.")
        topics, groups = req.get("topicReplication"), req.get("consumerGroupReplication")
        with self._lock:
            rep = self._find(call, arn)
            if rep is None:
                return _not_found(f"Replicator {arn} not found.", "replicatorArn")
            if req.get("currentVersion") != rep.version:
                return _bad_request(
                    f"currentVersion {req.get('currentVersion')} does not match the replicator's version "
                    f"{rep.version}.",
                    "currentVersion",
                )
            if rep.state != "RUNNING":
                return _bad_request(f"Replicator {rep.name} is {rep.state}; it must be RUNNING.")
            if (req.get("sourceKafkaClusterArn"), req.get("targetKafkaClusterArn")) != (
                rep.source_arn,
                rep.target_arn,
            ):
                return _bad_request(
                    "sourceKafkaClusterArn and targetKafkaClusterArn must be the replicator's own clusters.",
                    "sourceKafkaClusterArn",
                )
            if not topics and not groups:
                return _bad_request(
                    "Specify topicReplication or consumerGroupReplication to update.",
                )
            info = rep.replication_info[0]
            if topics:
                info["topicReplication"] = {**info["topicReplication"], **topics}
            if groups:
                info["consumerGroupReplication"] = {**info["consumerGroupReplication"], **groups}
            rep.version = _new_version()
            rep.state, rep.due = "UPDATING", time.monotonic() + self._ready_after
            self._record(rep)
        return _ok({"replicatorArn": rep.arn, "replicatorState": rep.state})

    def _replicator_tags(self, call: AwsCall, arn: str) -> Response | None:
        """Tags of a replicator live in moto's Kafka tagger; only an unknown replicator is ours to answer."""
        if ":replicator/" not in arn:
            return None
        with self._lock:
            if self._find(call, arn) is None:
                return _not_found(f"Replicator {arn} not found.", "resourceArn")
        return None

    # -- metrics -----------------------------------------------------------------------------

    def _control_lag(self, call: AwsCall) -> Response:
        """Operator route: pin a replicator's ReplicationLatency/MessageLag (null returns to baseline)."""
        try:
            body = call.json()
            name = body["replicator_name"]
        except (ValueError, KeyError, TypeError):
            return _ok({"error": "body must be JSON with replicator_name"}, status=400)
        region = body.get("region")
        with self._lock:
            matched = [
                r
                for r in self._replicators.values()
                if r.name == name and (region is None or r.region == region)
            ]
            if not matched:
                return _ok({"error": f"no replicator named {name}"}, status=404)
            for rep in matched:
                if "latency_ms" in body:
                    rep.latency_ms = None if body["latency_ms"] is None else float(body["latency_ms"])
                if "message_lag" in body:
                    rep.message_lag = None if body["message_lag"] is None else float(body["message_lag"])
            result = [
                {
                    "replicator_name": r.name,
                    "region": r.region,
                    "latency_ms": r.latency_ms,
                    "message_lag": r.message_lag,
                }
                for r in matched
            ]
        self._truth.record(
            "msk.lag",
            replicator_name=name,
            latency_ms=body.get("latency_ms"),
            message_lag=body.get("message_lag"),
        )
        return _ok({"replicators": result})

    def _publish_metrics(self) -> None:
        if self._endpoint_url is None:
            return
        self._advance()
        now = datetime.now(UTC)
        by_region: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            for rep in self._replicators.values():
                if rep.state not in ("RUNNING", "UPDATING"):  # replication goes on during an update
                    continue
                dims = [{"Name": "ReplicatorName", "Value": rep.name}]
                data = by_region.setdefault(rep.region, [])
                data.append(
                    {
                        "MetricName": "MessageLag",
                        "Dimensions": dims,
                        "Timestamp": now,
                        "Value": self._message_lag(rep),
                        "Unit": "Count",
                    }
                )
                copied, rep.latencies_ms = rep.latencies_ms, []
                if rep.latency_ms is not None or copied:
                    data.append(
                        {
                            "MetricName": "ReplicationLatency",
                            "Dimensions": dims,
                            "Timestamp": now,
                            "Value": rep.latency_ms if rep.latency_ms is not None else max(copied),
                            "Unit": "Milliseconds",
                        }
                    )
        for region, data in by_region.items():
            self._cloudwatch.put(region, NAMESPACE, data)


def _matches(name: str, patterns: list[str]) -> bool:
    """MSK Replicator's topic / consumer-group lists: names or Java regular expressions."""
    return any(re.fullmatch(p, name) for p in patterns)


# What a source cluster's policy must allow MSK Replicator (kafka.amazonaws.com) to do.
REPLICATOR_POLICY_ACTIONS = (
    "kafka:CreateVpcConnection",
    "kafka:GetBootstrapBrokers",
    "kafka:DescribeClusterV2",
)
_REPLICATOR_ACTIONS = set(REPLICATOR_POLICY_ACTIONS)


def prepare_for_replicator(kafka: Any, cluster_arn: str) -> None:
    """What a cluster's owner does before MSK Replicator may use it (msk-replicator-prepare-cluster),
    through `kafka`, a client of the cluster's region: multi-VPC private connectivity with IAM
    (UpdateConnectivity), and a cluster policy that lets kafka.amazonaws.com in (PutClusterPolicy)."""
    version = kafka.describe_cluster_v2(ClusterArn=cluster_arn)["ClusterInfo"]["CurrentVersion"]
    kafka.update_connectivity(
        ClusterArn=cluster_arn,
        CurrentVersion=version,
        ConnectivityInfo={"VpcConnectivity": {"ClientAuthentication": {"Sasl": {"Iam": {"Enabled": True}}}}},
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ["kafka.amazonaws.com"]},
                "Action": list(REPLICATOR_POLICY_ACTIONS),
                "Resource": cluster_arn,
            }
        ],
    }
    kafka.put_cluster_policy(ClusterArn=cluster_arn, Policy=json.dumps(policy))


def _policy_allows_replicator(policy: str, cluster_arn: str) -> bool:
    """Whether a cluster policy lets MSK Replicator (service kafka.amazonaws.com) reach the cluster."""
    try:
        doc = json.loads(policy) if policy else {}
    except ValueError:
        return False
    allowed: set[str] = set()
    statements = doc.get("Statement") or []
    for st in statements if isinstance(statements, list) else [statements]:
        if st.get("Effect") != "Allow":
            continue
        principal = (st.get("Principal") or {}).get("Service")
        services = principal if isinstance(principal, list) else [principal]
        resources = st.get("Resource")
        resources = resources if isinstance(resources, list) else [resources]
        if "kafka.amazonaws.com" not in services or not any(r in (cluster_arn, "*") for r in resources):
            continue
        actions = st.get("Action")
        allowed |= set(actions if isinstance(actions, list) else [actions])
    return "kafka:*" in allowed or allowed >= _REPLICATOR_ACTIONS
