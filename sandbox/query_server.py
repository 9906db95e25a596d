"""The sandbox's regional Chalk query servers (engines): health and online queries, nothing else.

One QueryServer is one region's query-server fleet behind its ALB, listening on the ALB's
addresses. As an ALB with host-based rules does, it answers only the names it serves (the
region's own hostname and the failover name); any other Host gets a 404 fixed response.

- `GET /healthz`: 200 only while the region's query-server Deployment has ready replicas, else
  503. This is the path Route 53's health checkers probe, with the region's hostname as Host.
- `POST /v1/query/online`: needs a token from the environment's API server and X-Chalk-Env-Id
  (a missing or unknown one is refused); reads the online store (ConsistentRead).
- No `/v1/oauth/token`: query servers do not issue tokens (chalkpy `_exchange_credentials` always
  posts to the API server); asking one answers 404.

The online-store layout is the sandbox's stand-in for Chalk's own: every table has a HASH key
`pk` (S) = "<namespace>.<primary key value>", feature values are attributes named by their
fully qualified name. A missing item or feature answers value null plus a FIELD error
`RESOLVER_NOT_FOUND`; a DynamoDB failure answers null plus a NETWORK error `UPSTREAM_FAILED`
(the query itself is 200: Chalk reports per-feature errors in the body).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from typing import Any
from typing import Self

from werkzeug.wrappers import Request
from werkzeug.wrappers import Response

from sandbox.chalk import ChalkEnvironment
from sandbox.chalk import ChalkRegion
from sandbox.chalk import chalk_error
from sandbox.chalk import errors_response
from sandbox.chalk import host_of
from sandbox.chalk import json_response
from sandbox.chalk import request_body
from sandbox.http import LoopbackServer

__all__ = ["QueryServer", "RegionalServers", "RegionalService"]


class RegionalServers:
    """One WSGI app served on every socket of a region's load balancer (or API server)."""

    def __init__(
        self, app: Callable[..., Any], sockets: Sequence[socket.socket] | None, *, name: str
    ) -> None:
        self._servers = (
            [LoopbackServer(app, name=f"{name}-{i}", sock=s) for i, s in enumerate(sockets)]
            if sockets
            else [LoopbackServer(app, name=name)]
        )

    @property
    def url(self) -> str:
        """The first address's URL (tests address a server directly; clients use names)."""
        return self._servers[0].url

    @property
    def port(self) -> int:
        return self._servers[0].port

    @property
    def addresses(self) -> list[str]:
        return [s.host for s in self._servers]

    def start(self) -> None:
        for s in self._servers:
            s.start()

    def stop(self) -> None:
        for s in self._servers:
            s.stop()


class RegionalService:
    """What a region's Chalk servers share: its Chalk region and environment, the names it answers
    (`hosts`; any other Host gets a 404, as an ALB's host rules answer), and its routes."""

    server_name = "sandbox-chalk"

    def __init__(
        self,
        *,
        region: ChalkRegion,
        environment: ChalkEnvironment,
        hosts: frozenset[str],
        sockets: Sequence[socket.socket] | None = None,
    ) -> None:
        self.chalk = region
        self.environment = environment
        self.hosts = hosts
        self._http = RegionalServers(self._wsgi, sockets, name=f"{self.server_name}-{region.region}")

    @property
    def url(self) -> str:
        return self._http.url

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def addresses(self) -> list[str]:
        return self._http.addresses

    def start(self) -> Self:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def routes(self) -> dict[tuple[str, str], Callable[[Request], Response]]:
        """(method, path) -> handler."""
        raise NotImplementedError

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        routes = self.routes()
        route = routes.get((request.method, request.path))
        if host_of(request) not in self.hosts:
            response = json_response({"error": f"no rule for host {request.host!r}"}, 404)
        elif route is not None:
            response = route(request)
        elif any(path == request.path for _, path in routes):
            response = json_response({"error": f"method {request.method} not allowed"}, 405)
        else:
            response = json_response({"error": f"no route {request.path}"}, 404)
        return response(environ, start_response)


