"""The sandbox's regional Chalk query server: Chalk's wire format over the region's online store.

One instance plays one region's Chalk resource group behind its ALB. It speaks what the probe
and the stand-in CLI speak (DESIGN.md, "The Chalk query wire format"):

- `GET /healthz`: 200 only while the region's query-server Deployment has ready replicas
  (`is_serving()`, wired by the world to the region's Kubernetes emulator), else 503. This is
  the path Route 53 health checks probe on the ALB.
- `POST /v1/oauth/token`: client credentials -> a bearer token. Tokens are HMAC-signed with the
  client secret (stateless, like Chalk's JWTs), so a token from one region is accepted by the
  other: clients that follow the failover name keep their token across a failover.
- `POST /v1/query/online`: reads the online store with ConsistentRead GetItem.

The online-store layout is the sandbox's stand-in for Chalk's internal one: every table has a
HASH key `pk` (S) = "<namespace>.<primary key value>", and feature values are attributes named
by their fully qualified feature name. `inputs={"user.id": 123}, outputs=["user.name"]` reads
attribute "user.name" of item pk="user.123" from the first configured table that has it. A
missing item or feature answers value null plus a FIELD error `RESOLVER_NOT_FOUND`; a DynamoDB
failure answers value null plus a NETWORK error `UPSTREAM_FAILED` (the query itself is 200, as
Chalk reports per-feature errors in the body).

Operator routes under `/_sandbox/` stand in for Chalk's deploy API: `apply` (bearer token)
creates a deployment id and, when promoted on the main branch, serves it; `apply-faults` makes
the next applies fail transiently (503) or permanently (400); `state` tells what is served.
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
import uuid
from collections.abc import Callable
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response

from sandbox.http import LoopbackServer
from sandbox.truth import GroundTruth

__all__ = ["QueryServer", "new_deployment_id"]

TOKEN_TTL_S = 3600
TRANSIENT_APPLY_ERROR = "upstream connect error: temporarily unavailable"
PERMANENT_APPLY_ERROR = "Validation failed: resolver 'user.name' references unknown feature"
_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_deployment_id() -> str:
    """A Chalk-style deployment id: "c" + 24 lowercase alphanumerics."""
    return "c" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, default=str), status=status, content_type="application/json")


def _body(request: Request) -> dict[str, Any]:
    """The JSON object body (or form fields); anything else reads as empty."""
    body = request.get_json(silent=True)
    if body is None:
        return request.form.to_dict()
    return body if isinstance(body, dict) else {}


def _chalk_error(code: str, category: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "category": category, "message": message, **extra}


def _plain(value: Any) -> Any:
    """DynamoDB's Decimal/set/bytes values as JSON values (ints stay ints)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set | frozenset | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


