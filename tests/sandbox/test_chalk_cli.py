"""The stand-in `chalk` CLI, run as the installed console script against a sandbox query server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.query_server import PERMANENT_APPLY_ERROR
from sandbox.query_server import TRANSIENT_APPLY_ERROR
from sandbox.query_server import QueryServer

CHALK = Path(sys.executable).parent / "chalk"
ENV_ID = "prod"
CLIENT_ID = "client-prod"
SECRET = "cli-secret-Zq81"
APPLY = ["apply", "--force", "--await", "--no-spinners"]
DEPLOYMENT_LINE = re.compile(r"^Deployment ID: (c[a-z0-9]{24})$", re.M)


class EmptyStore:
    def get_item(self, **_: Any) -> dict[str, Any]:
        return {}


@pytest.fixture(scope="module")
def server() -> Iterator[QueryServer]:
    srv = QueryServer(
        region="us-east-1",
        environment_name="prod-east",
        environment_id=ENV_ID,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        table_names=["chalk-online"],
        dynamodb=EmptyStore(),
        is_serving=lambda: True,
    ).start()
    yield srv
    srv.stop()


def served(server: QueryServer) -> str:
    return str(httpx.get(f"{server.url}/_sandbox/state", trust_env=False).json()["deployment_id"])


def set_faults(server: QueryServer, mode: str, count: int) -> None:
    resp = httpx.post(
        f"{server.url}/_sandbox/apply-faults", json={"mode": mode, "count": count}, trust_env=False
    )
    resp.raise_for_status()


def chalk(
    *args: str, api: str | None, secret: str = SECRET, drop: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHALK_")}
    env.update(
        CHALK_ENVIRONMENT=ENV_ID,
        CHALK_API_SERVER=api or "",
        CHALK_CLIENT_ID=CLIENT_ID,
        CHALK_CLIENT_SECRET=secret,
    )
    if drop is not None:
        env.pop(drop)
    return subprocess.run(
        [str(CHALK), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def assert_no_secret(result: subprocess.CompletedProcess[str], secret: str = SECRET) -> None:
    assert secret not in result.stdout
    assert secret not in result.stderr


def test_console_script_is_installed() -> None:
    assert CHALK.exists(), "run `pip install -e .` to install the `chalk` console script"


def test_version() -> None:
    result = chalk("--version", api=None)
    assert result.returncode == 0
    assert "chalk" in result.stdout


class TestApply:
    def test_promoted_apply_is_served(self, server: QueryServer) -> None:
        result = chalk(*APPLY, api=server.url)
        assert result.returncode == 0, result.stderr
        match = DEPLOYMENT_LINE.search(result.stdout)
        assert match is not None, result.stdout
        assert served(server) == match[1]
        assert result.stdout.rstrip().splitlines()[-1].startswith("✓")
        assert_no_secret(result)

    def test_no_promote_keeps_the_served_deployment(self, server: QueryServer) -> None:
        before = served(server)
        result = chalk(*APPLY, "--no-promote", api=server.url)
        assert result.returncode == 0, result.stderr
        match = DEPLOYMENT_LINE.search(result.stdout)
        assert match is not None and match[1] != before
        assert served(server) == before
        assert_no_secret(result)

    def test_branch_deploy_keeps_the_served_deployment(self, server: QueryServer) -> None:
        before = served(server)
        result = chalk(*APPLY, "--branch", "feature-x", api=server.url)
        assert result.returncode == 0, result.stderr
        assert DEPLOYMENT_LINE.search(result.stdout)
        assert "feature-x" in result.stdout
        assert served(server) == before


class TestFailures:
    def test_transient_fault_exits_1_with_the_upstream_error(self, server: QueryServer) -> None:
        before = served(server)
        set_faults(server, "transient", 1)
        result = chalk(*APPLY, api=server.url)
        assert result.returncode == 1
        assert TRANSIENT_APPLY_ERROR in result.stderr
        assert "Deployment ID" not in result.stdout
        assert served(server) == before
        assert_no_secret(result)

    def test_permanent_fault_exits_1_with_the_validation_error(self, server: QueryServer) -> None:
        set_faults(server, "permanent", 1)
        result = chalk(*APPLY, api=server.url)
        assert result.returncode == 1
        assert PERMANENT_APPLY_ERROR in result.stderr
        assert TRANSIENT_APPLY_ERROR not in result.stderr
        assert_no_secret(result)

    def test_wrong_secret_exits_1_without_printing_it(self, server: QueryServer) -> None:
        result = chalk(*APPLY, api=server.url, secret="not-the-secret-Xy")
        assert result.returncode == 1
        assert "authentication failed" in result.stderr
        assert_no_secret(result, "not-the-secret-Xy")

    def test_missing_environment_exits_2_naming_it(self, server: QueryServer) -> None:
        result = chalk(*APPLY, api=server.url, drop="CHALK_CLIENT_SECRET")
        assert result.returncode == 2
        assert "CHALK_CLIENT_SECRET" in result.stderr

    def test_unreachable_api_server_exits_1(self) -> None:
        with socket.socket() as sock:  # a port nothing listens on: bound, never listening
            sock.bind(("127.0.0.1", 0))
            result = chalk(*APPLY, api=f"http://127.0.0.1:{sock.getsockname()[1]}")
        assert result.returncode == 1
        assert "could not reach" in result.stderr
        assert_no_secret(result)
