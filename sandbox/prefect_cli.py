"""Prefect's own commands and a process worker, each in a process of its own, for the tests and
benchmarks that run deployments on a local server (sandbox.prefect_server.PrefectServer).

Each flow run goes to a process of its own, as a worker runs it: Prefect's client-side services
are singletons of the process, bound to the first API they talk to (the concurrency-lease service
is keyed by limit names alone, and every sandbox world's lock is `drill-demo`), so a run in a test
process against another server would send the test harness's lease calls there, or the reverse.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sandbox.prefect_server import stop_pid

__all__ = ["POOL", "PROJECT_DIR", "prefect_cli", "prefect_env", "process_worker", "provision_world"]

PROJECT_DIR = Path(__file__).resolve().parents[1]  # where prefect.yaml is
POOL = "chalk-dr"  # prefect.yaml's work pool

_PROVISION = (
    "import sys; from flows.provision import provision;"
    "state = provision(topology=sys.argv[1], mode='apply', require_approval=False, return_state=True);"
    "print(state.message); sys.exit(0 if state.is_completed() else 1)"
)


def prefect_env(api_url: str, home: Path, **extra: str) -> dict[str, str]:
    """This process's environment with no Prefect setting of its own but these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.update(extra)
    return env


def prefect_cli(env: dict[str, str], *args: str, timeout_s: float = 180) -> str:
    """`prefect <args>` from the project directory; its stdout, or AssertionError with its output."""
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def provision_world(world: Any, env: dict[str, str]) -> None:
    """Apply a sandbox world's topology through the server `env` names; it must end converged."""
    done = subprocess.run(
        [sys.executable, "-c", _PROVISION, str(world.topology_path)],
        cwd=PROJECT_DIR,
        env={**env, **world.env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@contextmanager
def process_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`prefect worker start --pool chalk-dr` in a process group of its own, polling every second;
    stopped at the end (SIGTERM, SIGKILL after a deadline) whatever happened."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"],
            cwd=PROJECT_DIR,
            env={**env, "PREFECT_WORKER_QUERY_SECONDS": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_pid(proc.pid, timeout_s=20)
        proc.wait(10)
