"""Test world fixtures shared by every test: AWS (moto), Kubernetes (kmock), Prefect."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REGIONS = ("us-east-1", "us-west-2")


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, and nothing that could reach real AWS (profiles, endpoints)."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture
def moto_inprocess() -> Iterator[None]:
    """moto in-process: every boto3 call in this test is answered by moto, no sockets."""
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture(scope="session")
def moto_server_url() -> Iterator[str]:
    """A ThreadedMotoServer on 127.0.0.1, port chosen by the OS, serving every region."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto_server(moto_server_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The shared moto server, reached the way product code reaches any AWS: AWS_ENDPOINT_URL."""
    import httpx

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server_url)
    yield moto_server_url
    httpx.post(f"{moto_server_url}/moto-api/reset", timeout=10, trust_env=False)


@pytest.fixture
def kube_emulators() -> Iterator[dict[str, Any]]:
    """One kmock Kubernetes API emulator per region, over real HTTP, seeded with Chalk's Deployments."""
    from sandbox.kube import RegionalKube

    kubes = {
        region: RegionalKube(
            cluster_name=f"chalk-{region}",
            namespace="chalk",
            deployments={"chalk-query-server": 2, "chalk-persistence-worker": 1},
            ready_delay=0.1,
        ).start()
        for region in REGIONS
    }
    yield kubes
    for kube in kubes.values():
        kube.stop()


@pytest.fixture(scope="session")
def prefect_backend() -> Iterator[None]:
    """One Prefect test harness (fresh SQLite) for the whole session; no heartbeat waits."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY
    from prefect.settings import temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with (
        prefect_test_harness(server_startup_timeout=60),
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield


class SandboxWorld:
    """A sandbox world running in its own process, reached only through its env and topology."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.topology_path = state_dir / "topology.yaml"
        self.env = dict(
            line.split("=", 1) for line in (state_dir / "sandbox.env").read_text().splitlines() if "=" in line
        )
        self.aws_endpoint = self.env["AWS_ENDPOINT_URL"]

    @contextmanager
    def environment(self) -> Iterator[None]:
        """The process environment pointed at this world (AWS endpoint, secrets) for the duration."""
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def provision(self) -> SandboxWorld:
        """Apply the world's topology (needs a Prefect backend); the flow must end converged."""
        from flows.provision import provision

        with self.environment():
            state = provision(
                topology=str(self.topology_path), mode="apply", require_approval=False, return_state=True
            )
        assert state.is_completed(), state.message
        return self

    @property
    def topology(self) -> Any:
        from chalkdr.topology import load_topology

        return load_topology(self.topology_path)

    def truth(self, kind: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        import httpx

        params: dict[str, Any] = {}
        if kind:
            params["kind"] = kind
        if since is not None:
            params["since"] = since
        return list(
            httpx.get(
                f"{self.aws_endpoint}/_sandbox/truth", params=params, timeout=10, trust_env=False
            ).json()
        )


def start_world(state_dir: Path, *extra: str) -> SandboxWorld:
    cmd = [sys.executable, "-m", "sandbox", "up", "--state-dir", str(state_dir), *extra]
    subprocess.run(cmd, check=True, capture_output=True, timeout=90)
    return SandboxWorld(state_dir)


def stop_world(world: SandboxWorld) -> None:
    subprocess.run(
        [sys.executable, "-m", "sandbox", "down", "--state-dir", str(world.state_dir)], check=True, timeout=60
    )


@pytest.fixture(scope="session")
def sandbox_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxWorld]:
    """One sandbox world (separate process) for the session; flows reach it via its env only."""
    world = start_world(tmp_path_factory.mktemp("world"))
    yield world
    stop_world(world)


@pytest.fixture
def world_env(sandbox_world: SandboxWorld, monkeypatch: pytest.MonkeyPatch) -> SandboxWorld:
    for key, value in sandbox_world.env.items():
        monkeypatch.setenv(key, value)
    return sandbox_world


@pytest.fixture
def own_world_factory(tmp_path: Path) -> Iterator[Any]:
    """Start sandbox worlds that live only as long as the test (stopped at its end)."""
    worlds: list[SandboxWorld] = []

    def make(*extra: str) -> SandboxWorld:
        world = start_world(tmp_path / f"world-{len(worlds)}", *extra)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        stop_world(world)


@pytest.fixture(scope="session")
def world_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start extra sandbox worlds (e.g. `"--routing", "weighted"`); all are stopped at session end."""
    worlds: list[SandboxWorld] = []

    def make(*extra: str) -> SandboxWorld:
        world = start_world(tmp_path_factory.mktemp("world"), *extra)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        stop_world(world)
