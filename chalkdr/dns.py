"""Name resolution the way a client of the failover name sees it: through resolvers, with TTLs.

A Route 53 failover only reaches clients through DNS, so chalk-dr resolves names itself
(dnspython) rather than trusting the operating system's stub: through the topology's
`dns.nameservers` when given (else the system's resolvers from /etc/resolv.conf), either
uncached (the earliest any client can move) or cached for each answer's TTL (a client whose
resolver cached the answer just before the flip). HTTP to Chalk then goes to the address the
resolver gave, with the name as Host header and TLS SNI (`ResolvingTransport`): what an ALB with
host-based rules needs, and what makes an answer attributable to a region by its addresses.
"""

from __future__ import annotations

import ipaddress
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import httpx

__all__ = ["Resolution", "Resolver", "ResolvingTransport", "is_ip"]


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Resolution:
    """One lookup: the A-record addresses (empty when it failed), their TTL, and why it failed."""

    name: str
    addresses: tuple[str, ...]
    ttl: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.addresses)


def _nameserver(entry: str) -> dns.nameserver.Do53Nameserver:
    host, sep, port = entry.rpartition(":")
    if sep and "." in host:  # IPv4 with a port
        return dns.nameserver.Do53Nameserver(host, int(port))
    return dns.nameserver.Do53Nameserver(entry.strip("[]"))


class Resolver:
    """A dnspython resolver for A records; `cache=True` keeps answers for their TTL, as a
    recursive resolver does for its clients."""

    def __init__(
        self, nameservers: Sequence[str] = (), *, cache: bool = False, timeout_s: float = 2.0
    ) -> None:
        self._resolver = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = [_nameserver(n) for n in nameservers]
        self._resolver.lifetime = timeout_s
        self._resolver.timeout = timeout_s
        self._resolver.cache = dns.resolver.Cache() if cache else None
        self._lock = threading.Lock()
        self.nameservers = tuple(nameservers)

    def resolve(self, name: str) -> Resolution:
        """The addresses `name` resolves to now; failures are data, not exceptions."""
        host = name.strip().rstrip(".").lower()
        if is_ip(host):
            return Resolution(host, (host.strip("[]"),))
        try:
            with self._lock:  # dnspython's resolver and cache are shared by the probe's threads
                answer = self._resolver.resolve(host, dns.rdatatype.A, search=False)
        except dns.resolver.NXDOMAIN:
            return Resolution(host, (), error="NXDOMAIN")
        except dns.resolver.NoAnswer:
            return Resolution(host, (), error="no A record (NODATA)")
        except dns.exception.Timeout:
            return Resolution(host, (), error="resolver timed out")
        except dns.exception.DNSException as exc:
            return Resolution(host, (), error=f"{type(exc).__name__}: {exc}")
        addresses = tuple(sorted(r.to_text() for r in answer))
        ttl = int(answer.rrset.ttl) if answer.rrset is not None else None
        return Resolution(host, addresses, ttl=ttl)

    def clear(self) -> None:
        with self._lock:
            if self._resolver.cache is not None:
                self._resolver.cache.flush()


class ResolvingTransport(httpx.BaseTransport):
    """Connects to the address `resolver` gives for the URL's host, keeping the name as Host
    header and TLS SNI. `fresh_connections` opens a new TCP connection per request: a pooled
    keep-alive connection would stay on the old load balancer after DNS has moved."""

    def __init__(self, resolver: Resolver, *, fresh_connections: bool = False, **transport: Any) -> None:
        self.resolver = resolver
        limits = httpx.Limits(max_keepalive_connections=0) if fresh_connections else httpx.Limits()
        self._inner = httpx.HTTPTransport(limits=limits, **transport)
        self._rng = random.Random()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if is_ip(host):
            return self._inner.handle_request(request)
        found = self.resolver.resolve(host)
        if not found.ok:
            raise httpx.ConnectError(f"{host} did not resolve: {found.error}", request=request)
        address = self._rng.choice(found.addresses)  # a client picks any of the answer's addresses
        routed = httpx.Request(
            request.method,
            request.url.copy_with(host=address),
            headers=request.headers,  # Host: the name, set when the request was built
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": host},
        )
        response = self._inner.handle_request(routed)
        # which address this exchange used and what the name resolved to: the caller's evidence
        response.extensions["chalkdr.address"] = address
        response.extensions["chalkdr.resolution"] = found
        return response

    def close(self) -> None:
        self._inner.close()
