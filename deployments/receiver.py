"""A Git host's push webhook, authenticated, turned into a `chalkdr.git.push` Prefect event.

Prefect OSS has no webhooks: something must turn a push into an event that the chalk-apply
deployment's trigger matches. CI can emit it (deployments/ci/), or, when the Git host must call
in directly, this receiver can. It is a small FastAPI app under uvicorn, exposed to the
internet, so it is written to be attacked:

- nothing is believed before the signature: the body is read (bounded in size and time) and its
  `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with the shared webhook secret) compared in
  constant time before anything else looks at it; unsigned or wrongly signed requests get 401;
- a slow client cannot hold the server: every connection must deliver its request (headers and
  body) within `request_timeout_s` or is closed, idle keep-alive connections close after
  `keep_alive_s`, at most `max_connections` are served at once (uvicorn `limit_concurrency`,
  503 beyond), and h11 caps the header size;
- malformed input is a 400, never a crash: a bad Content-Length (h11 refuses it), a body that is
  not JSON or not an object, a push without the fields it needs or with the wrong types;
- only pushes to the configured branches of the configured repositories (`repository.full_name`
  against CHALKDR_ALLOWED_REPOSITORIES; a signed delivery for any other is 403) become events;
  the chalk-apply flow checks the repository, the branch and the sha again against its topology;
- deliveries are deduplicated durably, keyed on the body's HMAC (a small SQLite file): the
  signature does not cover the X-GitHub-Delivery header, so a replayed body with a new delivery
  id is still the same push; the event id derives from the same key, so even a lost record
  cannot make Prefect see two pushes;
- a failed post to Prefect is retried with backoff (bounded, to answer within the Git host's
  10-second delivery timeout), then answered 502 and logged at ERROR: GitHub shows the failed
  delivery and can redeliver it, and the record of the failure stays in the state file.

    CHALKDR_WEBHOOK_SECRET=...  CHALKDR_ALLOWED_REPOSITORIES=acme/features \\
    PREFECT_API_URL=http://prefect:4200/api  python -m deployments.receiver --host 0.0.0.0 --port 8080

Environment: CHALKDR_WEBHOOK_SECRET (required), CHALKDR_ALLOWED_REPOSITORIES (required,
comma-separated owner/name), PREFECT_API_URL (required), PREFECT_API_KEY (Prefect Cloud) or
PREFECT_API_AUTH_STRING (`user:password`, a self-hosted server with basic auth),
CHALKDR_PUSH_BRANCHES (comma-separated branch names; default `main`: server-side configuration,
never the payload's default branch), CHALKDR_RECEIVER_STATE (the SQLite file; default
`receiver-state.sqlite3`). Terminate TLS in front of it (a load balancer or reverse proxy).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any
from typing import Literal

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import StrictBool
from pydantic import StrictStr
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "PUSH_EVENT",
    "DeliveryStore",
    "PushPayload",
    "ReceiverConfig",
    "make_app",
    "make_server",
    "push_event",
    "verify_signature",
]

PUSH_EVENT = "chalkdr.git.push"
_ZERO_SHA = "0" * 40
_FULL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")
logger = logging.getLogger("chalkdr.receiver")


def _names(value: str) -> frozenset[str]:
    return frozenset(v.strip() for v in value.split(",") if v.strip())


@dataclass(frozen=True)
class ReceiverConfig:
    """Everything the receiver trusts comes from here, never from a request."""

    secret: bytes
    prefect_api_url: str
    repositories: frozenset[str]  # repository.full_name values (owner/name), compared case-insensitively
    branches: frozenset[str] = frozenset({"main"})
    api_key: str | None = None
    auth_string: str | None = None
    state_path: Path = Path("receiver-state.sqlite3")
    max_body_bytes: int = 5 * 1024 * 1024
    request_timeout_s: float = 10.0  # headers and body must have arrived by then
    keep_alive_s: float = 5.0
    max_connections: int = 64
    max_header_bytes: int = 16 * 1024
    post_timeout_s: float = 2.5  # per attempt; attempts and backoff keep the total under 10 s
    post_attempts: int = 3
    post_backoff_s: tuple[float, ...] = (0.5, 1.0)
    dedupe_retention_s: float = 30 * 24 * 3600.0

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError("the webhook secret is empty: refusing to accept unauthenticated webhooks")
        if not self.repositories:
            raise ValueError("no allowed repositories: every push would be refused")
        bad = [r for r in self.repositories if not _FULL_NAME_RE.match(r)]
        if bad:
            raise ValueError(f"not owner/name repository names: {', '.join(sorted(bad))}")
        if self.post_attempts < 1:
            raise ValueError("post_attempts must be at least 1")

    def allows(self, full_name: str) -> bool:
        return full_name.lower() in {r.lower() for r in self.repositories}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReceiverConfig:
        env = os.environ if env is None else env
        secret = env.get("CHALKDR_WEBHOOK_SECRET", "")
        api = env.get("PREFECT_API_URL", "")
        repositories = _names(env.get("CHALKDR_ALLOWED_REPOSITORIES", ""))
        if not secret:
            raise SystemExit("CHALKDR_WEBHOOK_SECRET is not set: refusing to accept unauthenticated webhooks")
        if not api:
            raise SystemExit("PREFECT_API_URL is not set")
        if not repositories:
            raise SystemExit(
                "CHALKDR_ALLOWED_REPOSITORIES is not set: name the owner/name repositories to accept"
            )
        try:
            return cls(
                secret=secret.encode("utf-8"),
                prefect_api_url=api.rstrip("/"),
                repositories=repositories,
                branches=_names(env.get("CHALKDR_PUSH_BRANCHES", "")) or frozenset({"main"}),
                api_key=env.get("PREFECT_API_KEY") or None,
                auth_string=env.get("PREFECT_API_AUTH_STRING") or None,
                state_path=Path(env.get("CHALKDR_RECEIVER_STATE") or "receiver-state.sqlite3"),
            )
        except ValueError as exc:
            raise SystemExit(str(exc)) from None


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """GitHub's scheme: `sha256=` + hex HMAC-SHA256 of the raw body; compared in constant time."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("ascii", "replace"))


