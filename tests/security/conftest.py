"""What the security tests share: a recorder of every AWS call a flow makes, and one run of every
sandbox-world flow (provision in plan and apply mode, three drills, a sweep with leftovers to
repair) made with distinctive secret values, so one set of runs serves both the IAM test and the
secret scan.

The recorder is a reverse proxy on loopback in front of the sandbox's AWS endpoint, and product
code reaches it the way it reaches any AWS: through `AWS_ENDPOINT_URL`. It sits outside the code
under test and outside the sandbox, so it sees every request, including those the sandbox's
simulators answer instead of moto. Each request is named from its SigV4 credential scope
(service, region) and botocore's own service model (the JSON target, the query `Action`, the
CBOR operation path, or the REST method and URI template), exactly as AWS routes it.

The one request that must not go through it is the STS presign behind an EKS bearer token: the
cluster's authenticator checks the URL's host (`AWS_ENDPOINT_URL_STS` points STS, and only STS, at
the sandbox itself). Presigning is local; the authenticator, not the flow, sends that request.
So an STS call a flow sent itself (AssumeRole for a region's `role_arn`) would not be recorded;
the sandbox topology names no roles.

Why not moto's recorder (`/moto-api/recorder/`): it sees only what reaches moto, not the calls
the sandbox's simulators answer (Route 53 health-check status, MSK Replicator, global-table
replicas, FIS), and writes to a file in the world process's working directory. Why not a log in
`sandbox/harness.py`: the world flows run against is its own process (`python -m sandbox up`),
built on `sandbox/world.py`, which the harness does not wrap.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import unquote
from urllib.parse import urlsplit
from xml.etree import ElementTree

import botocore.session
import httpx
import pytest
from botocore.parsers import RpcV2CBORParser

ACCOUNT_ID = "123456789012"  # moto's default account, the sandbox world's
# SigV4 signing name -> (botocore service model, IAM action prefix)
SERVICES = {
    "route53": ("route53", "route53"),
    "dynamodb": ("dynamodb", "dynamodb"),
    "monitoring": ("cloudwatch", "cloudwatch"),
    "kafka": ("kafka", "kafka"),
    "rds": ("rds", "rds"),
    "fis": ("fis", "fis"),
    "elasticloadbalancing": ("elbv2", "elasticloadbalancing"),
    "eks": ("eks", "eks"),
    "sts": ("sts", "sts"),
    "kms": ("kms", "kms"),
    "application-autoscaling": ("application-autoscaling", "application-autoscaling"),
    "tagging": ("resourcegroupstaggingapi", "tag"),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


@dataclass(frozen=True)
class AwsCall:
    """One AWS API request a flow made: who asked (`flow`, `run`), what, where, on which resources."""

    flow: str
    run: str
    service: str  # the IAM prefix: route53, dynamodb, cloudwatch, ...
    operation: str
    region: str
    resources: tuple[str, ...]  # ARNs the request names, where it names any
    status: int

    @property
    def action(self) -> str:
        return f"{self.service}:{self.operation}"


@dataclass
class _Route:
    operation: str
    method: str
    pattern: re.Pattern[str]
    literal: int
    query_keys: tuple[str, ...]


_MODELS: dict[str, Any] = {}
_ROUTES: dict[str, list[_Route]] = {}
_MODEL_LOCK = threading.Lock()


def _model(name: str) -> Any:
    with _MODEL_LOCK:
        if name not in _MODELS:
            _MODELS[name] = botocore.session.get_session().get_service_model(name)
        return _MODELS[name]


def _routes(name: str) -> list[_Route]:
    """The REST operations of a service as (method, URI template regex), most literal first."""
    with _MODEL_LOCK:
        if name in _ROUTES:
            return _ROUTES[name]
    model = _model(name)
    routes = []
    for op in model.operation_names:
        http = model.operation_model(op).http
        uri = str(http.get("requestUri", "/"))
        path, _, query = uri.partition("?")
        regex = ""
        for piece in re.split(r"(\{[^}]+\})", path):
            if piece.startswith("{"):
                regex += (
                    f"(?P<{re.sub(r'[^A-Za-z0-9_]', '', piece)}>.+)"
                    if piece.endswith("+}")
                    else (f"(?P<{re.sub(r'[^A-Za-z0-9_]', '', piece)}>[^/]+)")
                )
            else:
                regex += re.escape(piece)
        keys = tuple(k.split("=")[0] for k in query.split("&") if k and "{" not in k)
        literal = len(re.sub(r"\{[^}]+\}", "", path))
        routes.append(_Route(op, str(http.get("method", "POST")), re.compile(f"^{regex}/?$"), literal, keys))
    routes.sort(key=lambda r: (-r.literal, -len(r.query_keys)))
    with _MODEL_LOCK:
        _ROUTES[name] = routes
    return routes


def _scope(auth: str) -> tuple[str, str] | None:
    m = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request", auth)
    return (m.group(2), m.group(1)) if m else None


def _cbor(body: bytes) -> Any:
    if not body:
        return {}
    return RpcV2CBORParser().parse_data_item(io.BufferedReader(io.BytesIO(body)))


def identify(
    signing_name: str,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
) -> tuple[str, str, dict[str, Any]]:
    """(IAM prefix, operation, request parameters) of one request, from botocore's service model."""
    model_name, prefix = SERVICES.get(signing_name, (signing_name, signing_name))
    target = headers.get("x-amz-target", "")
    if target:
        return prefix, target.rsplit(".", 1)[-1], json.loads(body or b"{}")
    m = re.match(r"^/service/[^/]+/operation/([^/]+)$", path)
    if m:  # smithy rpc-v2-cbor (CloudWatch, Resource Groups Tagging)
        decoded = _cbor(body)
        return prefix, m.group(1), decoded if isinstance(decoded, dict) else {}
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()} if body else {}
    form = {**query, **form}
    if "Action" in form:
        return prefix, form["Action"], form
    for route in _routes(model_name):
        if route.method != method:
            continue
        hit = route.pattern.match(path)
        if hit and all(k in query for k in route.query_keys):
            params: dict[str, Any] = {k: unquote(v) for k, v in hit.groupdict().items()}
            params["_body"] = body
            return prefix, route.operation, params
    return prefix, f"<unknown {method} {path}>", {}


