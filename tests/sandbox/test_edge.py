"""Sandbox failover edge: forwards to the answer's server, caches the answer for its TTL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from sandbox.edge import UPSTREAM_HEADER
from sandbox.edge import FailoverEdge
from sandbox.harness import poll
from sandbox.query_server import QueryServer
from sandbox.truth import GroundTruth

EAST = "dualstack.chalk-east-123.us-east-1.elb.amazonaws.com"
WEST = "dualstack.chalk-west-456.us-west-2.elb.amazonaws.com"
TTL = 0.6
ENV_ID = "prod"
SECRET = "edge-secret"


class EmptyStore:
    """A DynamoDB client with no items: queries answer null values, which is all the edge needs."""

    def get_item(self, **_: Any) -> dict[str, Any]:
        return {}


class Resolver:
    """The failover record's current DNS answer, switchable by the test; counts lookups."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> str | None:
        with self._lock:
            self.calls += 1
            return self.answer


def query_server(region: str) -> QueryServer:
    return QueryServer(
        region=region,
        environment_name=f"prod-{region}",
        environment_id=ENV_ID,
        client_id="client-prod",
        client_secret=SECRET,
        table_names=["chalk-online"],
        dynamodb=EmptyStore(),
        is_serving=lambda: True,
    ).start()


@pytest.fixture
def regions() -> Iterator[dict[str, QueryServer]]:
    servers = {EAST: query_server("us-east-1"), WEST: query_server("us-west-2")}
    yield servers
    for srv in servers.values():
        srv.stop()


@pytest.fixture
def resolver() -> Resolver:
    return Resolver(EAST)


@pytest.fixture
def truth() -> GroundTruth:
    return GroundTruth()


@pytest.fixture
def edge(regions: dict[str, QueryServer], resolver: Resolver, truth: GroundTruth) -> Iterator[FailoverEdge]:
    def targets(answer: str) -> str | None:
        srv = regions.get(answer)
        return srv.url if srv is not None else None

    e = FailoverEdge(resolve=resolver, targets=targets, ttl_real_seconds=TTL, truth=truth).start()
    yield e
    e.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def served_region(http: httpx.Client, edge: FailoverEdge) -> str:
    return str(http.get(f"{edge.url}/_sandbox/state").json()["region"])


class TestForwarding:
    def test_forwards_to_the_current_answer(self, edge: FailoverEdge, http: httpx.Client) -> None:
        resp = http.get(f"{edge.url}/_sandbox/state")
        assert resp.status_code == 200
        assert resp.json()["region"] == "us-east-1"
        assert resp.headers[UPSTREAM_HEADER] == EAST

    def test_chalk_token_and_query_flow_through_the_edge(
        self, edge: FailoverEdge, http: httpx.Client
    ) -> None:
        body = {"client_id": "client-prod", "client_secret": SECRET, "grant_type": "client_credentials"}
        token = http.post(f"{edge.url}/v1/oauth/token", json=body).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "X-Chalk-Env-Id": ENV_ID}
        query = {"inputs": {"user.id": 1}, "outputs": ["user.name"], "include_meta": True}
        resp = http.post(f"{edge.url}/v1/query/online", headers=headers, json=query)
        assert resp.status_code == 200
        assert resp.json()["meta"]["environment_name"] == "prod-us-east-1"
        assert http.post(f"{edge.url}/v1/query/online", json=query).status_code == 401  # no token forwarded

    def test_upstream_status_is_passed_through(self, edge: FailoverEdge, http: httpx.Client) -> None:
        resp = http.get(f"{edge.url}/no/such/route")
        assert resp.status_code == 404
        assert resp.headers[UPSTREAM_HEADER] == EAST


class TestCaching:
    def test_keeps_the_answer_until_the_ttl_expires_then_switches(
        self, edge: FailoverEdge, resolver: Resolver, http: httpx.Client
    ) -> None:
        before_resolution = time.monotonic()
        assert served_region(http, edge) == "us-east-1"
        resolved_at = time.monotonic()
        resolver.answer = WEST  # Route 53 now answers the secondary
        while time.monotonic() - resolved_at < TTL * 0.5:
            assert served_region(http, edge) == "us-east-1"  # a caching resolver still says east
            time.sleep(0.05)
        assert resolver.calls == 1
        poll(lambda: served_region(http, edge) == "us-west-2")
        assert time.monotonic() - before_resolution >= TTL
        assert resolver.calls == 2  # re-resolved once, on the first request after expiry
        assert http.get(f"{edge.url}/healthz").headers[UPSTREAM_HEADER] == WEST

    def test_answer_changes_are_ground_truth(
        self, edge: FailoverEdge, resolver: Resolver, http: httpx.Client, truth: GroundTruth
    ) -> None:
        served_region(http, edge)
        resolver.answer = WEST
        poll(lambda: served_region(http, edge) == "us-west-2")
        answers = [(e["answer"], e["previous"]) for e in truth.events("edge.answer")]
        assert answers == [(EAST, None), (WEST, EAST)]
        firsts = [(e["answer"], e["status"]) for e in truth.events("edge.first_response")]
        assert firsts == [(EAST, 200), (WEST, 200)]
        switch = truth.events("edge.answer")[1]["ts"]
        assert truth.events("edge.first_response")[1]["ts"] >= switch


