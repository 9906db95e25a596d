"""The whole deployed path on a Prefect server backed by a real PostgreSQL, as production runs it:
the server's migrations on an empty database, the `chalk-dr` process work pool, `drill-manual`
deployed from prefect.yaml with the README's step-by-step command (`prefect --no-prompt deploy`,
for that one deployment: the others' schedules would start runs on the worker), a worker reading its
topology from $CHALK_DR_TOPOLOGY_DIR, and a drill run through the deployment whose final state,
persisted report, artifacts and events are read back from that server — and found in
PostgreSQL's own tables.

PostgreSQL listens on a Unix socket only (tests/integration/conftest.py); the Prefect server
reaches it through SQLAlchemy's asyncpg dialect (`postgresql+asyncpg://user@/db?host=<dir>`).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter
from prefect.client.schemas.filters import FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.events.filters import EventFilter
from prefect.events.filters import EventNameFilter
from prefect.events.filters import EventRelatedFilter
from prefect.settings import PREFECT_API_URL
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
from prefect.settings import temporary_settings

from chalkdr.report import DrillReport
from chalkdr.report import PhaseStatus
from sandbox.harness import poll
from sandbox.prefect_cli import POOL
from sandbox.prefect_cli import prefect_cli
from sandbox.prefect_cli import prefect_env
from sandbox.prefect_cli import process_worker
from sandbox.prefect_cli import provision_world
from sandbox.prefect_server import PrefectServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(600)]
REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = "drill/drill-manual"
# A fast drill (tests/flows/conftest.py's defaults): a world provisioned moments ago may need a
# while for its replication lags to settle under the guards.
DRILL_PARAMETERS = {
    "require_approval": False,
    "hold_seconds": 1.0,
    "probe_interval_seconds": 0.5,
    "steady_state_wait_seconds": 120.0,
}


def final_flow_run(flow_run_id: UUID, worker: subprocess.Popen[bytes], log: Path, timeout: float) -> Any:
    def read() -> Any:
        assert worker.poll() is None, f"the worker exited ({worker.returncode}): {log.read_text()[-3000:]}"
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
        return run if run.state is not None and run.state.is_final() else None

    return poll(read, timeout=timeout, what=f"flow run {flow_run_id} final", every=1.0)


def drill_events(flow_run_id: UUID, expected: set[str]) -> set[str]:
    """The names of the chalkdr.drill.* events related to the run, once `expected` are all in
    (events are written asynchronously)."""

    def read() -> set[str]:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(prefix=["chalkdr.drill."]),
                    related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
                ),
                limit=50,
            )
        names = {e.event for e in page.events}
        return names if expected <= names else set()

    return poll(read, timeout=60, what=f"events {sorted(expected)}", every=1.0)


def test_a_deployed_drill_runs_on_a_prefect_server_backed_by_postgresql(
    postgres: Any, own_world_factory: Any, tmp_path: Path
) -> None:
    world = own_world_factory()
    server = PrefectServer.start(tmp_path / "server-home", ui=False, database_url=postgres.sqlalchemy_url())
    results = tmp_path / "results"  # the worker's runs persist results here; this process reads them
    try:
        # Prefect migrated the empty database to its schema at startup.
        tables = set(postgres.psql("select tablename from pg_tables where schemaname = 'public'"))
        assert {"alembic_version", "flow_run", "deployment", "artifact", "events"} <= tables, tables
        with temporary_settings(
            updates={PREFECT_API_URL: server.api_url, PREFECT_LOCAL_STORAGE_PATH: results}
        ):
            cli_env = prefect_env(server.api_url, tmp_path / "cli-home")
            provision_world(world, cli_env)
            prefect_cli(cli_env, "work-pool", "create", POOL, "--type", "process")
            # The README's command, for one deployment (--all, or `make setup`, also deploys the
            # scheduled ones, whose runs could start on this worker during the test).
            prefect_cli(cli_env, "--no-prompt", "deploy", "--name", DEPLOYMENT.split("/")[1])
            worker_env = prefect_env(
                server.api_url,
                tmp_path / "worker-home",
                PREFECT_LOCAL_STORAGE_PATH=str(results),
            )
            worker_env.update(world.env, CHALK_DR_HOME=str(REPO), CHALK_DR_TOPOLOGY_DIR=str(world.state_dir))
            log = tmp_path / "worker.log"
            with process_worker(worker_env, log) as worker:
                created = run_deployment(
                    DEPLOYMENT,
                    parameters={"topology": world.topology_path.name, **DRILL_PARAMETERS},
                    timeout=0,
                )
                run = final_flow_run(created.id, worker, log, timeout=420)
            assert run.state.is_completed(), (run.state, log.read_text()[-5000:])

            report = run.state.result(raise_on_failure=False)
            assert isinstance(report, DrillReport), report
            assert report.outcome is PhaseStatus.COMPLETED, report.outcome_reason
            assert report.environment == world.topology.environment
            assert report.phases["approval"].status is PhaseStatus.SKIPPED
            assert report.failover is not None and report.rto_s is not None and report.rto_s > 0
            assert run.state.message.startswith(f"drill {report.drill_id}: completed"), run.state.message

            with get_client(sync_client=True) as client:
                artifacts = client.read_artifacts(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
                )
            by_key = {a.key: a for a in artifacts if a.key}
            env = report.environment
            assert {f"drill-{env}", f"drill-{env}-timeline"} <= set(by_key), sorted(by_key)
            markdown = str(by_key[f"drill-{env}"].data)
            assert report.drill_id in markdown and "RTO" in markdown, markdown[:2000]
            timeline = str(by_key[f"drill-{env}-timeline"].data)
            assert "fault injected" in timeline, timeline[:2000]

            ran = {name for name, rec in report.phases.items() if rec.status is not PhaseStatus.PENDING}
            expected = {"chalkdr.drill.finished", *(f"chalkdr.drill.phase.{name}" for name in ran)}
            assert {"preflight", "inject", "observe", "failback", "postflight"} <= ran, ran
            assert drill_events(run.id, expected) >= expected

        # ...and all of it lives in PostgreSQL's tables, not in some SQLite file.
        assert postgres.psql(f"select state_type from flow_run where id = '{run.id}'") == ["COMPLETED"]
        keys = set(postgres.psql(f"select key from artifact where flow_run_id = '{run.id}'"))
        assert {f"drill-{env}", f"drill-{env}-timeline"} <= keys, keys
        finished = postgres.psql(
            "select count(*) from events where event = 'chalkdr.drill.finished'"
            f" and resource_id = 'chalkdr.drill.{report.drill_id}'"
        )
        assert finished == ["1"], finished
        assert not list((tmp_path / "server-home").glob("*.db")), "the server wrote a SQLite database"
    finally:
        server.stop()