def _arn(service: str, region: str, resource: str) -> str:
    return f"arn:aws:{service}:{region}:{ACCOUNT_ID}:{resource}"


def resources_of(service: str, operation: str, region: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The ARNs a request names, as IAM evaluates it, for the services chalk-dr touches; () when the
    request names none the test can tell (IAM then checks the action against the policy alone)."""
    p = params
    out: list[str] = [str(p[k]) for k in ("resourceArn", "ResourceARN") if k in p]  # tagging calls
    if service == "route53":
        if "HealthCheckId" in p:
            out.append(f"arn:aws:route53:::healthcheck/{p['HealthCheckId']}")
        if operation in ("GetHostedZone", "ChangeResourceRecordSets", "ListResourceRecordSets"):
            out.append(f"arn:aws:route53:::hostedzone/{str(p['Id']).removeprefix('/hostedzone/')}")
        if operation == "GetChange":
            out.append(f"arn:aws:route53:::change/{str(p['Id']).removeprefix('/change/')}")
        if operation in ("ChangeTagsForResource", "ListTagsForResource"):
            out.append(f"arn:aws:route53:::{p['ResourceType']}/{p['ResourceId']}")
        if operation == "ListTagsForResources":
            root = ElementTree.fromstring(p.get("_body") or b"<r/>")
            ids = [e.text for e in root.iter() if e.tag.endswith("ResourceId") and e.text]
            out += [f"arn:aws:route53:::{p['ResourceType']}/{i}" for i in ids]
    elif service == "dynamodb":
        if "TableName" in p:
            out.append(_arn("dynamodb", region, f"table/{p['TableName']}"))
        if "ResourceArn" in p:
            out.append(str(p["ResourceArn"]))
    elif service == "kafka":
        for key in ("clusterArn", "replicatorArn"):
            if key in p:
                out.append(str(p[key]))
        if operation == "CreateReplicator":
            name = json.loads(p.get("_body") or b"{}").get("replicatorName", "")
            out.append(_arn("kafka", region, f"replicator/{name}/*"))
    elif service == "rds":
        if "GlobalClusterIdentifier" in p and operation in ("CreateGlobalCluster", "DescribeGlobalClusters"):
            out.append(f"arn:aws:rds::{ACCOUNT_ID}:global-cluster:{p['GlobalClusterIdentifier']}")
        if "DBClusterIdentifier" in p:
            out.append(_arn("rds", region, f"cluster:{p['DBClusterIdentifier']}"))
        if "DBInstanceIdentifier" in p:
            out.append(_arn("rds", region, f"db:{p['DBInstanceIdentifier']}"))
    elif service == "cloudwatch":
        if operation == "PutMetricAlarm":
            out.append(_arn("cloudwatch", region, f"alarm:{p['AlarmName']}"))
    elif service == "eks":
        if "name" in p:
            out.append(_arn("eks", region, f"cluster/{p['name']}"))
    elif service == "fis":
        if "id" in p and operation in ("GetExperiment", "StopExperiment"):
            out.append(_arn("fis", region, f"experiment/{p['id']}"))
        if "id" in p and operation in ("GetExperimentTemplate", "DeleteExperimentTemplate"):
            out.append(_arn("fis", region, f"experiment-template/{p['id']}"))
        if operation == "CreateExperimentTemplate":
            out.append(_arn("fis", region, "experiment-template/*"))
            for action in json.loads(p.get("_body") or b"{}").get("actions", {}).values():
                out.append(_arn("fis", region, f"action/{action.get('actionId', '')}"))
        if operation == "StartExperiment":
            tpl = json.loads(p.get("_body") or b"{}").get("experimentTemplateId", "")
            out += [_arn("fis", region, f"experiment-template/{tpl}"), _arn("fis", region, "experiment/*")]
    elif service == "kms":
        key = str(p.get("KeyId", ""))
        if key.startswith("arn:"):
            out.append(key)
    return tuple(out)


class AwsCallRecorder:
    """A recording reverse proxy for the sandbox's AWS endpoint, on 127.0.0.1 (port chosen by the OS).

    `with recorder.recording(flow, run):` attributes what arrives meanwhile to that run; requests
    outside any recording are forwarded and not kept."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.calls: list[AwsCall] = []
        # (flow, run, start, end) epoch seconds of each recording: what the Kubernetes API servers
        # received meanwhile (the sandbox's `kube.request` ground truth) is that run's too
        self.windows: list[tuple[str, str, float, float]] = []
        self._who: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=60, trust_env=False)
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks: list[bytes] = []
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _forward(self) -> None:
                body = self._body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                resp = recorder._http.request(
                    self.command, recorder.upstream + self.path, headers=headers, content=body
                )
                recorder._record(self.command, self.path, dict(self.headers.items()), body, resp.status_code)
                out = resp.content
                self.send_response(resp.status_code)
                for k, v in resp.headers.multi_items():
                    if k.lower() not in _HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="aws-recorder", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> AwsCallRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._http.close()

    @contextmanager
    def recording(self, flow: str, run: str) -> Iterator[list[AwsCall]]:
        start = len(self.calls)
        began = time.time()
        with self._lock:
            self._who = (flow, run)
        mine: list[AwsCall] = []
        try:
            yield mine
        finally:
            with self._lock:
                self._who = None
                mine.extend(self.calls[start:])
                self.windows.append((flow, run, began, time.time()))

    def _record(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes, status: int
    ) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}
        scope = _scope(lowered.get("authorization", ""))
        parts = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        resources: tuple[str, ...] = ()
        if scope is None:
            service, operation, region = "<unsigned>", f"{method} {parts.path}", ""
        else:
            signing, region = scope
            service, operation, params = identify(signing, method, parts.path, query, lowered, body)
            resources = resources_of(service, operation, region, params)
        with self._lock:
            if self._who is None:
                return
            flow, run = self._who
            self.calls.append(AwsCall(flow, run, service, operation, region, resources, status))


