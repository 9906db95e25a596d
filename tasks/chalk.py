"""Tasks for Chalk: `chalk apply` per region, the regional query API, and the code checkout to apply.

The query API is how a run proves what a region serves (`meta.deployment_id`): the topology's
probe query to the region's own hostname, with a token from the region's API server.

The CLI runs as an argument list (never a shell) with its target and credentials only in the
child's environment, under a real subprocess timeout (a Prefect task timeout cannot interrupt a
blocked call). Every byte of output is redacted before it reaches a log, a report or an
exception: the client secret and the OAuth token never leave this module. A credential goes
over plain http only to this machine (`check_credential_destinations`, and again where it is
sent).

The code to apply comes from a fresh clone of an allow-listed repository (the topology's
`deploy:` section) at a sha that must be reachable from the protected branch's tip; the clone
also says where that sha stands against the last good one (`ShaOrder`), so a late push is
skipped. git runs with an allow-listed environment and one transport (`chalkdr.deploy.git_env`).

Every child process (git, `chalk`) runs in its own process group, under its own timeout that
kills the whole group. Being its own group also means a signal to the flow's process does not
reach it: when a run is cancelled (Prefect's SIGTERM surfaces in the flow as a
TerminationSignal), interrupted, or dies of any other exception, the flow calls
`stop_children`, which kills every group that run started and refuses to start new ones.
A hard kill of the flow process (SIGKILL) runs no code at all: the child then lives until it
ends on its own (an apply is idempotent; the next run re-applies).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from prefect import get_run_logger
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.artifacts import create_table_artifact
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run as runtime_flow_run
from prefect.variables import Variable
from pydantic import BaseModel

from chalkdr.audit import AuditRecord
from chalkdr.deploy import ApplyReport
from chalkdr.deploy import ChalkQueryError
from chalkdr.deploy import DeploymentNotServed
from chalkdr.deploy import LastGood
from chalkdr.deploy import Outcome
from chalkdr.deploy import ParityCheck
from chalkdr.deploy import PushRefused
from chalkdr.deploy import ShaOrder
from chalkdr.deploy import chalk_apply_command
from chalkdr.deploy import chalk_cli_env
from chalkdr.deploy import classify_cli_failure
from chalkdr.deploy import git_env
from chalkdr.deploy import parse_deployment_id
from chalkdr.dns import Resolver
from chalkdr.errors import ChalkCliError
from chalkdr.errors import ChalkDrError
from chalkdr.errors import CredentialsError
from chalkdr.query import ChalkQueryClient
from chalkdr.secrets import cleartext_refusal
from chalkdr.secrets import redact
from chalkdr.secrets import redact_url
from chalkdr.secrets import resolve_secret
from chalkdr.topology import ChalkEnvConfig
from chalkdr.topology import DeployConfig
from chalkdr.topology import RegionConfig
from chalkdr.topology import Topology
from tasks.audit import emit_audit_event
from tasks.locks import ensure_lock
from tasks.retry import retry_options

__all__ = [
    "Checkout",
    "CheckoutFailed",
    "CliRun",
    "ProcessResult",
    "ProcessesStopped",
    "Verification",
    "apply_region",
    "chalk_secret",
    "check_credential_destinations",
    "checkout_code",
    "ensure_apply_lock",
    "last_good_variable",
    "load_prefect_secret",
    "publish_apply_report",
    "publish_drift",
    "read_last_good",
    "read_served_deployment",
    "record_last_good",
    "run_process",
    "served_client",
    "served_deployment",
    "stop_children",
    "verify_served_deployment",
]

OUTPUT_TAIL_LINES = 40
HTTP_TIMEOUT_S = 10.0
GIT_TIMEOUT_S = 300.0
BRANCH_HEADER = "X-Chalk-Branch-Id"


class CheckoutFailed(ChalkDrError):
    """The code for a sha could not be checked out (or a local path is not at that sha)."""


class ProcessesStopped(ChalkDrError):
    """The flow run stopped its child processes (cancelled, interrupted): no new one may start."""


class CliRun(BaseModel):
    """One successful `chalk apply` in one region (the attempt that succeeded)."""

    region: str
    deployment_id: str
    exit_code: int
    started_at: float
    finished_at: float
    output_tail: str  # redacted


class Verification(BaseModel):
    region: str
    deployment_id: str
    verified_at: float
    polls: int


class Checkout(BaseModel):
    """Where the code for a sha is, and where it can be cloned from again (for a rollback)."""

    sha: str
    code_dir: str
    source: str  # for reports: redacted URL or path
    clone_source: str | None  # a repo URL or local git repo path that can give this sha again
    dirty: bool = False
    order: ShaOrder | None = None  # against the deployed sha (clones only: a local path is not ordered)


def load_prefect_secret(name: str) -> str:
    """The Prefect Secret block lookup injected into chalkdr.secrets (which knows no Prefect)."""
    value = cast("Secret[str]", Secret.load(name)).get()
    return str(value)


def chalk_secret(chalk: ChalkEnvConfig) -> str:
    return resolve_secret(chalk.client_secret, prefect_secret=load_prefect_secret)


def _tail(text: str, secrets: Sequence[str]) -> str:
    return "\n".join(redact(text, secrets).rstrip().splitlines()[-OUTPUT_TAIL_LINES:])


@dataclass(frozen=True)
class ProcessResult:
    """How a child process ended: exit code (None: killed by its timeout), its output, and whether
    it was killed because its flow run stopped its children."""

    exit_code: int | None
    stdout: str
    stderr: str
    stopped: bool = False


def _kill_group(proc: subprocess.Popen[str]) -> None:
    # The child's pid is its group's id (start_new_session); a group that is gone has exited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class _Children:
    """The live child processes of each flow run in this process, so a stopping run can kill them.

    Keyed by flow run id (a worker process runs one flow run; an in-process caller may run many,
    one after another or side by side), with "" for calls outside any run.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[str, set[subprocess.Popen[str]]] = {}
        self._stopped: set[str] = set()

    def start(
        self, owner: str, args: Sequence[str], *, cwd: str | None, env: dict[str, str]
    ) -> subprocess.Popen[str]:
        with self._lock:  # started under the lock: a concurrent stop() cannot miss it
            if owner in self._stopped:
                raise ProcessesStopped(f"not starting {args[0]}: this flow run stopped its child processes")
            proc = subprocess.Popen(  # an argument list, never a shell
                list(args),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                start_new_session=True,  # its own process group: a kill reaches its children too
            )
            self._live.setdefault(owner, set()).add(proc)
            return proc

    def finish(self, owner: str, proc: subprocess.Popen[str]) -> bool:
        """Forget `proc`; whether its run stopped its children meanwhile."""
        with self._lock:
            self._live.get(owner, set()).discard(proc)
            return owner in self._stopped

    def stop(self, owner: str) -> int:
        with self._lock:
            self._stopped.add(owner)
            procs = list(self._live.get(owner, ()))
        for proc in procs:
            _kill_group(proc)
        return len(procs)


