"""Tasks for Chalk against the sandbox's stand-in CLI and regional query servers (over real HTTP)."""

from __future__ import annotations

import copy
import logging
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml
from prefect import flow
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter
from prefect.client.schemas.filters import LogFilterFlowRunId

from chalkdr.deploy import ChalkQueryError
from chalkdr.deploy import DeploymentNotServed
from chalkdr.errors import ChalkCliError
from chalkdr.errors import CredentialsError
from chalkdr.topology import RegionConfig
from chalkdr.topology import Topology
from chalkdr.topology import parse_topology
from sandbox.query_server import QueryServer
from tasks.chalk import CheckoutFailed
from tasks.chalk import apply_region
from tasks.chalk import checkout_code
from tasks.chalk import ensure_apply_lock
from tasks.chalk import read_served_deployment
from tasks.chalk import served_deployment
from tasks.chalk import verify_served_deployment

pytestmark = pytest.mark.usefixtures("prefect_backend")

ROOT = Path(__file__).resolve().parents[2]
CHALK_BIN = shutil.which("chalk", path=str(Path(sys.executable).parent)) or "chalk"
REGIONS = ("us-east-1", "us-west-2")


class World:
    """Two regional query servers and a topology pointing at them."""

    def __init__(self, servers: dict[str, QueryServer], topology: Topology, secrets: dict[str, str]) -> None:
        self.servers, self.topology, self.secrets = servers, topology, secrets

    def region(self, name: str) -> RegionConfig:
        return self.topology.region(name)

    def state(self, name: str) -> dict[str, Any]:
        return httpx.get(f"{self.servers[name].url}/_sandbox/state", timeout=5, trust_env=False).json()

    def fault(self, name: str, mode: str, count: int) -> None:
        httpx.post(
            f"{self.servers[name].url}/_sandbox/apply-faults",
            json={"mode": mode, "count": count},
            timeout=5,
            trust_env=False,
        ).raise_for_status()


