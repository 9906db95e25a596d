"""The failover edge: resolves the failover name through the sandbox DNS (honouring its TTL), pins
a client connection to the load balancer it was opened to, and forwards with the failover name as Host."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any

import dns.rcode
import httpx
import pytest

from sandbox.chalk import ChalkEnvironment
from sandbox.chalk import ChalkRegion
from sandbox.chalk import served_hosts
from sandbox.dns import DnsAnswer
from sandbox.dns import DnsServer
from sandbox.edge import UPSTREAM_HEADER
from sandbox.edge import FailoverEdge
from sandbox.harness import poll
from sandbox.net import region_address
from sandbox.net import sockets_on_one_port
from sandbox.query_server import QueryServer
from sandbox.truth import GroundTruth

FAILOVER = "chalk-failover.example.com"
EAST, WEST = region_address(0, 1), region_address(1, 1)
TTL_S = 1  # whole seconds: the DNS wire format has no fractions


@dataclass
class Zone:
    """The failover name's authority: a switchable answer and TTL; counts the lookups it serves."""

    answer: tuple[str, ...] | None = (EAST,)
    ttl: int = TTL_S
    failures: int = 0  # the next lookups answered SERVFAIL (a failing name server)
    lookups: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, name: str, kind: str) -> DnsAnswer:
        with self.lock:
            if name != FAILOVER:
                return DnsAnswer.refused()
            self.lookups += 1
            if self.failures:
                self.failures -= 1
                return DnsAnswer(dns.rcode.SERVFAIL)
            if self.answer is None:
                return DnsAnswer(dns.rcode.NXDOMAIN)
            return DnsAnswer(dns.rcode.NOERROR, self.answer if kind == "A" else (), self.ttl)

    def set(self, *addresses: str) -> None:
        with self.lock:
            self.answer = addresses or None


@dataclass
class Regions:
    servers: dict[str, QueryServer]
    environment: ChalkEnvironment
    port: int


def query_servers() -> Regions:
    env = ChalkEnvironment(environment_id="prod", client_id="client-prod", client_secret="edge-secret")
    sockets = sockets_on_one_port([EAST, WEST])
    port = int(sockets[0].getsockname()[1])
    servers = {}
    for sock, (name, short) in zip(sockets, (("us-east-1", "east"), ("us-west-2", "west")), strict=True):
        chalk = ChalkRegion(
            region=name,
            resource_group=f"prod-{short}",
            is_serving=lambda: True,
            read_item=lambda pk: {},
            publish=lambda rows: None,
        )
        hosts = served_hosts(f"prod-{short}.query.example.com", FAILOVER)
        address = sock.getsockname()[0]  # the server takes the socket over (and closes this handle)
        servers[address] = QueryServer(region=chalk, environment=env, hosts=hosts, sockets=[sock]).start()
    return Regions(servers, env, port)


@pytest.fixture
def regions() -> Iterator[Regions]:
    regions = query_servers()
    yield regions
    for srv in regions.servers.values():
        srv.stop()


@pytest.fixture
def zone() -> Zone:
    return Zone()


@pytest.fixture
def nameserver(zone: Zone) -> Iterator[str]:
    server = DnsServer(zone).start()
    yield server.nameserver
    server.stop()


@pytest.fixture
def truth() -> GroundTruth:
    return GroundTruth()


@pytest.fixture
def edge(regions: Regions, nameserver: str, truth: GroundTruth) -> Iterator[FailoverEdge]:
    e = FailoverEdge(name=FAILOVER, upstream_port=regions.port, nameserver=nameserver, truth=truth).start()
    yield e
    e.stop()


def fresh(edge: FailoverEdge, path: str = "/healthz") -> httpx.Response:
    """One request on a new connection (a new client, as a probe opens one)."""
    with httpx.Client(timeout=10, trust_env=False) as http:
        return http.get(f"{edge.url}{path}")


def upstream(edge: FailoverEdge) -> str:
    return fresh(edge).headers[UPSTREAM_HEADER]


class TestForwarding:
    """Chalk's multi-region guide: clients use the failover name and its ALB's host rules match it;
    the edge stands in for the client's network path, so it forwards with Host = the failover name."""

    def test_forwards_to_the_address_dns_answers(self, edge: FailoverEdge) -> None:
        resp = fresh(edge)
        assert (resp.status_code, resp.json()) == (200, {"status": "ok"})
        assert resp.headers[UPSTREAM_HEADER] == EAST

    def test_chalk_queries_flow_through_the_edge(self, edge: FailoverEdge, regions: Regions) -> None:
        token = regions.environment.issue("client-prod", "edge-secret")
        headers = {"Authorization": f"Bearer {token}", "X-Chalk-Env-Id": "prod"}
        body = {"inputs": {"user.id": 1}, "outputs": ["user.name"], "include_meta": True}
        with httpx.Client(timeout=10, trust_env=False) as http:
            resp = http.post(f"{edge.url}/v1/query/online", headers=headers, json=body)
            assert resp.status_code == 200
            assert resp.json()["meta"]["environment_name"] == "prod-east"
            assert (
                http.post(f"{edge.url}/v1/query/online", json=body).status_code == 401
            )  # no token, none added

    def test_upstream_status_is_passed_through(self, edge: FailoverEdge) -> None:
        resp = fresh(edge, "/no/such/route")
        assert resp.status_code == 404
        assert resp.headers[UPSTREAM_HEADER] == EAST


