"""A whole sandbox world in this process, reached as product code reaches it: boto3 on the AWS
endpoint, dnspython on its name server, httpx on the load balancers' addresses, the kubernetes
client with an EKS token on the endpoint DescribeCluster names. Also what the tests of single
simulators share: the AWS error a call fails with (`error_code_of`), and DynamoDB in both regions
of a module's own sandbox (`regions`)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import httpx
import pytest
from botocore.exceptions import ClientError
from kubernetes import client as k8s

from sandbox.world import FAILOVER_RECORD
from sandbox.world import QUERY_DEPLOYMENT
from sandbox.world import World
from sandbox.world import WorldSpec

TIME_SCALE = 20.0  # RequestInterval 10 s -> 0.5 s; the ELB's 60 s TTL -> 3 s
CHECKER_REGIONS = ["us-east-1", "us-west-2", "eu-west-1"]


@dataclass(frozen=True)
class Dig:
    rcode: str
    values: list[str]
    ttl: int
    authoritative: bool


@dataclass
class LiveWorld:
    world: World

    @property
    def regions(self) -> list[str]:
        return list(self.world.regions)

    def region(self, aws_region: str) -> Any:
        return self.world.regions[aws_region]

    def client(self, service: str, region: str = "us-east-1") -> Any:
        return self.world.client(service, region)

    def dig(self, name: str, kind: str = "A", *, tcp: bool = False) -> Dig:
        """Ask the sandbox's name server, as a resolver would (UDP, or TCP)."""
        host, _, port = self.world.dns.nameserver.rpartition(":")
        query = dns.message.make_query(name, kind)
        ask = dns.query.tcp if tcp else dns.query.udp
        response = ask(query, host, port=int(port), timeout=2)
        return Dig(
            rcode=dns.rcode.to_text(response.rcode()),
            values=sorted(r.to_text() for rrset in response.answer for r in rrset),
            ttl=min((rrset.ttl for rrset in response.answer), default=0),
            authoritative=bool(response.flags & dns.flags.AA),
        )

    def alb_addresses(self, aws_region: str) -> list[str]:
        return sorted(self.region(aws_region).alb_addresses)

    def token(self) -> str:
        env = self.world.environment
        with httpx.Client(timeout=10, trust_env=False) as http:
            resp = http.post(
                f"http://{self.region(self.regions[0]).api_address}:{self.world.port}/v1/oauth/token",
                json={
                    "client_id": env.client_id,
                    "client_secret": env.client_secret,
                    "grant_type": "client_credentials",
                },
            )
        resp.raise_for_status()
        return str(resp.json()["access_token"])

    def chalk_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token()}",
            "X-Chalk-Env-Id": self.world.environment.environment_id,
        }

    def api(self, aws_region: str, path: str) -> str:
        """A URL of the region's API server (by address: the OS resolver does not know the zone)."""
        return f"http://{self.region(aws_region).api_address}:{self.world.port}{path}"

    def query(
        self, aws_region: str, outputs: list[str], inputs: dict[str, Any], *, host: str | None = None
    ) -> httpx.Response:
        """An online query at the region's load balancer, with its regional hostname as Host."""
        reg = self.region(aws_region)
        headers = {**self.chalk_headers(), "Host": host or reg.spec.query_hostname}
        body = {"inputs": inputs, "outputs": outputs, "include_meta": True}
        with httpx.Client(timeout=10, trust_env=False) as http:
            return http.post(
                f"http://{reg.alb_addresses[0]}:{self.world.port}/v1/query/online", headers=headers, json=body
            )

    def value(self, aws_region: str, fqn: str, inputs: dict[str, Any]) -> Any:
        resp = self.query(aws_region, [fqn], inputs)
        assert resp.status_code == 200, resp.text
        return resp.json()["data"][0]["value"]

    def upload(self, aws_region: str, columns: dict[str, list[Any]]) -> httpx.Response:
        """chalkpy's upload_features: POST /v1/upload_features at the API server."""
        with httpx.Client(timeout=10, trust_env=False) as http:
            return http.post(
                self.api(aws_region, "/v1/upload_features"),
                headers=self.chalk_headers(),
                json={"input": columns},
            )

    def health(self) -> dict[str, dict[str, Any]]:
        """The sandbox's per-check, per-checker health report (not throttled, unlike GetHealthCheckStatus)."""
        report = httpx.get(
            f"{self.world.server.endpoint_url}/_sandbox/route53/health", timeout=10, trust_env=False
        )
        return {c["health_check_id"]: c for c in report.json()["health_checks"]}

    def provision_dns(self, *, failure_threshold: int = 1) -> dict[str, str]:
        """What the provision flow sets up in the hosted zone: per region a health check on the
        regional hostname's /healthz and an alias to the region's ALB, and the failover name's
        PRIMARY/SECONDARY aliases routed by those checks. Returns region -> health check id."""
        r53 = self.client("route53")
        checks: dict[str, str] = {}
        changes = []
        for i, (aws_region, reg) in enumerate(self.world.regions.items()):
            checks[aws_region] = r53.create_health_check(
                CallerReference=uuid.uuid4().hex,
                HealthCheckConfig={
                    "Type": "HTTP",
                    "FullyQualifiedDomainName": reg.spec.query_hostname,
                    "Port": self.world.port,
                    "ResourcePath": "/healthz",
                    "RequestInterval": 10,
                    "FailureThreshold": failure_threshold,
                    "Regions": CHECKER_REGIONS,
                },
            )["HealthCheck"]["Id"]
            alias = {
                "HostedZoneId": "Z35SXDOTRQ7X7K",
                "DNSName": f"dualstack.{reg.alb_dns}.",
                "EvaluateTargetHealth": False,
            }
            changes.append(
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {"Name": reg.spec.query_hostname, "Type": "A", "AliasTarget": alias},
                }
            )
            changes.append(
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": FAILOVER_RECORD,
                        "Type": "A",
                        "SetIdentifier": f"{reg.spec.short}-{uuid.uuid4().hex[:6]}",
                        "Failover": "PRIMARY" if i == 0 else "SECONDARY",
                        "HealthCheckId": checks[aws_region],
                        "AliasTarget": alias,
                    },
                }
            )
        r53.change_resource_record_sets(HostedZoneId=self.world.zone_id, ChangeBatch={"Changes": changes})
        return checks

    def apps(self, aws_region: str) -> k8s.AppsV1Api:
        """A Kubernetes client for the region's EKS cluster, built as product code builds it: the
        endpoint from DescribeCluster, a bearer token presigned with STS for that cluster."""
        name = self.region(aws_region).kube.cluster_name
        endpoint = self.client("eks", aws_region).describe_cluster(name=name)["cluster"]["endpoint"]
        sts = self.client("sts", aws_region)

        def sign_cluster_header(request: Any, **_: Any) -> None:
            request.headers["x-k8s-aws-id"] = name

        sts.meta.events.register("before-sign.sts.GetCallerIdentity", sign_cluster_header)
        url = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=60, HttpMethod="GET")
        cfg = k8s.Configuration(host=endpoint)
        cfg.api_key = {
            "authorization": "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
        }
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return k8s.AppsV1Api(k8s.ApiClient(cfg))

    def scale(self, aws_region: str, deployment: str, replicas: int) -> None:
        api = self.apps(aws_region)
        try:
            api.patch_namespaced_deployment_scale(deployment, "chalk", {"spec": {"replicas": replicas}})
        finally:
            api.api_client.close()

    def ready_replicas(self, aws_region: str, deployment: str) -> int:
        api = self.apps(aws_region)
        try:
            status = api.read_namespaced_deployment(deployment, "chalk").status
        finally:
            api.api_client.close()
        return int(status.ready_replicas or 0) if status is not None else 0  # a zero count is omitted

    def scale_query_servers(self, aws_region: str, replicas: int) -> None:
        self.scale(aws_region, QUERY_DEPLOYMENT, replicas)


