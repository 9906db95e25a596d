"""The sandbox's AWS endpoint: moto's server app behind a layer that adds missing semantics.

Requests are classified by their SigV4 credential scope (service and region), exactly as moto
itself routes them. Each simulator (Route 53 health checking, DynamoDB global tables, MSK,
Aurora global, FIS) registers:

- interceptors, which answer calls moto lacks or gets wrong, and return None to pass through;
- observers, which see a call and moto's answer after moto handled it (e.g. a PutItem that
  must now replicate) and may return a replacement body (e.g. EKS's endpoint rewritten to the
  region's Kubernetes emulator, an MSK cluster reported ACTIVE).

Control routes under `/_sandbox/` are for the sandbox's own operator (ground truth, faults),
never for product code; they always answer, whatever fault is injected.

Fault: a region's AWS API unreachable (`POST /_sandbox/aws/unreachable` with
`{"region": ..., "unreachable": true|false}`, `GET` lists them). A request whose SigV4 scope
region is unreachable gets no HTTP answer at all: the server closes the connection after reading
the request, which botocore reports as `ConnectionClosedError` (retried, as it retries any
dropped connection), as when a region's endpoints stop answering. The region is the scope's, so
every API signed for it goes, and a service with a single endpoint goes with that endpoint's
region whatever a client signs for: Route 53's control plane (route53.amazonaws.com, run in
us-east-1; botocore signs for us-east-1) with us-east-1, ARC's routing-control configuration API
(its only endpoint is in us-west-2) with us-west-2, an ARC cluster endpoint with its own region.
What is not behind the API keeps working, exactly as in AWS: the sandbox's DNS answers and
Route 53's health checkers (Route 53's data plane), the Kubernetes API servers and Chalk's
servers (other faults).
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
from collections import defaultdict
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.moto_server.werkzeug_app import MotoRequestHandler
from moto.moto_server.werkzeug_app import create_backend_app
from werkzeug.serving import BaseWSGIServer
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from sandbox.truth import GroundTruth

__all__ = [
    "ACCOUNT_ID",
    "AwsCall",
    "AwsServer",
    "NoAnswer",
    "SandboxAwsApp",
    "json_error",
    "json_reply",
    "query_error",
    "rest_json_error",
    "xml_error",
]

ACCOUNT_ID = "123456789012"  # moto's default account
# Services with one endpoint, in one region: unreachable with that region, whatever the signature says.
HOME_REGIONS = {"route53": "us-east-1", "route53-recovery-control-config": "us-west-2"}

Interceptor = Callable[["AwsCall"], Response | None]
Observer = Callable[["AwsCall", int, bytes], bytes | None]
ControlRoute = Callable[["AwsCall"], Response]


@dataclass(frozen=True)
class AwsCall:
    """One AWS API request as the sandbox sees it, before or after moto handled it."""

    service: str
    region: str
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    # every value of a repeated query parameter (restJson lists: `TagKeys=a&TagKeys=b`)
    query_lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def target(self) -> str:
        """The operation of a JSON-protocol call (`DynamoDB_20120810.PutItem` -> `PutItem`)."""
        return self.headers.get("x-amz-target", "").rsplit(".", 1)[-1]

    @cached_property
    def form(self) -> dict[str, str]:
        """Query-protocol parameters (RDS, CloudWatch): from the body, else the query string."""
        parsed = parse_qs(self.body.decode("utf-8"), keep_blank_values=True) if self.body else {}
        merged = {k: v[0] for k, v in parsed.items()}
        return {**self.query, **merged}

    @property
    def action(self) -> str:
        return self.form.get("Action", "")

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


class NoAnswer(Response):
    """What an interceptor returns for a request that gets no HTTP answer: the connection is
    closed instead (an unreachable region, an endpoint hostname that does not exist)."""

    def __init__(self, why: str = "no answer") -> None:
        super().__init__(why, status=599)
        self.why = why


def json_reply(payload: Any, status: int = 200, content_type: str = "application/x-amz-json-1.0") -> Response:
    return Response(json.dumps(payload, default=str), status=status, content_type=content_type)


def json_error(code: str, message: str, status: int = 400) -> Response:
    """An error in the awsJson protocol (DynamoDB, FIS via JSON)."""
    return json_reply({"__type": code, "message": message}, status=status)


def rest_json_error(code: str, message: str, status: int = 400) -> Response:
    """An error in the restJson protocol (MSK / kafka)."""
    resp = json_reply({"message": message}, status=status, content_type="application/json")
    resp.headers["x-amzn-ErrorType"] = code
    return resp


def xml_error(code: str, message: str, status: int = 400) -> Response:
    """An error in the restXml protocol (Route 53)."""
    body = (
        '<?xml version="1.0"?><ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
        f"<Error><Type>Sender</Type><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        "</Error><RequestId>sandbox</RequestId></ErrorResponse>"
    )
    return Response(body, status=status, content_type="text/xml")


def query_error(code: str, message: str, status: int = 400) -> Response:
    """An error in the query protocol (RDS, CloudWatch)."""
    body = (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code>"
        f"<Message>{escape(message)}</Message></Error><RequestId>sandbox</RequestId></ErrorResponse>"
    )
    return Response(body, status=status, content_type="text/xml")


def _scope(auth: str) -> tuple[str, str] | None:
    """(service, region) from a SigV4 Authorization header, as moto derives them."""
    try:
        credential = auth.split(",")[0].split()[1]
        _, _, region, service, _ = credential.split("=", 1)[1].split("/")
    except (IndexError, ValueError):
        return None
    return service.lower(), region


class SandboxAwsApp:
    """WSGI app: interceptors and observers around moto's own dispatcher."""

    def __init__(self, truth: GroundTruth | None = None) -> None:
        self._moto = DomainDispatcherApplication(create_backend_app)
        self._interceptors: dict[str, list[Interceptor]] = defaultdict(list)
        self._observers: dict[str, list[Observer]] = defaultdict(list)
        self._control: dict[tuple[str, str], ControlRoute] = {}
        self._lock = threading.Lock()
        self._truth = truth
        self._unreachable: set[str] = set()
        self.control("GET", "/_sandbox/aws/unreachable", self._unreachable_route)
        self.control("POST", "/_sandbox/aws/unreachable", self._unreachable_route)

    # -- the unreachable-region fault ------------------------------------------------------------

    def set_unreachable(self, region: str, unreachable: bool = True) -> None:
        """Make every AWS API signed for `region` unreachable (or reachable again)."""
        with self._lock:
            changed = (region in self._unreachable) != unreachable
            if unreachable:
                self._unreachable.add(region)
            else:
                self._unreachable.discard(region)
        if changed and self._truth is not None:
            self._truth.record("aws.unreachable", region=region, unreachable=unreachable)

    def unreachable_regions(self) -> list[str]:
        with self._lock:
            return sorted(self._unreachable)

    def is_unreachable(self, region: str) -> bool:
        with self._lock:
            return region in self._unreachable

    def _unreachable_route(self, call: AwsCall) -> Response:
        if call.method == "POST":
            try:
                req = call.json()
                region, unreachable = req["region"], req["unreachable"]
                if not isinstance(region, str) or not region or not isinstance(unreachable, bool):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                return Response(
                    json.dumps({"error": 'expected {"region": <region>, "unreachable": true|false}'}),
                    400,
                    content_type="application/json",
                )
            self.set_unreachable(region, unreachable)
        body = {"unreachable": self.unreachable_regions()}
        return Response(json.dumps(body), content_type="application/json")

    def intercept(self, service: str, fn: Interceptor) -> None:
        self._interceptors[service].append(fn)

    def observe(self, service: str, fn: Observer) -> None:
        self._observers[service].append(fn)

    def control(self, method: str, path: str, fn: ControlRoute) -> None:
        """Register an operator route, e.g. control("GET", "/_sandbox/truth", ...)."""
        self._control[(method.upper(), path)] = fn

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if "CONTENT_TYPE" in environ:
            headers["content-type"] = environ["CONTENT_TYPE"]
        path = environ.get("PATH_INFO", "")
        query_lists = {k: tuple(v) for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        query = {k: v[0] for k, v in query_lists.items()}
        method = environ.get("REQUEST_METHOD", "GET").upper()

        if path.startswith("/_sandbox/"):
            route = self._control.get((method, path))
            call = AwsCall("_sandbox", "", method, path, query, headers, body)
            resp = route(call) if route else Response("no such sandbox route", status=404)
            return resp(environ, start_response)

        scope = _scope(headers.get("authorization", ""))
        if scope is None:
            return self._moto(environ, start_response)  # type: ignore[no-any-return]
        service, region = scope
        if self.is_unreachable(HOME_REGIONS.get(service, region)):
            _close_without_answer(environ)
        call = AwsCall(service, region, method, path, query, headers, body, query_lists)
        for fn in self._interceptors.get(service, ()):
            answer = fn(call)
            if isinstance(answer, NoAnswer):
                _close_without_answer(environ)
            if answer is not None:
                return answer(environ, start_response)

        observers = self._observers.get(service)
        if not observers:
            return self._moto(environ, start_response)  # type: ignore[no-any-return]
        captured: dict[str, Any] = {}

        def capture(status: str, resp_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, resp_headers
            return lambda _data: None

        out = b"".join(self._moto(environ, capture))
        code = int(str(captured.get("status", "500")).split()[0])
        for obs in observers:
            replaced = obs(call, code, out)
            if replaced is not None:
                out = replaced
        resp_headers = [
            (k, v)
            for k, v in captured.get("headers", [])
            if k.lower() not in ("content-length", "x-amz-crc32")
        ]
        resp_headers.append(("Content-Length", str(len(out))))
        start_response(captured.get("status", "500 INTERNAL SERVER ERROR"), resp_headers)
        return [out]


def _close_without_answer(environ: Mapping[str, Any]) -> None:
    """Close the client's connection without an HTTP answer.

    werkzeug's server puts the connection in `environ["werkzeug.socket"]`; shutting it down
    sends the client a FIN before any status line, and the ConnectionAbortedError raised here is
    what werkzeug's handler treats as a dropped connection (`connection_dropped`: nothing is
    written, nothing logged)."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # the client may have gone already
            sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionAbortedError("sandbox: no answer for this request")


class _QuietHandler(MotoRequestHandler):  # type: ignore[misc]
    """moto's handler without a stderr line per request (the demo prints a report, not a log)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class AwsServer:
    """The sandbox AWS endpoint on 127.0.0.1 (port 0 by default), threaded like moto's own."""

    def __init__(self, app: SandboxAwsApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox-aws", daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> AwsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
