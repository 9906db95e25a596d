"""A local Prefect server for the demo, the benchmarks and the integration tests.

The server is Prefect's own ASGI app under uvicorn (what `prefect server start` runs), started on
a listening socket this process binds first (port 0: the OS picks a free port) and hands over by
file descriptor, so no port is ever chosen, released and hoped to still be free.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["PrefectServer", "api_healthy"]


def api_healthy(api_url: str, *, timeout_s: float = 2.0) -> bool:
    try:
        resp = httpx.get(f"{api_url}/health", timeout=timeout_s, trust_env=False)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200


def _listening_socket(port: int) -> socket.socket:
    """Bound and listening on 127.0.0.1:`port`; a taken port falls back to one the OS picks."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        if port == 0:
            raise
        sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@dataclass
class PrefectServer:
    """A Prefect API server process with its own PREFECT_HOME (SQLite by default).

    `database_url` points it at another backend (PostgreSQL: `postgresql+asyncpg://...`).
    """

    home: Path
    process: subprocess.Popen[bytes]
    api_url: str

    @classmethod
    def start(
        cls,
        home: Path,
        *,
        port: int = 0,
        ui: bool = True,
        database_url: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        timeout_s: float = 120.0,
    ) -> PrefectServer:
        home.mkdir(parents=True, exist_ok=True)
        sock = _listening_socket(port)
        api_url = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_HOME=str(home),
            PREFECT_API_URL=api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_ENABLED="true" if ui else "false",
            PREFECT_SERVER_UI_ENABLED="true" if ui else "false",
            PREFECT_UI_API_URL=api_url,
        )
        if database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
        env.update(extra_env or {})
        log = (home / "server.log").open("wb")
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--fd",
                    str(sock.fileno()),
                    "--log-level",
                    "warning",
                ],
                pass_fds=(sock.fileno(),),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            sock.close()  # the child holds its own copy of the listening socket
            log.close()
        server = cls(home=home, process=process, api_url=api_url)
        (home / "server.pid").write_text(str(process.pid))
        deadline = time.monotonic() + timeout_s
        while not api_healthy(api_url):
            if process.poll() is not None:
                raise RuntimeError(
                    f"the Prefect server exited ({process.returncode}); see {home / 'server.log'}"
                )
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"the Prefect server did not answer within {timeout_s:g} s; see its log")
            time.sleep(0.25)
        (home / "api_url").write_text(api_url)
        return server

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def stop(self, timeout_s: float = 20.0) -> None:
        stop_pid(self.process.pid, timeout_s)
        self.process.wait(5)
        for name in ("server.pid", "api_url"):
            (self.home / name).unlink(missing_ok=True)


def stop_pid(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group, SIGKILL it if it has not gone by the deadline."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
