"""One Chalk environment in the sandbox, served from several regions (Chalk's multi-region guide).

`ChalkEnvironment` is what every region shares: the environment id, the client credentials,
and the key tokens are signed with (the metadata plane is global: a token the API server of one
region issued is good at every region's query servers). `ChalkRegion` is one region's resource
group: the deployment it serves (each region's deployment has its own id, Chalk ids are per
deployment), whether its query servers are ready, its online store, and where uploads go (the
region's persistence path: an MSK topic that the persistence workers consume into the online
store). The API server (sandbox/api_server.py) and the query servers (sandbox/query_server.py)
are two faces of one ChalkRegion.

Wire format, from Chalk's public clients (chalkpy `chalk/client/client_impl.py`, chalk-go,
chalk-ts; see AWS-CHALK-FACTS.md):
- `POST {api_server}/v1/oauth/token` `{client_id, client_secret, grant_type: client_credentials}`
  -> `{access_token, token_type, expires_in, api_server, primary_environment, engines}`;
- queries and uploads carry `Authorization: Bearer` and `X-Chalk-Env-Id`; errors are Chalk
  errors `{code, category, message}` in an `errors` list.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from decimal import Decimal
from typing import Any

from werkzeug.wrappers import Request
from werkzeug.wrappers import Response

from sandbox.truth import GroundTruth

__all__ = [
    "ChalkEnvironment",
    "ChalkRegion",
    "chalk_error",
    "errors_response",
    "host_of",
    "json_response",
    "new_deployment_id",
    "plain",
    "request_body",
    "upload_rows",
]

TOKEN_TTL_S = 3600
_ID_ALPHABET = string.ascii_lowercase + string.digits


def plain(value: Any) -> Any:
    """DynamoDB's Decimal/set/bytes values as JSON values (ints stay ints)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | set | frozenset | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def new_deployment_id() -> str:
    """A Chalk-style deployment id: "c" + 24 lowercase alphanumerics (observed ids are cuids)."""
    return "c" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, default=str), status=status, content_type="application/json")


def chalk_error(code: str, category: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "category": category, "message": message, **extra}


def errors_response(status: int, code: str, category: str, message: str) -> Response:
    return json_response({"errors": [chalk_error(code, category, message)]}, status)


def host_of(request: Request) -> str:
    """The request's Host without its port, lower case."""
    return request.host.rsplit(":", 1)[0].lower() if request.host else ""


def request_body(request: Request) -> dict[str, Any] | None:
    """The JSON object body, or None when there is none or it is not an object."""
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None


@dataclass
class ChalkEnvironment:
    """The environment every region serves, its credentials, and its token key."""

    environment_id: str
    client_id: str
    client_secret: str
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def issue(self, client_id: str, client_secret: str) -> str | None:
        if client_id != self.client_id or not hmac.compare_digest(
            client_secret.encode("utf-8"), self.client_secret.encode("utf-8")
        ):
            return None
        claims = {"sub": client_id, "env": self.environment_id, "exp": time.time() + TOKEN_TTL_S}
        body = base64.urlsafe_b64encode(json.dumps(claims, sort_keys=True).encode()).decode().rstrip("=")
        return f"{body}.{hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()}"

    def verify(self, token: str) -> dict[str, Any] | None:
        body, _, mac = token.partition(".")
        expected = hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()
        if not mac or not hmac.compare_digest(mac, expected):
            return None
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if claims.get("sub") != self.client_id or float(claims.get("exp", 0)) < time.time():
            return None
        return claims

    def authenticate(self, request: Request) -> Response | None:
        """None when the request carries a valid token for this environment, else Chalk's refusal.

        X-Chalk-Env-Id is required: the token alone does not say which environment a query is
        for (a client's credentials may reach several), so a missing or unknown id is refused.
        """
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token or self.verify(token.strip()) is None:
            return errors_response(401, "UNAUTHENTICATED", "REQUEST", "missing or invalid token")
        env = request.headers.get("X-Chalk-Env-Id")
        if not env:
            return errors_response(400, "INVALID_QUERY", "REQUEST", "missing X-Chalk-Env-Id header")
        if env != self.environment_id:
            return errors_response(403, "UNAUTHORIZED", "REQUEST", f"unknown environment {env!r}")
        return None


Publish = Callable[[list[dict[str, Any]]], None]  # rows of {fqn: value} onto the persistence path


@dataclass
class ChalkRegion:
    """One region's resource group: what it serves and how its data flows."""

    region: str
    resource_group: str
    is_serving: Callable[[], bool]  # the query-server Deployment has ready replicas
    read_item: Callable[[str], dict[str, Any] | Exception]  # online store: pk -> item (or the error)
    publish: Publish  # uploads: onto the region's persistence topic
    truth: GroundTruth | None = None
    deployment_id: str = field(default_factory=new_deployment_id)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _fault_mode: str | None = None
    _fault_count: int = 0
    # Sandbox-only fault: queries answer this HTTP status while /healthz still passes (a broken
    # deployment behind a passing health check). None: queries are answered normally.
    query_error_status: int | None = None

    def serving(self) -> bool:
        """is_serving(), where a failing check (the region's Kubernetes API is gone) means no."""
        try:
            return bool(self.is_serving())
        except Exception:  # noqa: BLE001 - an unanswerable readiness check is "not ready"
            return False

    def served(self) -> str:
        with self._lock:
            return self.deployment_id

    def set_apply_faults(self, mode: str, count: int) -> None:
        with self._lock:
            self._fault_mode, self._fault_count = mode, count

    def take_apply_fault(self) -> str | None:
        with self._lock:
            if self._fault_count <= 0:
                return None
            self._fault_count -= 1
            return self._fault_mode

    def apply_faults(self) -> dict[str, Any]:
        with self._lock:
            return {"mode": self._fault_mode, "count": self._fault_count}

    def promote(self, deployment_id: str) -> None:
        with self._lock:
            self.deployment_id = deployment_id
        if self.truth is not None:
            self.truth.record("chalk.deployment", region=self.region, deployment_id=deployment_id)


def upload_rows(body: dict[str, Any]) -> list[dict[str, Any]] | str:
    """chalkpy's UploadFeaturesRequest `{"input": {fqn: [values]}}` as rows, or why it is invalid.

    Every list has one value per row, all lists the same length; every row must carry its
    feature class's primary key (`<namespace>.id`), since an upload is keyed like any feature row.
    """
    columns = body.get("input")
    if not isinstance(columns, dict) or not columns:
        return "body must have 'input': {feature: [values]}"
    if not all(isinstance(k, str) and "." in k for k in columns):
        return "input keys must be feature names (namespace.feature)"
    if not all(isinstance(v, list) for v in columns.values()):
        return "input values must be lists (one value per row)"
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1 or 0 in lengths:
        return "input lists must be non-empty and of equal length"
    namespaces = {k.split(".", 1)[0] for k in columns}
    missing = sorted(ns for ns in namespaces if f"{ns}.id" not in columns)
    if missing:
        return f"uploads need each feature class's primary key: {', '.join(f'{ns}.id' for ns in missing)}"
    (n,) = lengths
    return [{fqn: values[i] for fqn, values in columns.items()} for i in range(n)]


def served_hosts(*names: Iterable[str] | str) -> frozenset[str]:
    out: set[str] = set()
    for n in names:
        out |= {n} if isinstance(n, str) else set(n)
    return frozenset(x.lower().rstrip(".") for x in out)