class QueryServer:
    """One region's Chalk API + query server, on 127.0.0.1 (port chosen by the OS)."""

    def __init__(
        self,
        *,
        region: str,
        environment_name: str,
        environment_id: str,
        client_id: str,
        client_secret: str,
        table_names: Sequence[str],
        dynamodb: Any,
        is_serving: Callable[[], bool],
        deployment_id: str | None = None,
        truth: GroundTruth | None = None,
    ) -> None:
        self.region = region
        self.environment_name = environment_name
        self.environment_id = environment_id
        self._client_id = client_id
        self._secret = client_secret.encode("utf-8")
        self._tables = list(table_names)
        self._dynamodb = dynamodb
        self._is_serving = is_serving
        self._truth = truth
        self._lock = threading.Lock()
        self._deployment_id = deployment_id or new_deployment_id()
        self._fault_mode: str | None = None
        self._fault_count = 0
        self._deserializer = TypeDeserializer()
        self._http_server = LoopbackServer(self._wsgi, name=f"sandbox-query-{region}")

    @property
    def url(self) -> str:
        return self._http_server.url

    @property
    def deployment_id(self) -> str:
        with self._lock:
            return self._deployment_id

    def start(self) -> QueryServer:
        self._http_server.start()
        return self

    def stop(self) -> None:
        self._http_server.stop()

    # -- HTTP ----------------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "/healthz"): self._healthz,
            ("POST", "/v1/oauth/token"): self._token,
            ("POST", "/v1/query/online"): self._query,
            ("POST", "/_sandbox/apply"): self._apply,
            ("POST", "/_sandbox/apply-faults"): self._apply_faults,
            ("GET", "/_sandbox/state"): self._state,
        }
        route = routes.get((request.method, request.path))
        if route is not None:
            response = route(request)
        elif any(path == request.path for _, path in routes):
            response = _json({"error": f"method {request.method} not allowed"}, 405)
        else:
            response = _json({"error": f"no route {request.path}"}, 404)
        return response(environ, start_response)

    def _serving(self) -> bool:
        """is_serving(), where a failing check (e.g. the region's API server is gone) means no."""
        try:
            return bool(self._is_serving())
        except Exception:  # noqa: BLE001 - an unanswerable readiness check is "not ready"
            return False

    def _healthz(self, request: Request) -> Response:
        if self._serving():
            return _json({"status": "ok"})
        return _json({"status": "unavailable", "region": self.region}, 503)

    # -- tokens --------------------------------------------------------------------------------

    def _sign(self, claims: dict[str, Any]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(claims, sort_keys=True).encode()).decode().rstrip("=")
        mac = hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{mac}"

    def _verify(self, token: str) -> dict[str, Any] | None:
        body, _, mac = token.partition(".")
        expected = hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()
        if not mac or not hmac.compare_digest(mac, expected):
            return None
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if claims.get("sub") != self._client_id or float(claims.get("exp", 0)) < time.time():
            return None
        return claims

    def _bearer(self, request: Request) -> dict[str, Any] | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        return self._verify(token.strip())

    def _token(self, request: Request) -> Response:
        body = _body(request)
        if body.get("grant_type", "client_credentials") != "client_credentials":
            return _json({"error": "unsupported_grant_type"}, 400)
        client_id = str(body.get("client_id", ""))
        secret = str(body.get("client_secret", "")).encode("utf-8")
        if client_id != self._client_id or not hmac.compare_digest(secret, self._secret):
            return _json({"error": "invalid_client", "error_description": "invalid client credentials"}, 401)
        token = self._sign({"sub": client_id, "env": self.environment_id, "exp": time.time() + TOKEN_TTL_S})
        return _json(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": TOKEN_TTL_S,
                "api_server": self.url,
                "primary_environment": self.environment_id,
                "engines": {self.environment_id: self.url},
            }
        )

    # -- queries -------------------------------------------------------------------------------

    def _query(self, request: Request) -> Response:
        started = time.perf_counter()
        if self._bearer(request) is None:
            return _json(
                {"errors": [_chalk_error("UNAUTHENTICATED", "REQUEST", "missing or invalid token")]}, 401
            )
        env = request.headers.get("X-Chalk-Env-Id", self.environment_id)
        if env != self.environment_id:
            message = f"token is not valid for environment {env!r}"
            return _json({"errors": [_chalk_error("UNAUTHORIZED", "REQUEST", message)]}, 403)
        if not self._serving():
            message = f"no ready query servers in {self.region}"
            return _json({"errors": [_chalk_error("UNAVAILABLE", "NETWORK", message)]}, 503)
        body = _body(request)
        inputs, outputs = body.get("inputs"), body.get("outputs")
        if not isinstance(inputs, dict) or not inputs or not isinstance(outputs, list) or not outputs:
            message = "body must have non-empty 'inputs' (object) and 'outputs' (list)"
            return _json({"errors": [_chalk_error("INVALID_QUERY", "REQUEST", message)]}, 400)

        deployment_id = self.deployment_id
        ts = datetime.now(UTC).isoformat()
        data: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        items: dict[str, dict[str, Any] | Exception] = {}
        for field in map(str, outputs):
            pkey = self._primary_key(field, inputs)
            value, error = self._read(field, pkey, items)
            data.append({"field": field, "value": value, "pkey": pkey, "error": error, "ts": ts})
            if error is not None:
                errors.append(error)
        meta = {
            "deployment_id": deployment_id,
            "environment_id": self.environment_id,
            "environment_name": self.environment_name,
            "query_id": uuid.uuid4().hex,
            "execution_duration_s": time.perf_counter() - started,
        }
        return _json({"data": data, "errors": errors, "meta": meta if body.get("include_meta") else None})

    @staticmethod
    def _primary_key(field: str, inputs: dict[str, Any]) -> Any:
        """The input in the output's namespace (`user.id` for `user.name`; `<ns>.id` preferred)."""
        namespace = field.split(".", 1)[0]
        same = [k for k in inputs if k.split(".", 1)[0] == namespace]
        key = f"{namespace}.id" if f"{namespace}.id" in same else (same[0] if same else None)
        return inputs.get(key) if key is not None else None

    def _read(
        self, field: str, pkey: Any, items: dict[str, dict[str, Any] | Exception]
    ) -> tuple[Any, dict[str, Any] | None]:
        namespace = field.split(".", 1)[0]
        if pkey is None:
            message = f"no input in namespace {namespace!r} to look up {field!r}"
            return None, _chalk_error("INVALID_QUERY", "REQUEST", message, feature=field)
        pk = f"{namespace}.{pkey}"
        found = items.get(pk)
        if found is None:
            found = items[pk] = self._get_item(pk, field)
        if isinstance(found, Exception):
            message = f"online store read failed for {pk!r}: {found}"
            return None, _chalk_error("UPSTREAM_FAILED", "NETWORK", message, feature=field)
        if field not in found:
            message = f"no value for feature {field!r} with primary key {pkey!r} in the online store"
            return None, _chalk_error(
                "RESOLVER_NOT_FOUND", "FIELD", message, feature=field, display_primary_key=str(pkey)
            )
        return found[field], None

    def _get_item(self, pk: str, field: str) -> dict[str, Any] | Exception:
        """The first table's item that holds `field` (else the first item found, else {})."""
        first: dict[str, Any] | None = None
        try:
            for table in self._tables:
                raw = self._dynamodb.get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True)
                if "Item" not in raw:
                    continue
                item = {k: _plain(self._deserializer.deserialize(v)) for k, v in raw["Item"].items()}
                if field in item:
                    return item
                first = first or item
        except (ClientError, BotoCoreError) as exc:
            return exc
        return first or {}

    # -- operator routes -----------------------------------------------------------------------

    def _apply(self, request: Request) -> Response:
        if self._bearer(request) is None:
            return _json({"error": "missing or invalid token"}, 401)
        body = _body(request)
        branch = body.get("branch")
        promote = bool(body.get("promote", True))
        with self._lock:
            if self._fault_count > 0:
                self._fault_count -= 1
                if self._fault_mode == "permanent":
                    return _json({"error": PERMANENT_APPLY_ERROR}, 400)
                return _json({"error": TRANSIENT_APPLY_ERROR}, 503)
        if not self._serving():
            # `--await` waits for the new deployment to become healthy; with no ready query
            # servers in the region it never does, and Chalk reports the deploy as failed.
            return _json({"error": f"upstream connect error: no ready query servers in {self.region}"}, 503)
        deployment_id = new_deployment_id()
        promoted = promote and not branch
        if promoted:
            with self._lock:
                self._deployment_id = deployment_id
            if self._truth is not None:
                self._truth.record("chalk.deployment", region=self.region, deployment_id=deployment_id)
        return _json({"deployment_id": deployment_id, "branch": branch, "promoted": promoted})

    def _apply_faults(self, request: Request) -> Response:
        body = _body(request)
        mode, count = body.get("mode"), body.get("count", 1)
        if mode not in ("transient", "permanent") or not isinstance(count, int) or count < 0:
            return _json({"error": "body must be {'mode': 'transient'|'permanent', 'count': int >= 0}"}, 400)
        with self._lock:
            self._fault_mode, self._fault_count = mode, count
        return _json({"mode": mode, "count": count})

    def _state(self, request: Request) -> Response:
        with self._lock:
            faults = {"mode": self._fault_mode, "count": self._fault_count}
            deployment_id = self._deployment_id
        return _json(
            {
                "region": self.region,
                "environment_id": self.environment_id,
                "deployment_id": deployment_id,
                "serving": self._serving(),
                "apply_faults": faults,
            }
        )