class TestDnsTtl:
    """A stub resolver caches an answer for its TTL (RFC 1035 §3.2.1, "TTL ... the time interval that
    the resource record may be cached"); a lookup that fails is not cached (RFC 2308 §7 allows at most
    five minutes, resolvers in practice ask again)."""

    def test_keeps_the_answer_for_its_ttl_then_switches(self, edge: FailoverEdge, zone: Zone) -> None:
        assert upstream(edge) == EAST
        zone.set(WEST)  # Route 53 now answers the secondary
        assert upstream(edge) == EAST  # a new connection, within the TTL: still the cached answer
        assert zone.lookups == 1
        poll(lambda: upstream(edge) == WEST, timeout=TTL_S + 5, what="the TTL to run out")
        assert zone.lookups == 2  # re-resolved once, on the first request after expiry

    def test_answer_changes_are_ground_truth(
        self, edge: FailoverEdge, zone: Zone, truth: GroundTruth
    ) -> None:
        upstream(edge)
        zone.set(WEST)
        poll(lambda: upstream(edge) == WEST, timeout=TTL_S + 5)
        assert [(e["answer"], e["previous"]) for e in truth.events("edge.answer")] == [
            ([EAST], None),
            ([WEST], [EAST]),
        ]

    def test_a_busy_edge_refreshes_at_expiry_without_requests(
        self, regions: Regions, nameserver: str, zone: Zone
    ) -> None:
        """Other clients keep the resolver asking: the switch lands at expiry, not at our next request."""
        e = FailoverEdge(name=FAILOVER, upstream_port=regions.port, nameserver=nameserver, busy=True).start()
        try:
            poll(lambda: e.answer == (EAST,))
            zone.set(WEST)
            poll(lambda: e.answer == (WEST,), timeout=TTL_S + 5)
            assert zone.lookups <= 3  # one lookup per TTL, not one per poll
        finally:
            e.stop()

    def test_a_failing_lookup_is_502_and_not_cached(self, edge: FailoverEdge, zone: Zone) -> None:
        zone.failures = 1
        resp = fresh(edge)
        assert resp.status_code == 502
        assert UPSTREAM_HEADER not in resp.headers
        assert upstream(edge) == EAST  # asked again at once


class TestConnectionPinning:
    """A TCP connection goes to the address it was opened to: a keep-alive client (chalkpy's
    requests.Session) stays on the old load balancer after the DNS answer changed, until it closes
    the connection; a new connection then goes where DNS now points."""

    def test_a_kept_alive_connection_stays_on_its_upstream(self, edge: FailoverEdge, zone: Zone) -> None:
        with httpx.Client(timeout=10, trust_env=False) as session:
            assert session.get(f"{edge.url}/healthz").headers[UPSTREAM_HEADER] == EAST
            zone.set(WEST)
            poll(lambda: upstream(edge) == WEST, timeout=TTL_S + 5, what="new connections to go west")
            for _ in range(3):
                assert session.get(f"{edge.url}/healthz").headers[UPSTREAM_HEADER] == EAST
        with httpx.Client(timeout=10, trust_env=False) as reopened:
            assert reopened.get(f"{edge.url}/healthz").headers[UPSTREAM_HEADER] == WEST


class TestFailures:
    def test_refused_connection_is_502_with_the_answer(self, edge: FailoverEdge, regions: Regions) -> None:
        regions.servers[EAST].stop()
        resp = fresh(edge)
        assert resp.status_code == 502
        assert resp.headers[UPSTREAM_HEADER] == EAST
        assert "upstream connect error" in resp.json()["error"]

    def test_nxdomain_is_502_without_an_upstream(self, edge: FailoverEdge, zone: Zone) -> None:
        zone.set()
        resp = fresh(edge)
        assert resp.status_code == 502
        assert UPSTREAM_HEADER not in resp.headers


class _Echo(BaseHTTPRequestHandler):
    """Answers with what it received, to check the edge forwards requests faithfully."""

    protocol_version = "HTTP/1.1"

    def _echo(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        payload = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode(),
        }
        data = json.dumps(payload).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Upstream-Custom", "yes")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _echo

    def log_message(self, format: str, *args: Any) -> None:
        return None


def test_method_path_query_headers_and_body_are_forwarded_with_the_failover_name_as_host(zone: Zone) -> None:
    address = region_address(2, 1)
    server = ThreadingHTTPServer((address, 0), _Echo)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    port = int(server.server_address[1])
    zone.set(address)
    names = DnsServer(zone).start()
    edge = FailoverEdge(name=FAILOVER, upstream_port=port, nameserver=names.nameserver).start()
    try:
        with httpx.Client(timeout=10, trust_env=False) as http:
            resp = http.put(
                f"{edge.url}/v1/things/7?a=1&b=two",
                content=b'{"x": 1}',
                headers={"X-Chalk-Env-Id": "prod", "Authorization": "Bearer t", "Connection": "keep-alive"},
            )
        assert resp.status_code == 201
        assert resp.headers["X-Upstream-Custom"] == "yes"
        assert resp.headers[UPSTREAM_HEADER] == address
        echo = resp.json()
        assert (echo["method"], echo["path"], echo["body"]) == ("PUT", "/v1/things/7?a=1&b=two", '{"x": 1}')
        assert echo["headers"]["x-chalk-env-id"] == "prod"
        assert echo["headers"]["authorization"] == "Bearer t"
        assert echo["headers"]["host"] == f"{FAILOVER}:{port}"  # what the ALB's host rules match
    finally:
        edge.stop()
        names.stop()
        server.shutdown()
        server.server_close()
