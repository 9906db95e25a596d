"""The failover edge: the failover name for clients that cannot be pointed at a resolver.

Chalk's own Python client and curl resolve names with the operating system's resolver, which
knows nothing of the sandbox's zone. The edge stands where the failover name would be for them:
an HTTP endpoint on loopback that behaves as the network path of a real client does.

- It resolves the failover name through the sandbox's name server (sandbox/dns.py), caching the
  answer for its TTL as a stub resolver does (a lookup that fails is not cached).
- A client connection is pinned to the load-balancer address it was opened to: every request on
  that keep-alive connection goes to the same upstream until the client closes it, as a TCP
  connection to an ALB stays on that ALB after the DNS answer has changed (chalkpy's
  `requests.Session` keeps such connections).
- Requests go upstream with the failover name as Host (what the ALB's host rules match).

With `busy=True` the edge plays a resolver shared by many clients: it re-resolves as soon as
the TTL runs out, whether or not a request came in, so the moment its answer changes (the
`edge.answer` ground-truth event) does not depend on when the drill's own probes arrive.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import httpx
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response

from sandbox.http import LoopbackServer
from sandbox.truth import GroundTruth

__all__ = ["UPSTREAM_HEADER", "FailoverEdge"]

UPSTREAM_HEADER = "X-Sandbox-Upstream"
# RFC 9110 §7.6.1 connection-specific fields, plus the ones the edge recomputes itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
    }
)


def _error(message: str, status: int, answer: str | None) -> Response:
    resp = Response(
        json.dumps({"error": message, "upstream": answer}), status=status, content_type="application/json"
    )
    if answer is not None:
        resp.headers[UPSTREAM_HEADER] = answer
    return resp


@dataclass
class _Pin:
    """One client connection's upstream: the address it was opened to, and a kept-alive client."""

    connection: tuple[str, str]  # (REMOTE_ADDR, REMOTE_PORT) of the client's TCP connection
    address: str
    http: httpx.Client


def _dns_lookup(nameserver: str, name: str) -> tuple[tuple[str, ...], float]:
    """The A records of `name` from the sandbox's name server, and their TTL (real seconds)."""
    host, _, port = nameserver.rpartition(":")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(host, int(port))]
    resolver.lifetime = resolver.timeout = 2.0
    answer = resolver.resolve(name, dns.rdatatype.A, search=False)
    return tuple(sorted(r.to_text() for r in answer)), float(answer.rrset.ttl if answer.rrset else 0)


class FailoverEdge:
    """The failover name `name`, served on 127.0.0.1 (port chosen by the OS), upstream on `port`."""

    def __init__(
        self,
        *,
        name: str,
        upstream_port: int,
        nameserver: str | None = None,
        lookup: Callable[[str], tuple[tuple[str, ...], float]] | None = None,
        truth: GroundTruth | None = None,
        busy: bool = False,
    ) -> None:
        if lookup is None and nameserver is None:
            raise ValueError("give the sandbox's name server or a lookup")
        self.name = name
        self._lookup = lookup or (lambda n: _dns_lookup(str(nameserver), n))
        self._upstream_port = upstream_port
        self._truth = truth
        self._busy = busy
        self._busy_stop = threading.Event()
        self._lock = threading.Lock()
        self._answer: tuple[str, ...] | None = None
        self._expires = 0.0  # monotonic; 0 means nothing cached yet
        self._local = threading.local()  # the pin of the connection this handler thread serves
        # Persistent client connections, each served by a thread of its own until it closes: that
        # thread's pin is the connection's upstream (werkzeug alone would close every connection).
        self._http_server = LoopbackServer(
            self._wsgi, name="sandbox-edge", keep_alive=True, on_connection_close=self._release_pin
        )

    @property
    def url(self) -> str:
        return self._http_server.url

    @property
    def answer(self) -> tuple[str, ...] | None:
        """The addresses currently cached (what a client's resolver would hand out now)."""
        with self._lock:
            return self._answer

    def start(self) -> FailoverEdge:
        self._http_server.start()
        if self._busy:
            threading.Thread(target=self._other_clients, name="sandbox-edge-clients", daemon=True).start()
        return self

    def stop(self) -> None:
        self._busy_stop.set()
        self._http_server.stop()

    def _other_clients(self) -> None:
        while not self._busy_stop.wait(0.02):
            with contextlib.suppress(Exception):  # a failed lookup is not cached; ask again
                self._current_answer()

    def _current_answer(self) -> tuple[str, ...]:
        """The cached answer, re-resolved when its TTL has run out. The lock is held across the
        lookup, so concurrent requests after expiry ask once (a resolver coalesces queries)."""
        with self._lock:
            now = time.monotonic()
            if self._expires and now < self._expires and self._answer is not None:
                return self._answer
            answer, ttl = self._lookup(self.name)
            previous, first = self._answer, not self._expires
            self._answer, self._expires = answer, now + ttl
            if (answer != previous or first) and self._truth is not None:
                self._truth.record(
                    "edge.answer", answer=list(answer), previous=list(previous) if previous else None
                )
            return answer

    def _pin(self, environ: dict[str, Any]) -> _Pin:
        connection = (str(environ.get("REMOTE_ADDR")), str(environ.get("REMOTE_PORT")))
        pin: _Pin | None = getattr(self._local, "pin", None)
        if pin is not None and pin.connection == connection:
            return pin
        if pin is not None:
            pin.http.close()  # this thread serves a new client connection now
        address = self._current_answer()[0]
        pin = _Pin(
            connection, address, httpx.Client(timeout=httpx.Timeout(10.0, connect=2.0), trust_env=False)
        )
        self._local.pin = pin
        return pin

    def _release_pin(self) -> None:
        """The client closed its connection: so does the upstream connection it was pinned to."""
        pin: _Pin | None = getattr(self._local, "pin", None)
        self._local.pin = None
        if pin is not None:
            pin.http.close()

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            pin = self._pin(environ)
        except (dns.exception.DNSException, OSError, IndexError) as exc:
            return _error(f"{self.name} did not resolve: {exc}", 502, None)(environ, start_response)
        return self._forward(request, pin)(environ, start_response)

    def _forward(self, request: Request, pin: _Pin) -> Response:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        headers.append(("Host", f"{self.name}:{self._upstream_port}"))
        url = f"http://{pin.address}:{self._upstream_port}{request.path}"
        query = request.query_string.decode("latin-1")
        try:
            upstream = pin.http.request(
                request.method,
                f"{url}?{query}" if query else url,
                headers=headers,
                content=request.get_data(),
            )
        except httpx.TimeoutException as exc:
            return _error(f"upstream timed out: {exc}", 504, pin.address)
        except httpx.TransportError as exc:
            return _error(f"upstream connect error: {exc}", 502, pin.address)
        resp = Response(upstream.content, status=upstream.status_code)
        resp.headers.clear()
        for key, value in upstream.headers.multi_items():
            if key.lower() not in _HOP_BY_HOP:
                resp.headers.add(key, value)
        resp.headers[UPSTREAM_HEADER] = pin.address
        return resp
