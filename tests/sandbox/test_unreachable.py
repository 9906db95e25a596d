"""The fault "a region's AWS API unreachable": no answer for anything signed for that region, while
what is not behind the API (DNS answers, Route 53's health checkers) keeps working."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any

import boto3
import dns.message
import dns.query
import pytest
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError

from sandbox.arc import ArcSim
from sandbox.aws import SandboxAwsApp
from sandbox.clock import SandboxClock
from sandbox.dns import DnsServer
from sandbox.harness import CREDENTIALS
from sandbox.harness import AwsSandbox
from sandbox.harness import poll
from sandbox.route53 import Route53Sim
from sandbox.truth import GroundTruth

TIME_SCALE = 100.0  # RequestInterval 10 s -> 0.1 s; an ARC cluster deploys in 0.2 s


class Backend:
    """An HTTP endpoint for a health check: /healthz answers `status`."""

    def __init__(self) -> None:
        self.status = 200
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(backend.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Sandbox:
    aws: AwsSandbox
    dns: DnsServer
    backend: Backend

    def dig(self, name: str) -> list[str]:
        host, _, port = self.dns.nameserver.rpartition(":")
        response = dns.query.udp(dns.message.make_query(name, "A"), host, port=int(port), timeout=2)
        return sorted(r.to_text() for rrset in response.answer for r in rrset)

    def healthy(self, health_check_id: str) -> bool:
        checks = self.aws.control("GET", "/_sandbox/route53/health").json()["health_checks"]
        return bool(next(c for c in checks if c["health_check_id"] == health_check_id)["healthy"])


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    def simulators(app: SandboxAwsApp, truth: GroundTruth) -> list[Any]:
        clock = SandboxClock(TIME_SCALE)
        route53 = Route53Sim(
            app,
            clock=clock,
            truth=truth,
            resolve=lambda host, port, kind: f"http://{host}:{port}",
            rng=random.Random(5),
            throttle=False,
        )
        return [route53, ArcSim(app, clock=clock, truth=truth, route53=route53)]

    backend = Backend()
    try:
        with AwsSandbox(simulators) as aws:
            name_server = DnsServer(aws.simulators[0].resolve).start()
            try:
                yield Sandbox(aws=aws, dns=name_server, backend=backend)
            finally:
                name_server.stop()
    finally:
        backend.close()


class TestARegionsApi:
    def test_gets_no_answer_while_other_regions_answer(self, sandbox: Sandbox) -> None:
        aws = sandbox.aws
        aws.set_unreachable("eu-west-1")
        with pytest.raises(ConnectionClosedError):
            aws.client("dynamodb", "eu-west-1").list_tables()
        assert aws.client("dynamodb", "us-west-2").list_tables()["TableNames"] == []
        aws.set_unreachable("eu-west-1", False)
        assert aws.client("dynamodb", "eu-west-1").list_tables()["TableNames"] == []

    def test_botocore_retries_then_raises(self, sandbox: Sandbox) -> None:
        sandbox.aws.set_unreachable("eu-west-1")
        client = sandbox.aws.client("sqs", "eu-west-1", attempts=3)
        retries: list[int] = []
        client.meta.events.register("needs-retry.sqs", lambda attempts, **_: retries.append(attempts))
        with pytest.raises(ConnectionClosedError):
            client.list_queues()
        assert retries == [1, 2, 3]  # every attempt was dropped

    def test_is_an_operator_route_recorded_as_ground_truth(self, sandbox: Sandbox) -> None:
        aws = sandbox.aws
        resp = aws.control(
            "POST", "/_sandbox/aws/unreachable", json={"region": "us-east-1", "unreachable": True}
        )
        assert resp.status_code == 200 and resp.json() == {"unreachable": ["us-east-1"]}
        for region in ("us-west-2", "eu-west-1"):  # control routes answer whatever is unreachable
            aws.control("POST", "/_sandbox/aws/unreachable", json={"region": region, "unreachable": True})
        assert aws.control("GET", "/_sandbox/aws/unreachable").json() == {
            "unreachable": ["eu-west-1", "us-east-1", "us-west-2"]
        }
        bad = aws.control(
            "POST", "/_sandbox/aws/unreachable", json={"region": "us-east-1", "unreachable": "yes"}
        )
        assert bad.status_code == 400
        aws.control("POST", "/_sandbox/aws/unreachable", json={"region": "us-east-1", "unreachable": False})
        events = [(e["region"], e["unreachable"]) for e in aws.truth.events("aws.unreachable")]
        assert events == [("us-east-1", True), ("us-west-2", True), ("eu-west-1", True), ("us-east-1", False)]


class TestUsEast1:
    def test_takes_route53s_api_but_not_dns_or_its_health_checkers(self, sandbox: Sandbox) -> None:
        r53 = sandbox.aws.client("route53")
        domain = f"chalk-{uuid.uuid4().hex[:8]}.example.com"
        zone = r53.create_hosted_zone(Name=domain, CallerReference=uuid.uuid4().hex)["HostedZone"]["Id"]
        hc = r53.create_health_check(
            CallerReference=uuid.uuid4().hex,
            HealthCheckConfig={
                "Type": "HTTP",
                "IPAddress": "127.0.0.1",
                "Port": sandbox.backend.port,
                "ResourcePath": "/healthz",
                "RequestInterval": 10,
                "FailureThreshold": 1,
                "Regions": ["us-east-1", "us-west-2", "eu-west-1"],
            },
        )["HealthCheck"]["Id"]
        name = f"failover.{domain}"
        r53.change_resource_record_sets(
            HostedZoneId=zone,
            ChangeBatch={
                "Changes": [
                    {
                        "Action": "CREATE",
                        "ResourceRecordSet": {
                            "Name": name,
                            "Type": "A",
                            "SetIdentifier": role,
                            "Failover": role,
                            "TTL": 1,
                            "ResourceRecords": [{"Value": ip}],
                            **({"HealthCheckId": hc} if role == "PRIMARY" else {}),
                        },
                    }
                    for role, ip in (("PRIMARY", "192.0.2.1"), ("SECONDARY", "192.0.2.2"))
                ]
            },
        )
        assert sandbox.dig(name) == ["192.0.2.1"]

        sandbox.aws.set_unreachable("us-east-1")
        for call in (
            lambda: r53.get_health_check_status(HealthCheckId=hc),
            lambda: r53.update_health_check(HealthCheckId=hc, Inverted=True),
            lambda: r53.change_resource_record_sets(
                HostedZoneId=zone,
                ChangeBatch={
                    "Changes": [
                        {
                            "Action": "DELETE",
                            "ResourceRecordSet": {
                                "Name": name,
                                "Type": "A",
                                "SetIdentifier": "SECONDARY",
                                "Failover": "SECONDARY",
                                "TTL": 1,
                                "ResourceRecords": [{"Value": "192.0.2.2"}],
                            },
                        }
                    ]
                },
            ),
            lambda: r53.create_health_check(
                CallerReference=uuid.uuid4().hex,
                HealthCheckConfig={"Type": "TCP", "IPAddress": "127.0.0.1", "Port": 1},
            ),
        ):
            with pytest.raises(ConnectionClosedError):
                call()
        # Route 53's data plane: the checkers still probe, DNS still answers and fails over
        sandbox.backend.status = 503
        poll(lambda: sandbox.dig(name) == ["192.0.2.2"], timeout=10, what="DNS failover without the API")
        sandbox.backend.status = 200
        poll(lambda: sandbox.dig(name) == ["192.0.2.1"], timeout=10, what="DNS failback without the API")

        # route53.amazonaws.com is in us-east-1, whatever region a client signs for
        with pytest.raises(ConnectionClosedError):
            sandbox.aws.client("route53", "us-west-2").get_health_check(HealthCheckId=hc)
        sandbox.aws.set_unreachable("us-east-1", False)
        assert r53.get_health_check(HealthCheckId=hc)["HealthCheck"]["Id"] == hc

    def test_leaves_arc_endpoints_of_other_regions_answering(self, sandbox: Sandbox) -> None:
        config = sandbox.aws.client("route53-recovery-control-config", "us-west-2")
        arn = config.create_cluster(ClusterName="demo-arc")["Cluster"]["ClusterArn"]
        cluster = poll(
            lambda: (c := config.describe_cluster(ClusterArn=arn)["Cluster"])["Status"] == "DEPLOYED" and c,
            what="cluster deployed",
        )
        control = config.create_routing_control(ClusterArn=arn, RoutingControlName="rc")["RoutingControl"][
            "RoutingControlArn"
        ]
        poll(
            lambda: (
                config.describe_routing_control(RoutingControlArn=control)["RoutingControl"]["Status"]
                == "DEPLOYED"
            ),
            what="routing control deployed",
        )
        sandbox.aws.set_unreachable("us-east-1")
        answered = {}
        for endpoint in cluster["ClusterEndpoints"]:
            make: Any = boto3.client
            client = make(
                "route53-recovery-cluster",
                region_name=endpoint["Region"],
                endpoint_url=endpoint["Endpoint"],
                config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
                **CREDENTIALS,
            )
            try:
                client.update_routing_control_state(RoutingControlArn=control, RoutingControlState="On")
                answered[endpoint["Region"]] = True
            except ConnectionClosedError:
                answered[endpoint["Region"]] = False
        assert answered == {
            "us-east-1": False,
            "us-west-2": True,
            "eu-west-1": True,
            "ap-northeast-1": True,
            "ap-southeast-2": True,
        }

    def test_us_west_2_takes_the_arc_configuration_api(self, sandbox: Sandbox) -> None:
        config = sandbox.aws.client("route53-recovery-control-config", "us-west-2")
        sandbox.aws.set_unreachable("us-west-2")
        with pytest.raises(ConnectionClosedError):
            config.list_clusters()
        sandbox.aws.set_unreachable("us-west-2", False)
        assert config.list_clusters()["Clusters"] == []
