"""chalk-dr's own name resolution (chalkdr.dns) against a real name server on loopback.

A failover reaches clients only through DNS, so the probe resolves as a client does: uncached
(what the authority answers now) or cached for the answer's TTL (a client whose resolver
cached the answer just before the flip), and connects to the address it got, keeping the name
as Host.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import dns.rcode
import httpx
import pytest

from chalkdr.dns import Resolver
from chalkdr.dns import ResolvingTransport
from chalkdr.query import http_client
from sandbox.dns import DnsAnswer
from sandbox.dns import DnsServer
from sandbox.harness import poll
from sandbox.http import LoopbackServer
from sandbox.net import sockets_on_one_port

NAME = "chalk-failover.example.com"
EAST, WEST = ("127.0.10.1", "127.0.10.2"), ("127.0.11.1",)


class Zone:
    """A mutable authority: what the name resolves to now, and with which TTL."""

    def __init__(self) -> None:
        self.addresses: tuple[str, ...] = EAST
        self.ttl = 60

    def __call__(self, name: str, rtype: str) -> DnsAnswer:
        if not name.endswith("example.com"):
            return DnsAnswer.refused()
        if name != NAME:
            return DnsAnswer(dns.rcode.NXDOMAIN)
        return DnsAnswer(dns.rcode.NOERROR, self.addresses if rtype == "A" else (), self.ttl)


@pytest.fixture
def zone() -> Iterator[tuple[Zone, str]]:
    z = Zone()
    server = DnsServer(z).start()
    yield z, server.nameserver
    server.stop()


def _whoami(address: str) -> Callable[[dict[str, Any], Callable[..., Any]], Any]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"address": address, "host": environ.get("HTTP_HOST")}).encode()]

    return app


class TestResolver:
    def test_uncached_resolution_follows_the_authority_at_once(self, zone: tuple[Zone, str]) -> None:
        z, ns = zone
        resolver = Resolver([ns])
        first = resolver.resolve(NAME)
        assert (first.addresses, first.ttl, first.ok) == (tuple(sorted(EAST)), 60, True)
        z.addresses = WEST
        assert resolver.resolve(NAME).addresses == WEST

    def test_a_cached_resolver_keeps_the_answer_for_its_ttl(self, zone: tuple[Zone, str]) -> None:
        z, ns = zone
        z.ttl = 3600
        cached = Resolver([ns], cache=True)
        assert cached.resolve(NAME).addresses == tuple(sorted(EAST))
        z.addresses = WEST
        assert cached.resolve(NAME).addresses == tuple(sorted(EAST))  # still within the TTL
        cached.clear()
        assert cached.resolve(NAME).addresses == WEST

    def test_a_cached_answer_expires_with_its_ttl(self, zone: tuple[Zone, str]) -> None:
        z, ns = zone
        z.ttl = 1
        cached = Resolver([ns], cache=True)
        cached.resolve(NAME)
        z.addresses = WEST
        poll(lambda: cached.resolve(NAME).addresses == WEST, timeout=10, what="the cached answer to expire")

    @pytest.mark.parametrize(
        ("name", "error"),
        [("nope.example.com", "NXDOMAIN"), ("www.other.org", "NoNameservers")],
        ids=["nxdomain", "refused"],
    )
    def test_failures_are_data_not_exceptions(self, zone: tuple[Zone, str], name: str, error: str) -> None:
        found = Resolver([zone[1]]).resolve(name)
        assert not found.ok and found.addresses == () and error in (found.error or "")

    def test_an_ip_address_resolves_to_itself_without_asking(self) -> None:
        assert Resolver(["127.0.0.1:9"]).resolve("127.0.10.5").addresses == ("127.0.10.5",)


class TestResolvingTransport:
    def test_requests_go_to_the_resolved_address_with_the_name_as_host(self, zone: tuple[Zone, str]) -> None:
        z, ns = zone
        socks = sockets_on_one_port([*EAST, *WEST])
        servers = [LoopbackServer(_whoami(s.getsockname()[0]), name="whoami", sock=s) for s in socks]
        for s in servers:
            s.start()
        port = servers[0].port
        try:
            with http_client(f"http://{NAME}:{port}", timeout=5, resolver=Resolver([ns])) as client:
                resp = client.get(f"http://{NAME}:{port}/")
                assert resp.json()["address"] in EAST and resp.json()["host"] == f"{NAME}:{port}"
                assert resp.extensions["chalkdr.address"] == resp.json()["address"]
                assert resp.extensions["chalkdr.resolution"].addresses == tuple(sorted(EAST))
                z.addresses = WEST  # the flip: the next request goes where DNS now points
                assert client.get(f"http://{NAME}:{port}/").json()["address"] == WEST[0]
        finally:
            for s in servers:
                s.stop()

    def test_a_name_that_does_not_resolve_is_a_connect_error(self, zone: tuple[Zone, str]) -> None:
        transport = ResolvingTransport(Resolver([zone[1]]))
        with httpx.Client(transport=transport, timeout=5) as client, pytest.raises(httpx.ConnectError):
            client.get("http://nope.example.com:9/")
