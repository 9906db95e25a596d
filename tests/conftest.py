"""Test world fixtures shared by every test: AWS (moto), Kubernetes (kmock), Prefect."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest
import yaml

REGIONS = ("us-east-1", "us-west-2")
EXAMPLE_TOPOLOGY = Path(__file__).resolve().parents[1] / "deployments" / "topology.example.yaml"


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


@pytest.fixture(scope="session")
def session_world_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start sandbox worlds of their own that live for the session (stopped at its end)."""
    worlds: list[SandboxWorld] = []

    def make(name: str, *extra: str) -> SandboxWorld:
        world = start_world(tmp_path_factory.mktemp(f"world-{name}"), *extra)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
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


@dataclass
class ChalkRegions:
    """One Chalk environment served from every region of the example topology, in this process,
    built from the sandbox's pieces: per region a ChalkRegion whose query servers listen on its
    ALB's addresses and whose API server listens on an address of its own (all on one port), and
    a name server that answers the regional hostnames with those ALB addresses.

    `data` is the example topology pointed at them (a fresh environment name; the client secret in
    the environment variable `secret_env`). The query servers answer the probe query
    (`user.1` -> `user.name`) from a per-region online store; uploads land in `uploads`.
    """

    data: dict[str, Any]
    environment: Any  # sandbox.chalk.ChalkEnvironment
    truth: Any  # sandbox.truth.GroundTruth
    regions: dict[str, Any]  # aws region -> sandbox.chalk.ChalkRegion
    query: dict[str, Any]  # aws region -> sandbox.query_server.QueryServer
    api: dict[str, Any]  # aws region -> sandbox.api_server.ApiServer
    dns: Any  # sandbox.dns.DnsServer
    port: int
    secret_env: str
    serving: dict[str, bool] = field(default_factory=dict)
    uploads: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reads: dict[str, list[str]] = field(default_factory=dict)  # online-store keys each region's queries read

    @property
    def secret(self) -> str:
        return str(self.environment.client_secret)

    def api_url(self, region: str) -> str:
        return f"http://{self.api[region].addresses[0]}:{self.port}"

    def state(self, region: str) -> dict[str, Any]:
        """The region's API server's view: deployment served, apply faults left."""
        import httpx

        resp = httpx.get(f"{self.api_url(region)}/_sandbox/state", timeout=5, trust_env=False)
        resp.raise_for_status()
        return dict(resp.json())

    def served(self, region: str) -> str:
        return str(self.state(region)["deployment_id"])

    def fault(self, region: str, mode: str, count: int = 1) -> None:
        import httpx

        httpx.post(
            f"{self.api_url(region)}/_sandbox/apply-faults",
            json={"mode": mode, "count": count},
            timeout=5,
            trust_env=False,
        ).raise_for_status()

    def stop(self) -> None:
        for server in (*self.query.values(), *self.api.values()):
            server.stop()
        self.dns.stop()


def start_chalk_regions() -> ChalkRegions:
    import dns.rcode

    from sandbox.api_server import ApiServer
    from sandbox.chalk import ChalkEnvironment
    from sandbox.chalk import ChalkRegion
    from sandbox.chalk import served_hosts
    from sandbox.dns import DnsAnswer
    from sandbox.dns import DnsServer
    from sandbox.net import region_address
    from sandbox.net import sockets_on_one_port
    from sandbox.query_server import QueryServer
    from sandbox.truth import GroundTruth

    data = copy.deepcopy(yaml.safe_load(EXAMPLE_TOPOLOGY.read_text()))
    env = f"t{uuid.uuid4().hex[:10]}"
    secret_env = f"CHALK_DR_TEST_{env.upper()}_CLIENT_SECRET"  # a topology names CHALK_DR_* variables only
    environment = ChalkEnvironment(
        environment_id=env, client_id=f"client-{env}", client_secret=f"s3cret-{uuid.uuid4().hex}"
    )
    truth = GroundTruth()
    entries = {e["aws_region"]: e for e in data["regions"]}
    alb = {r: (region_address(i, 1), region_address(i, 2)) for i, r in enumerate(entries)}
    api_address = {r: region_address(i, 10) for i, r in enumerate(entries)}
    sockets = {
        sock.getsockname()[0]: sock
        for sock in sockets_on_one_port([*(a for pair in alb.values() for a in pair), *api_address.values()])
    }
    port = int(next(iter(sockets.values())).getsockname()[1])
    hostnames = {e["query_hostname"]: alb[r] for r, e in entries.items()}

    def authority(name: str, kind: str) -> DnsAnswer:
        if name not in hostnames:
            return DnsAnswer(dns.rcode.NXDOMAIN)
        return DnsAnswer(dns.rcode.NOERROR, hostnames[name] if kind == "A" else (), 60)

    name_server = DnsServer(authority).start()
    world = ChalkRegions(
        data=data,
        environment=environment,
        truth=truth,
        regions={},
        query={},
        api={},
        dns=name_server,
        port=port,
        secret_env=secret_env,
    )
    for region, entry in entries.items():
        store = {"user.1": {"user.id": 1, "user.name": "Ada"}}
        world.serving[region] = True
        world.uploads[region] = []
        world.reads[region] = []

        def read_item(pk: str, store: dict[str, Any] = store, reads: list[str] = world.reads[region]) -> Any:
            reads.append(pk)
            return dict(store.get(pk, {}))

        chalk = ChalkRegion(
            region=region,
            resource_group=entry["resource_group"],
            is_serving=lambda region=region: world.serving[region],  # type: ignore[misc]
            read_item=read_item,
            publish=world.uploads[region].extend,
            truth=truth,
        )
        world.regions[region] = chalk
        world.query[region] = QueryServer(
            region=chalk,
            environment=environment,
            hosts=served_hosts(entry["query_hostname"], data["route53"]["failover_record"]),
            sockets=[sockets[a] for a in alb[region]],
        ).start()
        # By address too: the chalk CLI resolves with the operating system, which does not know
        # the test's names (as in the sandbox world).
        world.api[region] = ApiServer(
            region=chalk,
            environment=environment,
            hosts=served_hosts(api_address[region]),
            engine_url=f"http://{entry['query_hostname']}:{port}",
            sockets=[sockets[api_address[region]]],
        ).start()
        entry["query_url"] = f"http://{entry['query_hostname']}:{port}"
        entry["api_server"] = world.api_url(region)
    primary = next(r for r, e in entries.items() if e.get("primary"))
    data["environment"] = env
    data["chalk"] = {
        "environment_id": env,
        "api_server": world.api_url(primary),
        "client_id": environment.client_id,
        "client_secret": {"env": secret_env},
    }
    data["dns"] = {"nameservers": [name_server.nameserver]}
    return world


@pytest.fixture
def chalk_regions(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChalkRegions]:
    """Chalk in every region of the example topology, for this test alone (see ChalkRegions)."""
    world = start_chalk_regions()
    monkeypatch.setenv(world.secret_env, world.secret)
    yield world
    world.stop()
