"""An incident does not wait for a rehearsal: a failover started while a drill holds the
environment's lock cancels that drill, takes the lock once it is free, undoes whatever the drill
left, and fails over.

Against a real Prefect server, with the drill deployed from prefect.yaml (`drill-manual`) and run
by a process worker: cancelling an in-process run does not interrupt it (PREFECT-NOTES.md); a
worker stops its run's process. The failover and failback run in processes of their own, as a
worker runs them (Prefect's client-side lease service is one per process, bound to the first API
it talks to: a run in this process would renew the test harness's leases here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment

from chalkdr.recovery import FailbackReport
from chalkdr.recovery import FailoverReport
from chalkdr.report import PhaseStatus
from sandbox.harness import poll
from sandbox.prefect_cli import POOL
from sandbox.prefect_cli import PROJECT_DIR
from sandbox.prefect_cli import prefect_cli
from sandbox.prefect_cli import prefect_env
from sandbox.prefect_cli import process_worker
from tasks.locks import read_lock_record

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(600)]
EAST, WEST = "us-east-1", "us-west-2"
MARKER = "RECOVERY-REPORT "
RUN = (
    "import sys, json; from flows.recovery import failover, failback;"
    "flow = {'failover': failover, 'failback': failback}[sys.argv[1]];"
    "state = flow(topology=sys.argv[2], require_approval=False, probe_interval_seconds=0.5,"
    " return_state=True, **json.loads(sys.argv[3]));"
    f"print({MARKER!r} + state.result(raise_on_failure=False).model_dump_json())"
)


def primary_replicas(world: Any) -> int:
    body = httpx.get(f"{world.aws_endpoint}/_sandbox/world", timeout=10, trust_env=False).json()
    return int(body["regions"][EAST]["query_ready_replicas"])


def run_recovery(kind: str, world: Any, env: dict[str, str], **params: Any) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", RUN, kind, str(world.topology_path), json.dumps(params)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    found = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    assert found, done.stdout[-3000:] + done.stderr[-3000:]
    model = FailoverReport if kind == "failover" else FailbackReport
    return model.model_validate_json(found[-1].removeprefix(MARKER))


def test_a_failover_cancels_a_running_drill_undoes_its_fault_and_fails_over(
    world: Any, real_server: str, settled: Any, tmp_path: Any
) -> None:
    env = prefect_env(
        real_server,
        tmp_path / "home",
        **world.env,
        CHALK_DR_HOME=str(PROJECT_DIR),
        CHALK_DR_TOPOLOGY_DIR=str(world.state_dir),
    )
    prefect_cli(env, "work-pool", "create", POOL, "--type", "process")
    prefect_cli(env, "--no-prompt", "deploy", "--name", "drill-manual")
    with process_worker(env, tmp_path / "worker.log"):
        run = run_deployment(
            "drill/drill-manual",
            parameters={
                "topology": world.topology_path.name,  # a file in the worker's topology dir
                "require_approval": False,
                "hold_seconds": 120,
                "probe_interval_seconds": 0.5,
                "steady_state_wait_seconds": 120,
            },
            timeout=0,
        )
        try:
            poll(lambda: primary_replicas(world) == 0, timeout=180, what="the drill injected", every=0.5)
        except AssertionError:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(run.id).state
            raise AssertionError(
                f"drill run {state}: {(tmp_path / 'worker.log').read_text()[-4000:]}"
            ) from None
        holder = read_lock_record(world.topology.environment).holder
        assert holder is not None and holder.kind == "drill" and holder.flow_run_id == str(run.id)

        report = run_recovery("failover", world, env, from_region=EAST, mode="graceful")
        assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
        assert report.drill_cancelled is not None and str(run.id) in report.drill_cancelled
        assert any(c.startswith("drill ") and "cancelled" in c for c in report.changes), report.changes
        assert primary_replicas(world) == 2  # the drill's fault is undone (by its stop or the sweep)
        with get_client(sync_client=True) as client:
            ended = client.read_flow_run(run.id)
        assert ended.state_type in (StateType.CANCELLED, StateType.CRASHED), ended.state
        assert report.rto_s is not None
    settled(world)
    back = run_recovery("failback", world, env, to_region=EAST)
    assert back.outcome is PhaseStatus.COMPLETED, back.outcome_reason
