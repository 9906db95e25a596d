"""Route 53 simulator: health checkers that really probe, failover/weighted answers, idempotency."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any

import dns.message
import dns.query
import dns.rcode
import httpx
import pytest
from botocore.exceptions import ClientError

from sandbox.aws import SandboxAwsApp
from sandbox.clock import SandboxClock
from sandbox.dns import DnsServer
from sandbox.harness import AwsSandbox
from sandbox.route53 import CHECKER_REGION_HEADER
from sandbox.route53 import DEFAULT_CHECKER_REGIONS
from sandbox.route53 import Route53Sim
from sandbox.route53 import RoutedRecord
from sandbox.route53 import checker_step
from sandbox.route53 import endpoint_healthy
from sandbox.route53 import reported_health
from sandbox.route53 import route
from sandbox.truth import GroundTruth

TIME_SCALE = 20.0
INTERVAL = 10  # AWS seconds: 0.5 s real at TIME_SCALE
THRESHOLD = 2
REAL_INTERVAL = INTERVAL / TIME_SCALE
SLACK = 2.0  # real seconds for scheduling, jitter of the first probe and a busy 2-core box


# --- pure rules ------------------------------------------------------------------------------


class TestCheckerStep:
    def test_turns_unhealthy_only_after_threshold_consecutive_failures(self) -> None:
        state = (True, 0)
        state = checker_step(*state, success=False, threshold=3)
        state = checker_step(*state, success=False, threshold=3)
        assert state == (True, 2)
        assert checker_step(*state, success=False, threshold=3) == (False, 0)

    def test_a_success_breaks_the_streak(self) -> None:
        state = checker_step(True, 0, success=False, threshold=2)
        assert checker_step(*state, success=True, threshold=2) == (True, 0)

    def test_recovers_after_threshold_consecutive_successes(self) -> None:
        state = checker_step(False, 0, success=True, threshold=2)
        assert state == (False, 1)
        assert checker_step(*state, success=True, threshold=2) == (True, 0)


class TestVerdict:
    @pytest.mark.parametrize(
        ("healthy", "total", "expected"),
        [
            (1, 8, False),  # 12.5%: not more than 18%
            (2, 8, True),  # 25%
            (1, 3, True),  # 33%: one checker of the minimum three is enough
            (0, 3, False),
            (9, 50, False),  # exactly 18% is not MORE than 18%
            (10, 50, True),
        ],
    )
    def test_more_than_18_percent_of_checkers(self, healthy: int, total: int, expected: bool) -> None:
        assert endpoint_healthy([True] * healthy + [False] * (total - healthy)) is expected

    def test_no_data_yet_is_healthy(self) -> None:
        assert endpoint_healthy([]) is True

    @pytest.mark.parametrize(
        ("endpoint_ok", "inverted", "disabled", "expected"),
        [
            (True, False, False, True),
            (False, False, False, False),
            (True, True, False, False),
            (False, True, False, True),
            (False, False, True, True),  # disabled: always healthy
            (False, True, True, False),  # disabled + inverted: AWS's way to force unhealthy
        ],
    )
    def test_inverted_and_disabled(
        self, endpoint_ok: bool, inverted: bool, disabled: bool, expected: bool
    ) -> None:
        assert reported_health(endpoint_ok, inverted=inverted, disabled=disabled) is expected


def _health(unhealthy: set[str | None]) -> Callable[[RoutedRecord], bool]:
    return lambda record: record.set_identifier not in unhealthy


class TestRoute:
    primary = RoutedRecord(("p.example",), "p", "hc-p", failover="PRIMARY")
    secondary = RoutedRecord(("s.example",), "s", "hc-s", failover="SECONDARY")

    @pytest.mark.parametrize(
        ("unhealthy", "expected"),
        [(set(), "p"), ({"p"}, "s"), ({"s"}, "p"), ({"p", "s"}, "p")],
    )
    def test_failover(self, unhealthy: set[str | None], expected: str) -> None:
        chosen = route([self.secondary, self.primary], _health(unhealthy), random.Random(1))
        assert [r.set_identifier for r in chosen] == [expected]

    def test_weighted_is_random_by_weight_among_healthy(self) -> None:
        records = [
            RoutedRecord(("a",), "a", weight=30),
            RoutedRecord(("b",), "b", weight=10),
            RoutedRecord(("c",), "c", weight=50),
            RoutedRecord(("z",), "z", weight=0),
        ]
        rng = random.Random(3)
        picks = [route(records, _health({"c"}), rng)[0].set_identifier for _ in range(2000)]
        assert set(picks) == {"a", "b"}
        assert 0.70 < picks.count("a") / len(picks) < 0.80  # 30 : 10

    def test_weighted_zero_weight_only_when_positive_ones_are_unhealthy(self) -> None:
        records = [RoutedRecord(("a",), "a", weight=5), RoutedRecord(("z",), "z", weight=0)]
        rng = random.Random(4)
        assert {route(records, _health({"a"}), rng)[0].set_identifier for _ in range(50)} == {"z"}

    def test_weighted_all_unhealthy_considers_all(self) -> None:
        records = [RoutedRecord(("a",), "a", weight=1), RoutedRecord(("b",), "b", weight=1)]
        rng = random.Random(5)
        picks = {route(records, _health({"a", "b"}), rng)[0].set_identifier for _ in range(100)}
        assert picks == {"a", "b"}

    def test_latency_prefers_the_resolver_region_then_region_order(self) -> None:
        records = [
            RoutedRecord(("w",), "w", region="us-west-2"),
            RoutedRecord(("e",), "e", region="us-east-1"),
            RoutedRecord(("eu",), "eu", region="eu-west-1"),
        ]
        rng = random.Random(6)
        assert route(records, _health(set()), rng)[0].set_identifier == "e"
        assert route(records, _health({"e"}), rng)[0].set_identifier == "eu"
        assert route(records, _health({"e", "eu", "w"}), rng)[0].set_identifier == "e"

    def test_multivalue_answers_healthy_records(self) -> None:
        records = [RoutedRecord((f"10.0.0.{i}",), str(i), multivalue=True) for i in range(10)]
        chosen = route(records, _health({"0", "1"}), random.Random(7))
        assert [r.set_identifier for r in chosen] == [str(i) for i in range(2, 10)]


# --- the served endpoint -------------------------------------------------------------------------


class Target:
    """A real HTTP endpoint: /healthz answers `status`, or 503 for checkers in `failing_regions`."""

    def __init__(self) -> None:
        self.status = 200
        self.failing_regions: set[str] = set()
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                target.requests.append((self.path, self.headers.get("Host", "")))
                failing = self.headers.get(CHECKER_REGION_HEADER) in target.failing_regions
                code = 404 if self.path != "/healthz" else 503 if failing else target.status
                body = b"chalk ok" if code == 200 else b"nope"
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class World:
    client: Any
    endpoint: str
    truth: GroundTruth
    sim: Route53Sim
    aws: AwsSandbox
    dns: DnsServer
    targets: dict[str, Target] = field(default_factory=dict)
    addresses: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def target(self, prefix: str = "alb") -> tuple[str, Target]:
        """A fresh endpoint reachable under a unique ALB-like DNS name, which DNS answers with two
        addresses of its own (an ALB's nodes in two AZs)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}.us-east-1.elb.amazonaws.com"
        self.targets[name] = Target()
        n = len(self.targets)
        self.addresses[name] = (f"198.51.100.{2 * n}", f"198.51.100.{2 * n + 1}")
        return name, self.targets[name]

    def health_check(self, fqdn: str | None, **config: Any) -> str:
        settings = {
            "Type": "HTTPS",
            "FullyQualifiedDomainName": fqdn,
            "Port": 443,
            "ResourcePath": "/healthz",
            "RequestInterval": INTERVAL,
            "FailureThreshold": THRESHOLD,
            **config,
        }
        settings = {k: v for k, v in settings.items() if v is not None}
        resp = self.client.create_health_check(CallerReference=uuid.uuid4().hex, HealthCheckConfig=settings)
        return str(resp["HealthCheck"]["Id"])

    def report(self, health_check_id: str) -> dict[str, Any]:
        checks = httpx.get(f"{self.endpoint}/_sandbox/route53/health", timeout=5, trust_env=False).json()[
            "health_checks"
        ]
        return next(c for c in checks if c["health_check_id"] == health_check_id)

    def healthy(self, health_check_id: str) -> bool:
        return bool(self.report(health_check_id)["healthy"])

    def answer(self, zone_id: str, name: str, kind: str = "A") -> list[str]:
        """TestDNSAnswer (a control-plane call: throttled like every Route 53 API call)."""
        resp = self.client.test_dns_answer(HostedZoneId=zone_id, RecordName=name, RecordType=kind)
        return list(resp["RecordData"])

    def dig(self, name: str, kind: str = "A") -> tuple[str, list[str], int]:
        """(rcode, values, TTL) from Route 53's name servers (the sandbox's DNS server over UDP),
        the data plane resolvers use: not throttled."""
        host, _, port = self.nameserver.rpartition(":")
        response = dns.query.udp(dns.message.make_query(name, kind), host, port=int(port), timeout=2)
        values = sorted(r.to_text() for rrset in response.answer for r in rrset)
        ttl = min((rrset.ttl for rrset in response.answer), default=0)
        return dns.rcode.to_text(response.rcode()), values, ttl

    @property
    def nameserver(self) -> str:
        return self.dns.nameserver


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until `predicate` holds; returns the real seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
def world() -> Iterator[World]:
    targets: dict[str, Target] = {}

    def resolve(host: str, port: int, kind: str) -> str | None:
        if host == "127.0.0.1":
            return f"http://127.0.0.1:{port}"
        target = targets.get(host)
        return target.base_url if target else None  # sandbox ALBs terminate TLS: plain HTTP inside

    addresses: dict[str, tuple[str, ...]] = {}

    def simulators(app: SandboxAwsApp, truth: GroundTruth) -> list[Route53Sim]:
        clock = SandboxClock(time_scale=TIME_SCALE)
        sim = Route53Sim(
            app,
            clock=clock,
            truth=truth,
            resolve=resolve,
            alias_addresses=addresses.get,
            rng=random.Random(11),
        )
        return [sim]

    try:
        with AwsSandbox(simulators) as aws:
            sim = aws.simulators[0]
            assert isinstance(sim, Route53Sim)
            name_server = DnsServer(sim.resolve).start()
            try:
                yield World(
                    client=aws.client("route53"),
                    endpoint=aws.endpoint,
                    truth=aws.truth,
                    sim=sim,
                    aws=aws,
                    dns=name_server,
                    targets=targets,
                    addresses=addresses,
                )
            finally:
                name_server.stop()
    finally:
        for target in targets.values():
            target.close()


DETECT = REAL_INTERVAL * THRESHOLD + SLACK


class TestHealthChecking:
    def test_unhealthy_after_threshold_failures_and_healthy_again(self, world: World) -> None:
        name, target = world.target()
        hc = world.health_check(name)  # no Regions: AWS's default eight checkers
        assert world.healthy(hc)
        # Waits read the operator report: GetHealthCheckStatus is throttled (4 burst, 1 per second).
        wait_for(
            lambda: all(c["status"] for c in world.report(hc)["checkers"]),
            DETECT,
            "a first observation from each of the 8 default checker regions",
        )
        first = world.client.get_health_check_status(HealthCheckId=hc)["HealthCheckObservations"]
        assert len(first) == 8

        target.status = 503
        took = wait_for(lambda: not world.healthy(hc), DETECT, "the check to turn unhealthy")
        # FailureThreshold=2 needs two failed probes per checker: at least one interval apart.
        assert took >= REAL_INTERVAL * (THRESHOLD - 1) - 0.1

        observations = world.client.get_health_check_status(HealthCheckId=hc)["HealthCheckObservations"]
        assert {o["Region"] for o in observations} == set(DEFAULT_CHECKER_REGIONS)
        assert {o["StatusReport"]["Status"] for o in observations} == {
            "Failure: HTTP Status Code 503, Service Unavailable"
        }
        assert all(o["IPAddress"] and o["StatusReport"]["CheckedTime"] for o in observations)

        target.status = 200
        wait_for(lambda: world.healthy(hc), DETECT, "the check to recover")
        statuses = {
            o["StatusReport"]["Status"]
            for o in world.client.get_health_check_status(HealthCheckId=hc)["HealthCheckObservations"]
        }
        assert statuses == {"Success: HTTP Status Code 200, OK"}
        last_failures = world.client.get_health_check_last_failure_reason(HealthCheckId=hc)
        assert {o["StatusReport"]["Status"] for o in last_failures["HealthCheckObservations"]} == {
            "Failure: HTTP Status Code 503, Service Unavailable"
        }
        flips = [
            e["healthy"] for e in world.truth.events("route53.health_check") if e["health_check_id"] == hc
        ]
        assert flips == [True, False, True]

    def test_more_than_18_percent_of_checkers_keep_the_endpoint_healthy(self, world: World) -> None:
        name, target = world.target()
        hc = world.health_check(name)
        regions = list(DEFAULT_CHECKER_REGIONS)

        def unhealthy_checkers() -> set[str]:
            return {c["region"] for c in world.report(hc)["checkers"] if not c["healthy"]}

        target.failing_regions = set(regions[:6])  # 2 of 8 healthy: 25%
        wait_for(lambda: unhealthy_checkers() == set(regions[:6]), DETECT, "six checkers to fail")
        time.sleep(REAL_INTERVAL * 2)  # a steady state, not a race: the verdict must hold
        assert world.healthy(hc)

        target.failing_regions = set(regions[:7])  # 1 of 8 healthy: 12.5%
        wait_for(lambda: not world.healthy(hc), DETECT, "the endpoint to turn unhealthy")
        assert unhealthy_checkers() == set(regions[:7])

    def test_inverted_flips_and_disabled_is_always_healthy(self, world: World) -> None:
        name, target = world.target()
        hc = world.health_check(name, Regions=["us-east-1", "us-west-2", "eu-west-1"])

        world.client.update_health_check(HealthCheckId=hc, Inverted=True)
        assert not world.healthy(hc)
        world.client.update_health_check(HealthCheckId=hc, Inverted=False)
        assert world.healthy(hc)

        target.status = 500
        wait_for(lambda: not world.healthy(hc), DETECT, "the check to turn unhealthy")
        world.client.update_health_check(HealthCheckId=hc, Inverted=True)
        assert world.healthy(hc)  # unhealthy endpoint, inverted
        world.client.update_health_check(HealthCheckId=hc, Inverted=False, Disabled=True)
        assert world.healthy(hc)
        time.sleep(REAL_INTERVAL * 2)
        assert world.healthy(hc)  # still failing, still healthy: disabled
        world.client.update_health_check(HealthCheckId=hc, Inverted=True)
        assert not world.healthy(hc)  # disabled + inverted: forced unhealthy

        config = world.client.get_health_check(HealthCheckId=hc)["HealthCheck"]
        assert config["HealthCheckConfig"]["Inverted"] is True
        assert config["HealthCheckConfig"]["Disabled"] is True
        assert config["HealthCheckVersion"] == 6

    def test_update_takes_effect_and_keeps_what_it_does_not_name(self, world: World) -> None:
        _, first = world.target()
        _, second = world.target()
        regions = ["us-east-1", "us-west-2", "eu-west-1"]
        hc = world.health_check(None, Type="HTTP", IPAddress="127.0.0.1", Port=first.port, Regions=regions)
        world.client.update_health_check(HealthCheckId=hc, ResourcePath="/nope")
        wait_for(lambda: not world.healthy(hc), DETECT, "a wrong ResourcePath to fail")
        reasons = world.client.get_health_check_last_failure_reason(HealthCheckId=hc)[
            "HealthCheckObservations"
        ]
        assert {o["StatusReport"]["Status"] for o in reasons} == {"Failure: HTTP Status Code 404, Not Found"}

        first.status = 503  # the new port's target is healthy, the old one is not
        world.client.update_health_check(HealthCheckId=hc, ResourcePath="/healthz", Port=second.port)
        wait_for(lambda: world.healthy(hc), DETECT, "the new port and path to pass")
        assert ("/healthz", f"127.0.0.1:{second.port}") in second.requests

        config = world.client.get_health_check(HealthCheckId=hc)["HealthCheck"]
        assert sorted(config["HealthCheckConfig"]["Regions"]) == sorted(regions)  # moto would drop them
        assert config["HealthCheckConfig"]["Port"] == second.port
        assert config["HealthCheckVersion"] == 3

        with pytest.raises(ClientError) as err:
            world.client.update_health_check(HealthCheckId=hc, HealthCheckVersion=1, FailureThreshold=3)
        assert err.value.response["Error"]["Code"] == "HealthCheckVersionMismatch"
        world.client.update_health_check(HealthCheckId=hc, HealthCheckVersion=3, ResetElements=["Regions"])
        config = world.client.get_health_check(HealthCheckId=hc)["HealthCheck"]
        assert "Regions" not in config["HealthCheckConfig"]
        wait_for(lambda: len(world.report(hc)["checkers"]) == 8, DETECT, "the default checker regions")

    def test_unroutable_endpoint_is_a_connection_failure(self, world: World) -> None:
        hc = world.health_check(
            "gone.us-east-1.elb.amazonaws.com", Regions=["us-east-1", "us-west-2", "eu-west-1"]
        )
        wait_for(lambda: not world.healthy(hc), DETECT, "an unroutable endpoint to fail")
        reasons = world.client.get_health_check_last_failure_reason(HealthCheckId=hc)[
            "HealthCheckObservations"
        ]
        assert len(reasons) == 3
        assert all(o["StatusReport"]["Status"].startswith("Failure: Connection timed out.") for o in reasons)

    def test_unknown_health_check(self, world: World) -> None:
        for call in (world.client.get_health_check_status, world.client.get_health_check_last_failure_reason):
            with pytest.raises(ClientError) as err:
                call(HealthCheckId=str(uuid.uuid4()))
            assert err.value.response["Error"]["Code"] == "NoSuchHealthCheck"


class TestCreateHealthCheck:
    def test_caller_reference_is_idempotent(self, world: World) -> None:
        reference = uuid.uuid4().hex
        config = {"Type": "HTTPS", "FullyQualifiedDomainName": "a.example.com", "ResourcePath": "/healthz"}
        first = world.client.create_health_check(CallerReference=reference, HealthCheckConfig=config)
        again = world.client.create_health_check(CallerReference=reference, HealthCheckConfig=config)
        assert again["ResponseMetadata"]["HTTPStatusCode"] == 201
        assert again["HealthCheck"]["Id"] == first["HealthCheck"]["Id"]
        assert again["Location"].endswith(f"/healthcheck/{first['HealthCheck']['Id']}")
        assert first["HealthCheck"]["HealthCheckConfig"]["Port"] == 443  # AWS's HTTPS default

        with pytest.raises(ClientError) as err:
            world.client.create_health_check(
                CallerReference=reference, HealthCheckConfig={**config, "ResourcePath": "/other"}
            )
        assert err.value.response["Error"]["Code"] == "HealthCheckAlreadyExists"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
        ids = [c["Id"] for c in world.client.list_health_checks()["HealthChecks"]]
        assert ids.count(first["HealthCheck"]["Id"]) == 1 and len(ids) == 1

        world.client.delete_health_check(HealthCheckId=first["HealthCheck"]["Id"])
        with pytest.raises(ClientError) as err:  # a deleted check's reference stays taken
            world.client.create_health_check(CallerReference=reference, HealthCheckConfig=config)
        assert err.value.response["Error"]["Code"] == "HealthCheckAlreadyExists"

    def test_rejects_what_aws_rejects(self, world: World) -> None:
        for bad in ({"RequestInterval": 20}, {"FailureThreshold": 11}):
            with pytest.raises(ClientError) as err:
                world.health_check("a.example.com", **bad)
            assert err.value.response["Error"]["Code"] == "InvalidInput"
        with pytest.raises(ClientError) as err:
            world.client.delete_health_check(HealthCheckId=str(uuid.uuid4()))
        assert err.value.response["Error"]["Code"] == "NoSuchHealthCheck"


def _zone(world: World) -> tuple[str, str]:
    domain = f"chalk-{uuid.uuid4().hex[:8]}.example.com"
    zone = world.client.create_hosted_zone(Name=domain, CallerReference=uuid.uuid4().hex)
    return str(zone["HostedZone"]["Id"]).split("/")[-1], domain


class TestDnsAnswer:
    """TestDNSAnswer (API reference): "Gets the value that Amazon Route 53 returns in response to a DNS
    request for a specified record name and type"; for failover and weighted records "a RecordDataEntry
    element contains the value from the appropriate resource record set based on the request", and for
    an alias to a load balancer "one or more IP addresses for the load balancer" (Developer Guide,
    "Choosing between alias and non-alias records") - addresses, not the load balancer's name."""

    def test_failover_to_secondary_and_back(self, world: World) -> None:
        zone_id, domain = _zone(world)
        primary_alb, primary = world.target("primary")
        secondary_alb, _ = world.target("secondary")
        primary_hc = world.health_check(primary_alb)
        secondary_hc = world.health_check(secondary_alb)
        name = f"chalk-failover.{domain}"
        changes = [
            {
                "Action": "UPSERT",
                "ResourceRecordSet": {
                    "Name": name,
                    "Type": "A",
                    "SetIdentifier": f"{role.lower()}-{uuid.uuid4().hex[:6]}",
                    "Failover": role,
                    "HealthCheckId": hc,
                    "AliasTarget": {
                        "HostedZoneId": "Z35SXDOTRQ7X7K",
                        "DNSName": f"dualstack.{alb}.",
                        "EvaluateTargetHealth": True,
                    },
                },
            }
            for role, hc, alb in (
                ("PRIMARY", primary_hc, primary_alb),
                ("SECONDARY", secondary_hc, secondary_alb),
            )
        ]
        world.client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})

        primary_ips, secondary_ips = list(world.addresses[primary_alb]), list(world.addresses[secondary_alb])
        resp = world.client.test_dns_answer(HostedZoneId=zone_id, RecordName=name, RecordType="A")
        assert resp["RecordData"] == primary_ips
        assert (resp["Nameserver"], resp["Protocol"], resp["ResponseCode"]) == (
            "ns-sandbox",
            "UDP",
            "NOERROR",
        )

        primary.status = 503
        wait_for(lambda: world.answer(zone_id, name) == secondary_ips, DETECT, "failover to the secondary")
        primary.status = 200
        wait_for(lambda: world.answer(zone_id, name) == primary_ips, DETECT, "failback to the primary")

        answers = [e["answer"] for e in world.truth.events("route53.dns_answer") if e["record"] == name]
        assert answers == [primary_ips, secondary_ips, primary_ips]

    def test_weighted_answers_only_healthy_records(self, world: World) -> None:
        zone_id, domain = _zone(world)
        name = f"chalk.{domain}"
        changes, targets = [], []
        for i in range(3):
            alb, target = world.target(f"w{i}")
            targets.append(target)
            record = {
                "Name": name,
                "Type": "A",
                "SetIdentifier": f"w{i}-{uuid.uuid4().hex[:6]}",
                "Weight": 10,
                "TTL": 60,
                "ResourceRecords": [{"Value": f"10.0.0.{i}"}],
                "HealthCheckId": world.health_check(alb, Regions=["us-east-1", "us-west-2", "eu-west-1"]),
            }
            changes.append({"Action": "UPSERT", "ResourceRecordSet": record})
        world.client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})
        assert world.answer(zone_id, name)[0] in {"10.0.0.0", "10.0.0.1", "10.0.0.2"}  # TestDNSAnswer agrees
        # Many lookups: through the name servers (the data plane), as resolvers ask.
        assert {world.dig(name)[1][0] for _ in range(40)} == {"10.0.0.0", "10.0.0.1", "10.0.0.2"}

        targets[1].status = 503
        wait_for(
            lambda: all(world.dig(name)[1] != ["10.0.0.1"] for _ in range(20)),
            DETECT,
            "the unhealthy weighted record to leave the answers",
        )
        assert {world.dig(name)[1][0] for _ in range(40)} == {"10.0.0.0", "10.0.0.2"}

    def test_simple_record_nxdomain_and_unknown_zone(self, world: World) -> None:
        zone_id, domain = _zone(world)
        world.client.change_resource_record_sets(
            HostedZoneId=zone_id,
            ChangeBatch={
                "Changes": [
                    {
                        "Action": "CREATE",
                        "ResourceRecordSet": {
                            "Name": f"www.{domain}",
                            "Type": "CNAME",
                            "TTL": 60,
                            "ResourceRecords": [{"Value": "prod-east.query.example.com"}],
                        },
                    }
                ]
            },
        )
        assert world.answer(zone_id, f"www.{domain}", "CNAME") == ["prod-east.query.example.com"]
        missing = world.client.test_dns_answer(
            HostedZoneId=zone_id, RecordName=f"nope.{domain}", RecordType="A"
        )
        assert (missing["ResponseCode"], missing["RecordData"]) == ("NXDOMAIN", [])
        with pytest.raises(ClientError) as err:
            world.client.test_dns_answer(
                HostedZoneId="ZNOSUCHZONE", RecordName=f"www.{domain}", RecordType="A"
            )
        assert err.value.response["Error"]["Code"] == "NoSuchHostedZone"


