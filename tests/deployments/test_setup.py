"""`python -m chalkdr.setup` against a real local Prefect server, as an operator runs it: the first
run creates the work pool and every environment's locks and says the automations wait for the
sweep deployment; with --deploy it deploys and creates them; a run after that creates nothing;
a lock someone loosened is reported with its fix and left alone.

The first and the idempotent run are the real command in its own process; the others call the
same `main()` in this one (each new process spends seconds importing Prefect and the flows)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.settings import PREFECT_API_URL
from prefect.settings import temporary_settings

from chalkdr.setup import main
from sandbox.prefect_server import PrefectServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deployments" / "topology.example.yaml"
AUTOMATIONS = ("Crash zombie flows", "chalk-dr: sweep after a failed runbook")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrefectServer]:
    server = PrefectServer.start(tmp_path / "prefect-home", ui=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def topology_dir(tmp_path: Path) -> Path:
    """The example topology (environment prod) and a second one for environment staging."""
    directory = tmp_path / "topologies"
    directory.mkdir()
    (directory / "prod.yaml").write_text(EXAMPLE.read_text())
    staging = yaml.safe_load(EXAMPLE.read_text())
    staging["environment"] = "staging"
    (directory / "staging.yml").write_text(yaml.safe_dump(staging, sort_keys=False))
    return directory


def _env(home: Path, api_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHALK_DR_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def setup(env: dict[str, str], *args: str) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-m", "chalkdr.setup", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, (done.stdout + done.stderr).splitlines()


def setup_here(capsys: pytest.CaptureFixture[str], api_url: str, *args: str) -> tuple[int, list[str]]:
    """`main()` in this process, against `api_url`, with the checkout as the project directory."""
    capsys.readouterr()
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        code = main([*args, "--project-dir", str(ROOT)])
    return code, capsys.readouterr().out.splitlines()


def outcome(lines: list[str], what: str) -> str:
    (line,) = [line for line in lines if line.startswith(f"{what}: ")]
    return line.removeprefix(f"{what}: ")


def test_setup_creates_once_then_finds_everything(
    server: PrefectServer, topology_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _env(server.home, server.api_url)
    # A deployments file with only the sweep: --deploy is exercised without every flow's import.
    entries = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    sweep_only = tmp_path / "prefect.sweep.yaml"
    sweep_only.write_text(
        yaml.safe_dump(
            {**entries, "deployments": [e for e in entries["deployments"] if e["name"] == "sweep-hourly"]},
            sort_keys=False,
        )
    )
    locks = ["drill-prod", "chalk-apply-prod", "drill-staging", "chalk-apply-staging"]

    # 1. Before anything is deployed: the pool and the locks; the automations wait for the sweep.
    code, lines = setup(env, "--topology-dir", str(topology_dir))
    assert code == 1, lines
    assert outcome(lines, "work pool chalk-dr") == "created"
    for name in locks:
        assert outcome(lines, f"concurrency limit {name}") == "created", lines
    assert "sweep/sweep-hourly they run does not exist yet" in outcome(lines, "automations")
    assert lines[-1] == "setup: 5 created, 0 updated, 0 found, 1 problem(s)"

    # 2. With --deploy: deployed, then both automations; the rest is found as it was left.
    code, lines = setup(
        env, "--topology-dir", str(topology_dir), "--deploy", "--prefect-file", str(sweep_only)
    )
    assert code == 0, lines
    assert outcome(lines, "work pool chalk-dr") == "found"
    assert all(outcome(lines, f"concurrency limit {name}") == "found" for name in locks)
    assert outcome(lines, f"deployments of {sweep_only.name}").startswith("updated")
    for name in AUTOMATIONS:
        assert outcome(lines, f"automation {name!r}") == "created"

    # 3. Again: nothing is created or changed.
    code, lines = setup(env, "--topology-dir", str(topology_dir))
    assert code == 0, lines
    assert lines[-1] == "setup: 0 created, 0 updated, 7 found, 0 problem(s)"
    assert not [line for line in lines if line.endswith(("created", "updated"))]

    with (
        temporary_settings(updates={PREFECT_API_URL: server.api_url}),
        get_client(sync_client=True) as client,
    ):
        pool = client.read_work_pool("chalk-dr")
        assert pool.type == "process" and pool.base_job_template["job_configuration"]
        for name in locks:
            limit = client.read_global_concurrency_limit_by_name(name)
            assert limit.limit == 1 and limit.active, name
        for name in AUTOMATIONS:
            assert len(client.read_automations_by_name(name)) == 1

        # 4. A lock raised to two slots by hand would let two runbooks run at once: reported, not fixed.
        client.update_global_concurrency_limit("drill-staging", GlobalConcurrencyLimitUpdate(limit=2))
    code, lines = setup_here(capsys, server.api_url, "--topology-dir", str(topology_dir))
    assert code == 1
    problem = outcome(lines, "concurrency limit (runbook lock of staging)")
    assert "prefect gcl update drill-staging --limit 1 --enable" in problem
    with (
        temporary_settings(updates={PREFECT_API_URL: server.api_url}),
        get_client(sync_client=True) as client,
    ):
        assert client.read_global_concurrency_limit_by_name("drill-staging").limit == 2


def test_setup_refuses_to_guess_its_server_or_its_topologies(
    tmp_path: Path, topology_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No PREFECT_API_URL would set up a throwaway ephemeral server; no topology directory, no locks."""
    monkeypatch.delenv("CHALK_DR_TOPOLOGY_DIR", raising=False)

    def refused(api_url: str | None, *args: str) -> str:
        with temporary_settings(updates={PREFECT_API_URL: api_url}), pytest.raises(SystemExit) as exit_:
            main(list(args))
        assert exit_.value.code == 2
        return capsys.readouterr().err

    assert "PREFECT_API_URL is not set" in refused(None, "--topology-dir", str(topology_dir))
    assert "give --topology-dir or set $CHALK_DR_TOPOLOGY_DIR" in refused("http://127.0.0.1:9/api")
    missing = tmp_path / "none"
    assert f"the topology directory {missing} does not exist" in refused(
        "http://127.0.0.1:9/api", "--topology-dir", str(missing)
    )