_CHILDREN = _Children()


def _run_owner() -> str:
    return str(runtime_flow_run.id or "")


def stop_children(flow_run_id: str | None = None) -> int:
    """Kill the process group of every child the flow run started (default: the current run) and
    refuse new ones for it; how many were running. The flow calls this when it is cancelled,
    interrupted or fails, so `chalk` and git never outlive it."""
    return _CHILDREN.stop(str(flow_run_id) if flow_run_id else _run_owner())


def run_process(
    args: Sequence[str], *, cwd: str | None, env: dict[str, str], timeout_s: float
) -> ProcessResult:
    """Run a child without a shell, in its own process group, and wait for it.

    At the deadline the whole group is killed (exit code None). Whatever interrupts the wait
    (KeyboardInterrupt, a TerminationSignal, any exception) kills the group before it
    propagates, and the group is killed after a normal exit too, so nothing the child left
    running outlives the call.
    """
    owner = _run_owner()
    proc = _CHILDREN.start(owner, args, cwd=cwd, env=env)
    exit_code: int | None
    try:
        try:
            out, err = proc.communicate(timeout=timeout_s)
            exit_code = proc.returncode
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            exit_code = None
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        _kill_group(proc)  # stragglers in the group (a daemon the child left behind)
    finally:
        stopped = _CHILDREN.finish(owner, proc)
    return ProcessResult(exit_code, out, err, stopped=stopped)