def upsert(world: World, zone_id: str, *records: dict[str, Any]) -> None:
    changes = [{"Action": "UPSERT", "ResourceRecordSet": r} for r in records]
    world.client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})


def alias_to(alb: str) -> dict[str, Any]:
    return {"HostedZoneId": "Z35SXDOTRQ7X7K", "DNSName": f"dualstack.{alb}.", "EvaluateTargetHealth": False}


class TestAliasAnswers:
    """Route 53 Developer Guide, "Choosing between alias and non-alias records": for an alias to "an
    Elastic Load Balancing load balancer - Route 53 responds with one or more IP addresses for the
    load balancer", and "If an alias record points to an AWS resource, you can't set the time to live
    (TTL); Route 53 uses the default TTL for the resource" (60 s for a load balancer); an alias to
    another record of the zone takes that record's TTL. TestDNSAnswer's RecordDataEntry: "an IP
    address or a domain name for the AWS resource"; the API "only supports querying public hosted
    zones" (API reference, TestDNSAnswer)."""

    def test_an_alias_to_a_load_balancer_is_answered_with_its_addresses(self, world: World) -> None:
        zone_id, domain = _zone(world)
        alb, _ = world.target("east")
        name = f"prod-east.query.{domain}"
        upsert(world, zone_id, {"Name": name, "Type": "A", "AliasTarget": alias_to(alb)})
        addresses = sorted(world.addresses[alb])
        assert sorted(world.answer(zone_id, name)) == addresses
        assert world.dig(name)[:2] == ("NOERROR", addresses)

    def test_alias_answers_carry_the_load_balancers_ttl_scaled(self, world: World) -> None:
        zone_id, domain = _zone(world)
        alb, _ = world.target("east")
        upsert(
            world,
            zone_id,
            {"Name": f"alias.{domain}", "Type": "A", "AliasTarget": alias_to(alb)},
            {"Name": f"plain.{domain}", "Type": "A", "TTL": 300, "ResourceRecords": [{"Value": "192.0.2.7"}]},
            {
                "Name": f"inner.{domain}",
                "Type": "A",
                "AliasTarget": {
                    "HostedZoneId": zone_id,
                    "DNSName": f"plain.{domain}",
                    "EvaluateTargetHealth": False,
                },
            },
        )
        assert world.dig(f"alias.{domain}")[2] == round(60 / TIME_SCALE)  # the ELB's 60 s
        assert world.dig(f"plain.{domain}")[2] == round(300 / TIME_SCALE)  # the record's own TTL
        assert world.dig(f"inner.{domain}") == ("NOERROR", ["192.0.2.7"], round(300 / TIME_SCALE))

    def test_a_private_zone_is_refused(self, world: World) -> None:
        vpc = world.aws.client("ec2").create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
        domain = f"internal-{uuid.uuid4().hex[:8]}.example.com"
        zone = world.client.create_hosted_zone(
            Name=domain,
            CallerReference=uuid.uuid4().hex,
            VPC={"VPCRegion": "us-east-1", "VPCId": vpc},
            HostedZoneConfig={"Comment": "private", "PrivateZone": True},
        )
        zone_id = str(zone["HostedZone"]["Id"]).split("/")[-1]
        upsert(
            world,
            zone_id,
            {"Name": f"db.{domain}", "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": "10.9.0.5"}]},
        )
        with pytest.raises(ClientError) as err:
            world.client.test_dns_answer(HostedZoneId=zone_id, RecordName=f"db.{domain}", RecordType="A")
        assert err.value.response["Error"]["Code"] == "InvalidInput"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert world.dig(f"db.{domain}")[:2] == ("REFUSED", [])  # public name servers do not serve it