@pytest.fixture
def world(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    data = yaml.safe_load((ROOT / "deployments" / "topology.example.yaml").read_text())
    data = copy.deepcopy(data)
    data["environment"] = f"t{uuid.uuid4().hex[:10]}"
    servers: dict[str, QueryServer] = {}
    secrets: dict[str, str] = {}
    for entry in data["regions"]:
        name = entry["aws_region"]
        env_var = f"CHALK_TEST_{name.replace('-', '_').upper()}_CLIENT_SECRET"
        secret = f"s3cret-{uuid.uuid4().hex}"
        monkeypatch.setenv(env_var, secret)
        secrets[name] = secret
        env_id = f"{data['environment']}-{name}"
        server = QueryServer(
            region=name,
            environment_name=entry["resource_group"],
            environment_id=env_id,
            client_id=entry["chalk"]["client_id"],
            client_secret=secret,
            table_names=entry["online_store_tables"],
            dynamodb=boto3.client("dynamodb", region_name=name, endpoint_url=moto_server),
            is_serving=lambda: True,
        ).start()
        servers[name] = server
        entry["query_url"] = server.url
        entry["chalk"]["api_server"] = server.url
        entry["chalk"]["environment_id"] = env_id
        entry["chalk"]["client_secret"] = {"env": env_var}
    yield World(servers, parse_topology(data), secrets)
    for server in servers.values():
        server.stop()


@pytest.fixture
def code_repo(tmp_path: Path) -> tuple[Path, list[str]]:
    """A git repository with two commits of 'feature code'; returns (path, [sha1, sha2])."""
    repo = tmp_path / "features"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(repo)], check=True)
    shas = []
    for i in (1, 2):
        (repo / "features.py").write_text(f"VERSION = {i}\n")
        subprocess.run([*git, "-C", str(repo), "add", "."], check=True)
        subprocess.run([*git, "-C", str(repo), "commit", "-q", "-m", f"v{i}"], check=True)
        shas.append(
            subprocess.run(
                [*git, "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
            ).stdout.strip()
        )
    return repo, shas


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


@flow
def run_apply(region: RegionConfig, code_dir: str, chalk_bin: str, **kwargs: Any) -> Any:
    return apply_region(
        region, sha="a" * 40, environment="test", code_dir=code_dir, chalk_bin=chalk_bin, **kwargs
    )


@flow
def run_task(task_fn: Any, *args: Any, **kwargs: Any) -> Any:
    return task_fn(*args, **kwargs)


class TestApplyRegion:
    def test_applies_and_returns_the_printed_deployment_id(self, world: World, tmp_path: Path) -> None:
        before = world.state("us-west-2")["deployment_id"]
        run = run_apply(world.region("us-west-2"), str(tmp_path), CHALK_BIN)
        assert run.deployment_id != before
        assert world.state("us-west-2")["deployment_id"] == run.deployment_id
        assert world.state("us-east-1")["deployment_id"] != run.deployment_id  # only its own region
        assert run.finished_at >= run.started_at

    def test_transient_failure_is_retried(self, world: World, tmp_path: Path) -> None:
        world.fault("us-east-1", "transient", 2)
        fast = apply_region.with_options(retry_delay_seconds=0)

        @flow
        def go() -> Any:
            return fast(
                world.region("us-east-1"),
                sha="a" * 40,
                environment="t",
                code_dir=str(tmp_path),
                chalk_bin=CHALK_BIN,
            )

        run = go()
        state = world.state("us-east-1")
        assert state["apply_faults"]["count"] == 0  # both faults consumed: three attempts
        assert state["deployment_id"] == run.deployment_id

    def test_permanent_failure_is_not_retried(self, world: World, tmp_path: Path) -> None:
        world.fault("us-east-1", "permanent", 2)
        before = world.state("us-east-1")["deployment_id"]
        with pytest.raises(ChalkCliError) as info:
            run_apply(world.region("us-east-1"), str(tmp_path), CHALK_BIN)
        assert not info.value.transient and info.value.exit_code == 1
        assert "Validation failed" in str(info.value)
        state = world.state("us-east-1")
        assert state["apply_faults"]["count"] == 1  # exactly one attempt
        assert state["deployment_id"] == before

    def test_missing_binary_is_permanent(self, world: World, tmp_path: Path) -> None:
        with pytest.raises(ChalkCliError, match="not found") as info:
            run_apply(world.region("us-east-1"), str(tmp_path), str(tmp_path / "no-such-chalk"))
        assert not info.value.transient

    def test_timeout_kills_the_cli_and_its_children(self, world: World, tmp_path: Path) -> None:
        marker = tmp_path / "grandchild.pid"
        slow = _script(
            tmp_path,
            "slow-chalk",
            f"""
            import subprocess, sys, time
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            open({str(marker)!r}, "w").write(str(child.pid))
            print("Deploying...", flush=True)
            time.sleep(60)
            """,
        )
        no_retry = apply_region.with_options(retries=0)

        @flow
        def go() -> Any:
            return no_retry(
                world.region("us-east-1"),
                sha="a" * 40,
                environment="t",
                code_dir=str(tmp_path),
                chalk_bin=slow,
                timeout_s=1.5,
            )

        with pytest.raises(ChalkCliError, match="timed out") as info:
            go()
        assert info.value.transient and info.value.exit_code is None
        pid = int(marker.read_text())
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z"  # gone (or a reaped-soon zombie)

    def test_secret_only_in_child_env_and_redacted_from_everything(
        self, world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A CLI that echoes its secret: the secret must not reach logs, the exception or the API logs."""
        env_dump = tmp_path / "env.json"
        leaky = _script(
            tmp_path,
            "leaky-chalk",
            f"""
            import json, os, sys
            json.dump(dict(os.environ), open({str(env_dump)!r}, "w"))
            secret = os.environ["CHALK_CLIENT_SECRET"]
            print("using secret " + secret)
            print("Error: HTTP 401 invalid client " + secret, file=sys.stderr)
            sys.exit(1)
            """,
        )
        prefect_logger = logging.getLogger("prefect")
        prefect_logger.addHandler(caplog.handler)
        caplog.set_level(logging.DEBUG)
        try:
            state = run_apply(world.region("us-east-1"), str(tmp_path), leaky, return_state=True)
        finally:
            prefect_logger.removeHandler(caplog.handler)
        assert state.is_failed()
        exc = state.result(raise_on_failure=False)
        secret, other = world.secrets["us-east-1"], world.secrets["us-west-2"]
        assert isinstance(exc, ChalkCliError) and not exc.transient
        assert secret not in str(exc) and "***" in str(exc)

        child_env = httpx.Response(200, content=env_dump.read_bytes()).json()
        assert child_env["CHALK_CLIENT_SECRET"] == secret
        assert child_env["CHALK_ENVIRONMENT"] == world.region("us-east-1").chalk.environment_id
        assert child_env["CHALK_API_SERVER"] == world.servers["us-east-1"].url
        assert other not in child_env.values()  # the other region's secret never reaches this child
        assert not [k for k in child_env if k.startswith("CHALK_TEST_")]

        assert caplog.records and "***" in caplog.text
        assert secret not in caplog.text
        deadline = time.monotonic() + 15
        messages: list[str] = []
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                logs = client.read_logs(
                    log_filter=LogFilter(
                        flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])
                    )
                )
                messages = [log.message for log in logs]
                if any("***" in m for m in messages):
                    break
                time.sleep(0.2)
        assert any("***" in m for m in messages)
        assert not [m for m in messages if secret in m]

    def test_secret_from_a_prefect_secret_block(self, world: World, tmp_path: Path) -> None:
        name = f"chalk-test-{uuid.uuid4().hex[:8]}"
        Secret(value=world.secrets["us-west-2"]).save(name, overwrite=True)
        data = world.region("us-west-2").model_dump(mode="json")
        data["chalk"]["client_secret"] = {"prefect_secret": name}
        region = RegionConfig.model_validate(data)
        run = run_apply(region, str(tmp_path), CHALK_BIN)
        assert world.state("us-west-2")["deployment_id"] == run.deployment_id

    def test_missing_secret_fails_before_running_anything(
        self, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        env_var = world.region("us-east-1").chalk.client_secret.env
        assert env_var is not None
        monkeypatch.delenv(env_var)
        with pytest.raises(CredentialsError, match=env_var):
            run_apply(world.region("us-east-1"), str(tmp_path), CHALK_BIN)


class TestServedDeployment:
    def test_reads_the_regions_own_deployment(self, world: World) -> None:
        for name in REGIONS:
            assert served_deployment(world.region(name)) == world.servers[name].deployment_id

    def test_bad_credentials_are_permanent(self, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
        env_var = world.region("us-east-1").chalk.client_secret.env
        assert env_var is not None
        monkeypatch.setenv(env_var, "wrong-secret")
        with pytest.raises(ChalkQueryError) as info:
            served_deployment(world.region("us-east-1"))
        assert not info.value.transient and info.value.status == 401
        assert "wrong-secret" not in str(info.value)

    def test_unreachable_region_is_transient(self, world: World) -> None:
        region = world.region("us-east-1")
        world.servers["us-east-1"].stop()
        with pytest.raises(ChalkQueryError) as info:
            served_deployment(region)
        assert info.value.transient

    def test_read_and_verify_tasks(self, world: World) -> None:
        region = world.region("us-west-2")
        current = world.servers["us-west-2"].deployment_id
        assert run_task(read_served_deployment, region, deadline_s=5) == current
        verification = run_task(verify_served_deployment, region, current, timeout_s=5)
        assert verification.deployment_id == current and verification.polls == 1

    def test_verify_gives_up_at_the_deadline(self, world: World) -> None:
        start = time.monotonic()
        with pytest.raises(DeploymentNotServed) as info:
            run_task(
                verify_served_deployment, world.region("us-east-1"), "cnotserved", timeout_s=0.6, poll_s=0.1
            )
        assert time.monotonic() - start >= 0.6  # it polled until its deadline
        assert info.value.served == world.servers["us-east-1"].deployment_id


class TestCheckout:
    def test_clones_the_sha(self, code_repo: tuple[Path, list[str]], tmp_path: Path) -> None:
        repo, (first, _second) = code_repo
        dest = tmp_path / "clone"
        checkout = run_task(checkout_code, first[:10], dest=str(dest), repo_url=str(repo))
        assert checkout.sha == first and checkout.clone_source == str(repo)
        assert (dest / "features.py").read_text() == "VERSION = 1\n"

    def test_unknown_sha(self, code_repo: tuple[Path, list[str]], tmp_path: Path) -> None:
        repo, _ = code_repo
        with pytest.raises(CheckoutFailed, match="not in"):
            run_task(checkout_code, "deadbeef" * 5, dest=str(tmp_path / "c"), repo_url=str(repo))

    def test_local_work_tree_must_be_at_the_sha(self, code_repo: tuple[Path, list[str]]) -> None:
        repo, (first, second) = code_repo
        checkout = run_task(checkout_code, second, dest="unused", path=str(repo))
        assert checkout.code_dir == str(repo) and checkout.clone_source == str(repo) and not checkout.dirty
        with pytest.raises(CheckoutFailed, match="not at"):
            run_task(checkout_code, first, dest="unused", path=str(repo))

    def test_plain_directory_cannot_be_rolled_back_to(self, tmp_path: Path) -> None:
        plain = tmp_path / "plain"
        plain.mkdir()
        checkout = run_task(checkout_code, "abcdef1", dest="unused", path=str(plain))
        assert checkout.clone_source is None and "not a git work tree" in checkout.source

    def test_token_in_clone_url_never_shown(self, tmp_path: Path) -> None:
        url = "http://user:tok3n@127.0.0.1:9/acme/features.git"  # port 9 (discard): refused at once
        with pytest.raises(CheckoutFailed) as info:
            run_task(checkout_code, "abcdef1", dest=str(tmp_path / "c"), repo_url=url)
        assert "tok3n" not in str(info.value)


def test_apply_lock_is_created_once() -> None:
    env = f"t{uuid.uuid4().hex[:10]}"
    assert ensure_apply_lock(env) == f"chalk-apply-{env}"
    assert ensure_apply_lock(env) == f"chalk-apply-{env}"
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(f"chalk-apply-{env}")
    assert limit.limit == 1 and limit.active
