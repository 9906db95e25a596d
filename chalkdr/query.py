"""A minimal Chalk online-query client: token, query with meta, /healthz — over httpx.

The drill and the deploy flow need only what a ChalkClient does on the wire (DESIGN.md):
exchange client credentials for a token at the API server, query with `include_meta` to learn
which deployment answered, and refresh the token on a 401 (a failover moves the client to a
region that did not issue its token). Timeouts are explicit on every call because a probe
that hangs is worse than a probe that fails.
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


def http_client(url: str, *, timeout: float | httpx.Timeout, **options: Any) -> httpx.Client:
    """An httpx client for `url`: proxy settings from the environment apply to the outside world,
    never to a loopback address (a CI machine's HTTPS_PROXY must not swallow local traffic)."""
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


def healthz(url: str, *, timeout_s: float = 2.0, client: httpx.Client | None = None) -> tuple[bool, str]:
    """GET {url}/healthz → (serving, detail). Connection errors are 'not serving', not exceptions."""
    try:
        if client is not None:
            resp = client.get(f"{url.rstrip('/')}/healthz", timeout=timeout_s)
        else:
            with http_client(url, timeout=timeout_s) as own:
                resp = own.get(f"{url.rstrip('/')}/healthz")
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return resp.status_code == 200, f"HTTP {resp.status_code}"


class ChalkQueryClient:
    """Queries one base URL (a regional hostname or the failover name) with client credentials.

    The secret is held only in memory and sent only in the token request body; it is never part
    of a message, exception or repr.
    """

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        client_secret: str,
        environment_id: str,
        api_server: str | None = None,
        timeout_s: float = 3.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_server = (api_server or base_url).rstrip("/")
        self._client_id = client_id
        self._secret = client_secret
        self.environment_id = environment_id
        self._timeout = timeout_s
        self._http = http_client(self.base_url, timeout=timeout_s)
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ChalkQueryClient(base_url={self.base_url!r}, client_id={self._client_id!r})"

    def close(self) -> None:
        self._http.close()

    def _fetch_token(self) -> str:
        resp = self._http.post(
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

    def query(self, inputs: Mapping[str, Any], outputs: Sequence[str]) -> QueryAnswer:
        """POST /v1/query/online with include_meta; one token refresh + retry on 401."""
        start = time.monotonic()
        try:
            resp = self._post_query(inputs, outputs, refresh=False)
            if resp.status_code == 401:
                resp = self._post_query(inputs, outputs, refresh=True)
        except httpx.HTTPStatusError as exc:  # the token endpoint itself failed
            return QueryAnswer(
                ok=False,
                status_code=exc.response.status_code,
                latency_s=time.monotonic() - start,
                error=f"token request failed: HTTP {exc.response.status_code}",
            )
        except httpx.HTTPError as exc:
            return QueryAnswer(
                ok=False, status_code=None, latency_s=time.monotonic() - start, error=type(exc).__name__
            )
        latency = time.monotonic() - start
        if resp.status_code != 200:
            return QueryAnswer(
                ok=False, status_code=resp.status_code, latency_s=latency, error=resp.text[:200]
            )
        try:
            body = resp.json()
            meta = body.get("meta") or {}
            values = {d["field"]: d.get("value") for d in body.get("data", [])}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return QueryAnswer(
                ok=False, status_code=200, latency_s=latency, error=f"malformed response: {exc}"
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
        )

    def _post_query(
        self, inputs: Mapping[str, Any], outputs: Sequence[str], *, refresh: bool
    ) -> httpx.Response:
        token = self.token(refresh=refresh)
        return self._http.post(
            f"{self.base_url}/v1/query/online",
            headers={"Authorization": f"Bearer {token}", "X-Chalk-Env-Id": self.environment_id},
            json={"inputs": dict(inputs), "outputs": list(outputs), "include_meta": True},
        )
