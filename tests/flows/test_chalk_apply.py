"""The chalk-apply flow against two regions of one Chalk environment and the stand-in `chalk` CLI.

The regions are the sandbox's Chalk pieces in this process (`chalk_regions` in tests/conftest.py):
each region's API server takes the CLI's applies and creates that region's own deployment, its
query servers answer the probe query with the deployment they serve, reached by the regional
hostname through the topology's name server. The feature code is a local git repository that
the topology's `deploy:` section allows (branch `main`); the push entrypoint reads the topology
from a directory named by the worker's environment, as a deployed run does.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter
from prefect.client.schemas.filters import FlowRunFilterId
from prefect.client.schemas.filters import LogFilter
from prefect.client.schemas.filters import LogFilterFlowRunId
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment
from prefect.deployments.runner import EntrypointType
from prefect.events.filters import EventFilter
from prefect.events.filters import EventNameFilter
from prefect.events.filters import EventRelatedFilter
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelling
from prefect.states import State
from prefect.variables import Variable

from chalkdr.deploy import ApplyReport
from chalkdr.deploy import DeployFailed
from chalkdr.deploy import LastGood
from chalkdr.deploy import Outcome
from chalkdr.deploy import RegionStatus
from flows.chalk_apply import chalk_apply
from flows.chalk_apply import chalk_apply_on_push
from sandbox.api_server import PERMANENT_APPLY_ERROR
from sandbox.harness import poll

pytestmark = pytest.mark.usefixtures("prefect_backend")

CHALK_BIN = shutil.which("chalk", path=str(Path(sys.executable).parent)) or "chalk"
EAST, WEST = "us-east-1", "us-west-2"  # primary, secondary (as in the example topology)


class World:
    """The Chalk regions, the topology pointing at them, and the feature-code repository."""

    def __init__(self, chalk: Any, repo: Path, shas: list[str], topology_dir: Path) -> None:
        self.chalk = chalk
        self.topology: dict[str, Any] = chalk.data
        self.secret: str = chalk.secret
        self.truth = chalk.truth
        self.repo, self.shas = repo, shas
        self.environment: str = self.topology["environment"]
        self.topology_dir = topology_dir

    def write_topology(self, name: str = "topology.yaml", **changes: Any) -> str:
        """The topology as a file in the worker's topology directory (what a deployment names)."""
        (self.topology_dir / name).write_text(yaml.safe_dump({**self.topology, **changes}))
        return name

    def push(self, sha: str, **params: Any) -> State[Any]:
        """What the push deployment runs for an event: only sha, ref and repo_url come from it."""
        params.setdefault("repo_url", str(self.repo))
        params.setdefault("ref", "refs/heads/main")
        params.setdefault("verify_timeout_s", 10.0)
        params.setdefault("strategy", "parallel")
        params.setdefault("topology", "topology.yaml")
        return chalk_apply_on_push(sha=sha, return_state=True, **params)

    def last_good(self) -> Any:
        return Variable.get(f"chalk-apply-last-good-{self.environment}")

    def served(self, region: str) -> str:
        return str(self.chalk.served(region))

    def fault(self, region: str, mode: str, count: int = 1) -> None:
        self.chalk.fault(region, mode, count)

    def run(self, sha: str, **params: Any) -> State[Any]:
        params.setdefault("repo_url", str(self.repo))
        params.setdefault("chalk_bin", CHALK_BIN)
        params.setdefault("verify_timeout_s", 10.0)
        return chalk_apply(topology=self.topology, sha=sha, return_state=True, **params)


def _git(*args: str) -> str:
    base = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    return subprocess.run([*base, *args], check=True, capture_output=True, text=True).stdout.strip()


def _commit(repo: Path, version: str) -> str:
    (repo / "features.py").write_text(f"VERSION = {version!r}\n")
    _git("-C", str(repo), "add", ".")
    _git("-C", str(repo), "commit", "-q", "-m", f"v{version}")
    return _git("-C", str(repo), "rev-parse", "HEAD")