def test_a_busy_edge_refreshes_at_expiry_without_requests(resolver: Resolver, truth: GroundTruth) -> None:
    """Other clients keep the resolver asking: the switch lands at expiry, not at our next request."""
    e = FailoverEdge(resolve=resolver, targets=lambda _a: None, ttl_real_seconds=TTL, truth=truth, busy=True)
    e.start()
    try:
        deadline = time.monotonic() + 5
        while e.answer != EAST and time.monotonic() < deadline:
            time.sleep(0.01)
        cached_at = time.monotonic()
        resolver.answer = WEST
        while e.answer != WEST and time.monotonic() < deadline:
            time.sleep(0.01)
        switched_after = time.monotonic() - cached_at
        assert e.answer == WEST
        assert switched_after <= TTL + 0.3
        assert resolver.calls <= 3  # one lookup per TTL, not one per poll
    finally:
        e.stop()


class TestFailures:
    def test_refused_connection_is_502_with_the_answer(
        self, edge: FailoverEdge, regions: dict[str, QueryServer], http: httpx.Client
    ) -> None:
        regions[EAST].stop()
        resp = http.get(f"{edge.url}/healthz")
        assert resp.status_code == 502
        assert resp.headers[UPSTREAM_HEADER] == EAST
        assert "upstream connect error" in resp.json()["error"]

    def test_an_answer_without_a_server_is_502(
        self, edge: FailoverEdge, resolver: Resolver, http: httpx.Client
    ) -> None:
        resolver.answer = "unknown-alb.eu-west-1.elb.amazonaws.com"
        assert http.get(f"{edge.url}/healthz").status_code == 502

    def test_no_answer_is_502(self, edge: FailoverEdge, resolver: Resolver, http: httpx.Client) -> None:
        resolver.answer = None
        resp = http.get(f"{edge.url}/healthz")
        assert resp.status_code == 502
        assert UPSTREAM_HEADER not in resp.headers

    def test_a_failing_lookup_is_502_and_not_cached(
        self, regions: dict[str, QueryServer], http: httpx.Client
    ) -> None:
        calls: list[int] = []

        def flaky() -> str | None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("route53 unreachable")
            return EAST

        edge = FailoverEdge(resolve=flaky, targets=lambda a: regions[a].url, ttl_real_seconds=60).start()
        try:
            assert http.get(f"{edge.url}/healthz").status_code == 502
            assert http.get(f"{edge.url}/healthz").status_code == 200
        finally:
            edge.stop()


class _Echo(BaseHTTPRequestHandler):
    """Answers with what it received, to check the edge forwards requests faithfully."""

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


def test_method_path_query_headers_and_body_are_forwarded(http: httpx.Client) -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=upstream.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    target = f"http://127.0.0.1:{upstream.server_address[1]}"
    edge = FailoverEdge(resolve=lambda: EAST, targets=lambda _: target, ttl_real_seconds=60).start()
    try:
        resp = http.put(
            f"{edge.url}/v1/things/7?a=1&b=two",
            content=b'{"x": 1}',
            headers={"X-Chalk-Env-Id": "prod", "Authorization": "Bearer t", "Connection": "keep-alive"},
        )
        assert resp.status_code == 201
        assert resp.headers["X-Upstream-Custom"] == "yes"
        assert resp.headers[UPSTREAM_HEADER] == EAST
        echo = resp.json()
        assert (echo["method"], echo["path"], echo["body"]) == ("PUT", "/v1/things/7?a=1&b=two", '{"x": 1}')
        assert echo["headers"]["x-chalk-env-id"] == "prod"
        assert echo["headers"]["authorization"] == "Bearer t"
        assert echo["headers"]["host"] == target.removeprefix("http://")  # not the edge's own host
    finally:
        edge.stop()
        upstream.shutdown()
        upstream.server_close()
