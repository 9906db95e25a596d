"""Tasks for Chalk against the sandbox's stand-in CLI, API servers and query servers (over real HTTP).

One Chalk environment is served from both regions (`chalk_regions` in tests/conftest.py): tokens
come from a region's API server, queries go to its own hostname (resolved through the topology's
name server) with X-Chalk-Env-Id, and each region's apply creates that region's own deployment.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter
from prefect.client.schemas.filters import LogFilterFlowRunId

from chalkdr.deploy import ChalkQueryError
from chalkdr.deploy import DeploymentNotServed
from chalkdr.deploy import PushRefused
from chalkdr.deploy import ShaOrder
from chalkdr.deploy import git_env
from chalkdr.errors import ChalkCliError
from chalkdr.errors import CredentialsError
from chalkdr.topology import ChalkEnvConfig
from chalkdr.topology import DeployConfig
from chalkdr.topology import RegionConfig
from chalkdr.topology import Topology
from chalkdr.topology import parse_topology
from sandbox.api_server import PERMANENT_APPLY_ERROR
from sandbox.harness import poll
from tasks.chalk import CheckoutFailed
from tasks.chalk import ProcessesStopped
from tasks.chalk import apply_region
from tasks.chalk import checkout_code
from tasks.chalk import ensure_apply_lock
from tasks.chalk import read_served_deployment
from tasks.chalk import run_process
from tasks.chalk import served_client
from tasks.chalk import served_deployment
from tasks.chalk import stop_children
from tasks.chalk import verify_served_deployment

pytestmark = pytest.mark.usefixtures("prefect_backend")

CHALK_BIN = shutil.which("chalk", path=str(Path(sys.executable).parent)) or "chalk"
REGIONS = ("us-east-1", "us-west-2")


class World:
    """The in-process Chalk regions and the topology pointing at them."""

    def __init__(self, chalk: Any) -> None:
        self.chalk = chalk
        self.topology: Topology = parse_topology(chalk.data)

    def region(self, name: str) -> RegionConfig:
        return self.topology.region(name)

    def state(self, name: str) -> dict[str, Any]:
        return dict(self.chalk.state(name))

    def fault(self, name: str, mode: str, count: int) -> None:
        self.chalk.fault(name, mode, count)


@pytest.fixture
def world(chalk_regions: Any) -> World:
    return World(chalk_regions)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory the Chalk CLI accepts as a project (it looks for chalk.yaml)."""
    code = tmp_path / "features"
    code.mkdir()
    (code / "chalk.yaml").write_text("project: chalk-dr-test\n")
    return code


def _gitc(*args: str) -> str:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    return subprocess.run([*git, *args], check=True, capture_output=True, text=True).stdout.strip()


def _commit(repo: Path, text: str, message: str | None = None) -> str:
    (repo / "features.py").write_text(text)
    _gitc("-C", str(repo), "add", ".")
    _gitc("-C", str(repo), "commit", "-q", "-m", message or text.strip())
    return _gitc("-C", str(repo), "rev-parse", "HEAD")


def _dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # a zombie awaiting its reaper
    except FileNotFoundError:
        return True


@pytest.fixture
def code_repo(tmp_path: Path) -> tuple[Path, list[str]]:
    """A git repository with two commits of 'feature code'; returns (path, [sha1, sha2])."""
    repo = tmp_path / "features"
    repo.mkdir()
    _gitc("init", "-q", "-b", "main", str(repo))
    return repo, [_commit(repo, f"VERSION = {i}\n", f"v{i}") for i in (1, 2)]


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


@flow
def run_apply(
    region: RegionConfig,
    chalk: ChalkEnvConfig,
    code_dir: str,
    chalk_bin: str,
    apply: Any = None,
    **kwargs: Any,
) -> Any:
    """apply_region (or `apply`, a variant of it with other options) of sha aaaa... in a flow."""
    return (apply or apply_region)(
        region, chalk, sha="a" * 40, environment="test", code_dir=code_dir, chalk_bin=chalk_bin, **kwargs
    )