@pytest.fixture
def world(chalk_regions: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """Three commits on `main` of a Chalk project (chalk.yaml, which the CLI requires, and feature
    code), the only repository the topology allows; the worker's topology directory and binary."""
    repo = tmp_path / "features"
    _git("init", "-q", "-b", "main", str(repo))
    (repo / "chalk.yaml").write_text("project: chalk-dr-test\n")
    shas = [_commit(repo, str(i)) for i in (1, 2, 3)]
    chalk_regions.data["deploy"] = {"repositories": [str(repo)], "branch": "main"}
    topology_dir = tmp_path / "topologies"
    topology_dir.mkdir()
    monkeypatch.setenv("CHALK_DR_TOPOLOGY_DIR", str(topology_dir))
    monkeypatch.setenv("CHALK_DR_CHALK_BIN", CHALK_BIN)
    world = World(chalk_regions, repo, shas, topology_dir)
    world.write_topology()
    return world


def _report(state: State[Any]) -> ApplyReport:
    result = state.result(raise_on_failure=False)
    if isinstance(result, DeployFailed):
        return result.report
    assert isinstance(result, ApplyReport), result
    return result


def _poll(read: Callable[[], list[Any]], done: Callable[[list[Any]], bool], timeout: float = 20) -> list[Any]:
    """Events and logs reach the backend asynchronously: poll with a deadline."""
    deadline = time.monotonic() + timeout
    items = read()
    while not done(items) and time.monotonic() < deadline:
        time.sleep(0.2)
        items = read()
    return items


def _events(flow_run_id: UUID, prefix: str = "", count: int = 1) -> list[Any]:
    def read() -> list[Any]:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(prefix=[prefix]) if prefix else None,
                    related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
                ),
                limit=50,
            )
        return list(page.events)

    return _poll(read, lambda items: len(items) >= count)


def _artifacts(flow_run_id: UUID) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def _logs(flow_run_id: UUID, expect: str) -> list[str]:
    def read() -> list[str]:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        return [log.message for log in logs]

    return _poll(read, lambda msgs: any(expect in m for m in msgs))


def _flow_run_id(state: State[Any]) -> UUID:
    assert state.state_details.flow_run_id is not None
    return state.state_details.flow_run_id


class TestParity:
    def test_parallel_apply_reaches_parity_proven_by_served_ids(self, world: World) -> None:
        before = {r: world.served(r) for r in (EAST, WEST)}
        state = world.run(world.shas[0][:12], ref="refs/heads/main")
        assert state.is_completed(), state.message
        report = _report(state)
        assert report.outcome is Outcome.PARITY and report.sha == world.shas[0]
        for region in (EAST, WEST):
            slot = report.region(region)
            assert slot.status is RegionStatus.VERIFIED and slot.attempts == 1
            assert slot.served_before == before[region]
            assert slot.deployment_id == slot.served_after == world.served(region) != before[region]
        assert report.parity is not None and report.parity.in_parity

        run_id = _flow_run_id(state)
        applied = _events(run_id, "chalkdr.deploy.applied", count=2)
        payloads = {e.payload["region"]: e.payload for e in applied}
        assert {r: p["deployment_id"] for r, p in payloads.items()} == {
            r: report.region(r).deployment_id for r in (EAST, WEST)
        }
        assert all(p["sha"] == world.shas[0] for p in payloads.values())
        (artifact,) = [a for a in _artifacts(run_id) if a.key == f"chalk-apply-{world.environment}"]
        assert "**Outcome: PARITY**" in artifact.data and world.shas[0] in artifact.data

        last_good = Variable.get(f"chalk-apply-last-good-{world.environment}")
        assert last_good["sha"] == world.shas[0] and last_good["repo_url"] == str(world.repo)
        assert last_good["deployment_ids"] == {r: world.served(r) for r in (EAST, WEST)}

    def test_canary_verifies_the_secondary_before_the_primary_starts(self, world: World) -> None:
        state = world.run(world.shas[0], strategy="canary")
        assert state.is_completed(), state.message
        report = _report(state)
        east, west = report.region(EAST), report.region(WEST)
        assert west.verified_at is not None and east.started_at is not None
        assert west.verified_at < east.started_at
        # The sandbox's own record of when each region switched deployment agrees.
        switched = {e["region"]: e["ts"] for e in world.truth.events("chalk.deployment")}
        assert switched[WEST] < west.verified_at < switched[EAST]

    def test_no_promote_from_a_local_path_builds_without_moving_what_is_served(
        self, world: World, tmp_path: Path
    ) -> None:
        topo_file = tmp_path / "topology.yaml"
        topo_file.write_text(yaml.safe_dump(world.topology))
        before = {r: world.served(r) for r in (EAST, WEST)}
        state = chalk_apply(
            topology=str(topo_file),
            sha=world.shas[-1],  # the work tree's HEAD
            path=str(world.repo),
            no_promote=True,
            chalk_bin=CHALK_BIN,
            verify_timeout_s=10,
            return_state=True,
        )
        assert state.is_completed(), state.message
        report = _report(state)
        assert report.outcome is Outcome.PARITY and report.source == str(world.repo)
        assert {r: world.served(r) for r in (EAST, WEST)} == before
        assert all(s.deployment_id and s.deployment_id != before[s.region] for s in report.regions)
        assert Variable.get(f"chalk-apply-last-good-{world.environment}") is None  # nothing served changed

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"sha": "not-a-sha"}, "not a git commit sha"),
            ({"sha": "abcdef1", "path": "/tmp"}, "exactly one of repo_url"),
        ],
    )
    def test_bad_parameters_fail_before_anything(
        self, world: World, params: dict[str, Any], message: str
    ) -> None:
        state = chalk_apply(topology=world.topology, repo_url=str(world.repo), return_state=True, **params)
        assert state.is_failed() and message in str(state.result(raise_on_failure=False))