class _Repository(BaseModel):
    model_config = ConfigDict(extra="ignore")

    full_name: StrictStr = Field(pattern=_FULL_NAME_RE.pattern)
    clone_url: StrictStr = Field(min_length=1, max_length=2048)


class _Pusher(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr = ""


class PushPayload(BaseModel):
    """The fields of a GitHub push delivery the receiver uses, with their types enforced."""

    model_config = ConfigDict(extra="ignore")

    ref: StrictStr = Field(min_length=1, max_length=1024)
    after: StrictStr = Field(pattern=r"^[0-9a-f]{40}$")
    before: StrictStr = Field(default="", max_length=40)
    deleted: StrictBool = False
    repository: _Repository
    pusher: _Pusher | None = None

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None


def push_event(push: PushPayload, *, key: str, delivery: str | None = None) -> dict[str, Any]:
    """The Prefect event for a push. Its id derives from the body's HMAC (`key`): the same body,
    redelivered or replayed under any delivery id, is the same event."""
    full_name = push.repository.full_name
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"chalkdr-push:{key}")),
        "occurred": datetime.now(UTC).isoformat(),
        "event": PUSH_EVENT,
        "resource": {
            "prefect.resource.id": f"chalkdr.git.{full_name}",
            "prefect.resource.name": full_name,
        },
        "related": [],
        "payload": {
            "sha": push.after,
            "before": push.before,
            "ref": push.ref,
            "branch": push.branch or "",
            "repo_url": push.repository.clone_url,
            "repository": full_name,
            "pusher": push.pusher.name if push.pusher else "",
            "delivery": delivery or "",
        },
    }


Claim = Literal["new", "posted", "in-flight"]