@flow
def run_task(task_fn: Any, *args: Any, **kwargs: Any) -> Any:
    return task_fn(*args, **kwargs)


class TestApplyRegion:
    def test_applies_and_returns_the_deployment_id_from_json(self, world: World, project: Path) -> None:
        before = {r: world.state(r)["deployment_id"] for r in REGIONS}
        run = run_apply(world.region("us-west-2"), world.topology.chalk, str(project), CHALK_BIN)
        assert run.deployment_id != before["us-west-2"]
        assert world.state("us-west-2")["deployment_id"] == run.deployment_id
        assert world.state("us-east-1")["deployment_id"] == before["us-east-1"]  # only its own region
        assert run.finished_at >= run.started_at
        # the truth of what the region's API server created, recorded when it started serving it
        (switched,) = world.chalk.truth.events("chalk.deployment")
        assert (switched["region"], switched["deployment_id"]) == ("us-west-2", run.deployment_id)

    def test_the_id_comes_from_the_json_document_not_the_text(self, world: World, project: Path) -> None:
        """A CLI whose human-readable lines name other ids: only `--json`'s deployment_id counts."""
        fake = _script(
            project.parent,
            "chatty-chalk",
            """
            import json, sys
            assert "--json" in sys.argv, sys.argv
            print("Deployment ID: cnotthisoneaaaaaaaaaaaaaaa", file=sys.stderr)
            print("Deployment cnotthisoneeitherbbbbbbbbbbb is live")
            print(json.dumps({"deployment_id": "cfromthejsondocumentccccc", "status": "success"}, indent=2))
            """,
        )
        run = run_apply(world.region("us-east-1"), world.topology.chalk, str(project), fake)
        assert run.deployment_id == "cfromthejsondocumentccccc"

    def test_success_without_a_json_deployment_id_is_a_permanent_failure(
        self, world: World, project: Path
    ) -> None:
        fake = _script(project.parent, "old-chalk", 'print("Deployment ID: cscrapedfromtextaaaaaaaaaa")\n')
        with pytest.raises(ChalkCliError, match="named no deployment_id") as info:
            run_apply(world.region("us-east-1"), world.topology.chalk, str(project), fake)
        assert not info.value.transient

    def test_transient_failure_is_retried(self, world: World, project: Path) -> None:
        world.fault("us-east-1", "transient", 2)
        fast = apply_region.with_options(retry_delay_seconds=0)
        run = run_apply(world.region("us-east-1"), world.topology.chalk, str(project), CHALK_BIN, fast)
        state = world.state("us-east-1")
        assert state["apply_faults"]["count"] == 0  # both faults consumed: three attempts
        assert state["deployment_id"] == run.deployment_id

    def test_permanent_failure_is_not_retried(self, world: World, project: Path) -> None:
        world.fault("us-east-1", "permanent", 2)
        before = world.state("us-east-1")["deployment_id"]
        with pytest.raises(ChalkCliError) as info:
            run_apply(world.region("us-east-1"), world.topology.chalk, str(project), CHALK_BIN)
        assert not info.value.transient and info.value.exit_code == 1
        assert PERMANENT_APPLY_ERROR in str(info.value)
        state = world.state("us-east-1")
        assert state["apply_faults"]["count"] == 1  # exactly one attempt
        assert state["deployment_id"] == before

    def test_a_region_without_ready_query_servers_fails_the_apply_transiently(
        self, world: World, project: Path
    ) -> None:
        """`--await`: a deployment that cannot become healthy is a failed (retryable) apply."""
        world.chalk.serving["us-west-2"] = False
        before = world.state("us-west-2")["deployment_id"]
        no_retry = apply_region.with_options(retries=0)
        with pytest.raises(ChalkCliError, match="no ready query servers") as info:
            run_apply(world.region("us-west-2"), world.topology.chalk, str(project), CHALK_BIN, no_retry)
        assert info.value.transient
        assert world.state("us-west-2")["deployment_id"] == before

    def test_missing_binary_is_permanent(self, world: World, project: Path) -> None:
        with pytest.raises(ChalkCliError, match="not found") as info:
            run_apply(
                world.region("us-east-1"), world.topology.chalk, str(project), str(project / "no-chalk")
            )
        assert not info.value.transient

    def test_not_a_chalk_project_is_permanent(self, world: World, tmp_path: Path) -> None:
        plain = tmp_path / "plain"
        plain.mkdir()
        with pytest.raises(ChalkCliError, match="not a Chalk project") as info:
            run_apply(world.region("us-east-1"), world.topology.chalk, str(plain), CHALK_BIN)
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
        with pytest.raises(ChalkCliError, match="timed out") as info:
            run_apply(
                world.region("us-east-1"), world.topology.chalk, str(tmp_path), slow, no_retry, timeout_s=1.5
            )
        assert info.value.transient and info.value.exit_code is None
        pid = int(marker.read_text())
        poll(lambda: _dead(pid), timeout=5, what=f"grandchild {pid} killed")

    def test_the_child_gets_exactly_one_target_and_the_secret_is_redacted_everywhere(
        self, world: World, project: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A CLI that echoes its secret: it must not reach logs, the exception or the API logs; the
        child's environment names its target the way Chalk's CLI reads it, and nothing else."""
        monkeypatch.setenv("CHALK_ENVIRONMENT", "some-other-environment")  # a worker's stray setting
        monkeypatch.setenv("CHALK_CLIENT_ID", "some-other-client")
        env_dump = project / "env.json"
        leaky = _script(
            project.parent,
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
        east = world.region("us-east-1")
        try:
            state = run_apply(east, world.topology.chalk, str(project), leaky, return_state=True)
        finally:
            prefect_logger.removeHandler(caplog.handler)
        assert state.is_failed()
        exc = state.result(raise_on_failure=False)
        secret = world.chalk.secret
        assert isinstance(exc, ChalkCliError) and not exc.transient
        assert secret not in str(exc) and "***" in str(exc)

        child_env = json.loads(env_dump.read_text())
        assert {k: v for k, v in child_env.items() if k.startswith("CHALK_")} == {
            "CHALK_ACTIVE_ENVIRONMENT": world.topology.chalk.environment_id,
            "CHALK_API_SERVER": world.chalk.api_url("us-east-1"),  # the region's own metadata plane
            "CHALK_CLIENT_ID": world.topology.chalk.client_id,
            "CHALK_CLIENT_SECRET": secret,
        }
        assert east.metadata_url(world.topology.chalk) == world.chalk.api_url("us-east-1")
        assert not [k for k in child_env if k.startswith("AWS_")]  # the worker's AWS keys stay with it

        assert caplog.records and "***" in caplog.text
        assert secret not in caplog.text
        flow_run_id = state.state_details.flow_run_id

        def api_logs() -> list[str]:
            with get_client(sync_client=True) as client:
                logs = client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
                )
            messages = [log.message for log in logs]
            return messages if any("***" in m for m in messages) else []

        messages = poll(api_logs, timeout=15, what="the run's logs in the backend")
        assert not [m for m in messages if secret in m]

    def test_secret_from_a_prefect_secret_block(
        self, world: World, project: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        name = f"chalk-test-{uuid.uuid4().hex[:8]}"
        Secret(value=world.chalk.secret).save(name, overwrite=True)
        monkeypatch.delenv(world.chalk.secret_env)  # only the block has it now
        data = world.topology.chalk.model_dump(mode="json")
        chalk = ChalkEnvConfig.model_validate({**data, "client_secret": {"prefect_secret": name}})
        run = run_apply(world.region("us-west-2"), chalk, str(project), CHALK_BIN)
        assert world.state("us-west-2")["deployment_id"] == run.deployment_id

    def test_missing_secret_fails_before_running_anything(
        self, world: World, project: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        marker = project / "ran"
        spy = _script(project.parent, "spy-chalk", f"open({str(marker)!r}, 'w').write('ran')\n")
        monkeypatch.delenv(world.chalk.secret_env)
        with pytest.raises(CredentialsError, match=world.chalk.secret_env):
            run_apply(world.region("us-east-1"), world.topology.chalk, str(project), spy)
        assert not marker.exists()


def read_served(region: RegionConfig, topology: Topology) -> str | None:
    """served_deployment through a client of its own, closed whatever the answer."""
    client = served_client(region, topology)
    try:
        return served_deployment(region, topology, client)
    finally:
        client.close()


class TestServedDeployment:
    def test_reads_the_regions_own_deployment(self, world: World) -> None:
        served = {name: read_served(world.region(name), world.topology) for name in REGIONS}
        # each region answers with its own deployment (Chalk ids are per deployment, per region)
        assert served == {name: world.chalk.regions[name].served() for name in REGIONS}
        assert served["us-east-1"] != served["us-west-2"]

    def test_the_query_goes_to_the_regions_address_with_its_name_and_environment(self, world: World) -> None:
        region = world.region("us-west-2")
        client = served_client(region, world.topology)
        try:
            answer = client.query(world.topology.probe.inputs, world.topology.probe.outputs)
        finally:
            client.close()
        assert answer.ok and answer.values == {"user.name": "Ada"}
        # resolved through the topology's name server to the region's ALB, not the failover name
        assert answer.address in world.chalk.query["us-west-2"].addresses
        assert answer.resolved == tuple(sorted(world.chalk.query["us-west-2"].addresses))
        assert answer.environment_id == world.topology.chalk.environment_id

    def test_the_token_comes_from_the_api_server_and_the_query_needs_the_environment(
        self, world: World
    ) -> None:
        """What served_client relies on: query servers issue no tokens, and refuse a query
        without X-Chalk-Env-Id even with a good token."""
        chalk = world.topology.chalk
        body = {
            "client_id": chalk.client_id,
            "client_secret": world.chalk.secret,
            "grant_type": "client_credentials",
        }
        region = world.region("us-east-1")
        query = world.chalk.query["us-east-1"]
        host = {"Host": region.query_hostname}
        with httpx.Client(timeout=5, trust_env=False) as http:
            refused = http.post(f"{query.url}/v1/oauth/token", headers=host, json=body)
            assert refused.status_code == 404
            token = http.post(f"{region.metadata_url(chalk)}/v1/oauth/token", json=body)
            assert token.status_code == 200
            auth = {**host, "Authorization": f"Bearer {token.json()['access_token']}"}
            probe = {"inputs": {"user.id": 1}, "outputs": ["user.name"], "include_meta": True}
            no_env = http.post(f"{query.url}/v1/query/online", headers=auth, json=probe)
            assert no_env.status_code == 400 and "X-Chalk-Env-Id" in no_env.text
            ok = http.post(
                f"{query.url}/v1/query/online",
                headers={**auth, "X-Chalk-Env-Id": chalk.environment_id},
                json=probe,
            )
            assert (
                ok.status_code == 200
                and ok.json()["meta"]["deployment_id"] == world.chalk.regions["us-east-1"].served()
            )

    def test_bad_credentials_are_permanent(self, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(world.chalk.secret_env, "wrong-secret")
        with pytest.raises(ChalkQueryError) as info:
            read_served(world.region("us-east-1"), world.topology)
        assert not info.value.transient and info.value.status == 401
        assert "wrong-secret" not in str(info.value)

    def test_a_wrong_environment_is_permanent(self, world: World) -> None:
        data = dict(world.chalk.data)
        data["chalk"] = {**data["chalk"], "environment_id": "not-this-environment"}
        topology = parse_topology(data)
        with pytest.raises(ChalkQueryError) as info:
            read_served(topology.region("us-east-1"), topology)
        assert not info.value.transient and info.value.status == 403

    def test_unreachable_region_is_transient(self, world: World) -> None:
        world.chalk.query["us-east-1"].stop()
        with pytest.raises(ChalkQueryError) as info:
            read_served(world.region("us-east-1"), world.topology)
        assert info.value.transient and info.value.status is None

    def test_a_region_with_no_ready_query_servers_is_transient(self, world: World) -> None:
        world.chalk.serving["us-east-1"] = False
        with pytest.raises(ChalkQueryError) as info:
            read_served(world.region("us-east-1"), world.topology)
        assert info.value.transient and info.value.status == 503

    def test_read_and_verify_tasks(self, world: World) -> None:
        region = world.region("us-west-2")
        current = world.chalk.regions["us-west-2"].served()
        assert run_task(read_served_deployment, region, world.topology, deadline_s=5) == current
        verification = run_task(verify_served_deployment, region, world.topology, current, timeout_s=5)
        assert verification.deployment_id == current and verification.polls == 1

    def test_verify_gives_up_at_the_deadline(self, world: World) -> None:
        with pytest.raises(DeploymentNotServed) as info:
            run_task(
                verify_served_deployment,
                world.region("us-east-1"),
                world.topology,
                "cnotserved",
                timeout_s=0.6,
                poll_s=0.1,
            )
        assert info.value.served == world.chalk.regions["us-east-1"].served()
        assert len(world.chalk.reads["us-east-1"]) > 1  # it kept polling until its deadline


def _allow(repo: Path, branch: str = "main") -> DeployConfig:
    return DeployConfig(repositories=[str(repo)], branch=branch)


class TestCheckout:
    def test_clones_the_sha_from_the_protected_branch(
        self, code_repo: tuple[Path, list[str]], tmp_path: Path
    ) -> None:
        repo, (first, _second) = code_repo
        dest = tmp_path / "clone"
        checkout = run_task(
            checkout_code, first[:10], dest=str(dest), repo_url=str(repo), deploy=_allow(repo)
        )
        assert checkout.sha == first and checkout.clone_source == str(repo)
        assert (dest / "features.py").read_text() == "VERSION = 1\n"
        assert checkout.order is ShaOrder.FIRST  # nothing was deployed before

    def test_no_deploy_section_no_clone(self, code_repo: tuple[Path, list[str]], tmp_path: Path) -> None:
        repo, (first, _) = code_repo
        with pytest.raises(PushRefused, match="no deploy: section"):
            run_task(checkout_code, first, dest=str(tmp_path / "c"), repo_url=str(repo))
        assert not (tmp_path / "c").exists()

    def test_a_repository_off_the_list_is_never_cloned(
        self, code_repo: tuple[Path, list[str]], tmp_path: Path
    ) -> None:
        repo, (first, _) = code_repo
        other = tmp_path / "other"
        shutil.copytree(repo, other)
        with pytest.raises(PushRefused, match="not one this environment deploys from"):
            run_task(checkout_code, first, dest=str(tmp_path / "c"), repo_url=str(other), deploy=_allow(repo))
        assert not (tmp_path / "c").exists()

    def test_a_sha_that_is_not_there_is_refused(
        self, code_repo: tuple[Path, list[str]], tmp_path: Path
    ) -> None:
        repo, _ = code_repo
        with pytest.raises(PushRefused, match="is not on main"):
            run_task(
                checkout_code,
                "deadbeef" * 5,
                dest=str(tmp_path / "c"),
                repo_url=str(repo),
                deploy=_allow(repo),
            )

    def test_a_sha_on_another_branch_is_refused(
        self, code_repo: tuple[Path, list[str]], tmp_path: Path
    ) -> None:
        """A local clone copies every object, so the ancestry check is what refuses it."""
        repo, _ = code_repo
        _gitc("-C", str(repo), "checkout", "-q", "-b", "feature")
        side = _commit(repo, "VERSION = 'side'\n")
        _gitc("-C", str(repo), "checkout", "-q", "main")
        with pytest.raises(PushRefused, match="not reachable from the tip of main"):
            run_task(checkout_code, side, dest=str(tmp_path / "c"), repo_url=str(repo), deploy=_allow(repo))
        # the same commit is fine for an environment whose protected branch it is on
        checkout = run_task(
            checkout_code, side, dest=str(tmp_path / "d"), repo_url=str(repo), deploy=_allow(repo, "feature")
        )
        assert checkout.sha == side

    def test_order_against_the_deployed_sha(self, code_repo: tuple[Path, list[str]], tmp_path: Path) -> None:
        repo, (first, second) = code_repo
        # main: first - second - merge(side), with side branched from first: side and second diverge
        _gitc("-C", str(repo), "checkout", "-q", "-b", "side", first)
        side = _commit(repo, "VERSION = 'side'\n")
        _gitc("-C", str(repo), "checkout", "-q", "main")
        _gitc("-C", str(repo), "merge", "-q", "--no-edit", "-X", "theirs", "side")
        cases = [
            (second, first, ShaOrder.NEWER),
            (second, second[:9], ShaOrder.SAME),
            (first, second, ShaOrder.OLDER),
            (side, second, ShaOrder.DIVERGED),
            (second, "ab" * 20, ShaOrder.UNKNOWN),  # the last good sha came from somewhere else
        ]
        for i, (sha, deployed, order) in enumerate(cases):
            checkout = run_task(
                checkout_code,
                sha,
                dest=str(tmp_path / f"c{i}"),
                repo_url=str(repo),
                deploy=_allow(repo),
                deployed_sha=deployed,
            )
            assert checkout.order is order, (sha, deployed)

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("https://user:tok3n@github.com/acme/features.git", "credentials"),
            ("https://tok3n@github.com/acme/features.git", "credentials"),
            ("http://github.com/acme/features.git", "plain http"),
            ("ext::sh -c tok3n", "whitespace"),
            ("ext::tok3n", "transport"),
            ("git://github.com/acme/features.git", "transport"),
        ],
    )
    def test_bad_urls_are_refused_and_never_shown(self, tmp_path: Path, url: str, reason: str) -> None:
        deploy = DeployConfig(repositories=["acme/features"])
        with pytest.raises(PushRefused, match=reason) as info:
            run_task(checkout_code, "abcdef1", dest=str(tmp_path / "c"), repo_url=url, deploy=deploy)
        assert "tok3n" not in str(info.value)
        assert not (tmp_path / "c").exists()

    def test_local_work_tree_must_be_at_the_sha(self, code_repo: tuple[Path, list[str]]) -> None:
        repo, (first, second) = code_repo
        checkout = run_task(checkout_code, second, dest="unused", path=str(repo))
        assert checkout.code_dir == str(repo) and checkout.clone_source == str(repo) and not checkout.dirty
        assert checkout.order is None  # an operator's local path is not ordered
        with pytest.raises(CheckoutFailed, match="not at"):
            run_task(checkout_code, first, dest="unused", path=str(repo))

    def test_plain_directory_cannot_be_rolled_back_to(self, tmp_path: Path) -> None:
        plain = tmp_path / "plain"
        plain.mkdir()
        checkout = run_task(checkout_code, "abcdef1", dest="unused", path=str(plain))
        assert checkout.clone_source is None and "not a git work tree" in checkout.source


class TestGitProcess:
    def test_git_refuses_every_transport_but_the_repositorys(self, code_repo: tuple[Path, list[str]]) -> None:
        """GIT_ALLOW_PROTOCOL is enforced by git itself: a local repository is refused under an
        https-only environment, and served under `file`."""
        repo, _ = code_repo
        ls_remote = ["git", "ls-remote", str(repo)]
        refused = run_process(ls_remote, cwd=None, env=git_env(os.environ, transport="https"), timeout_s=30)
        assert refused.exit_code != 0 and "transport 'file' not allowed" in refused.stderr
        allowed = run_process(ls_remote, cwd=None, env=git_env(os.environ, transport="file"), timeout_s=30)
        assert allowed.exit_code == 0 and "refs/heads/main" in allowed.stdout

    def test_git_gets_an_allow_listed_environment_and_its_timeout_kills_its_children(
        self, code_repo: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A `git` that hangs (a stalled fetch) and left a child behind: the checkout's own timeout
        kills the whole process group. The worker's credentials never reach git."""
        repo, (first, _) = code_repo
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        marker, env_dump = tmp_path / "grandchild.pid", tmp_path / "git-env.json"
        _script(
            bin_dir,
            "git",
            f"""
            import json, os, subprocess, sys, time
            json.dump(dict(os.environ), open({str(env_dump)!r}, "w"))
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            open({str(marker)!r}, "w").write(str(child.pid))
            time.sleep(60)
            """,
        )
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("PREFECT_API_KEY", "pnu_not_for_git")
        with pytest.raises(CheckoutFailed, match="timed out"):
            run_task(
                checkout_code,
                first,
                dest=str(tmp_path / "c"),
                repo_url=str(repo),
                deploy=_allow(repo),
                timeout_s=1.5,
            )
        grandchild = int(marker.read_text())
        poll(lambda: _dead(grandchild), timeout=5, what="git's child killed")
        env = json.loads(env_dump.read_text())
        assert env["GIT_ALLOW_PROTOCOL"] == "file" and env["GIT_TERMINAL_PROMPT"] == "0"
        assert "BatchMode=yes" in env["GIT_SSH_COMMAND"]
        assert not [k for k in env if k.startswith(("AWS_", "PREFECT_"))]


class TestStopChildren:
    def test_a_stopped_run_kills_chalk_and_its_children_and_does_not_retry(
        self, world: World, tmp_path: Path
    ) -> None:
        """What the flow does when it is cancelled or interrupted: stop_children kills the process
        group of the running apply (chalk and what it started), and the apply is not retried."""
        starts, marker = tmp_path / "starts", tmp_path / "grandchild.pid"
        slow = _script(
            tmp_path,
            "slow-chalk",
            f"""
            import os, subprocess, sys, time
            open({str(starts)!r}, "a").write(str(os.getpid()) + "\\n")
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            open({str(marker)!r}, "w").write(str(child.pid))
            time.sleep(60)
            """,
        )

        @flow
        def go() -> Any:
            future = apply_region.with_options(retry_delay_seconds=0).submit(
                world.region("us-east-1"),
                world.topology.chalk,
                sha="a" * 40,
                environment="t",
                code_dir=str(tmp_path),
                chalk_bin=slow,
            )
            poll(marker.exists, timeout=30, what="the CLI started")
            assert stop_children() == 1
            return future.result(raise_on_failure=False)

        result = go()
        assert isinstance(result, ChalkCliError) and "stopped" in str(result) and not result.transient
        (cli_pid,) = [int(line) for line in starts.read_text().split()]  # one attempt: not retried
        for pid in (cli_pid, int(marker.read_text())):
            poll(lambda pid=pid: _dead(pid), timeout=5, what=f"process {pid} killed")

    def test_a_run_that_stopped_its_children_starts_no_new_one(self, tmp_path: Path) -> None:
        ran = tmp_path / "ran"

        @flow
        def go() -> Any:
            stop_children()
            return run_process(
                [sys.executable, "-c", f"open({str(ran)!r}, 'w')"], cwd=None, env={}, timeout_s=10
            )

        with pytest.raises(ProcessesStopped):
            go()
        assert not ran.exists()


def test_apply_lock_is_created_once() -> None:
    env = f"t{uuid.uuid4().hex[:10]}"
    assert ensure_apply_lock(env) == f"chalk-apply-{env}"
    assert ensure_apply_lock(env) == f"chalk-apply-{env}"
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(f"chalk-apply-{env}")
    assert limit.limit == 1 and limit.active