class TestFailures:
    def test_transient_cli_failure_is_retried(self, world: World) -> None:
        world.fault(WEST, "transient", 1)
        state = world.run(world.shas[0])
        assert state.is_completed(), state.message
        report = _report(state)
        assert report.region(WEST).attempts == 2 and report.region(EAST).attempts == 1

    def test_one_region_failing_is_drift_and_fails_the_flow(self, world: World) -> None:
        east_before = world.served(EAST)
        world.fault(EAST, "permanent", 2)
        state = world.run(world.shas[0], rollback_on_drift=True)
        assert state.is_failed()
        report = _report(state)
        assert report.outcome is Outcome.DRIFT
        # Nothing to roll back to: no run of this environment ever reached parity.
        assert report.rollback is not None and "no last good sha" in (report.rollback.skipped_reason or "")
        east, west = report.region(EAST), report.region(WEST)
        assert east.status is RegionStatus.FAILED and east.attempts == 1  # permanent: not retried
        assert PERMANENT_APPLY_ERROR in (east.error or "")
        assert west.status is RegionStatus.VERIFIED
        assert world.served(EAST) == east_before and world.served(WEST) == west.deployment_id
        assert report.parity is not None and report.parity.at_target == [WEST]

        run_id = _flow_run_id(state)
        (drift,) = _events(run_id, "chalkdr.deploy.drift")
        assert drift.resource.id == f"chalkdr.environment.{world.environment}"
        assert drift.payload["regions"][EAST] == {"expected": None, "served": east_before, "served_sha": None}
        assert drift.payload["at_target"] == [WEST]
        keys = {a.key for a in _artifacts(run_id)}
        assert {f"chalk-apply-{world.environment}", f"chalk-apply-drift-{world.environment}"} <= keys

    def test_rollback_on_drift_restores_parity_on_the_previous_sha(self, world: World) -> None:
        # What a run of shas[0] that reached parity records (test_parallel_... checks the flow writes it).
        good = {r: world.served(r) for r in (EAST, WEST)}
        seeded = LastGood(sha=world.shas[0], repo_url=str(world.repo), deployment_ids=good)
        Variable.set(f"chalk-apply-last-good-{world.environment}", seeded.model_dump(mode="json"))

        world.fault(EAST, "permanent", 1)
        state = world.run(world.shas[1], rollback_on_drift=True)
        assert state.is_failed()  # the push was not deployed, even though parity is back
        report = _report(state)
        assert report.outcome is Outcome.ROLLED_BACK
        rb = report.rollback
        assert rb is not None and rb.sha == world.shas[0] and rb.restored
        assert [s.region for s in rb.regions] == [WEST]  # only the region that moved
        rolled = rb.regions[0].deployment_id
        assert rolled not in (good[WEST], report.region(WEST).deployment_id)
        assert world.served(WEST) == rolled and world.served(EAST) == good[EAST]
        last_good = Variable.get(f"chalk-apply-last-good-{world.environment}")
        assert last_good["sha"] == world.shas[0]
        assert last_good["deployment_ids"] == {EAST: good[EAST], WEST: rolled}
        rollback_events = [
            e for e in _events(_flow_run_id(state), "chalkdr.deploy.applied", 2) if e.payload["rollback"]
        ]
        assert [e.payload["sha"] for e in rollback_events] == [world.shas[0]]

    def test_failed_canary_leaves_the_primary_untouched(self, world: World) -> None:
        east_before = world.served(EAST)
        world.fault(WEST, "permanent", 1)
        state = world.run(world.shas[0], strategy="canary")
        assert state.is_failed()
        report = _report(state)
        assert report.outcome is Outcome.FAILED  # nothing moved: no drift
        assert report.region(WEST).status is RegionStatus.FAILED
        assert report.region(EAST).status is RegionStatus.SKIPPED and report.region(EAST).attempts == 0
        assert world.served(EAST) == east_before


