"""`make demo`: a whole game day on a laptop — sandbox up, provision, a dual-region `chalk apply`
that proves parity, a drill, the report, sandbox down. Provision and drill run through the
`chalk-dr` terminal command's functions (chalkdr/cli.py), as `chalk-dr apply --yes` and
`chalk-dr drill --yes` would.

The Prefect server is started (or reused) with its own PREFECT_HOME and stays up afterwards
so the run, its artifacts and events can be inspected in the UI; `make stop` stops it. The
flows are reached exactly as a user would reach real AWS: through the env file the sandbox
writes (AWS_ENDPOINT_URL, secrets by reference) and the topology file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sandbox.__main__ import down
from sandbox.__main__ import up
from sandbox.prefect_server import PrefectServer
from sandbox.prefect_server import api_healthy
from sandbox.prefect_server import stop_pid


def ensure_prefect_server(home: Path, preferred_port: int = 0, timeout_s: float = 120) -> str:
    """Reuse the demo's Prefect server if it answers, else start one (on `preferred_port` when it
    is free, else on a port the OS picks) and wait for /api/health."""
    url_file = home / "api_url"
    if url_file.exists() and api_healthy(url_file.read_text().strip()):
        return url_file.read_text().strip()
    print("starting the Prefect server ...", flush=True)
    return PrefectServer.start(home, port=preferred_port, timeout_s=timeout_s).api_url


def stop_prefect_server(home: Path) -> None:
    pid_file = home / "server.pid"
    if not pid_file.exists():
        print("Prefect server not running")
        return
    stop_pid(int(pid_file.read_text()))
    pid_file.unlink(missing_ok=True)
    (home / "api_url").unlink(missing_ok=True)
    print("Prefect server stopped")


def _load_env(path: Path) -> None:
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            os.environ[key] = value


def demo_project() -> tuple[Path, str]:
    """A Chalk project to apply (chalk.yaml and one feature file) and the sha naming it.

    A git repository with one commit when git is installed (so chalk-apply verifies the sha and
    could roll back to it); otherwise a plain directory and a sha of its content, which
    chalk-apply applies as a path while saying the sha cannot be verified. It lives outside the
    chalk-dr checkout, which is a git work tree of its own.
    """
    project = Path(tempfile.mkdtemp(prefix="chalk-dr-demo-project-"))
    (project / "chalk.yaml").write_text("project: chalk-dr-demo\n")
    (project / "features.py").write_text("# the demo's feature definitions\n")
    git = shutil.which("git")
    if git is None:
        digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(project.iterdir())))
        return project, digest.hexdigest()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "chalk-dr demo",
        "GIT_AUTHOR_EMAIL": "demo@chalk-dr.invalid",
        "GIT_COMMITTER_NAME": "chalk-dr demo",
        "GIT_COMMITTER_EMAIL": "demo@chalk-dr.invalid",
    }
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "demo features"]):
        subprocess.run([git, *args], cwd=project, env=env, check=True, capture_output=True)
    head = subprocess.run([git, "rev-parse", "HEAD"], cwd=project, check=True, capture_output=True, text=True)
    return project, head.stdout.strip()


def _await_replication_settled(topology_path: str, timeout_s: float = 300.0) -> None:
    """Wait (bounded) until every replication lag CloudWatch reports is within the RPO SLO, as an
    operator would after provisioning: the new MSK replicator copies its backlog from EARLIEST,
    and its ReplicationLatency stays above the SLO until that copy leaves the newest period. A
    drill started earlier measures the catch-up (a true result, but not the demo's point)."""
    from chalkdr.clients import AwsClients
    from chalkdr.topology import load_topology
    from tasks.probes import read_replication_lags

    t = load_topology(Path(topology_path))
    clients = AwsClients.for_topology(t)
    limit_ms = t.slo.rpo_seconds * 1000
    deadline = time.monotonic() + timeout_s
    while True:
        lags = read_replication_lags(t, clients)
        high = {
            k: v.value
            for k, v in lags.items()
            if v.unit == "ms" and v.value is not None and v.value > limit_ms
        }
        if not high or time.monotonic() > deadline:
            return
        print(f"waiting for replication to settle under the RPO SLO ({limit_ms:g} ms): {high}", flush=True)
        time.sleep(5)


def run(state_dir: Path, home: Path, port: int) -> int:
    started = time.monotonic()
    api_url = ensure_prefect_server(home, port)
    os.environ.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(home))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if up(state_dir, time_scale=10.0, routing="failover", timeout_s=60) != 0:
        return 1
    try:
        _load_env(state_dir / "sandbox.env")
        topology = state_dir / "topology.yaml"
        # Provision and drill go through the terminal command's own functions (`chalk-dr apply
        # --yes`, `chalk-dr drill --yes`): the same progress, report and exit codes.
        from chalkdr.cli import ExitCode
        from chalkdr.cli import run_apply
        from chalkdr.cli import run_drill
        from chalkdr.report import DrillReport
        from flows.chalk_apply import chalk_apply

        if run_apply(topology, yes=True).code is not ExitCode.OK:
            print("provision failed", file=sys.stderr)
            return 1
        project, sha = demo_project()
        applied = chalk_apply(topology=str(topology), sha=sha, path=str(project), return_state=True)
        if not applied.is_completed():
            print(f"chalk apply failed: {applied.message}", file=sys.stderr)
            return 1
        _await_replication_settled(str(topology))
        t0 = time.monotonic()
        # Right after provisioning, the new MSK replicator is still copying its backlog (from
        # EARLIEST): pre-flight waits until its replication latency is within the guard again.
        outcome = run_drill(topology, yes=True, hold_seconds=3.0, steady_state_wait_seconds=300)
        report = outcome.result
        if not isinstance(report, DrillReport):
            print(f"drill failed before producing a report: {report}", file=sys.stderr)
            return 1
        ui = api_url.removesuffix("/api")
        print(f"Drill wall time {time.monotonic() - t0:.1f} s; demo total {time.monotonic() - started:.1f} s")
        print(f"Prefect UI: {ui}/runs/flow-run/{outcome.flow_run_id}")
        print(f"Artifacts:  {ui}/artifacts (key drill-{report.environment})")
        print("The Prefect server stays up for inspection; `make stop` stops it.")
        return 0 if outcome.code is ExitCode.OK else 2
    finally:
        down(state_dir, timeout_s=20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.demo")
    parser.add_argument("command", nargs="?", choices=["run", "stop"], default="run")
    parser.add_argument("--state-dir", type=Path, default=Path(".sandbox"))
    parser.add_argument("--prefect-home", type=Path, default=Path(".prefect-demo"))
    parser.add_argument("--port", type=int, default=4200)
    args = parser.parse_args(argv)
    if args.command == "stop":
        down(args.state_dir, timeout_s=20)
        stop_prefect_server(args.prefect_home.resolve())
        return 0
    return run(args.state_dir.resolve(), args.prefect_home.resolve(), args.port)


if __name__ == "__main__":
    raise SystemExit(main())
