"""The sandbox's name server, asked with dnspython over UDP and TCP as any resolver asks it."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from sandbox.dns import DnsAnswer
from sandbox.dns import DnsServer
from sandbox.harness import poll
from sandbox.world import FAILOVER_RECORD
from sandbox.world import ZONE_NAME

LiveWorld = Any  # tests/sandbox/conftest.py's LiveWorld (conftest modules are not importable)


def authority(name: str, kind: str) -> DnsAnswer:
    """A tiny zone under example.com: one A record (TTL 90 s), one broken record; nothing else."""
    if not (name == "example.com" or name.endswith(".example.com")):
        return DnsAnswer.refused()
    if name == "broken.example.com":  # e.g. an alias to a resource nobody runs
        return DnsAnswer(dns.rcode.NOERROR, ("chalk-gone.us-east-1.elb.amazonaws.com",))
    if name != "www.example.com":
        return DnsAnswer(dns.rcode.NXDOMAIN)
    if kind != "A":
        return DnsAnswer(dns.rcode.NOERROR)
    return DnsAnswer(dns.rcode.NOERROR, ("192.0.2.1", "192.0.2.2"), 90)


@pytest.fixture(scope="module")
def server() -> Iterator[DnsServer]:
    srv = DnsServer(authority).start()
    yield srv
    srv.stop()


def ask(server: DnsServer, name: str, kind: str = "A", *, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, kind)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, server.host, port=server.port, timeout=2)


class TestWireProtocol:
    """RFC 1035 §4.1.1: an authoritative answer sets AA and echoes the question; RCODE 3 (NXDOMAIN)
    "the domain name referenced in the query does not exist", RCODE 5 (REFUSED) for names the server
    does not serve; RFC 2308 §2.2: NODATA is NOERROR with an empty answer; TTLs are 32-bit integers
    (§3.2.1); the same server answers on TCP (§4.2.2, two-octet length prefix)."""

    @pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
    def test_an_authoritative_answer(self, server: DnsServer, tcp: bool) -> None:
        response = ask(server, "WWW.example.com.", tcp=tcp)
        assert response.rcode() == dns.rcode.NOERROR
        assert response.flags & dns.flags.AA and not response.flags & dns.flags.RA
        (rrset,) = response.answer
        assert str(rrset.name) == "WWW.example.com."  # the question's name, as asked
        assert sorted(r.to_text() for r in rrset) == ["192.0.2.1", "192.0.2.2"]
        assert rrset.ttl == 90

    @pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
    def test_nxdomain_nodata_and_refused(self, server: DnsServer, tcp: bool) -> None:
        missing = ask(server, "nope.example.com", tcp=tcp)
        assert (missing.rcode(), missing.answer) == (dns.rcode.NXDOMAIN, [])
        assert missing.flags & dns.flags.AA
        nodata = ask(server, "www.example.com", "AAAA", tcp=tcp)
        assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
        refused = ask(server, "www.example.org", tcp=tcp)
        assert (refused.rcode(), refused.answer) == (dns.rcode.REFUSED, [])
        assert not refused.flags & dns.flags.AA  # not an authority for it

    def test_an_answer_that_is_not_an_address_is_a_server_failure(self, server: DnsServer) -> None:
        response = ask(server, "broken.example.com")
        assert (response.rcode(), response.answer) == (dns.rcode.SERVFAIL, [])
        assert ask(server, "www.example.com").rcode() == dns.rcode.NOERROR

    def test_several_queries_on_one_tcp_connection(self, server: DnsServer) -> None:
        with socket.create_connection((server.host, server.port), timeout=2) as sock:
            for name in ("www.example.com", "nope.example.com"):
                wire = dns.message.make_query(name, "A").to_wire()
                sock.sendall(len(wire).to_bytes(2, "big") + wire)
                length = int.from_bytes(_read(sock, 2), "big")
                assert dns.message.from_wire(_read(sock, length)).question[0].name.to_text() == f"{name}."

    def test_a_garbled_datagram_gets_no_answer(self, server: DnsServer) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            sock.sendto(b"\x00\x01not dns", (server.host, server.port))
            with pytest.raises(TimeoutError):
                sock.recv(512)
        assert ask(server, "www.example.com").rcode() == dns.rcode.NOERROR  # still serving


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def elb_ttl(world: LiveWorld) -> int:
    """The ELB's 60 s TTL on the sandbox clock, in whole seconds."""
    return max(1, round(60 / float(world.world.spec.time_scale)))


class TestSandboxNameServer:
    """The sandbox's DNS plays Route 53's name servers for the public hosted zone and ELB's for the
    load balancers' names. Route 53 Developer Guide, "Choosing between alias and non-alias records":
    an alias to a load balancer is answered with "one or more IP addresses for the load balancer",
    with the resource's TTL (ELB: 60 s, here scaled by the sandbox clock); "Failover routing": the
    primary while its health check is healthy, else the secondary; names the zone does not hold are
    NXDOMAIN, names outside every zone REFUSED."""

    def test_what_it_answers(self, live_world: LiveWorld) -> None:
        live_world.provision_dns()
        east = live_world.regions[0]
        ttl = elb_ttl(live_world)
        for tcp in (False, True):
            answer = live_world.dig(FAILOVER_RECORD, tcp=tcp)
            assert (answer.rcode, answer.values, answer.ttl, answer.authoritative) == (
                "NOERROR",
                live_world.alb_addresses(east),
                ttl,
                True,
            )
        for aws_region in live_world.regions:
            reg = live_world.region(aws_region)
            addresses = live_world.alb_addresses(aws_region)
            for name in (reg.spec.query_hostname, reg.alb_dns, f"dualstack.{reg.alb_dns}"):
                answer = live_world.dig(name)
                assert (answer.rcode, answer.values, answer.ttl) == ("NOERROR", addresses, ttl), name
            assert live_world.dig(reg.spec.api_hostname).values == [reg.api_address]

        unknown = live_world.dig(f"nope-{uuid.uuid4().hex[:6]}.{ZONE_NAME}")
        assert (unknown.rcode, unknown.values, unknown.authoritative) == ("NXDOMAIN", [], True)
        gone_alb = live_world.dig("chalk-gone-1234.us-east-1.elb.amazonaws.com")
        assert (gone_alb.rcode, gone_alb.values) == ("NXDOMAIN", [])
        nodata = live_world.dig(FAILOVER_RECORD, "AAAA")
        assert (nodata.rcode, nodata.values) == ("NOERROR", [])
        outside = live_world.dig("www.example.org")
        assert (outside.rcode, outside.values, outside.authoritative) == ("REFUSED", [], False)

    def test_the_failover_name_follows_the_health_checkers(self, live_world: LiveWorld) -> None:
        """With the primary's query servers gone its checkers see 503 on /healthz, the check turns
        unhealthy, and the name servers answer the secondary's load balancer; back, the primary's."""
        east, west = live_world.regions
        live_world.provision_dns(failure_threshold=1)
        assert live_world.dig(FAILOVER_RECORD).values == live_world.alb_addresses(east)

        live_world.scale_query_servers(east, 0)
        poll(
            lambda: live_world.dig(FAILOVER_RECORD).values == live_world.alb_addresses(west),
            timeout=10,
            what="failover to the secondary",
        )
        assert live_world.dig(FAILOVER_RECORD, tcp=True).values == live_world.alb_addresses(west)

        live_world.scale_query_servers(east, 2)
        poll(
            lambda: live_world.dig(FAILOVER_RECORD).values == live_world.alb_addresses(east),
            timeout=10,
            what="failback to the primary",
        )