def test_the_client_secret_appears_nowhere(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A CLI that prints its secret: logs, artifacts, events and results must still never hold it."""
    leaky = tmp_path / "leaky-chalk"
    leaky.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""
            import os, subprocess, sys
            print("client secret is " + os.environ["CHALK_CLIENT_SECRET"], flush=True)
            print("stderr secret " + os.environ["CHALK_CLIENT_SECRET"], file=sys.stderr, flush=True)
            sys.exit(subprocess.call([{CHALK_BIN!r}, *sys.argv[1:]]))
            """
        )
    )
    leaky.chmod(0o755)
    world.fault(EAST, "permanent", 1)  # a failure too, so error paths are covered
    prefect_logger = logging.getLogger("prefect")
    prefect_logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    try:
        state = world.run(world.shas[0], chalk_bin=str(leaky), rollback_on_drift=True)
    finally:
        prefect_logger.removeHandler(caplog.handler)
    assert state.is_failed()
    run_id = _flow_run_id(state)
    secrets = [world.secret]

    assert "client secret is ***" in caplog.text
    messages = _logs(run_id, "client secret is ***")
    assert any("client secret is ***" in m for m in messages)
    _events(run_id, "chalkdr.deploy.drift")  # emitted late in the run: once it is in, the rest is too
    events = _events(run_id)
    artifacts = _artifacts(run_id)
    assert artifacts and events
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run_id)
    report = _report(state)
    haystacks = {
        "caplog": caplog.text,
        "api logs": "\n".join(messages),
        "events": json.dumps([e.model_dump(mode="json") for e in events]),
        "artifacts": json.dumps([a.model_dump(mode="json") for a in artifacts]),
        "parameters": json.dumps(flow_run.parameters, default=str),
        "state message": flow_run.state.message if flow_run.state else "",
        "report": report.model_dump_json() + report.render_markdown(),
    }
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"client secret found in {where}"


def test_a_newer_push_waits_for_the_running_apply(world: World) -> None:
    """Hold the environment's apply lock; a run must not touch any region until it is released."""
    from tasks.chalk import ensure_apply_lock

    before = {r: world.served(r) for r in (EAST, WEST)}
    lock = ensure_apply_lock(world.environment)
    states: list[State[Any]] = []
    with concurrency(lock, occupy=1, strict=True):
        ctx = contextvars.copy_context()  # the Prefect test settings live in context variables
        worker = threading.Thread(target=lambda: states.append(ctx.run(world.run, world.shas[0])))
        worker.start()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # an observation window: nothing may change in it
            assert {r: world.served(r) for r in (EAST, WEST)} == before
            time.sleep(0.1)
        released = time.time()
    worker.join(60)
    assert states and states[0].is_completed(), states and states[0].message
    report = _report(states[0])
    assert report.started_at >= released
    assert all(s.started_at is not None and s.started_at >= released for s in report.regions)


def test_against_the_sandbox_world(world_env: Any, tmp_path: Path) -> None:
    """The same flow against `python -m sandbox up`'s world, reached through its env and topology.

    Provisioned first: the regional hostnames the flow proves parity through are Route 53 records
    that provision creates (a no-op when an earlier test already converged the world)."""
    world_env.provision()
    code = tmp_path / "code"
    code.mkdir()
    (code / "chalk.yaml").write_text("project: sandbox-demo\n")
    started = time.time()
    state = chalk_apply(
        topology=str(world_env.topology_path),
        sha="abcdef1",
        path=str(code),
        strategy="canary",
        return_state=True,
    )
    assert state.is_completed(), state.message
    report = _report(state)
    assert report.outcome is Outcome.PARITY
    # each region switched to its own new deployment, by the world's own account
    switched = {e["region"]: e["deployment_id"] for e in world_env.truth("chalk.deployment", since=started)}
    assert switched == {s.region: s.deployment_id for s in report.regions}
    assert switched[EAST] != switched[WEST]


# -- the push path: what a push may do ------------------------------------------------------------


