"""A minimal Chalk client over httpx: token, online query with meta, upload_features, /healthz.

chalk-dr needs only what a ChalkClient does on the wire (DESIGN.md, AWS-CHALK-FACTS.md, chalkpy
`chalk/client/client_impl.py`): exchange client credentials for a token at the API server (never
at a query server), query a query server with `include_meta` to learn which deployment answered,
upload features at the API server (a metadata request in chalkpy), and refresh the token on a
401. Every request carries `X-Chalk-Env-Id`. Names are resolved by chalk-dr's own resolver and
the connection goes to the address it returned (chalkdr.dns), so a failover is seen as clients
see it. Timeouts are explicit on every call: a probe that hangs is worse than one that fails.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel
from pydantic import ConfigDict

from chalkdr.dns import Resolution
from chalkdr.dns import Resolver
from chalkdr.dns import ResolvingTransport
from chalkdr.observe import TokenProbe

__all__ = ["ChalkQueryClient", "QueryAnswer", "healthz", "http_client", "is_loopback"]


def is_loopback(url: str) -> bool:
    """Whether `url` names this machine (127.0.0.0/8, ::1, localhost)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_client(
    url: str,
    *,
    timeout: float | httpx.Timeout,
    resolver: Resolver | None = None,
    fresh_connections: bool = False,
    **options: Any,
) -> httpx.Client:
    """An httpx client for `url`. With a resolver, connections go to the address it returns for
    the URL's host (Host and SNI keep the name); proxy settings from the environment then do not
    apply (the point is to reach what DNS answered). Without one, proxies apply to the outside
    world but never to a loopback address (a CI machine's HTTPS_PROXY must not swallow it)."""
    if resolver is not None:
        transport = ResolvingTransport(resolver, fresh_connections=fresh_connections)
        return httpx.Client(timeout=timeout, transport=transport, **options)
    return httpx.Client(timeout=timeout, trust_env=not is_loopback(url), **options)