class TestCheckerRequests:
    """HealthCheckConfig.FullyQualifiedDomainName (API reference): "Route 53 ... passes the value of
    FullyQualifiedDomainName in the Host header for all health checks except TCP health checks"; on
    ports other than 80 and 443 the Host is "FullyQualifiedDomainName:Port"."""

    def test_the_host_header_is_the_checks_domain_name(self, world: World) -> None:
        name, target = world.target()
        world.health_check(name, Regions=["us-east-1", "us-west-2", "eu-west-1"])  # HTTPS on 443
        wait_for(lambda: ("/healthz", name) in target.requests, DETECT, "a probe with Host = the FQDN")
        other_port = world.health_check(
            name, Type="HTTP", Port=8080, Regions=["us-east-1", "us-west-2", "eu-west-1"]
        )
        wait_for(lambda: ("/healthz", f"{name}:8080") in target.requests, DETECT, "Host = FQDN:Port")
        assert world.healthy(other_port)
        assert {host for _path, host in target.requests} == {name, f"{name}:8080"}


def throttled(call: Callable[[], Any]) -> ClientError | None:
    try:
        call()
    except ClientError as exc:
        return exc
    return None


class TestThrottling:
    """Route 53 Developer Guide, "Throttling of Route 53 API requests": every request takes a token
    from the account's bucket and from its operation's bucket (GetHealthCheckStatus: 4 burst, 1 per
    second; the account and unlisted operations: 50 burst, 10 per second); when either is empty
    "Amazon Route 53 returns an HTTP 400 error (Bad request). The response header also includes a
    Code element with a value of Throttling and a Message element with a value of Rate exceeded."
    The client here makes one attempt (no retries), so every throttled call shows."""

    def test_a_burst_of_get_health_check_status_is_throttled(self, world: World) -> None:
        name, _ = world.target()
        hc = world.health_check(name, Regions=["us-east-1", "us-west-2", "eu-west-1"])
        results = [
            throttled(lambda: world.client.get_health_check_status(HealthCheckId=hc)) for _ in range(8)
        ]
        assert results[:4] == [None] * 4  # the burst the bucket holds
        errors = [e for e in results[4:] if e is not None]
        assert errors, "a fifth call within the same second must be throttled"
        error = errors[0].response
        assert (error["Error"]["Code"], error["Error"]["Message"]) == ("Throttling", "Rate exceeded")
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert world.client.list_health_checks()["HealthChecks"]  # other operations have buckets of their own

    def test_paced_calls_are_not_throttled(self, world: World) -> None:
        name, _ = world.target()
        hc = world.health_check(name, Regions=["us-east-1", "us-west-2", "eu-west-1"])
        for _ in range(4):  # empty the bucket
            world.client.get_health_check_status(HealthCheckId=hc)
        for _ in range(3):
            time.sleep(1.1)  # the client's own pacing (one call per second), not a wait for a state
            assert throttled(lambda: world.client.get_health_check_status(HealthCheckId=hc)) is None

    def test_every_operation_draws_on_the_accounts_bucket(self, world: World) -> None:
        zone_id, _ = _zone(world)
        calls: list[Callable[[], Any]] = [
            world.client.list_health_checks,
            world.client.list_hosted_zones,
            world.client.get_hosted_zone_count,
            lambda: world.client.get_hosted_zone(Id=zone_id),
            lambda: world.client.list_resource_record_sets(HostedZoneId=zone_id),
        ]
        per_operation = 30  # fewer than any of these operations' own burst of 50
        with ThreadPoolExecutor(max_workers=8) as pool:  # faster than the account's 10 per second
            results = list(
                pool.map(lambda i: throttled(calls[i % len(calls)]), range(per_operation * len(calls)))
            )
        refusals = [e for e in results if e is not None]
        # No operation's own bucket can have run dry: the refusals are the shared account bucket's.
        assert refusals, "150 calls faster than 10 per second must exceed the account's burst of 50"
        assert {(e.response["Error"]["Code"], e.response["Error"]["Message"]) for e in refusals} == {
            ("Throttling", "Rate exceeded")
        }
