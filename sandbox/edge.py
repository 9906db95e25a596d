"""The sandbox's failover edge: one HTTP endpoint that plays the Route 53 failover name.

A client of the real system calls `https://chalk-failover.example.com`; its resolver asks
Route 53, caches the answer (an ALB alias, TTL 60 s) and connects to that ALB until the TTL
runs out. The edge does the same on the client's behalf: it resolves through `resolve()` (the
world wires it to Route 53's TestDNSAnswer, which follows the sandbox's health checks), keeps
the answer for `ttl_real_seconds`, re-resolves only on the first request after expiry, and
forwards each request to the regional query server behind that answer. Failover as a client
sees it, TTL lag included, is what a drill measures through this endpoint.

Where a real client would get a connection error (the answer's server refuses connections,
the name does not resolve), the edge answers 502 with a JSON body instead, so probes record a
failed observation with a reason rather than a socket exception; a timeout answers 504.
Every answer carries `X-Sandbox-Upstream: <answer>` so an observation can name its region.

With `busy=True` the edge behaves like a resolver shared by many clients: someone asks
right after every expiry, so the cached answer is refreshed at expiry whether or not the
drill's own probe happens to ask. The moment a new answer is cached is then independent of
the drill, which makes the edge's `edge.answer` events a fair ground truth for RTO.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

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


class FailoverEdge:
    """A caching-resolver proxy for the failover name, on 127.0.0.1 (port chosen by the OS)."""

    def __init__(
        self,
        *,
        resolve: Callable[[], str | None],
        targets: Callable[[str], str | None],
        ttl_real_seconds: float,
        truth: GroundTruth | None = None,
        busy: bool = False,
    ) -> None:
        self._busy = busy
        self._busy_stop = threading.Event()
        self._resolve = resolve
        self._targets = targets
        self._ttl = ttl_real_seconds
        self._truth = truth
        self._lock = threading.Lock()
        self._answer: str | None = None
        self._expires = 0.0  # monotonic; 0 means nothing cached yet
        self._first_pending: str | None = None  # a new answer whose first response is not yet served
        self._http = httpx.Client(timeout=httpx.Timeout(10.0, connect=2.0), trust_env=False)
        self._http_server = LoopbackServer(self._wsgi, name="sandbox-edge")

    @property
    def url(self) -> str:
        return self._http_server.url

    @property
    def answer(self) -> str | None:
        """The answer currently cached (what a client's resolver would hand out now)."""
        with self._lock:
            return self._answer

    def _other_clients(self) -> None:
        while not self._busy_stop.wait(0.02):
            with contextlib.suppress(Exception):  # a failed lookup is not cached; ask again
                self._current_answer()

    def start(self) -> FailoverEdge:
        self._http_server.start()
        if self._busy:
            threading.Thread(target=self._other_clients, name="sandbox-edge-clients", daemon=True).start()
        return self

    def stop(self) -> None:
        self._busy_stop.set()
        self._http_server.stop()
        self._http.close()

    def _current_answer(self) -> str | None:
        """The cached answer, re-resolved when the TTL has run out (like a stub resolver's cache).

        The lock is held across resolve() so concurrent requests after expiry ask once, as a
        caching resolver coalesces identical queries. A resolve() that raises is not cached.
        """
        with self._lock:
            now = time.monotonic()
            if self._expires and now < self._expires:
                return self._answer
            answer = self._resolve()
            previous, first_resolution = self._answer, not self._expires
            self._answer, self._expires = answer, now + self._ttl
            if answer != previous or first_resolution:
                self._first_pending = answer
                if self._truth is not None:
                    self._truth.record("edge.answer", answer=answer, previous=previous)
            return answer

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            answer = self._current_answer()
        except Exception as exc:  # noqa: BLE001 - a failed lookup is the client's resolution error
            return _error(f"failover name did not resolve: {exc}", 502, None)(environ, start_response)
        response = self._forward(request, answer)
        with self._lock:
            first = self._first_pending is not None and self._first_pending == answer
            if first:
                self._first_pending = None
        if first and self._truth is not None:
            self._truth.record("edge.first_response", answer=answer, status=response.status_code)
        return response(environ, start_response)

    def _forward(self, request: Request, answer: str | None) -> Response:
        if answer is None:
            return _error("failover name did not resolve (no answer)", 502, None)
        base = self._targets(answer)
        if base is None:
            return _error(f"no server behind {answer}", 502, answer)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        url = base.rstrip("/") + request.path
        query = request.query_string.decode("latin-1")
        try:
            upstream = self._http.request(
                request.method,
                f"{url}?{query}" if query else url,
                headers=headers,
                content=request.get_data(),
            )
        except httpx.TimeoutException as exc:
            return _error(f"upstream timed out: {exc}", 504, answer)
        except httpx.TransportError as exc:
            return _error(f"upstream connect error: {exc}", 502, answer)
        resp = Response(upstream.content, status=upstream.status_code)
        resp.headers.clear()
        for key, value in upstream.headers.multi_items():
            if key.lower() not in _HOP_BY_HOP:
                resp.headers.add(key, value)
        resp.headers[UPSTREAM_HEADER] = answer
        return resp
