"""Set up a Prefect server for chalk-dr in one idempotent command.

    python -m chalkdr.setup [--topology-dir DIR] [--deploy [--prefect-file FILE]] [--skip-work-pool]

Against the configured PREFECT_API_URL (never an ephemeral server: setup refuses to run without
one), in this order:

1. the process work pool `chalk-dr` that prefect.yaml's deployments run on, with Prefect's default
   process job template (what `prefect work-pool create chalk-dr --type process` makes);
2. for each environment of every topology file in the topology directory (--topology-dir, else
   $CHALK_DR_TOPOLOGY_DIR), the global concurrency limits the flows acquire with strict=True, one
   slot each: `drill-<env>`, the environment's runbook lock (drills, sweeps, failover, failback,
   provision applies), and `chalk-apply-<env>`. Prefect never creates a limit on use, and strict
   refuses a run whose limit is missing. They are made by the flows' own functions
   (tasks.locks.ensure_lock, tasks.chalk.ensure_apply_lock), so names and checks stay theirs; a
   limit that exists but would not exclude (inactive, or more than one slot) is reported with
   the command that fixes it and left alone: setup never loosens or frees a lock by hand;
3. with --deploy, `prefect --no-prompt deploy --all` of prefect.yaml from the project directory
   (--project-dir, else $CHALK_DR_HOME, else this checkout);
4. the automations of deployments/automations.py (called, not copied): the zombie-run one, and the
   sweep after a failed drill, failover or failback, which needs the deployment `sweep/sweep-hourly`
   to exist: without it, setup says to deploy and exits 1.

It prints one line per object, `created`, `found` (already there as needed) or `updated`, then
a summary; a second run prints only `found`. Exit status 0 when everything is in place, 1 when
something is missing or misconfigured (each named), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from types import ModuleType
from typing import cast

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL
from prefect.workers.process import ProcessWorker

from chalkdr.errors import ChalkDrError
from chalkdr.errors import TopologyError
from chalkdr.topology import load_topology

__all__ = ["WORK_POOL", "Setup", "main", "run_setup"]

WORK_POOL = "chalk-dr"  # prefect.yaml: every deployment's work_pool.name
SWEEP_DEPLOYMENT = "sweep/sweep-hourly"  # what deployments/automations.py runs after a failure
TOPOLOGY_DIR_ENV = "CHALK_DR_TOPOLOGY_DIR"
HOME_ENV = "CHALK_DR_HOME"
_CHECKOUT = Path(__file__).resolve().parents[1]


@dataclass
class Setup:
    """What one run did, line by line, and what it could not do."""

    lines: list[tuple[str, str]] = field(default_factory=list)  # (object, outcome)
    problems: list[str] = field(default_factory=list)

    def record(self, what: str, outcome: str) -> None:
        self.lines.append((what, outcome))
        print(f"{what}: {outcome}", flush=True)

    def problem(self, what: str, reason: str) -> None:
        self.problems.append(f"{what}: {reason}")
        print(f"{what}: PROBLEM: {reason}", flush=True)

    def count(self, outcome: str) -> int:
        return sum(1 for _, o in self.lines if o.split(" ", 1)[0] == outcome)

    def summary(self) -> str:
        return (
            f"setup: {self.count('created')} created, {self.count('updated')} updated, "
            f"{self.count('found')} found, {len(self.problems)} problem(s)"
        )


def _runbook_module(name: str) -> ModuleType:
    """A module of the flows' side (tasks/, flows/), imported at run time.

    chalkdr is the typed domain (mypy strict covers it alone); importing the runbook side here by
    name keeps its modules out of that check while still calling their code, not a copy of it.
    """
    return importlib.import_module(name)


def _automations(project_dir: Path) -> ModuleType:
    """deployments/automations.py of the project (deployments/ is a directory, not a package)."""
    path = project_dir / "deployments" / "automations.py"
    spec = importlib.util.spec_from_file_location("chalkdr_setup_automations", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FileNotFoundError(f"{path} not found: give --project-dir (or set ${HOME_ENV})")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_work_pool(setup: Setup, name: str = WORK_POOL) -> None:
    """The process work pool, created with Prefect's default process job template when missing."""
    what = f"work pool {name}"
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    description="chalk-dr flow runs as local processes (prefect.yaml)",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
            setup.record(what, "created")
            return
    if pool.type != "process":
        setup.problem(
            what, f"exists with type {pool.type!r}, not 'process': prefect.yaml's deployments need it"
        )
    elif pool.is_paused:
        setup.record(what, f"found (paused: no run starts until `prefect work-pool resume {name}`)")
    else:
        setup.record(what, "found")


def topology_environments(setup: Setup, directory: Path) -> list[str]:
    """The environments of every topology file (*.yaml, *.yml) in `directory`, each once."""
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        setup.problem(f"topology directory {directory}", "holds no .yaml or .yml file")
    environments: list[str] = []
    for path in files:
        try:
            environment = load_topology(path).environment
        except TopologyError as exc:
            setup.problem(f"topology {path.name}", str(exc))
            continue
        if environment not in environments:
            environments.append(environment)
    return environments


def _limit_names() -> set[str]:
    """Every global concurrency limit on the server (paged)."""
    names: set[str] = set()
    page = 100
    with get_client(sync_client=True) as client:
        while True:
            batch = client.read_global_concurrency_limits(limit=page, offset=len(names))
            names.update(limit.name for limit in batch)
            if len(batch) < page:
                return names


