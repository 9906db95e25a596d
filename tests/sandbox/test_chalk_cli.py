"""The stand-in `chalk` CLI, run as the installed console script against a sandbox API server."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.api_server import PERMANENT_APPLY_ERROR
from sandbox.api_server import TRANSIENT_APPLY_ERROR
from sandbox.api_server import ApiServer
from sandbox.chalk import ChalkEnvironment
from sandbox.chalk import ChalkRegion
from sandbox.chalk import served_hosts

CHALK = Path(sys.executable).parent / "chalk"
ENV_ID = "prod"
CLIENT_ID = "client-prod"
SECRET = "cli-secret-Zq81"
APPLY = ["apply", "--force", "--await", "--no-spinners"]
DEPLOYMENT_LINE = re.compile(r"^Deployment ID: (c[a-z0-9]{24})$", re.M)


@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    chalk = ChalkRegion(
        region="us-east-1",
        resource_group="prod-east",
        is_serving=lambda: True,
        read_item=lambda pk: {},
        publish=lambda rows: None,
    )
    env = ChalkEnvironment(environment_id=ENV_ID, client_id=CLIENT_ID, client_secret=SECRET)
    # the CLI reaches the API server by address (the OS resolver does not know the sandbox's zone)
    srv = ApiServer(
        region=chalk,
        environment=env,
        hosts=served_hosts("127.0.0.1"),
        engine_url="https://prod-east.query.example.com",
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A Chalk project: the CLI runs where chalk.yaml is (or below it)."""
    (tmp_path / "chalk.yaml").write_text("project: chalk-dr-sandbox\n")
    return tmp_path


def served(server: ApiServer) -> str:
    return str(httpx.get(f"{server.url}/_sandbox/state", trust_env=False).json()["deployment_id"])


def set_faults(server: ApiServer, mode: str, count: int) -> None:
    resp = httpx.post(
        f"{server.url}/_sandbox/apply-faults", json={"mode": mode, "count": count}, trust_env=False
    )
    resp.raise_for_status()


