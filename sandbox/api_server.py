"""The sandbox's regional Chalk API servers (metadata plane): tokens, uploads, deployments.

One ApiServer is one region's API server, on its own loopback address, answering its own
hostname and the environment's API name. Chalk's clients exchange credentials here, never at a
query server (chalkpy `_exchange_credentials`), and chalkpy's `upload_features` posts here too
(it is a metadata request in chalkpy's `_request`):

- `POST /v1/oauth/token`: client credentials -> a token valid at every region's query servers
  (one environment), `engines` naming this region's query servers;
- `POST /v1/upload_features`: chalkpy's UploadFeaturesRequest `{"input": {fqn: [values]}}`,
  needing a token and X-Chalk-Env-Id; the rows go onto the region's persistence path (an MSK
  topic the persistence workers write into the online store) and `{"errors": [], "trace_id"}`
  comes back at once, as Chalk acknowledges an upload before it is served;
- `GET /healthz`: 200 while the metadata plane serves.

Operator routes under `/_sandbox/` stand in for Chalk's deploy API, which the stand-in CLI uses:
`apply` (a token) creates a deployment id and, when promoted on the main branch, this region
serves it; `apply-faults` makes the next applies fail transiently (503) or permanently (400);
`state` tells what is served.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from collections.abc import Sequence

from werkzeug.wrappers import Request
from werkzeug.wrappers import Response

from sandbox.chalk import TOKEN_TTL_S
from sandbox.chalk import ChalkEnvironment
from sandbox.chalk import ChalkRegion
from sandbox.chalk import errors_response
from sandbox.chalk import json_response
from sandbox.chalk import new_deployment_id
from sandbox.chalk import request_body
from sandbox.chalk import upload_rows
from sandbox.query_server import RegionalService

__all__ = ["PERMANENT_APPLY_ERROR", "TRANSIENT_APPLY_ERROR", "ApiServer"]

TRANSIENT_APPLY_ERROR = "upstream connect error: temporarily unavailable"
PERMANENT_APPLY_ERROR = "Validation failed: resolver 'user.name' references unknown feature"


class ApiServer(RegionalService):
    """One region's API server; `engine_url` is what the token response names as its engine."""

    server_name = "sandbox-api"

    def __init__(
        self,
        *,
        engine_url: str,
        region: ChalkRegion,
        environment: ChalkEnvironment,
        hosts: frozenset[str],
        sockets: Sequence[socket.socket] | None = None,
    ) -> None:
        super().__init__(region=region, environment=environment, hosts=hosts, sockets=sockets)
        self.engine_url = engine_url
        self.public_url = ""  # set by the world: how clients name this server

    def routes(self) -> dict[tuple[str, str], Callable[[Request], Response]]:
        return {
            ("GET", "/healthz"): lambda _r: json_response({"status": "ok"}),
            ("POST", "/v1/oauth/token"): self._token,
            ("POST", "/v1/upload_features"): self._upload,
            ("POST", "/_sandbox/apply"): self._apply,
            ("POST", "/_sandbox/apply-faults"): self._apply_faults,
            ("GET", "/_sandbox/state"): self._state,
        }

    def _token(self, request: Request) -> Response:
        body = request_body(request)
        if body is None:
            return json_response({"error": "invalid_request", "error_description": "JSON object body"}, 400)
        if body.get("grant_type") != "client_credentials":
            return json_response({"error": "unsupported_grant_type"}, 400)
        token = self.environment.issue(str(body.get("client_id", "")), str(body.get("client_secret", "")))
        if token is None:
            return json_response(
                {"error": "invalid_client", "error_description": "invalid client credentials"}, 401
            )
        env = self.environment.environment_id
        return json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": TOKEN_TTL_S,
                "api_server": self.public_url or self.url,
                "primary_environment": env,
                "engines": {env: self.engine_url},
            }
        )

    def _upload(self, request: Request) -> Response:
        refused = self.environment.authenticate(request)
        if refused is not None:
            return refused
        body = request_body(request)
        rows = upload_rows(body) if body is not None else "body must be a JSON object"
        if isinstance(rows, str):
            return errors_response(400, "INVALID_QUERY", "REQUEST", rows)
        self.chalk.publish(rows)
        return json_response({"errors": [], "trace_id": uuid.uuid4().hex})

    # -- the deploy API the stand-in CLI uses ----------------------------------------------------

    def _apply(self, request: Request) -> Response:
        refused = self.environment.authenticate(request)
        if refused is not None:
            return refused
        body = request_body(request) or {}
        branch = body.get("branch") or None
        promote = bool(body.get("promote", True))
        fault = self.chalk.take_apply_fault()
        if fault == "permanent":
            return json_response({"error": PERMANENT_APPLY_ERROR}, 400)
        if fault == "transient":
            return json_response({"error": TRANSIENT_APPLY_ERROR}, 503)
        if not self.chalk.serving():
            # `--await` waits for the new deployment to become healthy; with no ready query
            # servers in the region it never does, and Chalk reports the deploy as failed.
            return json_response(
                {"error": f"upstream connect error: no ready query servers in {self.chalk.region}"}, 503
            )
        deployment_id = new_deployment_id()
        promoted = promote and not branch
        if promoted:
            self.chalk.promote(deployment_id)
        return json_response({"deployment_id": deployment_id, "branch": branch, "promoted": promoted})

    def _apply_faults(self, request: Request) -> Response:
        body = request_body(request) or {}
        mode, count = body.get("mode"), body.get("count", 1)
        if mode not in ("transient", "permanent") or not isinstance(count, int) or count < 0:
            return json_response(
                {"error": "body must be {'mode': 'transient'|'permanent', 'count': int >= 0}"}, 400
            )
        self.chalk.set_apply_faults(mode, count)
        return json_response({"mode": mode, "count": count})

    def _state(self, request: Request) -> Response:
        return json_response(
            {
                "region": self.chalk.region,
                "environment_id": self.environment.environment_id,
                "deployment_id": self.chalk.served(),
                "serving": self.chalk.serving(),
                "apply_faults": self.chalk.apply_faults(),
            }
        )
