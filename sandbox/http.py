"""A threaded WSGI server on a loopback socket for the sandbox's own endpoints.

werkzeug's development server answers every response with `Connection: close` (it cannot drain
an unread request body before the next request line), so a client can never keep a connection
open. Where a connection's lifetime matters (the failover edge pins a client connection to the
load balancer it was opened to, as a TCP connection to an ALB stays on that ALB), the server
is made with `keep_alive=True`: each request body is read in full before the app sees it, so the
stream is always at the next request, and HTTP/1.1 connections persist (RFC 9112 §9.3: "HTTP/1.1
defaults to the use of persistent connections") until the client closes them, asks for
`Connection: close`, or leaves them idle for 30 seconds.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections.abc import Callable
from typing import Any

from werkzeug.serving import BaseWSGIServer
from werkzeug.serving import WSGIRequestHandler
from werkzeug.serving import make_server

from sandbox.net import listening_socket

__all__ = ["LoopbackServer"]


class _QuietHandler(WSGIRequestHandler):
    """No stderr line per request: probes hit these servers many times a second."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class _KeepAliveHandler(_QuietHandler):
    """Persistent HTTP/1.1 connections. werkzeug's `run_wsgi` drains the socket after every
    response (reading the next request away) and always sends `Connection: close`, so this
    handler runs the app itself: the request body is read in full first, the response is sent
    with its Content-Length, and the connection stays open unless it must end."""

    timeout = 30.0  # an idle persistent connection is closed after this many seconds
    _body: bytes = b""

    def setup(self) -> None:
        super().setup()
        owner: LoopbackServer | None = getattr(self.server, "sandbox_owner", None)
        if owner is not None:
            owner._opened(self.connection)

    def finish(self) -> None:
        owner: LoopbackServer | None = getattr(self.server, "sandbox_owner", None)
        try:
            if owner is not None:
                owner._closed(self.connection)
        finally:
            super().finish()

    def make_environ(self) -> dict[str, Any]:
        environ = super().make_environ()
        environ["wsgi.input"] = io.BytesIO(self._body)
        environ.pop("wsgi.input_terminated", None)
        return environ

    def run_wsgi(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True  # a chunked body is not supported on a persistent connection
            self.send_error(411, "Length Required")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            self.send_error(400, "Bad Content-Length")
            return
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._body = self.rfile.read(length) if length > 0 else b""
        environ = self.make_environ()
        started: dict[str, Any] = {}
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started["status"], started["headers"] = status, headers
            return chunks.append

        try:
            result = self.server.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception as exc:  # noqa: BLE001 - the client gets a 500, the connection survives
            self.log_error("error on request: %r", exc)
            started = {"status": "500 INTERNAL SERVER ERROR", "headers": [("Content-Type", "text/plain")]}
            chunks = [b"Internal Server Error"]
        code, _, reason = str(started["status"]).partition(" ")
        body = b"".join(chunks)
        self.send_response(int(code), reason)
        length = str(len(body))
        for key, value in started["headers"]:
            if key.lower() == "content-length" and self.command == "HEAD":
                length = value  # a HEAD answer states the length its GET would have
            elif key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        if not (100 <= int(code) < 200 or int(code) in (204, 304)):
            self.send_header("Content-Length", length)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class LoopbackServer:
    """Serves one WSGI app on `sock` (by default 127.0.0.1, port chosen by the OS); `stop()`
    returns within one 50 ms poll and closes the connections still open.

    `on_connection_close` runs in the thread that served a client connection, when it ends (each
    connection has a thread of its own)."""

    def __init__(
        self,
        app: Callable[[dict[str, Any], Callable[..., Any]], Any],
        *,
        name: str,
        sock: socket.socket | None = None,
        keep_alive: bool = False,
        on_connection_close: Callable[[], None] | None = None,
    ) -> None:
        own = sock if sock is not None else listening_socket("127.0.0.1")
        host, port = own.getsockname()[:2]
        handler = _KeepAliveHandler if keep_alive else _QuietHandler
        try:
            self._server: BaseWSGIServer = make_server(
                host, port, app, threaded=True, request_handler=handler, fd=own.fileno()
            )
        finally:
            own.close()  # the server holds its own duplicate of the listening socket
        self._server.sandbox_owner = self  # type: ignore[attr-defined]
        self._on_close = on_connection_close
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.host, self.port = str(host), int(port)
        self._thread = threading.Thread(
            target=lambda: self._server.serve_forever(poll_interval=0.05), name=name, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
        with self._lock:
            open_connections, self._connections = list(self._connections), set()
        for conn in open_connections:  # persistent connections would outlive the server otherwise
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)
        if self._on_close is not None:
            self._on_close()