@dataclass
class FlowRuns:
    """Every sandbox-world flow run once, recorded: what each called, and the secrets they held."""

    calls: list[AwsCall]
    secrets: dict[str, str]  # what -> value
    windows: list[tuple[str, str, float, float]] = field(default_factory=list)  # (flow, run, start, end)
    outcomes: dict[str, str] = field(default_factory=dict)  # run label -> final state
    run_ids: list[str] = field(default_factory=list)  # the flow runs, in order
    started: float = 0.0
    variables: dict[str, list[str]] = field(default_factory=dict)  # policy placeholders -> values


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def wait_for_steady_lags(world: Any, timeout: float = 150.0) -> None:
    """Every replication-lag reading the drill's pre-flight checks is within its guard."""
    from chalkdr.clients import AwsClients
    from sandbox.harness import poll
    from tasks.probes import read_replication_lags

    t = world.topology
    clients = AwsClients.for_topology(t)

    def over() -> list[str]:
        lags = read_replication_lags(t, clients)
        return [k for k, v in lags.items() if v.value is not None and v.value > v.limit]

    poll(lambda: not over() or None, timeout=timeout, what="replication lags within their guards", every=2.0)


def _stand_in_run(state: Any) -> Any:
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="drill")
    def stand_in_drill(topology: str) -> None:
        """Only its name matters: the run is created in the backend, never executed."""

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(stand_in_drill, parameters={"topology": "t.yaml"})
        client.set_flow_run_state(run.id, state, force=True)
        return client.read_flow_run(run.id)