@contextmanager
def running_world(state_dir: Path, **spec: Any) -> Iterator[LiveWorld]:
    world = World(WorldSpec(time_scale=TIME_SCALE, traffic=False, **spec), state_dir).start()
    try:
        yield LiveWorld(world)
    finally:
        # moto's backends are process-wide: forget this world before the next one starts
        httpx.post(f"{world.server.endpoint_url}/moto-api/reset", timeout=10, trust_env=False)
        world.stop()


def _error_code(call: Callable[[], object]) -> str | None:
    try:
        call()
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return None


@pytest.fixture
def error_code_of() -> Callable[[Callable[[], object]], str | None]:
    """`error_code_of(call)`: the AWS error code `call` fails with, or None when it succeeds."""
    return _error_code


@pytest.fixture
def regions(aws: Any) -> tuple[Any, Any]:
    """DynamoDB in us-east-1 and us-west-2 of the module's own `aws` sandbox (an AwsSandbox)."""
    return aws.client("dynamodb", "us-east-1"), aws.client("dynamodb", "us-west-2")


@pytest.fixture
def live_world(tmp_path: Path) -> Iterator[LiveWorld]:
    """A world of the test's own. Never two at once: moto's backends are process-wide, so two
    worlds in one process would share (and fight over) one AWS."""
    with running_world(tmp_path / "world") as world:
        yield world