def ensure_locks(setup: Setup, environments: Sequence[str]) -> None:
    """Each environment's runbook lock and apply lock, through the flows' own ensure functions."""
    runbook = _runbook_module("flows.runbook")
    locks = _runbook_module("tasks.locks")
    chalk = _runbook_module("tasks.chalk")
    lock_name = cast(Callable[[str], str], runbook.environment_lock_name)
    ensure_lock = cast(Callable[[str], str], locks.ensure_lock)
    ensure_apply_lock = cast(Callable[[str], str], chalk.ensure_apply_lock)
    existing = _limit_names()
    for environment in environments:
        for kind, ensure, arg in (
            ("runbook lock", ensure_lock, lock_name(environment)),
            ("apply lock", ensure_apply_lock, environment),
        ):
            try:
                name = ensure(arg)
            except ChalkDrError as exc:  # LockMisconfigured: exists, but would not exclude
                setup.problem(f"concurrency limit ({kind} of {environment})", str(exc))
                continue
            setup.record(f"concurrency limit {name}", "found" if name in existing else "created")


def deploy(setup: Setup, project_dir: Path, prefect_file: Path) -> None:
    """`prefect --no-prompt deploy --all` of `prefect_file`, run from the project directory."""
    env = dict(os.environ, PREFECT_API_URL=str(PREFECT_API_URL.value()))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            str(prefect_file),
        ],
        cwd=project_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    what = f"deployments of {prefect_file.name}"
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        setup.problem(what, f"prefect deploy failed ({done.returncode}):\n{tail}")
        return
    # `prefect deploy` upserts every deployment (and reschedules its runs): always an update.
    setup.record(what, "updated (prefect --no-prompt deploy --all)")


def ensure_automations(setup: Setup, project_dir: Path) -> None:
    """deployments/automations.py's automations, once the sweep deployment they run exists."""
    automations = _automations(project_dir)
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(SWEEP_DEPLOYMENT)
        except ObjectNotFound:
            setup.problem(
                "automations",
                f"not created: the deployment {SWEEP_DEPLOYMENT} they run does not exist yet; deploy "
                "(setup --deploy, or prefect --no-prompt deploy --all) and run setup again",
            )
            return
    ensure = cast(Callable[..., dict[str, str]], automations.ensure_automations)
    for name, outcome in ensure(sweep_deployment=SWEEP_DEPLOYMENT).items():
        # deployments/automations.py says created / unchanged / updated (n duplicate(s) deleted)
        setup.record(f"automation {name!r}", outcome.replace("unchanged", "found", 1))


def run_setup(
    topology_dir: Path,
    *,
    project_dir: Path,
    deploy_file: Path | None = None,
    work_pool: bool = True,
) -> Setup:
    """Everything in order; each step runs even when an earlier one reported a problem."""
    setup = Setup()
    print(f"setup against {PREFECT_API_URL.value()}", flush=True)
    if work_pool:
        ensure_work_pool(setup)
    ensure_locks(setup, topology_environments(setup, topology_dir))
    if deploy_file is not None:
        deploy(setup, project_dir, deploy_file)
    ensure_automations(setup, project_dir)
    print(setup.summary(), flush=True)
    return setup


def _default_project_dir() -> Path:
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home)
    return _CHECKOUT if (_CHECKOUT / "prefect.yaml").is_file() else Path.cwd()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chalkdr.setup",
        description="Idempotently set up a Prefect server for chalk-dr (work pool, locks, automations).",
    )
    parser.add_argument(
        "--topology-dir",
        type=Path,
        default=os.environ.get(TOPOLOGY_DIR_ENV) or None,
        help=f"the directory of topology files the workers read (default ${TOPOLOGY_DIR_ENV})",
    )
    parser.add_argument(
        "--project-dir",
        type=Path,
        default=None,
        help=f"the chalk-dr checkout (default ${HOME_ENV}, else this one): prefect.yaml, deployments/",
    )
    parser.add_argument("--deploy", action="store_true", help="run `prefect --no-prompt deploy --all` too")
    parser.add_argument(
        "--prefect-file",
        type=Path,
        default=None,
        help="with --deploy: the deployments file (default prefect.yaml of the project directory)",
    )
    parser.add_argument(
        "--skip-work-pool",
        action="store_true",
        help="leave work pools alone (e.g. the Kubernetes pool, created with its own job template)",
    )
    args = parser.parse_args(argv)
    if not PREFECT_API_URL.value():
        parser.error("PREFECT_API_URL is not set: point it at the Prefect server to set up")
    if args.topology_dir is None:
        parser.error(f"give --topology-dir or set ${TOPOLOGY_DIR_ENV}")
    topology_dir = Path(args.topology_dir)
    if not topology_dir.is_dir():
        parser.error(f"the topology directory {topology_dir} does not exist")
    project_dir = (args.project_dir or _default_project_dir()).resolve()
    deploy_file = None
    if args.deploy:
        deploy_file = (args.prefect_file or project_dir / "prefect.yaml").resolve()
    elif args.prefect_file is not None:
        parser.error("--prefect-file goes with --deploy")
    setup = run_setup(
        topology_dir, project_dir=project_dir, deploy_file=deploy_file, work_pool=not args.skip_work_pool
    )
    return 1 if setup.problems else 0


if __name__ == "__main__":
    sys.exit(main())