class DeliveryStore:
    """Which deliveries became events, keyed on the body's HMAC, in SQLite (durable across restarts).

    A key is claimed (`posting`) before the post and marked `posted` after it; a failed post is
    recorded as `failed` (with its error and the event, for an operator) and may be claimed again
    by a redelivery. A claim older than `stale_s` (the receiver died mid-post) may be taken over.
    """

    def __init__(self, path: Path, *, stale_s: float = 120.0) -> None:
        self.path, self.stale_s = path, stale_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS deliveries (key TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "event_id TEXT, delivery TEXT, repository TEXT, sha TEXT, at REAL NOT NULL, "
            "error TEXT, event TEXT)"
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def claim(self, key: str, *, event: Mapping[str, Any]) -> tuple[Claim, str | None]:
        """("new", None) if this delivery is to be posted now, else how it stands and its event id."""
        payload = event["payload"]
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT status, event_id, at FROM deliveries WHERE key = ?", (key,)
                ).fetchone()
                if row is not None and row[0] == "posted":
                    return "posted", row[1]
                if row is not None and row[0] == "posting" and now - row[2] < self.stale_s:
                    return "in-flight", row[1]
                self._db.execute(
                    "INSERT OR REPLACE INTO deliveries (key, status, event_id, delivery, repository, sha, "
                    "at) VALUES (?, 'posting', ?, ?, ?, ?, ?)",
                    (key, event["id"], payload["delivery"], payload["repository"], payload["sha"], now),
                )
                return "new", None
            finally:
                self._db.execute("COMMIT")

    def posted(self, key: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE deliveries SET status = 'posted', at = ?, error = NULL WHERE key = ?",
                (time.time(), key),
            )

    def failed(self, key: str, *, error: str, event: Mapping[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE deliveries SET status = 'failed', at = ?, error = ?, event = ? WHERE key = ?",
                (time.time(), error, json.dumps(event), key),
            )

    def status(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT status FROM deliveries WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def prune(self, older_than_s: float) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM deliveries WHERE status = 'posted' AND at < ?", (time.time() - older_than_s,)
            )


class _PostFailed(Exception):
    pass


async def _post_event(config: ReceiverConfig, http: httpx.AsyncClient, event: dict[str, Any]) -> int:
    """`POST {PREFECT_API_URL}/events` with bounded retries; how many attempts it took, or _PostFailed."""
    headers = {"Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    elif config.auth_string:
        headers["Authorization"] = "Basic " + base64.b64encode(config.auth_string.encode()).decode()
    last = "no attempt"
    for attempt in range(1, config.post_attempts + 1):
        try:
            resp = await http.post(f"{config.prefect_api_url}/events", json=[event], headers=headers)
            if resp.status_code < 300:
                return attempt
            last = f"HTTP {resp.status_code}"
            if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                break  # Prefect refused this event: repeating it cannot help
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        if attempt < config.post_attempts:
            backoff = config.post_backoff_s
            await asyncio.sleep(backoff[min(attempt - 1, len(backoff) - 1)] if backoff else 0)
    raise _PostFailed(f"{last} after {attempt} attempt(s)")


def _reply(code: int, /, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=code)


async def _read_body(request: Request, config: ReceiverConfig) -> bytes | JSONResponse:
    """The raw body, at most `max_body_bytes`; a response instead when it cannot be had."""
    length = request.headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            return _reply(400, error="Content-Length is not a number")
        if int(length) > config.max_body_bytes:
            return _reply(413, error="payload too large")
    body = bytearray()
    try:
        async with asyncio.timeout(config.request_timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > config.max_body_bytes:
                    return _reply(413, error="payload too large")
    except TimeoutError:
        return _reply(408, error="the body did not arrive in time")
    except ClientDisconnect:
        return _reply(400, error="the client went away")
    return bytes(body)


def _problems(exc: ValidationError) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
    ]


@dataclass
class _State:
    config: ReceiverConfig
    store: DeliveryStore
    http: httpx.AsyncClient | None = None
    last_prune: float = field(default=0.0)


def make_app(config: ReceiverConfig) -> FastAPI:
    """The webhook app: `POST /` takes deliveries, `GET /healthz` is its health check."""
    state = _State(config=config, store=DeliveryStore(config.state_path))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # No proxies from the environment: the receiver talks to one configured Prefect API.
        state.http = httpx.AsyncClient(timeout=config.post_timeout_s, trust_env=False)
        try:
            yield
        finally:
            await state.http.aclose()
            state.store.close()

    app = FastAPI(
        title="chalk-dr push receiver", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error handling %s %s", request.method, request.url.path)
        return _reply(500, error="internal error")

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return _reply(200, status="ok")

    @app.post("/")
    async def webhook(request: Request) -> JSONResponse:
        body = await _read_body(request, config)
        if isinstance(body, JSONResponse):
            return body
        # The signature first: nothing else about the request is looked at before it passes.
        if not verify_signature(config.secret, body, request.headers.get("x-hub-signature-256")):
            client = request.client.host if request.client else "?"
            logger.warning("rejected a delivery with a missing or bad signature from %s", client)
            return _reply(401, error="missing or invalid X-Hub-Signature-256")
        key = hmac.new(config.secret, body, hashlib.sha256).hexdigest()
        delivery = (request.headers.get("x-github-delivery") or "")[:100] or None  # not signed: only logged
        kind = request.headers.get("x-github-event", "")
        if kind == "ping":
            return _reply(200, status="pong")
        if kind != "push":
            return _reply(202, status="ignored", reason=f"event {kind[:40]!r} is not a push")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return _reply(400, error="body is not JSON")
        if not isinstance(data, dict):
            return _reply(400, error=f"body is a JSON {type(data).__name__}, not an object")
        try:
            push = PushPayload.model_validate(data)
        except ValidationError as exc:
            return _reply(400, error="not a push delivery", problems=_problems(exc))
        full_name = push.repository.full_name
        if not config.allows(full_name):
            logger.warning(
                "refused a push to %s: not an allowed repository (delivery %s)", full_name, delivery
            )
            return _reply(403, error=f"repository {full_name} is not allowed")
        if push.branch is None or push.deleted or push.after == _ZERO_SHA:
            return _reply(202, status="ignored", reason="not a branch push (a tag or a deletion)")
        if push.branch not in config.branches:
            return _reply(202, status="ignored", reason=f"branch {push.branch[:100]!r} is not deployed")
        return await _deliver(state, push, key=key, delivery=delivery)

    return app


async def _deliver(state: _State, push: PushPayload, *, key: str, delivery: str | None) -> JSONResponse:
    config, store = state.config, state.store
    event = push_event(push, key=key, delivery=delivery)
    claim, event_id = store.claim(key, event=event)
    if claim != "new":
        logger.info("duplicate delivery %s of %s (%s, event %s)", delivery, push.after, claim, event_id)
        return _reply(200, status="duplicate", state=claim, event_id=event_id, sha=push.after)
    assert state.http is not None
    try:
        attempts = await _post_event(config, state.http, event)
    except _PostFailed as exc:
        store.failed(key, error=str(exc), event=event)
        logger.error(
            "could not post %s for %s@%s (delivery %s, event %s) to Prefect: %s; answered 502 so the Git "
            "host can redeliver",
            PUSH_EVENT,
            push.repository.full_name,
            push.after,
            delivery,
            event["id"],
            exc,
        )
        return _reply(502, error="could not reach the Prefect API", event_id=event["id"])
    store.posted(key)
    if time.time() - state.last_prune > 3600:
        state.last_prune = time.time()
        store.prune(config.dedupe_retention_s)
    logger.info(
        "push %s of %s -> event %s (%d attempt(s))",
        push.after,
        push.repository.full_name,
        event["id"],
        attempts,
    )
    return _reply(202, status="accepted", event_id=event["id"], sha=push.after, attempts=attempts)


class _DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's arrival.

    uvicorn times out idle keep-alive connections but not one that is still sending its request:
    a client trickling a header byte at a time would hold its slot forever. Here every request
    (headers and body) must have arrived within `request_timeout_s` of the connection opening
    (or of the previous response); otherwise the connection is closed. A request that arrived in
    full is never cut off while the app answers it (a post to Prefect may be retrying).
    """

    request_timeout_s = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.more_body and not cycle.response_complete:
            return  # the whole request is in; the app is answering it
        if not self.transport.is_closing():
            self.logger.info(
                "closed a connection that did not send its request within %.0f s", self.request_timeout_s
            )
            self.transport.close()


def make_server(config: ReceiverConfig) -> uvicorn.Server:
    """A uvicorn server for the app with the receiver's limits; run it with `server.run(sockets=[sock])`
    on a socket bound beforehand (port 0 lets the OS choose)."""
    protocol = type(
        "DeadlineH11Protocol", (_DeadlineH11Protocol,), {"request_timeout_s": config.request_timeout_s}
    )
    uv_config = uvicorn.Config(
        make_app(config),
        http=protocol,
        lifespan="on",
        limit_concurrency=config.max_connections,
        timeout_keep_alive=max(1, int(config.keep_alive_s)),
        h11_max_incomplete_event_size=config.max_header_bytes,
        server_header=False,
        proxy_headers=False,
        log_config=None,
        access_log=False,
    )
    return uvicorn.Server(uv_config)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = ReceiverConfig.from_env()
    sock = _listen(args.host, args.port)
    logger.info("listening on %s:%d", *sock.getsockname()[:2])
    make_server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