class QueryServer(RegionalService):
    """One region's query servers: `hosts` are the names its ALB answers (others: 404)."""

    server_name = "sandbox-query"

    @property
    def deployment_id(self) -> str:
        return self.chalk.served()

    def routes(self) -> dict[tuple[str, str], Callable[[Request], Response]]:
        return {("GET", "/healthz"): lambda _r: self._healthz(), ("POST", "/v1/query/online"): self._query}

    def _healthz(self) -> Response:
        if self.chalk.serving():
            return json_response({"status": "ok"})
        return json_response({"status": "unavailable", "region": self.chalk.region}, 503)

    def _query(self, request: Request) -> Response:
        started = time.perf_counter()
        refused = self.environment.authenticate(request)
        if refused is not None:
            return refused
        if not self.chalk.serving():
            return errors_response(
                503, "UNAVAILABLE", "NETWORK", f"no ready query servers in {self.chalk.region}"
            )
        broken = self.chalk.query_error_status
        if broken is not None:
            return errors_response(broken, "INTERNAL_SERVER_ERROR", "NETWORK", "the resolver crashed")
        body = request_body(request) or {}
        inputs, outputs = body.get("inputs"), body.get("outputs")
        if not isinstance(inputs, dict) or not inputs or not isinstance(outputs, list) or not outputs:
            message = "body must have non-empty 'inputs' (object) and 'outputs' (list)"
            return errors_response(400, "INVALID_QUERY", "REQUEST", message)
        deployment_id = self.chalk.served()
        ts = datetime.now(UTC).isoformat()
        data: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        items: dict[str, dict[str, Any] | Exception] = {}
        for fqn in map(str, outputs):
            pkey = _primary_key(fqn, inputs)
            value, error = self._read(fqn, pkey, items)
            data.append({"field": fqn, "value": value, "pkey": pkey, "error": error, "ts": ts})
            if error is not None:
                errors.append(error)
        meta = {
            "deployment_id": deployment_id,
            "environment_id": self.environment.environment_id,
            "environment_name": self.chalk.resource_group,
            "query_id": uuid.uuid4().hex,
            "execution_duration_s": time.perf_counter() - started,
        }
        return json_response(
            {"data": data, "errors": errors, "meta": meta if body.get("include_meta") else None}
        )

    def _read(
        self, fqn: str, pkey: Any, items: dict[str, dict[str, Any] | Exception]
    ) -> tuple[Any, dict[str, Any] | None]:
        namespace = fqn.split(".", 1)[0]
        if pkey is None:
            message = f"no input in namespace {namespace!r} to look up {fqn!r}"
            return None, chalk_error("INVALID_QUERY", "REQUEST", message, feature=fqn)
        pk = f"{namespace}.{pkey}"
        found = items.get(pk)
        if found is None:
            found = items[pk] = self.chalk.read_item(pk)
        if isinstance(found, Exception):
            message = f"online store read failed for {pk!r}: {found}"
            return None, chalk_error("UPSTREAM_FAILED", "NETWORK", message, feature=fqn)
        if fqn not in found:
            message = f"no value for feature {fqn!r} with primary key {pkey!r} in the online store"
            return None, chalk_error(
                "RESOLVER_NOT_FOUND", "FIELD", message, feature=fqn, display_primary_key=str(pkey)
            )
        return found[fqn], None


def _primary_key(fqn: str, inputs: dict[str, Any]) -> Any:
    """The input in the output's namespace (`user.id` for `user.name`; `<ns>.id` preferred)."""
    namespace = fqn.split(".", 1)[0]
    same = [k for k in inputs if k.split(".", 1)[0] == namespace]
    key = f"{namespace}.id" if f"{namespace}.id" in same else (same[0] if same else None)
    return inputs.get(key) if key is not None else None
