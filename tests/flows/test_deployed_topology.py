"""A run that came through the Prefect API names its topology as a file in the worker's
$CHALK_DR_TOPOLOGY_DIR: a mapping, or a path out of that directory, is refused before anything
runs (either could point the worker's credentials and secrets at any host). Executed the way a
process worker executes a run (`prefect flow-run execute`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL
from prefect.types.entrypoint import EntrypointType

from flows.sweep import sweep

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(300)]
REPO = Path(__file__).resolve().parents[2]


def run_through_the_api(topology: Any, topology_dir: Path | None) -> Any:
    deployment = sweep.to_deployment(
        name=f"sweep-{uuid.uuid4().hex[:8]}", entrypoint_type=EntrypointType.MODULE_PATH
    )
    run = run_deployment(deployment.apply(), parameters={"topology": topology}, timeout=0)
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PYTHONPATH": str(REPO),
    }
    env.pop("CHALK_DR_TOPOLOGY_DIR", None)
    if topology_dir is not None:
        env["CHALK_DR_TOPOLOGY_DIR"] = str(topology_dir)
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "execute", str(run.id)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state is not None, done.stderr
    return state, done.stdout + done.stderr


def test_a_deployed_run_reads_a_topology_file_from_the_workers_directory(world: Any, tmp_path: Path) -> None:
    shutil.copy(world.topology_path, tmp_path / "demo.yaml")
    state, output = run_through_the_api("demo.yaml", tmp_path)
    assert state.is_completed(), (state, output[-3000:])


@pytest.mark.parametrize(
    ("topology", "configured", "refusal"),
    [
        ({"environment": "x"}, True, "a deployed run takes its topology as the name of a file in"),
        ("../elsewhere.yaml", True, "not a file in the topology directory"),
        ("demo.yaml", False, "$CHALK_DR_TOPOLOGY_DIR is not set on this worker"),
    ],
)
def test_a_deployed_run_refuses_a_topology_from_anywhere_else(
    world: Any, tmp_path: Path, topology: Any, configured: bool, refusal: str
) -> None:
    directory = tmp_path / "topologies"
    directory.mkdir()
    shutil.copy(world.topology_path, directory / "demo.yaml")
    shutil.copy(world.topology_path, tmp_path / "elsewhere.yaml")
    state, output = run_through_the_api(topology, directory if configured else None)
    assert state.is_failed(), (state, output[-3000:])
    assert refusal in output, output[-3000:]