def _leave_fis_experiment(world: Any, clients: Any, dead: Any) -> None:
    """A running FIS experiment of a dead drill (a pause of the online store's replication), started
    as the drill starts one, for the sweep to stop."""
    import dataclasses

    from tasks.faults import DRILL_TAG
    from tasks.faults import MANAGED_TAG
    from tasks.faults import FisExperiment

    t = world.topology
    region = t.primary.aws_region
    arn = clients.dynamodb(region).describe_table(TableName=t.primary.online_store_tables[0])["Table"][
        "TableArn"
    ]
    template = clients.fis(region).create_experiment_template(
        clientToken="d-dead-sec-pause",
        description="a dead drill's pause",
        roleArn=t.fis_role_arn,
        stopConditions=[{"source": "none"}],
        targets={
            "tables": {
                "resourceType": "aws:dynamodb:global-table",
                "resourceArns": [arn],
                "selectionMode": "ALL",
            }
        },
        actions={
            "pause": {
                "actionId": "aws:dynamodb:global-table-pause-replication",
                "parameters": {"duration": "PT5M"},
                "targets": {"Tables": "tables"},
            }
        },
        tags={DRILL_TAG: "d-dead-sec", MANAGED_TAG: "true", "chalk-dr:environment": t.environment},
    )["experimentTemplate"]["id"]
    wanted = {
        "clients": clients,
        "region": region,
        "drill_id": "d-dead-sec",
        "environment": t.environment,
        "template_factory": lambda: template,
        "flow_run_id": str(dead.id),
    }
    names = {f.name for f in dataclasses.fields(FisExperiment)}
    FisExperiment(**{k: v for k, v in wanted.items() if k in names}).inject()


def _state_label(state: Any, run_ids: list[str] | None = None) -> str:
    if run_ids is not None:
        run_ids.append(str(state.state_details.flow_run_id))
    return f"{state.type.value}: {state.message or ''}"


def policy_variables(world: Any) -> dict[str, list[str]]:
    """The values of the policies' `${...}` placeholders for the sandbox world's topology."""
    t = world.topology
    return {
        "AccountId": [ACCOUNT_ID],
        "Environment": [t.environment],
        "HostedZoneId": [t.route53.hosted_zone_id.removeprefix("/hostedzone/")],
        "OnlineStoreTable": sorted({tbl for r in t.regions for tbl in r.online_store_tables}),
        "EksClusterName": [r.eks.cluster_name for r in t.regions],
        "MskClusterArn": [r.msk_cluster_arn for r in t.regions if r.msk_cluster_arn],
        "ReplicatorName": [t.msk.replicator_name],
        "GlobalClusterId": [t.aurora.global_cluster_id],
        "AuroraClusterId": [r.aurora_cluster_id for r in t.regions],
        "KmsKeyArn": [k for r in t.regions for k in (r.online_store_kms_key, r.aurora.kms_key_id) if k],
        "FisRoleArn": [t.fis_role_arn] if t.fis_role_arn else [],
        "ReplicatorRoleArn": [t.msk.service_execution_role_arn],
        "AuroraSubnetGroup": [r.aurora.subnet_group for r in t.regions if r.aurora.subnet_group],
        "FailoverRecord": [t.route53.failover_record.rstrip(".").lower()],
        "QueryHostname": [r.query_hostname.rstrip(".").lower() for r in t.regions],
    }


@pytest.fixture(scope="session")
def security_world(session_world_factory: Any) -> Any:
    """A fresh world of its own: the recorded runs start from nothing provisioned (the session's
    shared world has been provisioned by other modules by then)."""
    # An environment of its own too: the backend's last proven apply of "demo" (other modules'
    # chalk applies) is not this world's.
    return session_world_factory("security", "--environment", "secscan")


