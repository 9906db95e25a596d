"""A threaded WSGI server on 127.0.0.1 (port chosen by the OS) for the sandbox's own endpoints."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from werkzeug.serving import BaseWSGIServer
from werkzeug.serving import WSGIRequestHandler
from werkzeug.serving import make_server

__all__ = ["LoopbackServer"]


class _QuietHandler(WSGIRequestHandler):
    """No stderr line per request: probes hit these servers many times a second."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class LoopbackServer:
    """Serves one WSGI app on loopback; `stop()` returns within one 50 ms poll."""

    def __init__(self, app: Callable[[dict[str, Any], Callable[..., Any]], Any], *, name: str) -> None:
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(
            target=lambda: self._server.serve_forever(poll_interval=0.05), name=name, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
