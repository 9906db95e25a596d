"""Test world fixtures shared by every test: AWS (moto), Kubernetes (kmock), Prefect."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
    httpx.post(f"{moto_server_url}/moto-api/reset", timeout=10)


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
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with (
        prefect_test_harness(server_startup_timeout=60),
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield
