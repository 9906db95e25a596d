"""A drill killed with SIGKILL mid-injection, followed at once by another: the second waits the
dead run's lease out, repairs the region, marks the dead run Crashed in the backend naming
itself, and measures its own failover — nobody frees the lock by hand.

Against a real Prefect server (Prefect's app under uvicorn, all services): the test harness's
ephemeral server does not run the repossessor, the service that revokes expired concurrency
leases (prefect/server/services/repossessor.py, `run_in_ephemeral` false), so a dead run's
lease would never lapse there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter
from prefect.client.schemas.filters import FlowRunFilterName
from prefect.client.schemas.objects import StateType

from chalkdr.report import DrillReport
from chalkdr.report import PhaseStatus
from sandbox.harness import poll
from tasks.locks import LockRecord
from tasks.locks import read_lock_record

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(300)]
# Prefect's smallest heartbeat interval: the killed run's silence is judged over two of them.
HEARTBEAT_S = 30
REPORT_MARKER = "DRILL-REPORT "
NEXT_DRILL = (
    "import sys; from flows.drill import drill;"
    "state = drill(topology=sys.argv[1], scenario='health-check-inverted', hold_seconds=1.0,"
    " probe_interval_seconds=0.5, steady_state_wait_seconds=120, return_state=True);"
    f"print({REPORT_MARKER!r} + state.result(raise_on_failure=False).model_dump_json())"
)


def primary_replicas(world: Any) -> int:
    body = httpx.get(f"{world.aws_endpoint}/_sandbox/world", timeout=10, trust_env=False).json()
    return int(body["regions"]["us-east-1"]["query_ready_replicas"])


def flow_run_named(name: str) -> Any:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
    return runs[0] if runs else None


def test_a_sigkilled_drill_is_marked_crashed_by_the_next_one_which_measures(
    world: Any, real_server: str
) -> None:
    env = {
        **os.environ,
        "PREFECT_API_URL": real_server,
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
    }
    code = (
        "import sys; from flows.drill import drill;"
        "drill.with_options(flow_run_name=sys.argv[2])("
        "topology=sys.argv[1], hold_seconds=60, probe_interval_seconds=0.5, return_state=True)"
    )
    killed_name = f"killed-{os.getpid()}"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(world.topology_path), killed_name],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        poll(
            lambda: proc.poll() is not None or primary_replicas(world) == 0,
            timeout=120,
            what="the first drill injected",
        )
        assert proc.poll() is None, "the drill process ended before injecting"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert primary_replicas(world) == 0  # the crash left the fault in place
    killed = flow_run_named(killed_name)
    assert killed is not None and killed.state_type is StateType.RUNNING  # what the UI shows, for ever

    # At once, the next drill, in a process of its own as a worker runs it (one Prefect server per
    # process: its lease renewal must not go to the test harness): it waits out the dead run's
    # lease (about 75 s) by default.
    second = subprocess.run(
        [sys.executable, "-c", NEXT_DRILL, str(world.topology_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    marker = [line for line in second.stdout.splitlines() if line.startswith(REPORT_MARKER)]
    assert marker, second.stdout[-3000:] + second.stderr[-3000:]
    report = DrillReport.model_validate_json(marker[-1].removeprefix(REPORT_MARKER))
    assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
    assert any("replicas restored to 2" in s and str(killed.id) in s for s in report.swept), report.swept
    marked = [s for s in report.swept if "marked Crashed" in s]
    assert len(marked) == 1 and str(killed.id) in marked[0], report.swept
    # ...and measured its own failover, from the repaired steady state.
    assert report.failover is not None and report.rto_s is not None and report.rto_s > 0
    assert report.passed, report.slos
    assert primary_replicas(world) == 2

    crashed = flow_run_named(killed_name)
    assert crashed.state_type is StateType.CRASHED, crashed.state
    message = crashed.state.message or ""
    assert message.startswith(f"chalk-dr: marked Crashed by drill {report.drill_id}"), message
    assert "lost its lease without releasing it" in message and "left behind" in message, message
    assert read_lock_record(world.topology.environment) == LockRecord()
