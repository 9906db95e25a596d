"""What the drill flow tests share: the session's sandbox world provisioned once per module, the
process environment pointed at it, and a way to run a drill and get its report."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL
from prefect.settings import temporary_settings

from chalkdr.report import DrillReport
from sandbox.prefect_server import PrefectServer

DRILL_INTERVAL = 0.5


@pytest.fixture(scope="module")
def provisioned(sandbox_world: Any, prefect_backend: None) -> Any:
    return sandbox_world.provision()


@pytest.fixture
def world(provisioned: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for k, v in provisioned.env.items():
        monkeypatch.setenv(k, v)
    return provisioned


def _run_drill(world: Any, **params: Any) -> DrillReport:
    from flows.drill import drill

    params.setdefault("hold_seconds", 1.0)
    params.setdefault("probe_interval_seconds", DRILL_INTERVAL)
    # A world provisioned moments ago: its new MSK replicator may still be copying its backlog
    # (from EARLIEST), its latency above the guard until the next CloudWatch period.
    params.setdefault("steady_state_wait_seconds", 120.0)
    state = drill(topology=str(world.topology_path), return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, DrillReport), report
    return report


@pytest.fixture
def run_drill() -> Callable[..., DrillReport]:
    """`run_drill(world, **drill parameters)`: the drill's report (hold 1 s, interval 0.5 s, up to
    120 s for steady state by default)."""
    return _run_drill


@pytest.fixture
def real_server(tmp_path: Path) -> Iterator[str]:
    """A Prefect server whose repossessor checks leases every second (its default is 15 s)."""
    server = PrefectServer.start(
        tmp_path / "prefect-home",
        ui=False,
        extra_env={"PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "1"},
    )
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        server.stop()


def _settled(world: Any) -> None:
    """Until every replication lag is within its guard, as an operator waits before a failback
    (its pre-check refuses otherwise): a replicator created or redirected moments ago still
    reports its catch-up latency."""
    from chalkdr.clients import AwsClients
    from sandbox.harness import poll
    from tasks.probes import read_replication_lags

    t = world.topology

    def within() -> bool:
        with world.environment():
            lags = read_replication_lags(t, AwsClients.for_topology(t))
        return all(v.value is None or v.value <= v.limit for v in lags.values())

    poll(within, timeout=300, what="replication lags within their guards", every=2.0)


@pytest.fixture
def settled() -> Callable[[Any], None]:
    """`settled(world)`: wait until every replication lag of the world is within its guard."""
    return _settled