class Spies:
    """`git` (first on PATH) and `chalk` (the worker's CHALK_DR_CHALK_BIN) that record every call
    and then run the real program: what "nothing was run" is checked against."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def make(self, name: str, real: str) -> str:
        path = self.root / name
        log = self.root / f"{name}.calls"
        path.write_text(
            f"#!{sys.executable}\n"
            + textwrap.dedent(
                f"""
                import json, os, sys
                with open({str(log)!r}, "a") as f:
                    f.write(json.dumps(sys.argv[1:]) + "\\n")
                os.execv({real!r}, [{real!r}, *sys.argv[1:]])
                """
            )
        )
        path.chmod(0o755)
        return str(path)

    def calls(self, name: str) -> list[list[str]]:
        log = self.root / f"{name}.calls"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def spies(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Spies:
    root = tmp_path / "spy-bin"
    root.mkdir()
    spy = Spies(root)
    real_git = shutil.which("git")
    assert real_git is not None
    spy.make("git", real_git)
    monkeypatch.setenv("PATH", f"{root}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CHALK_DR_CHALK_BIN", spy.make("chalk", CHALK_BIN))
    return spy


def _served(world: World) -> dict[str, str]:
    return {r: world.served(r) for r in (EAST, WEST)}


def _artifact(run_id: UUID, environment: str) -> str:
    (artifact,) = [a for a in _artifacts(run_id) if a.key == f"chalk-apply-{environment}"]
    return str(artifact.data)


class TestPushPath:
    """A push names a repository and a sha; the topology decides whether that is deployable."""

    def test_a_push_deploys_through_the_workers_topology_and_binary(self, world: World, spies: Spies) -> None:
        state = world.push(world.shas[0])
        assert state.is_completed(), state.message
        report = _report(state)
        assert report.outcome is Outcome.PARITY and report.order is not None and report.order.value == "first"
        assert len(spies.calls("chalk")) == 2  # the worker's CHALK_DR_CHALK_BIN, once per region
        assert world.last_good()["sha"] == world.shas[0]

    def test_a_foreign_repository_is_refused_and_nothing_runs(
        self, world: World, spies: Spies, tmp_path: Path
    ) -> None:
        fork = tmp_path / "fork"
        shutil.copytree(world.repo, fork)  # the same commits, another repository
        before = _served(world)
        state = world.push(world.shas[-1], repo_url=str(fork))
        assert state.is_failed()
        report = _report(state)
        assert report.outcome is Outcome.REFUSED
        assert f"repository {fork} is not one this environment deploys from" in (report.refused or "")
        assert spies.calls("git") == [] and spies.calls("chalk") == []  # not even cloned
        assert _served(world) == before and world.last_good() is None

        run_id = _flow_run_id(state)
        md = _artifact(run_id, world.environment)
        assert "**Outcome: REFUSED**" in md and "not one this environment deploys from" in md
        (refused,) = _events(run_id, "chalkdr.deploy.refused")
        assert (
            refused.payload["sha"] == world.shas[-1]
            and "not one this environment" in refused.payload["reason"]
        )

    @pytest.mark.parametrize("where", ["another branch", "nowhere"])
    def test_a_sha_not_on_the_protected_branch_is_refused(
        self, world: World, spies: Spies, where: str
    ) -> None:
        if where == "another branch":
            _git("-C", str(world.repo), "checkout", "-q", "-b", "feature")
            sha = _commit(world.repo, "unreviewed")
            _git("-C", str(world.repo), "checkout", "-q", "main")
            reason = f"commit {sha[:12]} is not reachable from the tip of main"
        else:
            sha = "feedface" * 5
            reason = f"commit {sha} is not on main of {world.repo}"
        before = _served(world)
        state = world.push(sha)
        assert state.is_failed()
        report = _report(state)
        assert report.outcome is Outcome.REFUSED and reason in (report.refused or "")
        assert any("clone" in call for call in spies.calls("git")) and spies.calls("chalk") == []
        assert _served(world) == before and world.last_good() is None
        assert reason in _artifact(_flow_run_id(state), world.environment)

    def test_a_ref_that_is_not_the_protected_branch_is_refused(self, world: World, spies: Spies) -> None:
        state = world.push(world.shas[0], ref="refs/heads/release")
        assert state.is_failed()
        assert _report(state).refused == "ref refs/heads/release is not the protected branch main"
        assert spies.calls("git") == [] and spies.calls("chalk") == []

    def test_fields_missing_from_the_event(self, world: World, spies: Spies) -> None:
        """A trigger templates a payload field that is not there as "": no repository is refused,
        no ref is no claim about the branch (the sha is still checked against it)."""
        state = world.push(world.shas[0], repo_url="")
        assert state.is_failed() and "names no repository" in str(state.result(raise_on_failure=False))
        assert spies.calls("git") == []
        state = world.push(world.shas[0], ref="")
        assert state.is_completed(), state.message
        assert _report(state).ref is None and _report(state).outcome is Outcome.PARITY

    def test_an_older_or_the_same_sha_is_skipped_and_recorded(self, world: World, spies: Spies) -> None:
        newest = world.push(world.shas[1])
        assert newest.is_completed(), newest.message
        after = _served(world)
        chalk_calls = len(spies.calls("chalk"))

        older = world.push(world.shas[0])
        assert older.is_completed(), older.message  # recorded, not failed
        report = _report(older)
        assert report.outcome is Outcome.SKIPPED and report.previous_sha == world.shas[1]
        assert f"is older than the deployed {world.shas[1][:12]}" in (report.skipped or "")
        (skipped,) = _events(_flow_run_id(older), "chalkdr.deploy.skipped")
        assert skipped.payload["deployed_sha"] == world.shas[1]
        assert "**Outcome: SKIPPED**" in _artifact(_flow_run_id(older), world.environment)

        again = world.push(world.shas[1])  # a redelivery of the push that was applied
        assert again.is_completed() and "is already deployed" in (_report(again).skipped or "")
        assert len(spies.calls("chalk")) == chalk_calls and _served(world) == after
        assert world.last_good()["sha"] == world.shas[1]

    @pytest.mark.parametrize("order", [(2, 0, 1), (1, 2, 0), (0, 2, 1)], ids=["C,A,B", "B,C,A", "A,C,B"])
    def test_pushes_delivered_out_of_order_end_with_the_newest_deployed(
        self, world: World, order: tuple[int, int, int]
    ) -> None:
        outcomes: dict[int, Outcome] = {}
        applied: dict[int, ApplyReport] = {}
        for i in order:
            state = world.push(world.shas[i])
            assert state.is_completed(), state.message
            report = _report(state)
            outcomes[i] = report.outcome
            if report.outcome is Outcome.PARITY:
                applied[i] = report
        newest = world.shas[2]
        assert world.last_good()["sha"] == newest
        assert _served(world) == {r: applied[2].region(r).deployment_id for r in (EAST, WEST)}
        # every push older than one already applied was skipped, whatever order they came in
        for position, i in enumerate(order):
            seen_newer = any(j > i for j in order[:position])
            assert outcomes[i] is (Outcome.SKIPPED if seen_newer else Outcome.PARITY), (order, i)

    def test_a_url_with_credentials_is_refused_and_the_token_is_not_reported(
        self, world: World, spies: Spies
    ) -> None:
        world.write_topology(deploy={"repositories": [str(world.repo), "acme/features"], "branch": "main"})
        url = "https://x-access-token:ghs_t0ken@github.com/acme/features.git"
        state = world.push(world.shas[0], repo_url=url)
        assert state.is_failed()
        report = _report(state)
        assert report.outcome is Outcome.REFUSED and "credentials" in (report.refused or "")
        md = _artifact(_flow_run_id(state), world.environment)
        assert "ghs_t0ken" not in md and "ghs_t0ken" not in report.model_dump_json()
        assert spies.calls("git") == []

    def test_the_topology_comes_from_the_workers_directory_only(
        self, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        outside = tmp_path / "outside.yaml"
        outside.write_text(yaml.safe_dump(world.topology))
        state = world.push(world.shas[0], topology=str(outside))
        assert state.is_failed() and "not a file in the topology directory" in str(
            state.result(raise_on_failure=False)
        )
        monkeypatch.delenv("CHALK_DR_TOPOLOGY_DIR")
        state = world.push(world.shas[0])
        assert state.is_failed() and "CHALK_DR_TOPOLOGY_DIR is not set" in str(
            state.result(raise_on_failure=False)
        )
        assert world.last_good() is None

    def test_a_secret_reference_outside_chalk_dr_is_refused_at_load(self, world: World, spies: Spies) -> None:
        leaky = {**world.topology["chalk"], "client_secret": {"env": "AWS_SECRET_ACCESS_KEY"}}
        name = world.write_topology("leaky.yaml", chalk=leaky)
        for state in (
            world.push(world.shas[0], topology=name),
            chalk_apply(
                topology={**world.topology, "chalk": leaky},
                sha=world.shas[0],
                repo_url=str(world.repo),
                return_state=True,
            ),
        ):
            assert state.is_failed()
            message = str(state.result(raise_on_failure=False))
            assert "chalk.client_secret" in message and "CHALK_DR_* variables only" in message
        assert spies.calls("git") == [] and spies.calls("chalk") == []

    def test_credentials_never_go_over_http_to_a_name_that_is_not_this_machine(
        self, world: World, spies: Spies
    ) -> None:
        """A name cannot be judged when the topology loads: it is resolved (through the topology's
        name server, as the queries are) before anything runs; one that is not loopback, or does
        not resolve, refuses the run."""
        regions = [dict(r) for r in world.topology["regions"]]
        regions[1]["api_server"] = "http://west-api.elsewhere.invalid:8080"
        name = world.write_topology("cleartext.yaml", regions=regions)
        state = world.push(world.shas[0], topology=name)
        assert state.is_failed()
        refused = _report(state).refused or ""
        assert "refusing to send credentials" in refused and "west-api.elsewhere.invalid" in refused
        assert spies.calls("git") == [] and spies.calls("chalk") == []


# -- cancelling or interrupting an apply stops `chalk` ---------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def _hanging_chalk(tmp_path: Path) -> tuple[str, Path]:
    """A `chalk` that starts a child of its own and then hangs (an apply stuck on a slow build);
    each one writes "<its pid> <its child's pid>" into the returned directory."""
    pids = tmp_path / "chalk-pids"
    pids.mkdir()
    path = tmp_path / "hanging-chalk"
    path.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""
            import os, subprocess, sys, time
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
            with open(os.path.join({str(pids)!r}, str(os.getpid())), "w") as f:
                f.write(f"{{os.getpid()}} {{child.pid}}")
            time.sleep(300)
            """
        )
    )
    path.chmod(0o755)
    return str(path), pids


