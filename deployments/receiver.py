"""A Git host's push webhook, authenticated, turned into a `chalkdr.git.push` Prefect event.

Prefect OSS has no webhooks: something must turn a push into an event that the chalk-apply
deployment's trigger matches. CI can emit it (deployments/ci/), or, when the Git host must call
in directly, this receiver can. It accepts GitHub-style deliveries only when they carry a valid
`X-Hub-Signature-256` (HMAC-SHA256 of the raw body with the shared webhook secret); anything
unsigned or wrongly signed is answered 401 and never reaches Prefect.

    CHALKDR_WEBHOOK_SECRET=...  PREFECT_API_URL=http://prefect:4200/api \\
        python -m deployments.receiver --host 0.0.0.0 --port 8080

Environment: CHALKDR_WEBHOOK_SECRET (required), PREFECT_API_URL (required), PREFECT_API_KEY
(Prefect Cloud) or PREFECT_API_AUTH_STRING (`user:password`, a self-hosted server with basic
auth), CHALKDR_PUSH_BRANCHES (comma-separated branch names; default: the repository's default
branch). Terminate TLS in front of it (a load balancer or reverse proxy).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any

import httpx

__all__ = [
    "PUSH_EVENT",
    "ReceiverConfig",
    "make_server",
    "post_events",
    "push_event",
    "verify_signature",
]

PUSH_EVENT = "chalkdr.git.push"
MAX_BODY_BYTES = 5 * 1024 * 1024
_ZERO_SHA = "0" * 40
logger = logging.getLogger("chalkdr.receiver")


@dataclass(frozen=True)
class ReceiverConfig:
    secret: bytes
    prefect_api_url: str
    api_key: str | None = None
    auth_string: str | None = None
    branches: frozenset[str] | None = None  # None: the repository's default branch only
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReceiverConfig:
        env = os.environ if env is None else env
        secret = env.get("CHALKDR_WEBHOOK_SECRET", "")
        api = env.get("PREFECT_API_URL", "")
        if not secret:
            raise SystemExit("CHALKDR_WEBHOOK_SECRET is not set: refusing to accept unauthenticated webhooks")
        if not api:
            raise SystemExit("PREFECT_API_URL is not set")
        branches = {b.strip() for b in env.get("CHALKDR_PUSH_BRANCHES", "").split(",") if b.strip()}
        return cls(
            secret=secret.encode("utf-8"),
            prefect_api_url=api.rstrip("/"),
            api_key=env.get("PREFECT_API_KEY") or None,
            auth_string=env.get("PREFECT_API_AUTH_STRING") or None,
            branches=frozenset(branches) or None,
        )


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """GitHub's scheme: `sha256=` + hex HMAC-SHA256 of the raw body; compared in constant time."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("ascii", "replace"))


def push_event(
    payload: Mapping[str, Any], *, delivery: str | None = None, branches: frozenset[str] | None = None
) -> dict[str, Any] | None:
    """The Prefect event for a push to a deploy branch, or None when the push is not one.

    Tags, branch deletions and other branches are ignored. The event id derives from the
    delivery id, so a redelivered webhook produces the same event id, not a second push.
    """
    ref = str(payload.get("ref", ""))
    sha = str(payload.get("after", ""))
    repo = payload.get("repository") or {}
    if not ref.startswith("refs/heads/") or payload.get("deleted") or sha in ("", _ZERO_SHA):
        return None
    branch = ref.removeprefix("refs/heads/")
    wanted = branches if branches is not None else frozenset({str(repo.get("default_branch", ""))})
    if branch not in wanted:
        return None
    full_name = str(repo.get("full_name", "unknown"))
    event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"github-delivery:{delivery}") if delivery else uuid.uuid4()
    return {
        "id": str(event_id),
        "occurred": datetime.now(UTC).isoformat(),
        "event": PUSH_EVENT,
        "resource": {
            "prefect.resource.id": f"chalkdr.git.{full_name}",
            "prefect.resource.name": full_name,
        },
        "related": [],
        "payload": {
            "sha": sha,
            "before": str(payload.get("before", "")),
            "ref": ref,
            "branch": branch,
            "repo_url": str(repo.get("clone_url", "")),
            "repository": full_name,
            "pusher": str((payload.get("pusher") or {}).get("name", "")),
            "delivery": delivery or "",
        },
    }


def post_events(config: ReceiverConfig, events: list[dict[str, Any]]) -> None:
    """`POST {PREFECT_API_URL}/events` (a list of events, each with an id), as `prefect event emit` does."""
    headers = {"Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    elif config.auth_string:
        headers["Authorization"] = "Basic " + base64.b64encode(config.auth_string.encode()).decode()
    resp = httpx.post(
        f"{config.prefect_api_url}/events", json=events, headers=headers, timeout=config.timeout_s
    )
    resp.raise_for_status()


class _Handler(BaseHTTPRequestHandler):
    config: ReceiverConfig
    server_version = "chalkdr-receiver"

    def _reply(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(200, {"status": "ok"})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._reply(411, {"error": "Content-Length required"})
            return
        if int(length) > MAX_BODY_BYTES:
            self._reply(413, {"error": "payload too large"})
            return
        body = self.rfile.read(int(length))
        if not verify_signature(self.config.secret, body, self.headers.get("X-Hub-Signature-256")):
            logger.warning(
                "rejected a delivery with a missing or bad signature from %s", self.address_string()
            )
            self._reply(401, {"error": "missing or invalid X-Hub-Signature-256"})
            return
        kind = self.headers.get("X-GitHub-Event", "")
        if kind == "ping":
            self._reply(200, {"status": "pong"})
            return
        if kind != "push":
            self._reply(202, {"status": "ignored", "reason": f"event {kind!r} is not a push"})
            return
        try:
            payload = json.loads(body)
        except ValueError:
            self._reply(400, {"error": "body is not JSON"})
            return
        event = push_event(
            payload, delivery=self.headers.get("X-GitHub-Delivery"), branches=self.config.branches
        )
        if event is None:
            self._reply(202, {"status": "ignored", "reason": "not a push to a deploy branch"})
            return
        try:
            post_events(self.config, [event])
        except httpx.HTTPError as exc:
            logger.error("could not post %s to Prefect: %s", PUSH_EVENT, type(exc).__name__)
            self._reply(502, {"error": "could not reach the Prefect API"})  # the Git host can redeliver
            return
        logger.info(
            "push %s of %s -> event %s", event["payload"]["sha"], event["payload"]["repository"], event["id"]
        )
        self._reply(202, {"status": "accepted", "event_id": event["id"], "sha": event["payload"]["sha"]})


def make_server(config: ReceiverConfig, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    """A threading HTTP server bound to (host, port); port 0 lets the OS choose."""
    handler = type("ReceiverHandler", (_Handler,), {"config": config})
    return ThreadingHTTPServer((host, port), handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = make_server(ReceiverConfig.from_env(), args.host, args.port)
    logger.info("listening on %s:%d", *server.server_address[:2])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