def _system_addresses(host: str) -> list[str]:
    """What the operating system resolves `host` to (how the `chalk` CLI finds its API server)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


def _refuse_cleartext(url: str, addresses: Sequence[str] | None, *, what: str) -> None:
    if urlsplit(url).scheme == "https":
        return
    host = urlsplit(url).hostname or ""
    found = list(addresses) if addresses is not None else _system_addresses(host)
    refusal = cleartext_refusal(url, found)
    if refusal:
        raise CredentialsError(f"{what}: {refusal}")


def check_credential_destinations(topology: Topology) -> None:
    """Every URL this run sends the client secret or a token to is https, or plain http to this
    machine: each region's query URL and API server (through the topology's resolvers, as the
    queries resolve them) and the API server the CLI is given (through the operating system's,
    as the CLI resolves it). CredentialsError naming every URL refused."""
    resolver = Resolver(topology.dns.nameservers)
    problems: list[str] = []
    for region in topology.regions:
        checks = [
            (region.url, f"{region.aws_region} query URL", True),
            (region.metadata_url(topology.chalk), f"{region.aws_region} API server", True),
            (region.metadata_url(topology.chalk), f"{region.aws_region} API server (chalk CLI)", False),
        ]
        for url, what, ours in checks:
            host = urlsplit(url).hostname or ""
            addresses = resolver.resolve(host).addresses if ours and urlsplit(url).scheme == "http" else None
            try:
                _refuse_cleartext(url, addresses, what=what)
            except CredentialsError as exc:
                problems.append(str(exc))
    if problems:
        raise CredentialsError("; ".join(dict.fromkeys(problems)))


@task(task_run_name="apply-{region.aws_region}", cache_policy=NO_CACHE, **retry_options())
def apply_region(
    region: RegionConfig,
    chalk: ChalkEnvConfig,
    *,
    sha: str,
    environment: str,
    code_dir: str,
    chalk_bin: str,
    no_promote: bool = False,
    branch: str | None = None,
    timeout_s: float = 900.0,
    rollback: bool = False,
) -> CliRun:
    """`chalk apply --force --await --no-spinners` against one region; retried only when transient.

    Re-running an apply of the same code is safe (it converges on the same definitions), which
    is what makes the transient retries acceptable.
    """
    logger = get_run_logger()
    name = region.aws_region
    secret = chalk_secret(chalk)
    api_server = region.metadata_url(chalk)
    _refuse_cleartext(api_server, None, what=f"{name}: chalk apply")  # resolved as the CLI will
    env = chalk_cli_env(
        os.environ,
        environment_id=chalk.environment_id,
        api_server=api_server,
        client_id=chalk.client_id,
        client_secret=secret,
    )
    args = chalk_apply_command(chalk_bin, no_promote=no_promote, branch=branch)
    logger.info(
        "%s: running %s in %s (environment %s via %s)",
        name,
        " ".join(args),
        code_dir,
        chalk.environment_id,
        api_server,
    )
    started = time.time()
    try:
        done = run_process(args, cwd=code_dir, env=env, timeout_s=timeout_s)
    except FileNotFoundError:
        raise ChalkCliError(
            f"{name}: chalk binary {chalk_bin!r} not found", region=name, transient=False, exit_code=127
        ) from None
    except PermissionError:
        raise ChalkCliError(
            f"{name}: chalk binary {chalk_bin!r} is not executable",
            region=name,
            transient=False,
            exit_code=126,
        ) from None
    finished = time.time()
    exit_code, stdout = done.exit_code, done.stdout
    output = f"{done.stderr}\n{stdout}".strip()
    tail = _tail(output, [secret])
    if done.stopped:
        logger.warning("%s: chalk apply stopped: the flow run was cancelled or interrupted", name)
        raise ChalkCliError(
            f"{name}: chalk apply stopped (its process group was killed): the flow run was cancelled",
            region=name,
            transient=False,
            exit_code=exit_code,
        )
    if exit_code != 0:
        failure = classify_cli_failure(exit_code, redact(output, [secret]))
        what = f"timed out after {timeout_s:.0f} s" if exit_code is None else f"exited {exit_code}"
        kind = "transient" if failure.transient else "permanent"
        logger.warning("%s: chalk apply %s (%s: %s); output:\n%s", name, what, kind, failure.reason, tail)
        last = tail.splitlines()[-1] if tail else ""
        raise ChalkCliError(
            f"{name}: chalk apply {what} ({kind}: {failure.reason}): {last}",
            region=name,
            transient=failure.transient,
            exit_code=exit_code,
        )
    deployment_id = parse_deployment_id(stdout)
    if deployment_id is None:
        raise ChalkCliError(
            f"{name}: chalk apply succeeded but its --json output named no deployment_id",
            region=name,
            transient=False,
            exit_code=0,
        )
    logger.info("%s: deployment %s created in %.1f s", name, deployment_id, finished - started)
    emit_audit_event(
        AuditRecord(
            system="deploy",
            action="applied",
            resource=f"chalk.environment.{chalk.environment_id}.{region.resource_group}",
            region=name,
            api_call="chalk:apply",
            detail={
                "environment": environment,
                "resource_group": region.resource_group,
                "sha": sha,
                "deployment_id": deployment_id,
                "promoted": not no_promote,
                "branch": branch,
                "rollback": rollback,
                "duration_s": round(finished - started, 3),
            },
        )
    )
    return CliRun(
        region=name,
        deployment_id=deployment_id,
        exit_code=0,
        started_at=started,
        finished_at=finished,
        output_tail=tail,
    )


def served_client(region: RegionConfig, topology: Topology, *, branch: str | None = None) -> ChalkQueryClient:
    """A Chalk client for the region's OWN hostname, tokens from the region's API server, names
    resolved through the topology's resolvers.

    The failover name is deliberately not used: it answers from whichever region is active,
    which would prove nothing about this region.
    """
    chalk = topology.chalk
    resolver = Resolver(topology.dns.nameservers)
    for url, what in ((region.url, "query URL"), (region.metadata_url(chalk), "API server")):
        host = urlsplit(url).hostname or ""
        addresses = resolver.resolve(host).addresses if urlsplit(url).scheme == "http" else ()
        _refuse_cleartext(url, addresses, what=f"{region.aws_region} {what}")
    return ChalkQueryClient(
        base_url=region.url,
        api_server=region.metadata_url(chalk),
        client_id=chalk.client_id,
        client_secret=chalk_secret(chalk),
        environment_id=chalk.environment_id,
        resolver=resolver,
        extra_headers={BRANCH_HEADER: branch} if branch else None,
        timeout_s=HTTP_TIMEOUT_S,
    )


def served_deployment(region: RegionConfig, topology: Topology, client: ChalkQueryClient) -> str | None:
    """One online query (the topology's probe query) to the region's own hostname; returns
    `meta.deployment_id`. A 5xx/429 or a connection failure is transient (the region may be
    coming back); any other refusal is permanent (credentials, environment, query)."""
    name = region.aws_region
    answer = client.query(topology.probe.inputs, topology.probe.outputs)
    if not answer.ok:
        status = answer.status_code
        transient = status is None or status >= 500 or status == 429
        what = "online query" if status is None else f"online query answered {status}"
        raise ChalkQueryError(
            f"{name}: {what}: {answer.error or 'no detail'}", region=name, transient=transient, status=status
        )
    return answer.deployment_id


def _poll_served(
    region: RegionConfig,
    topology: Topology,
    *,
    branch: str | None,
    deadline_s: float,
    poll_s: float,
    want: str | None,
) -> tuple[str | None, int, ChalkQueryError | None]:
    """Poll until the region serves `want` (or, with want=None, answers at all) or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    served: str | None = None
    last_error: ChalkQueryError | None = None
    polls = 0
    client = served_client(region, topology, branch=branch)
    try:
        while True:
            polls += 1
            try:
                served = served_deployment(region, topology, client)
                last_error = None
                if want is None or served == want:
                    return served, polls, None
            except ChalkQueryError as exc:
                if not exc.transient:
                    raise
                last_error = exc
            if time.monotonic() >= deadline:
                return served, polls, last_error
            time.sleep(poll_s)
    finally:
        client.close()


@task(task_run_name="read-served-{region.aws_region}", cache_policy=NO_CACHE)
def read_served_deployment(
    region: RegionConfig,
    topology: Topology,
    *,
    branch: str | None = None,
    deadline_s: float = 30.0,
    poll_s: float = 0.25,
) -> str | None:
    """Which deployment the region serves now; polls through transient errors until the deadline."""
    served, _, error = _poll_served(
        region, topology, branch=branch, deadline_s=deadline_s, poll_s=poll_s, want=None
    )
    if error is not None:
        raise error
    return served


@task(task_run_name="verify-{region.aws_region}", cache_policy=NO_CACHE)
def verify_served_deployment(
    region: RegionConfig,
    topology: Topology,
    deployment_id: str,
    *,
    branch: str | None = None,
    timeout_s: float = 120.0,
    poll_s: float = 0.25,
) -> Verification:
    """Poll the region's own URL until it serves `deployment_id`; DeploymentNotServed at the deadline."""
    logger = get_run_logger()
    start = time.monotonic()
    served, polls, error = _poll_served(
        region, topology, branch=branch, deadline_s=timeout_s, poll_s=poll_s, want=deployment_id
    )
    if served != deployment_id or error is not None:
        if error is not None:
            logger.warning("%s: last query error: %s", region.aws_region, error)
        raise DeploymentNotServed(
            region=region.aws_region, expected=deployment_id, served=served, waited_s=time.monotonic() - start
        )
    logger.info("%s: serves %s (after %d queries)", region.aws_region, deployment_id, polls)
    return Verification(
        region=region.aws_region, deployment_id=deployment_id, verified_at=time.time(), polls=polls
    )


def _git(
    args: Sequence[str], *, env: dict[str, str], cwd: str | None = None, timeout_s: float = GIT_TIMEOUT_S
) -> ProcessResult:
    try:
        done = run_process(["git", *args], cwd=cwd, env=env, timeout_s=timeout_s)
    except FileNotFoundError:
        raise CheckoutFailed("git is not installed on this worker") from None
    except ProcessesStopped as exc:
        raise CheckoutFailed(str(exc)) from None
    if done.stopped:
        raise CheckoutFailed(f"git {args[0]} stopped: the flow run was cancelled")
    if done.exit_code is None:
        raise CheckoutFailed(
            f"git {args[0]} timed out after {timeout_s:.0f} s (its process group was killed)"
        )
    return done


def _git_ok(
    args: Sequence[str], *, env: dict[str, str], cwd: str | None = None, timeout_s: float = GIT_TIMEOUT_S
) -> str:
    done = _git(args, env=env, cwd=cwd, timeout_s=timeout_s)
    if done.exit_code != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        message = redact_url(lines[-1] if lines else "no output")
        raise CheckoutFailed(f"git {args[0]} failed ({done.exit_code}): {message}")
    return done.stdout.strip()


def _is_ancestor(older: str, newer: str, *, env: dict[str, str], cwd: str, timeout_s: float) -> bool:
    """`git merge-base --is-ancestor`: 0 yes, 1 no, anything else is an error."""
    done = _git(["merge-base", "--is-ancestor", older, newer], env=env, cwd=cwd, timeout_s=timeout_s)
    if done.exit_code not in (0, 1):
        raise CheckoutFailed(f"git merge-base failed ({done.exit_code}): {done.stderr.strip()[-200:]}")
    return done.exit_code == 0


def _order(sha: str, deployed: str | None, *, env: dict[str, str], cwd: str, timeout_s: float) -> ShaOrder:
    if deployed is None:
        return ShaOrder.FIRST
    known = _git(["cat-file", "-e", f"{deployed}^{{commit}}"], env=env, cwd=cwd, timeout_s=timeout_s)
    if known.exit_code != 0:
        return ShaOrder.UNKNOWN
    full = _git_ok(["rev-parse", f"{deployed}^{{commit}}"], env=env, cwd=cwd, timeout_s=timeout_s)
    if full == sha:
        return ShaOrder.SAME
    if _is_ancestor(sha, full, env=env, cwd=cwd, timeout_s=timeout_s):
        return ShaOrder.OLDER
    if _is_ancestor(full, sha, env=env, cwd=cwd, timeout_s=timeout_s):
        return ShaOrder.NEWER
    return ShaOrder.DIVERGED


def _clone(
    sha: str,
    *,
    dest: str,
    repo_url: str,
    deploy: DeployConfig | None,
    deployed_sha: str | None,
    timeout_s: float,
) -> Checkout:
    """A clone of the protected branch of an allowed repository, checked out at `sha`."""
    logger = get_run_logger()
    if deploy is None:
        raise PushRefused("the topology has no deploy: section, so no repository may be cloned for it")
    repo = deploy.repository(repo_url)  # PushRefused unless allow-listed (and well formed)
    env = git_env(os.environ, transport=repo.transport)
    branch = deploy.branch
    # Only the protected branch's history is fetched: a sha that is not on it is not even here
    # (a local clone copies every object, so the ancestry check below is what decides).
    _git_ok(
        [
            "clone",
            "--quiet",
            "--no-checkout",
            "--single-branch",
            "--no-tags",
            "--branch",
            branch,
            "--",
            repo.url,
            dest,
        ],
        env=env,
        timeout_s=timeout_s,
    )
    found = _git(
        ["rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}"], env=env, cwd=dest, timeout_s=timeout_s
    )
    if found.exit_code != 0:
        raise PushRefused(
            f"commit {sha} is not on {branch} of {repo.url}: only the protected branch is applied"
        )
    full = found.stdout.strip()
    if not _is_ancestor(full, f"refs/remotes/origin/{branch}", env=env, cwd=dest, timeout_s=timeout_s):
        raise PushRefused(
            f"commit {full[:12]} is not reachable from the tip of {branch} in {repo.url}: "
            "only commits on the protected branch are applied"
        )
    order = _order(full, deployed_sha, env=env, cwd=dest, timeout_s=timeout_s)
    _git_ok(["checkout", "--quiet", "--detach", full], env=env, cwd=dest, timeout_s=timeout_s)
    logger.info(
        "checked out %s from %s (on %s; %s than the deployed sha)", full, repo.url, branch, order.value
    )
    return Checkout(sha=full, code_dir=dest, source=repo.url, clone_source=repo.url, order=order)


@task(task_run_name="checkout-{sha}", cache_policy=NO_CACHE)
def checkout_code(
    sha: str,
    *,
    dest: str,
    repo_url: str | None = None,
    path: str | None = None,
    deploy: DeployConfig | None = None,
    deployed_sha: str | None = None,
    timeout_s: float = GIT_TIMEOUT_S,
) -> Checkout:
    """The code for `sha`: a fresh clone of `repo_url` at that commit, or a local path already at it.

    A clone needs `deploy` (the topology's section): `repo_url` must be on its allow-list and
    `sha` reachable from its branch's tip, else PushRefused; the result says where the sha
    stands against `deployed_sha`. A local path is an operator's explicit choice on the worker
    (a deployed run never takes one): it is neither branch-checked nor ordered, but a git work
    tree whose HEAD is not `sha` is refused, since applying it would label other code with this
    sha and make the parity proof meaningless.
    """
    logger = get_run_logger()
    if repo_url:
        return _clone(
            sha, dest=dest, repo_url=repo_url, deploy=deploy, deployed_sha=deployed_sha, timeout_s=timeout_s
        )
    if not path:
        raise CheckoutFailed("give repo_url (to clone) or path (a local checkout)")
    code = Path(path).resolve()
    if not code.is_dir():
        raise CheckoutFailed(f"path {path} is not a directory")
    env = git_env(os.environ, transport="file")
    try:
        top = _git_ok(["rev-parse", "--show-toplevel"], env=env, cwd=str(code), timeout_s=timeout_s)
    except CheckoutFailed:
        logger.warning(
            "%s is not a git work tree: the sha %s cannot be verified or rolled back to", code, sha
        )
        return Checkout(
            sha=sha, code_dir=str(code), source=f"{code} (not a git work tree)", clone_source=None
        )
    head = _git_ok(["rev-parse", "HEAD"], env=env, cwd=str(code), timeout_s=timeout_s)
    if not head.startswith(sha.lower()):
        raise CheckoutFailed(
            f"{code} is at {head[:12]}, not at {sha}: check out {sha} there or pass repo_url"
        )
    porcelain = ["status", "--porcelain", "--untracked-files=no"]
    dirty = bool(_git_ok(porcelain, env=env, cwd=str(code), timeout_s=timeout_s))
    if dirty:
        logger.warning("%s has uncommitted changes: what is applied is not exactly %s", code, head)
    return Checkout(sha=head, code_dir=str(code), source=str(code), clone_source=top, dirty=dirty)


def ensure_apply_lock(environment: str) -> str:
    """The global concurrency limit (1 slot) that serialises applies to one environment.

    Prefect does not create limits on use, and a missing limit with strict=False silently runs
    unguarded, so the flow makes sure it exists and then acquires it with strict=True.
    """
    return ensure_lock(f"chalk-apply-{environment}")


def last_good_variable(environment: str) -> str:
    return f"chalk-apply-last-good-{environment}"


def read_last_good(environment: str) -> LastGood | None:
    """The last sha every region was proven to serve (a Prefect Variable), or None if never recorded."""
    value = Variable.get(last_good_variable(environment), default=None)
    if not isinstance(value, dict):
        return None
    return LastGood.model_validate(value)


@task(task_run_name="record-last-good-{environment}", cache_policy=NO_CACHE)
def record_last_good(environment: str, last_good: LastGood) -> None:
    Variable.set(last_good_variable(environment), last_good.model_dump(mode="json"), overwrite=True)


@task(task_run_name="publish-drift-{report.environment}", cache_policy=NO_CACHE)
def publish_drift(report: ApplyReport, parity: ParityCheck) -> None:
    """The drift report (which region serves what) as a table artifact and a `chalkdr.deploy.drift` event."""
    rows = [
        {
            "region": r.region,
            "should_serve": r.expected or "-",
            "serves": r.served or "unknown",
            "built_from": r.served_sha or "unknown",
            "in_parity": "yes" if r.in_parity else "no",
        }
        for r in parity.regions
    ]
    create_table_artifact(
        table=rows,
        key=f"chalk-apply-drift-{report.environment}",
        description=f"Drift after applying {parity.sha[:12]} to {report.environment}",
    )
    emit_event(
        event="chalkdr.deploy.drift",
        resource={"prefect.resource.id": f"chalkdr.environment.{report.environment}"},
        payload={
            "environment": report.environment,
            "sha": parity.sha,
            "regions": {
                r.region: {"expected": r.expected, "served": r.served, "served_sha": r.served_sha}
                for r in parity.regions
            },
            "at_target": parity.at_target,
        },
    )


def publish_apply_report(report: ApplyReport) -> None:
    """The run's markdown artifact, keyed per environment so the UI keeps its history; a refused
    or skipped push is also a `chalkdr.deploy.refused`/`.skipped` event naming its reason (an
    audit trail of what was asked and not done)."""
    create_markdown_artifact(
        markdown=report.render_markdown(),
        key=f"chalk-apply-{report.environment}",
        description=report.summary,
    )
    if report.outcome in (Outcome.REFUSED, Outcome.SKIPPED):
        emit_event(
            event=f"chalkdr.deploy.{report.outcome.value}",
            resource={"prefect.resource.id": f"chalkdr.environment.{report.environment}"},
            payload={
                "environment": report.environment,
                "sha": report.sha,
                "ref": report.ref,
                "source": report.source,
                "reason": report.refused or report.skipped,
                "deployed_sha": report.previous_sha,
            },
        )