def chalk(
    *args: str,
    api: str | None,
    cwd: Path,
    secret: str = SECRET,
    drop: str | None = None,
    **extra_env: str,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHALK_")}
    env.update(
        {
            "CHALK_ACTIVE_ENVIRONMENT": ENV_ID,
            "CHALK_API_SERVER": api or "",
            "CHALK_CLIENT_ID": CLIENT_ID,
            "CHALK_CLIENT_SECRET": secret,
            **extra_env,
        }
    )
    if drop is not None:
        env.pop(drop)
    return subprocess.run(
        [str(CHALK), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def assert_no_secret(result: subprocess.CompletedProcess[str], secret: str = SECRET) -> None:
    assert secret not in result.stdout
    assert secret not in result.stderr


def test_console_script_is_installed() -> None:
    assert CHALK.exists(), "run `pip install -e .` to install the `chalk` console script"


def test_version(tmp_path: Path) -> None:
    result = chalk("--version", api=None, cwd=tmp_path)
    assert result.returncode == 0
    assert "chalk" in result.stdout


class TestApply:
    def test_promoted_apply_is_served(self, server: ApiServer, project: Path) -> None:
        result = chalk(*APPLY, api=server.url, cwd=project)
        assert result.returncode == 0, result.stderr
        match = DEPLOYMENT_LINE.search(result.stdout)
        assert match is not None, result.stdout
        assert served(server) == match[1]
        assert result.stdout.rstrip().splitlines()[-1].startswith("✓")
        assert_no_secret(result)

    def test_no_promote_keeps_the_served_deployment(self, server: ApiServer, project: Path) -> None:
        before = served(server)
        result = chalk(*APPLY, "--no-promote", api=server.url, cwd=project)
        assert result.returncode == 0, result.stderr
        match = DEPLOYMENT_LINE.search(result.stdout)
        assert match is not None and match[1] != before
        assert served(server) == before
        assert_no_secret(result)

    def test_branch_deploy_keeps_the_served_deployment(self, server: ApiServer, project: Path) -> None:
        before = served(server)
        result = chalk(*APPLY, "--branch", "feature-x", api=server.url, cwd=project)
        assert result.returncode == 0, result.stderr
        assert DEPLOYMENT_LINE.search(result.stdout)
        assert "feature-x" in result.stdout
        assert served(server) == before


class TestCliContract:
    """What Chalk's CLI reads and refuses, as its public clients and actions show it: credentials
    and target from CHALK_CLIENT_ID, CHALK_CLIENT_SECRET, CHALK_API_SERVER and
    CHALK_ACTIVE_ENVIRONMENT (chalk-go `config/manager.go`; CHALK_ENVIRONMENT is chalkpy's name, not
    the CLI's); a project file found by walking up ("failed to find chalk.yml in the working
    directory '%s' or any of its parent directories", chalk-go `config/utils.go`); `chalk apply
    --json` answers chalk-harness's CLIApply `{deployment_id, deployment_url, status, response:
    {id, environmentId, status, isPreview}}`."""

    def test_chalk_environment_is_not_the_active_environment(self, server: ApiServer, project: Path) -> None:
        result = chalk(
            *APPLY, api=server.url, cwd=project, drop="CHALK_ACTIVE_ENVIRONMENT", CHALK_ENVIRONMENT=ENV_ID
        )
        assert result.returncode == 2
        assert "CHALK_ACTIVE_ENVIRONMENT" in result.stderr
        assert "Deployment ID" not in result.stdout

    def test_the_active_environment_wins_over_chalk_environment(
        self, server: ApiServer, project: Path
    ) -> None:
        result = chalk(*APPLY, "--json", api=server.url, cwd=project, CHALK_ENVIRONMENT="staging")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["response"]["environmentId"] == ENV_ID

    def test_an_unknown_active_environment_is_refused_by_the_server(
        self, server: ApiServer, project: Path
    ) -> None:
        result = chalk(*APPLY, api=server.url, cwd=project, CHALK_ACTIVE_ENVIRONMENT="staging")
        assert result.returncode == 1
        assert "403" in result.stderr

    def test_outside_a_project_it_refuses_to_run(self, server: ApiServer, tmp_path: Path) -> None:
        before = served(server)
        result = chalk(*APPLY, api=server.url, cwd=tmp_path)
        assert result.returncode == 1
        assert "chalk.yaml" in result.stderr
        assert served(server) == before

    def test_a_project_file_in_a_parent_directory_counts(self, server: ApiServer, tmp_path: Path) -> None:
        (tmp_path / "chalk.yml").write_text("project: chalk-dr-sandbox\n")
        below = tmp_path / "features" / "users"
        below.mkdir(parents=True)
        result = chalk(*APPLY, api=server.url, cwd=below)
        assert result.returncode == 0, result.stderr

    @pytest.mark.parametrize("flag", ["--environment=prod", "--yes", "--promote"])
    def test_unknown_flags_are_usage_errors(self, server: ApiServer, project: Path, flag: str) -> None:
        before = served(server)
        result = chalk(*APPLY, flag, api=server.url, cwd=project)
        assert result.returncode == 2
        assert flag.split("=")[0] in result.stderr
        assert served(server) == before

    @pytest.mark.parametrize(("extra", "preview"), [([], False), (["--no-promote"], True)])
    def test_json_output(self, server: ApiServer, project: Path, extra: list[str], preview: bool) -> None:
        result = chalk(*APPLY, "--json", *extra, api=server.url, cwd=project)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)  # stdout is the JSON object alone: progress goes to stderr
        assert set(out) == {"deployment_id", "deployment_url", "status", "response"}
        assert re.fullmatch(r"c[a-z0-9]{24}", out["deployment_id"])
        assert out["deployment_id"] in out["deployment_url"]
        assert out["response"] == {
            "id": out["deployment_id"],
            "environmentId": ENV_ID,
            "status": out["status"],
            "isPreview": preview,
        }
        assert (served(server) == out["deployment_id"]) is not preview
        assert_no_secret(result)


class TestFailures:
    def test_transient_fault_exits_1_with_the_upstream_error(self, server: ApiServer, project: Path) -> None:
        before = served(server)
        set_faults(server, "transient", 1)
        result = chalk(*APPLY, api=server.url, cwd=project)
        assert result.returncode == 1
        assert TRANSIENT_APPLY_ERROR in result.stderr
        assert "Deployment ID" not in result.stdout
        assert served(server) == before
        assert_no_secret(result)

    def test_permanent_fault_exits_1_with_the_validation_error(
        self, server: ApiServer, project: Path
    ) -> None:
        set_faults(server, "permanent", 1)
        result = chalk(*APPLY, api=server.url, cwd=project)
        assert result.returncode == 1
        assert PERMANENT_APPLY_ERROR in result.stderr
        assert TRANSIENT_APPLY_ERROR not in result.stderr
        assert_no_secret(result)

    def test_wrong_secret_exits_1_without_printing_it(self, server: ApiServer, project: Path) -> None:
        result = chalk(*APPLY, api=server.url, cwd=project, secret="not-the-secret-Xy")
        assert result.returncode == 1
        assert "authentication failed" in result.stderr
        assert_no_secret(result, "not-the-secret-Xy")

    def test_missing_environment_exits_2_naming_it(self, server: ApiServer, project: Path) -> None:
        result = chalk(*APPLY, api=server.url, cwd=project, drop="CHALK_CLIENT_SECRET")
        assert result.returncode == 2
        assert "CHALK_CLIENT_SECRET" in result.stderr

    def test_unreachable_api_server_exits_1(self, project: Path) -> None:
        with socket.socket() as sock:  # a port nothing listens on: bound, never listening
            sock.bind(("127.0.0.1", 0))
            result = chalk(*APPLY, api=f"http://127.0.0.1:{sock.getsockname()[1]}", cwd=project)
        assert result.returncode == 1
        assert "could not reach" in result.stderr
        assert_no_secret(result)
