"""What the drill flow tests share: the session's sandbox world provisioned once per module, the
process environment pointed at it, and a way to run a drill and get its report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chalkdr.report import DrillReport

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
