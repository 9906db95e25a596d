"""The sandbox's loopback HTTP server: one connection per request, or persistent connections."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response

from sandbox.harness import poll
from sandbox.http import LoopbackServer


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    """Answers with the client's port and, for /echo only, the body (other paths leave it unread)."""
    request = Request(environ)
    payload: dict[str, Any] = {"port": environ.get("REMOTE_PORT"), "path": request.path}
    if request.path == "/echo":
        payload["body"] = request.get_data(as_text=True)
    return Response(json.dumps(payload), content_type="application/json")(environ, start_response)


@pytest.fixture
def closed() -> list[int]:
    return []


@pytest.fixture
def server(closed: list[int]) -> Iterator[LoopbackServer]:
    lock = threading.Lock()

    def on_close() -> None:
        with lock:
            closed.append(threading.get_ident())

    srv = LoopbackServer(app, name="test-keepalive", keep_alive=True, on_connection_close=on_close)
    srv.start()
    yield srv
    srv.stop()


class TestPersistentConnections:
    """RFC 9112 §9.3: "HTTP/1.1 defaults to the use of persistent connections, allowing multiple
    requests and responses to be carried over a single connection"; "Connection: close" ends it."""

    def test_requests_share_one_connection(self, server: LoopbackServer) -> None:
        with httpx.Client(timeout=5, trust_env=False) as http:
            answers = [http.get(f"{server.url}/{i}") for i in range(3)]
        assert {a.json()["port"] for a in answers} == {answers[0].json()["port"]}
        assert all("close" not in a.headers.get("connection", "") for a in answers)

    def test_an_unread_body_does_not_spill_into_the_next_request(self, server: LoopbackServer) -> None:
        with httpx.Client(timeout=5, trust_env=False) as http:
            assert http.post(f"{server.url}/ignored", content=b"x" * 10_000).status_code == 200
            echoed = http.post(f"{server.url}/echo", content=b"second").json()
        assert echoed["body"] == "second"

    def test_connection_close_is_honoured(self, server: LoopbackServer, closed: list[int]) -> None:
        with httpx.Client(timeout=5, trust_env=False) as http:
            resp = http.get(f"{server.url}/", headers={"Connection": "close"})
        assert resp.headers["connection"] == "close"
        poll(lambda: len(closed) == 1, what="the server to end the connection")

    def test_stop_ends_open_connections(self, closed: list[int]) -> None:
        srv = LoopbackServer(
            app, name="test-stop", keep_alive=True, on_connection_close=lambda: closed.append(1)
        )
        srv.start()
        with socket.create_connection((srv.host, srv.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            srv.stop()
            poll(lambda: closed == [1], what="the open connection to be closed")
            sock.settimeout(5)
            # The rest of the response (its body may come in a later segment), then end of file:
            # a server that kept the connection open makes recv time out instead.
            rest = b""
            while chunk := sock.recv(4096):
                rest += chunk
            assert b"HTTP/1.1" not in rest


def test_without_keep_alive_every_response_closes_its_connection() -> None:
    srv = LoopbackServer(app, name="test-close")
    srv.start()
    try:
        with httpx.Client(timeout=5, trust_env=False) as http:
            answers = [http.get(f"{srv.url}/{i}") for i in range(2)]
        assert [a.headers["connection"] for a in answers] == ["close", "close"]
    finally:
        srv.stop()