@pytest.fixture(scope="session")
def flow_runs(security_world: Any, prefect_backend: None) -> Iterator[FlowRuns]:
    """provision (plan, apply, apply again, plan again), drills (query-servers-down,
    health-check-inverted, replication-paused) and a sweep repairing a dead drill's three leftovers
    (query servers scaled down, a health check inverted, an FIS pause running), against the
    session's sandbox world, every AWS call recorded, a distinctive AWS session token in the
    environment."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY
    from prefect.settings import temporary_settings
    from prefect.states import Running

    from chalkdr.clients import AwsClients
    from flows.drill import drill
    from flows.provision import provision
    from flows.sweep import sweep
    from tasks.faults import InvertHealthCheck
    from tasks.faults import ScaleQueryServersDown

    world = security_world
    started = time.time()
    token = f"IQoJchalkdrSessionToken{uuid.uuid4().hex}"
    recorder = AwsCallRecorder(world.aws_endpoint).start()
    direct = {**world.env, "AWS_SESSION_TOKEN": token}
    recorded = {**direct, "AWS_ENDPOINT_URL": recorder.url, "AWS_ENDPOINT_URL_STS": world.aws_endpoint}
    topology = str(world.topology_path)
    runs = FlowRuns(
        calls=recorder.calls,
        windows=recorder.windows,
        secrets={
            "the Chalk client secret": world.env[
                f"CHALK_DR_{world.topology.environment.upper()}_CLIENT_SECRET"
            ],
            "the AWS session token": token,
        },
        started=started,
    )
    try:
        with environment(recorded):
            for label, mode in (
                ("plan", "plan"),
                ("apply", "apply"),
                ("apply-converged", "apply"),
                ("plan-converged", "plan"),
            ):
                with recorder.recording("provision", label):
                    state: Any = provision(
                        topology=topology, mode=mode, require_approval=False, return_state=True
                    )
                runs.outcomes[f"provision/{label}"] = _state_label(state, runs.run_ids)
            # The replicator provision made starts from EARLIEST: its first copies report the
            # world's age as latency, and that stays the newest CloudWatch datapoint for the rest of
            # its minute. Pre-flight would refuse on it; wait (not recorded) until it is out.
            with environment(direct):
                wait_for_steady_lags(world)
            for scenario, hold in (
                ("query-servers-down", 1.0),
                ("health-check-inverted", 1.0),
                ("replication-paused", 1.5),
            ):
                with recorder.recording("drill", scenario):
                    state = drill(
                        topology=topology,
                        scenario=scenario,
                        hold_seconds=hold,
                        probe_interval_seconds=0.5,
                        return_state=True,
                    )
                runs.outcomes[f"drill/{scenario}"] = _state_label(state, runs.run_ids)
        # Leftovers of a dead drill, made directly (not recorded): the sweep must repair both.
        with environment(direct):
            t = world.topology
            clients = AwsClients.for_topology(t)
            dead = _stand_in_run(Running())
            ScaleQueryServersDown(clients, t.primary, "d-dead-sec", flow_run_id=str(dead.id)).inject()
            checks = clients.route53().list_health_checks()["HealthChecks"]
            hc_id = next(c["Id"] for c in checks if "-us-west-2-" in c["CallerReference"])
            InvertHealthCheck(clients, hc_id, "us-west-2", "d-dead-sec", flow_run_id=str(dead.id)).inject()
            _leave_fis_experiment(world, clients, dead)
        with (
            environment(recorded),
            temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}),
            recorder.recording("sweep", "leftovers"),
        ):
            state = sweep(topology=topology, return_state=True)
        runs.outcomes["sweep/leftovers"] = _state_label(state, runs.run_ids)
        report = state.result(raise_on_failure=False)
        runs.outcomes["sweep/leftovers"] += f" swept={getattr(report, 'swept', None)!r}"
        # Recovery readiness, then an incident failover and its failback (the world has no ARC
        # and no reverse replicator: readiness ends with a warning about the latter).
        from flows.readiness import recovery_readiness
        from flows.recovery import failback
        from flows.recovery import failover

        with environment(direct):
            wait_for_steady_lags(world)
        with environment(recorded):
            with recorder.recording("readiness", "evaluate"):
                state = recovery_readiness(topology=topology, return_state=True)
            runs.outcomes["readiness/evaluate"] = _state_label(state, runs.run_ids)
        primary = t.primary.aws_region
        for name, run, region in ((failover, "failover", "from_region"), (failback, "failback", "to_region")):
            with environment(direct):
                wait_for_steady_lags(world)  # failback's pre-check refuses lags above the guards
            with environment(recorded), recorder.recording("recovery", run):
                state = name(
                    topology=topology,
                    require_approval=False,
                    probe_interval_seconds=0.5,
                    return_state=True,
                    **{region: primary},
                )
            runs.outcomes[f"recovery/{run}"] = _state_label(state, runs.run_ids)
        runs.variables = policy_variables(world)
        yield runs
    finally:
        recorder.stop()


@pytest.fixture(scope="session")
def iam_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "deployments" / "iam"


def _git(*args: str) -> str:
    base = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    return subprocess.run([*base, *args], check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class ChalkApplyRuns:
    """chalk-apply run twice (a per-run topology, then the push entrypoint's file), recorded."""

    calls: list[AwsCall]
    secrets: dict[str, str]
    outcomes: dict[str, str]
    run_ids: list[str]


@pytest.fixture
def chalk_apply_runs(
    chalk_regions: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_backend: None
) -> Iterator[ChalkApplyRuns]:
    """The chalk-apply flow against two Chalk regions (as tests/flows/test_chalk_apply.py sets it up)
    with AWS_ENDPOINT_URL at a recorder and distinctive AWS keys in the worker's environment: it
    touches no AWS, and none of those values may reach the backend."""
    import yaml

    from flows.chalk_apply import chalk_apply
    from flows.chalk_apply import chalk_apply_on_push

    chalk_bin = shutil.which("chalk", path=str(Path(sys.executable).parent)) or "chalk"
    repo = tmp_path / "features"
    _git("init", "-q", "-b", "main", str(repo))
    (repo / "chalk.yaml").write_text("project: chalk-dr-security\n")
    shas = []
    for version in ("1", "2"):
        (repo / "features.py").write_text(f"VERSION = {version!r}\n")
        _git("-C", str(repo), "add", ".")
        _git("-C", str(repo), "commit", "-q", "-m", f"v{version}")
        shas.append(_git("-C", str(repo), "rev-parse", "HEAD"))
    topology = dict(chalk_regions.data)
    topology["deploy"] = {"repositories": [str(repo)], "branch": "main"}
    topology_dir = tmp_path / "topologies"
    topology_dir.mkdir()
    (topology_dir / "topology.yaml").write_text(yaml.safe_dump(topology))
    keys = {
        "AWS_ACCESS_KEY_ID": f"AKIACHALKDR{uuid.uuid4().hex[:9].upper()}",
        "AWS_SECRET_ACCESS_KEY": f"chalkdrSecretAccessKey{uuid.uuid4().hex}",
        "AWS_SESSION_TOKEN": f"IQoJchalkdrApplyToken{uuid.uuid4().hex}",
    }
    recorder = AwsCallRecorder("http://127.0.0.1:9").start()  # nothing should get as far as forwarding
    for k, v in {
        **keys,
        "AWS_ENDPOINT_URL": recorder.url,
        "CHALK_DR_TOPOLOGY_DIR": str(topology_dir),
        "CHALK_DR_CHALK_BIN": chalk_bin,
    }.items():
        monkeypatch.setenv(k, v)
    outcomes: dict[str, str] = {}
    run_ids: list[str] = []
    try:
        with recorder.recording("chalk-apply", "parameters"):
            state = chalk_apply(
                topology=topology,
                sha=shas[0],
                repo_url=str(repo),
                chalk_bin=chalk_bin,
                verify_timeout_s=10.0,
                return_state=True,
            )
        outcomes["chalk-apply/parameters"] = _state_label(state, run_ids)
        with recorder.recording("chalk-apply", "push"):
            state = chalk_apply_on_push(
                sha=shas[1],
                repo_url=str(repo),
                ref="refs/heads/main",
                topology="topology.yaml",
                strategy="parallel",
                verify_timeout_s=10.0,
                return_state=True,
            )
        outcomes["chalk-apply/push"] = _state_label(state, run_ids)
        yield ChalkApplyRuns(
            calls=recorder.calls,
            secrets={
                "the Chalk client secret": chalk_regions.secret,
                **{f"the environment's {k}": v for k, v in keys.items()},
            },
            outcomes=outcomes,
            run_ids=run_ids,
        )
    finally:
        recorder.stop()
