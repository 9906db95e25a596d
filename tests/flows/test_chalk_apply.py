"""The chalk-apply flow against two sandbox query servers and the stand-in `chalk` CLI."""

from __future__ import annotations

import contextvars
import copy
import json
import logging
import shutil
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

import boto3
import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter
from prefect.client.schemas.filters import FlowRunFilterId
from prefect.client.schemas.filters import LogFilter
from prefect.client.schemas.filters import LogFilterFlowRunId
from prefect.concurrency.sync import concurrency
from prefect.events.filters import EventFilter
from prefect.events.filters import EventNameFilter
from prefect.events.filters import EventRelatedFilter
from prefect.states import State
from prefect.variables import Variable

from chalkdr.deploy import ApplyReport
from chalkdr.deploy import DeployFailed
from chalkdr.deploy import LastGood
from chalkdr.deploy import Outcome
from chalkdr.deploy import RegionStatus
from flows.chalk_apply import chalk_apply
from sandbox.query_server import QueryServer
from sandbox.truth import GroundTruth

pytestmark = pytest.mark.usefixtures("prefect_backend")

ROOT = Path(__file__).resolve().parents[2]
CHALK_BIN = shutil.which("chalk", path=str(Path(sys.executable).parent)) or "chalk"
EAST, WEST = "us-east-1", "us-west-2"  # primary, secondary (as in the example topology)


class World:
    """Two regional query servers, the topology pointing at them, and the feature-code repository."""

    def __init__(
        self,
        servers: dict[str, QueryServer],
        topology: dict[str, Any],
        secrets: dict[str, str],
        truth: GroundTruth,
        repo: Path,
        shas: list[str],
    ) -> None:
        self.servers, self.topology, self.secrets, self.truth = servers, topology, secrets, truth
        self.repo, self.shas = repo, shas
        self.environment: str = topology["environment"]

    def served(self, region: str) -> str:
        return str(
            httpx.get(f"{self.servers[region].url}/_sandbox/state", timeout=5, trust_env=False).json()[
                "deployment_id"
            ]
        )

    def fault(self, region: str, mode: str, count: int = 1) -> None:
        httpx.post(
            f"{self.servers[region].url}/_sandbox/apply-faults",
            json={"mode": mode, "count": count},
            timeout=5,
            trust_env=False,
        ).raise_for_status()

    def run(self, sha: str, **params: Any) -> State[Any]:
        params.setdefault("repo_url", str(self.repo))
        params.setdefault("chalk_bin", CHALK_BIN)
        params.setdefault("verify_timeout_s", 10.0)
        return chalk_apply(topology=self.topology, sha=sha, return_state=True, **params)


def _git(*args: str) -> str:
    base = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    return subprocess.run([*base, *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def world(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    data = copy.deepcopy(yaml.safe_load((ROOT / "deployments" / "topology.example.yaml").read_text()))
    data["environment"] = f"t{uuid.uuid4().hex[:10]}"
    truth = GroundTruth()
    servers: dict[str, QueryServer] = {}
    secrets: dict[str, str] = {}
    for entry in data["regions"]:
        name = entry["aws_region"]
        env_var = f"CHALK_TEST_{name.replace('-', '_').upper()}_CLIENT_SECRET"
        secrets[name] = f"s3cret-{uuid.uuid4().hex}"
        monkeypatch.setenv(env_var, secrets[name])
        env_id = f"{data['environment']}-{entry['resource_group']}"
        servers[name] = QueryServer(
            region=name,
            environment_name=entry["resource_group"],
            environment_id=env_id,
            client_id=entry["chalk"]["client_id"],
            client_secret=secrets[name],
            table_names=entry["online_store_tables"],
            dynamodb=boto3.client("dynamodb", region_name=name, endpoint_url=moto_server),
            is_serving=lambda: True,
            truth=truth,
        ).start()
        entry["query_url"] = servers[name].url
        entry["chalk"]["api_server"] = servers[name].url
        entry["chalk"]["environment_id"] = env_id
        entry["chalk"]["client_secret"] = {"env": env_var}
    repo = tmp_path / "features"
    _git("init", "-q", "-b", "main", str(repo))
    shas = []
    for i in (1, 2):
        (repo / "features.py").write_text(f"VERSION = {i}\n")
        _git("-C", str(repo), "add", ".")
        _git("-C", str(repo), "commit", "-q", "-m", f"v{i}")
        shas.append(_git("-C", str(repo), "rev-parse", "HEAD"))
    yield World(servers, data, secrets, truth, repo, shas)
    for server in servers.values():
        server.stop()


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
            sha=world.shas[1],  # the work tree's HEAD
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
        assert "Validation failed" in (east.error or "")
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
    secrets = list(world.secrets.values())

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


def test_against_the_sandbox_world(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The same flow against `python -m sandbox up`'s world, once the lead's fixture exists."""
    try:
        sandbox_world = request.getfixturevalue("sandbox_world")
        request.getfixturevalue("world_env")
    except pytest.FixtureLookupError:
        pytest.skip("sandbox_world fixture not available yet")
    code = tmp_path / "code"
    code.mkdir()
    state = chalk_apply(
        topology=str(sandbox_world.topology_path),
        sha="abcdef1",
        path=str(code),
        strategy="canary",
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert _report(state).outcome is Outcome.PARITY
