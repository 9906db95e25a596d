"""The sandbox's DNS: an authoritative name server for the hosted zone and the load balancers' names.

A client of the failover name asks a resolver, and the resolver gets its answer from Route 53's
name servers: for an alias to a load balancer, the load balancer's IP addresses, with the ELB's
TTL (60 s; an alias record has no TTL of its own), chosen by the record's routing policy and
the health checkers' verdicts. This server plays those name servers over real UDP and TCP, so
product code resolves the sandbox's names with an ordinary resolver (dnspython) pointed at it:

- answers come from `answer(name, type)`, which the world wires to the Route 53 simulator
  (routing evaluated on each query, as Route 53 does) and to the load balancers' addresses;
- the response is authoritative (AA), NXDOMAIN for a name the zone does not hold, NOERROR with
  no answer for a type it does not hold, REFUSED for names outside the zones it serves;
- TTLs are whole seconds (the DNS wire format has no fractions), scaled by the sandbox clock;
- an answer the server cannot put on the wire (an A "value" that is not an address, say an alias
  to a resource the sandbox does not run) is SERVFAIL, RFC 1035's "Server failure", rather than
  no reply at all.

Sources: RFC 1035 (message format, AA/RCODE), RFC 2308 (NODATA/NXDOMAIN), Route 53 Developer
Guide "Choosing between alias and non-alias records" (alias to ELB answered with its addresses),
Elastic Load Balancing's 60 s DNS TTL.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = ["DnsAnswer", "DnsServer"]

_MAX_TCP_MESSAGE = 65535


@dataclass(frozen=True)
class DnsAnswer:
    """What the authority says about one (name, type): the rcode and the values with their TTL."""

    rcode: int  # dns.rcode.NOERROR, NXDOMAIN or REFUSED
    values: tuple[str, ...] = ()
    ttl: int = 60

    @classmethod
    def refused(cls) -> DnsAnswer:
        return cls(dns.rcode.REFUSED)


Authority = Callable[[str, str], DnsAnswer]  # (name without trailing dot, lower case; type "A") -> answer


def _respond(authority: Authority, wire: bytes) -> bytes | None:
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # noqa: BLE001 - an unparseable datagram gets no answer, as a server drops it
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    response.flags &= ~dns.flags.RA  # an authority, not a recursive resolver
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    try:
        answer = authority(name, dns.rdatatype.to_text(question.rdtype))
        rrset = (
            dns.rrset.from_text_list(
                question.name,
                max(1, int(answer.ttl)),
                dns.rdataclass.IN,
                question.rdtype,
                list(answer.values),
            )
            if answer.values
            else None
        )
    except Exception:  # noqa: BLE001 - e.g. a value that is not an address: RFC 1035 "Server failure"
        response.set_rcode(dns.rcode.SERVFAIL)
        response.flags &= ~dns.flags.AA
        return response.to_wire()
    response.set_rcode(answer.rcode)
    if answer.rcode == dns.rcode.REFUSED:
        response.flags &= ~dns.flags.AA
    if rrset is not None:
        response.answer.append(rrset)
    return response.to_wire()


class _Udp(socketserver.BaseRequestHandler):
    server: _UdpServer

    def handle(self) -> None:
        data, sock = self.request
        reply = _respond(self.server.authority, data)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _Tcp(socketserver.BaseRequestHandler):
    server: _TcpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(5.0)
        while True:
            head = _read(sock, 2)
            if head is None:
                return
            (length,) = struct.unpack("!H", head)
            body = _read(sock, length)
            if body is None:
                return
            reply = _respond(self.server.authority, body)
            if reply is None:
                return
            sock.sendall(struct.pack("!H", len(reply)) + reply)


def _read(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


class _AuthorityServer(socketserver.ThreadingMixIn, socketserver.BaseServer):
    """What the UDP and the TCP server share: a thread a request, a port of its own (no address
    reuse), and the authority their handlers ask. The transport comes from the class mixed in after."""

    daemon_threads = True
    allow_reuse_address = False
    handler: type[socketserver.BaseRequestHandler]

    def __init__(self, address: tuple[str, int], authority: Authority) -> None:
        self.authority = authority
        super().__init__(address, self.handler)


class _UdpServer(_AuthorityServer, socketserver.UDPServer):
    handler = _Udp


class _TcpServer(_AuthorityServer, socketserver.TCPServer):
    handler = _Tcp


class DnsServer:
    """Serves `authority` on UDP and TCP, one port (chosen by the OS) on a loopback address."""

    def __init__(self, authority: Authority, *, host: str = "127.0.0.1", attempts: int = 20) -> None:
        self._servers: list[Any] = []
        for _ in range(attempts):
            udp = _UdpServer((host, 0), authority)
            port = int(udp.server_address[1])
            try:
                tcp = _TcpServer((host, port), authority)  # the same port for TCP, as resolvers expect
            except OSError:
                udp.server_close()  # that port is taken for TCP: take another pair
                continue
            self._servers = [udp, tcp]
            break
        else:
            raise OSError(f"no free UDP+TCP port pair on {host} after {attempts} attempts")
        self.host, self.port = host, port
        self._threads = [
            threading.Thread(target=s.serve_forever, args=(0.05,), name=f"sandbox-dns-{i}", daemon=True)
            for i, s in enumerate(self._servers)
        ]

    @property
    def nameserver(self) -> str:
        """The `ip:port` a resolver is pointed at."""
        return f"{self.host}:{self.port}"

    def start(self) -> DnsServer:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()
        for t in self._threads:
            t.join(5)


def in_zone(name: str, zones: Sequence[str]) -> bool:
    return any(name == z or name.endswith("." + z) for z in zones)