class QueryAnswer(BaseModel):
    """One online query's outcome; failures are data (status/error), not exceptions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    status_code: int | None
    latency_s: float
    deployment_id: str | None = None
    environment_id: str | None = None
    environment_name: str | None = None
    values: dict[str, Any] = {}
    error: str | None = None
    address: str | None = None  # the address the query connected to (resolved by chalk-dr)
    resolved: tuple[str, ...] = ()  # everything the name resolved to for this query
    ttl: int | None = None  # the TTL of that answer


def healthz(
    url: str, *, timeout_s: float = 2.0, client: httpx.Client | None = None, resolver: Resolver | None = None
) -> tuple[bool, str]:
    """GET {url}/healthz → (serving, detail). Connection errors are 'not serving', not exceptions."""
    try:
        if client is not None:
            resp = client.get(f"{url.rstrip('/')}/healthz", timeout=timeout_s)
        else:
            with http_client(url, timeout=timeout_s, resolver=resolver) as own:
                resp = own.get(f"{url.rstrip('/')}/healthz")
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return resp.status_code == 200, f"HTTP {resp.status_code}"


class ChalkQueryClient:
    """Queries one base URL (a region's own hostname or the failover name) in one environment,
    with tokens from `api_server`. The secret is held only in memory and sent only in the token
    request body; it is never part of a message, exception or repr.

    `fresh_connections` opens a new connection per query, to the address resolved for it: a
    client that pools connections stays on the old load balancer after the DNS answer changes.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_server: str,
        client_id: str,
        client_secret: str,
        environment_id: str,
        resolver: Resolver | None = None,
        fresh_connections: bool = False,
        extra_headers: Mapping[str, str] | None = None,
        timeout_s: float = 3.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_server = api_server.rstrip("/")
        self._client_id = client_id
        self._secret = client_secret
        self.environment_id = environment_id
        self._timeout = timeout_s
        self._http = http_client(
            self.base_url, timeout=timeout_s, resolver=resolver, fresh_connections=fresh_connections
        )
        self._api = http_client(self.api_server, timeout=timeout_s, resolver=resolver)
        self._extra = dict(extra_headers or {})
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ChalkQueryClient(base_url={self.base_url!r}, client_id={self._client_id!r})"

    def close(self) -> None:
        self._http.close()
        self._api.close()

    def _fetch_token(self) -> str:
        resp = self._api.post(
            f"{self.api_server}/v1/oauth/token",
            json={
                "client_id": self._client_id,
                "client_secret": self._secret,
                "grant_type": "client_credentials",
            },
        )
        resp.raise_for_status()
        body = resp.json()
        self._token = str(body["access_token"])
        self._token_expires = time.monotonic() + float(body.get("expires_in", 3600)) * 0.9
        return self._token

    def token(self, *, refresh: bool = False) -> str:
        with self._lock:
            if refresh or self._token is None or time.monotonic() >= self._token_expires:
                return self._fetch_token()
            return self._token

    def probe_token(self) -> TokenProbe:
        """A fresh credential exchange at the API server, as a client starting now would make;
        failures are data. The token it gets replaces the cached one."""
        start = time.monotonic()
        try:
            with self._lock:
                self._fetch_token()
        except httpx.HTTPStatusError as exc:
            return TokenProbe(
                ok=False,
                status_code=exc.response.status_code,
                latency_s=time.monotonic() - start,
                error=f"HTTP {exc.response.status_code}",
            )
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            return TokenProbe(
                ok=False, latency_s=time.monotonic() - start, error=f"{type(exc).__name__}: {exc}"[:200]
            )
        return TokenProbe(ok=True, status_code=200, latency_s=time.monotonic() - start)

    def headers(self, *, refresh: bool = False) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token(refresh=refresh)}",
            "X-Chalk-Env-Id": self.environment_id,
            **self._extra,
        }

    def query(self, inputs: Mapping[str, Any], outputs: Sequence[str]) -> QueryAnswer:
        """POST /v1/query/online with include_meta; one token refresh + retry on 401."""
        start = time.monotonic()
        body = {"inputs": dict(inputs), "outputs": list(outputs), "include_meta": True}
        try:
            resp = self._http.post(f"{self.base_url}/v1/query/online", headers=self.headers(), json=body)
            if resp.status_code == 401:
                resp = self._http.post(
                    f"{self.base_url}/v1/query/online", headers=self.headers(refresh=True), json=body
                )
        except httpx.HTTPStatusError as exc:  # the token endpoint itself failed
            return QueryAnswer(
                ok=False,
                status_code=exc.response.status_code,
                latency_s=time.monotonic() - start,
                error=f"token request failed: HTTP {exc.response.status_code}",
                **self._where(None),
            )
        except httpx.HTTPError as exc:
            return QueryAnswer(
                ok=False,
                status_code=None,
                latency_s=time.monotonic() - start,
                error=f"{type(exc).__name__}: {exc}"[:200],
                **self._where(None),
            )
        return self._answer(resp, time.monotonic() - start)

    def upload_features(self, inputs: Mapping[str, Any]) -> list[str]:
        """ChalkClient.upload_features: one row to the API server; the errors Chalk returned.

        Transport and HTTP failures raise (httpx.HTTPError): the caller decides whether a write
        that did not reach Chalk can be retried.
        """
        body = {"input": {k: [v] for k, v in inputs.items()}, "preview_deployment_id": None}
        resp = self._api.post(f"{self.api_server}/v1/upload_features", headers=self.headers(), json=body)
        if resp.status_code == 401:
            resp = self._api.post(
                f"{self.api_server}/v1/upload_features", headers=self.headers(refresh=True), json=body
            )
        resp.raise_for_status()
        return [str(e.get("message", e)) for e in (resp.json().get("errors") or [])]

    @staticmethod
    def _where(resp: httpx.Response | None) -> dict[str, Any]:
        """Which address this query went to, and what the name resolved to for it."""
        if resp is None:
            return {}
        found: Resolution | None = resp.extensions.get("chalkdr.resolution")
        address = resp.extensions.get("chalkdr.address")
        if found is None:
            return {"address": address}
        return {"address": address, "resolved": found.addresses, "ttl": found.ttl}

    def _answer(self, resp: httpx.Response, latency: float) -> QueryAnswer:
        where = self._where(resp)
        if resp.status_code != 200:
            return QueryAnswer(
                ok=False, status_code=resp.status_code, latency_s=latency, error=resp.text[:200], **where
            )
        try:
            body = resp.json()
            meta = body.get("meta") or {}
            values = {d["field"]: d.get("value") for d in body.get("data", [])}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return QueryAnswer(
                ok=False, status_code=200, latency_s=latency, error=f"malformed response: {exc}", **where
            )
        errors = body.get("errors") or []
        return QueryAnswer(
            ok=True,
            status_code=200,
            latency_s=latency,
            deployment_id=meta.get("deployment_id"),
            environment_id=meta.get("environment_id"),
            environment_name=meta.get("environment_name"),
            values=values,
            error=str(errors[0]) if errors else None,
            **where,
        )