def _started(pids: Path) -> list[int]:
    return [int(pid) for f in pids.iterdir() for pid in f.read_text().split()]


def _dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # a zombie awaiting its reaper
    except FileNotFoundError:
        return True


def _kill_leftovers(pids: Path) -> None:
    for pid in _started(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _worker_env(**extra: str) -> dict[str, str]:
    """This process's environment (the world's topology directory and secret) pointed at the
    test's Prefect backend, as a worker's would be."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_API_URL=str(PREFECT_API_URL.value()), PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra
    )
    return env


def _flow_run_state(flow_run_id: UUID) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


def _deploy(flow_fn: Any, name: str) -> UUID:
    """A deployment of `flow_fn` by module path, as prefect.yaml makes it (named `name-<random>`)."""
    deployment = flow_fn.to_deployment(
        name=f"{name}-{uuid.uuid4().hex[:8]}", entrypoint_type=EntrypointType.MODULE_PATH
    )
    return deployment.apply()  # type: ignore[no-any-return]


def _execute_command(flow_run_id: UUID) -> list[str]:
    """What a process worker runs for one flow run."""
    return [sys.executable, "-m", "prefect", "flow-run", "execute", str(flow_run_id)]


@contextlib.contextmanager
def _worker_process(command: list[str], cwd: Path, log: Path, chalk: str, pids: Path) -> Iterator[Any]:
    """`command` running as on a worker whose CLI is `chalk`, its output into `log`; at the end it
    is killed if still running, and so is whatever `chalk` started (as recorded in `pids`)."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=_worker_env(CHALK_DR_CHALK_BIN=chalk), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_leftovers(pids)


class TestStopping:
    def test_interrupting_an_apply_kills_chalk_and_its_children(self, world: World, tmp_path: Path) -> None:
        """Ctrl-C on an operator's in-process run: the KeyboardInterrupt leaves the flow through
        its handler, which kills the process group of the running `chalk`."""
        chalk, pids = _hanging_chalk(tmp_path)
        script = (
            "from flows.chalk_apply import chalk_apply_on_push\n"
            f"chalk_apply_on_push(sha={world.shas[0]!r}, repo_url={str(world.repo)!r}, strategy='canary')\n"
        )
        with _worker_process(
            [sys.executable, "-c", script], tmp_path, tmp_path / "run.log", chalk, pids
        ) as proc:
            started = poll(lambda: _started(pids), timeout=120, what="chalk started by the run")
            assert len(started) == 2  # canary: one region at a time, chalk and its child
            proc.send_signal(signal.SIGINT)
            for pid in started:
                poll(lambda pid=pid: _dead(pid), timeout=30, what=f"process {pid} killed")
            proc.wait(timeout=60)
        assert "child process group(s) killed" in (tmp_path / "run.log").read_text()
        assert len(list(pids.iterdir())) == 1  # nothing started after the interrupt

    def test_cancelling_a_deployed_run_kills_chalk_and_its_children(
        self, world: World, tmp_path: Path
    ) -> None:
        """A deployed run (`prefect flow-run execute`, what a process worker runs), cancelled from
        the API: Prefect's SIGTERM reaches the flow process only; the flow kills chalk's group."""
        chalk, pids = _hanging_chalk(tmp_path)
        deployment_id = _deploy(chalk_apply_on_push, "cancel")
        parameters = {"sha": world.shas[0], "repo_url": str(world.repo), "ref": "refs/heads/main"}
        run = run_deployment(deployment_id, parameters={**parameters, "strategy": "canary"}, timeout=0)
        with _worker_process(
            _execute_command(run.id), tmp_path, tmp_path / "worker.log", chalk, pids
        ) as worker:
            started = poll(lambda: _started(pids), timeout=120, what="chalk started by the deployed run")
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(run.id, Cancelling(message="cancelled by the test"), force=True)
            for pid in started:
                poll(lambda pid=pid: _dead(pid), timeout=60, what=f"process {pid} killed")
            state = poll(
                lambda: (s := _flow_run_state(run.id)) is not None and s.is_final() and s,
                timeout=60,
                what="the run's final state",
            )
            assert state.is_cancelled(), state
            worker.wait(timeout=60)
        assert len(list(pids.iterdir())) == 1
        md = _artifact(run.id, world.environment)
        assert "child process group(s) killed" in md, (tmp_path / "worker.log").read_text()[-3000:]


def _execute(flow_run_id: UUID, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run one flow run to its end as a process worker does (`prefect flow-run execute`)."""
    return subprocess.run(
        _execute_command(flow_run_id),
        cwd=cwd,
        env=_worker_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


class TestDeployedParameters:
    """What a run started through the Prefect API may set (the server checks the parameter
    schema's types, not unknown names: the flow is what refuses them)."""

    def test_the_push_deployment_takes_no_binary_path_or_topology_mapping(
        self, world: World, spies: Spies, tmp_path: Path
    ) -> None:
        deployment_id = _deploy(chalk_apply_on_push, "push")
        push = {"sha": world.shas[0], "repo_url": str(world.repo)}
        for extra in ({"chalk_bin": "/bin/sh"}, {"path": str(world.repo)}):
            run = run_deployment(deployment_id, parameters={**push, **extra}, timeout=0)
            done = _execute(run.id, tmp_path, CHALK_DR_CHALK_BIN=os.environ["CHALK_DR_CHALK_BIN"])
            state = _flow_run_state(run.id)
            # the engine cannot even call the flow: the run ends before anything of it runs
            assert state is not None and (state.is_failed() or state.is_crashed()), state
            assert (
                f"but was provided with parameters ['sha', 'repo_url', '{next(iter(extra))}']" in done.stderr
            )
        with pytest.raises(PrefectHTTPStatusError, match=r"is not of type .string."):  # the schema says so
            run_deployment(deployment_id, parameters={**push, "topology": world.topology}, timeout=0)
        # (Prefect itself asks git about the working directory: only a clone would be this flow's.)
        assert not [c for c in spies.calls("git") if "clone" in c] and spies.calls("chalk") == []
        assert world.last_good() is None

    def test_a_deployed_run_of_the_operators_flow_refuses_what_reaches_the_worker(
        self, world: World, tmp_path: Path
    ) -> None:
        """Run through the API, `chalk_apply` takes no topology mapping and no chalk binary."""
        deployment_id = _deploy(chalk_apply, "params")
        parameters = {
            "topology": world.topology,
            "sha": world.shas[0],
            "repo_url": str(world.repo),
            "chalk_bin": "/bin/sh",
        }
        run = run_deployment(deployment_id, parameters=parameters, timeout=0)
        done = _execute(run.id, tmp_path, CHALK_DR_CHALK_BIN=CHALK_BIN)
        state = _flow_run_state(run.id)
        assert state is not None and state.is_failed(), done.stdout + done.stderr
        assert "topology must name a file in $CHALK_DR_TOPOLOGY_DIR" in (state.message or "")
        assert "chalk_bin is the worker's configuration" in (state.message or "")
        assert world.last_good() is None
