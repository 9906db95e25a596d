"""Tasks for Chalk: `chalk apply` per region, the regional query API, and the code checkout to apply.

The query API is how a run proves what a region serves (`meta.deployment_id`).

The CLI runs as an argument list (never a shell) with its target and credentials only in the
child's environment, under a real subprocess timeout (a Prefect task timeout cannot interrupt a
blocked call). Every byte of output is redacted before it reaches a log, a report or an
exception: the client secret and the OAuth token never leave this module.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import cast

import httpx
from prefect import get_run_logger
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.artifacts import create_table_artifact
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.variables import Variable
from pydantic import BaseModel

from chalkdr.audit import AuditRecord
from chalkdr.deploy import ApplyReport
from chalkdr.deploy import ChalkQueryError
from chalkdr.deploy import DeploymentNotServed
from chalkdr.deploy import LastGood
from chalkdr.deploy import ParityCheck
from chalkdr.deploy import chalk_apply_command
from chalkdr.deploy import chalk_cli_env
from chalkdr.deploy import classify_cli_failure
from chalkdr.deploy import parse_deployment_id
from chalkdr.errors import ChalkCliError
from chalkdr.errors import ChalkDrError
from chalkdr.query import http_client
from chalkdr.secrets import redact
from chalkdr.secrets import redact_url
from chalkdr.secrets import resolve_secret
from chalkdr.topology import RegionConfig
from tasks.audit import emit_audit_event
from tasks.locks import ensure_lock
from tasks.retry import retry_options

__all__ = [
    "Checkout",
    "CheckoutFailed",
    "CliRun",
    "Verification",
    "apply_region",
    "checkout_code",
    "ensure_apply_lock",
    "last_good_variable",
    "load_prefect_secret",
    "publish_apply_report",
    "publish_drift",
    "read_last_good",
    "read_served_deployment",
    "record_last_good",
    "region_secret",
    "served_deployment",
    "verify_served_deployment",
]

OUTPUT_TAIL_LINES = 40
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
GIT_TIMEOUT_S = 300.0
BRANCH_HEADER = "X-Chalk-Branch-Id"
# A small query every Chalk deployment can answer; only `meta.deployment_id` is read from it.
PROBE_QUERY: dict[str, Any] = {"inputs": {"user.id": 1}, "outputs": ["user.id"]}


class CheckoutFailed(ChalkDrError):
    """The code for a sha could not be checked out (or a local path is not at that sha)."""


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


def load_prefect_secret(name: str) -> str:
    """The Prefect Secret block lookup injected into chalkdr.secrets (which knows no Prefect)."""
    value = cast("Secret[str]", Secret.load(name)).get()
    return str(value)


def region_secret(region: RegionConfig) -> str:
    return resolve_secret(region.chalk.client_secret, prefect_secret=load_prefect_secret)


def _tail(text: str, secrets: Sequence[str]) -> str:
    return "\n".join(redact(text, secrets).rstrip().splitlines()[-OUTPUT_TAIL_LINES:])


def _run(args: Sequence[str], *, cwd: str, env: dict[str, str], timeout_s: float) -> tuple[int | None, str]:
    """Run without a shell; on timeout kill the whole process group. None exit code = timed out."""
    proc = subprocess.Popen(  # an argument list, never a shell
        list(args),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,  # its own process group, so a timeout kills grandchildren too
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out


@task(task_run_name="apply-{region.aws_region}", cache_policy=NO_CACHE, **retry_options())
def apply_region(
    region: RegionConfig,
    *,
    sha: str,
    environment: str,
    code_dir: str,
    chalk_bin: str,
    no_promote: bool = False,
    branch: str | None = None,
    timeout_s: float = 900.0,
    strip_env: Sequence[str] = (),
    rollback: bool = False,
) -> CliRun:
    """`chalk apply --force --await --no-spinners` against one region; retried only when transient.

    Re-running an apply of the same code is safe (it converges on the same definitions), which
    is what makes the transient retries acceptable.
    """
    logger = get_run_logger()
    name = region.aws_region
    secret = region_secret(region)
    env = chalk_cli_env(
        os.environ,
        environment_id=region.chalk.environment_id,
        api_server=str(region.chalk.api_server),
        client_id=region.chalk.client_id,
        client_secret=secret,
        strip=strip_env,
    )
    args = chalk_apply_command(chalk_bin, no_promote=no_promote, branch=branch)
    logger.info(
        "%s: running %s in %s (environment %s)", name, " ".join(args), code_dir, region.chalk.environment_id
    )
    started = time.time()
    try:
        exit_code, output = _run(args, cwd=code_dir, env=env, timeout_s=timeout_s)
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
    tail = _tail(output, [secret])
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
    deployment_id = parse_deployment_id(output)
    if deployment_id is None:
        raise ChalkCliError(
            f"{name}: chalk apply succeeded but printed no deployment id",
            region=name,
            transient=False,
            exit_code=0,
        )
    logger.info("%s: deployment %s created in %.1f s", name, deployment_id, finished - started)
    emit_audit_event(
        AuditRecord(
            system="deploy",
            action="applied",
            resource=f"chalk.environment.{region.chalk.environment_id}",
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


def _query_error(region: str, what: str, exc: httpx.HTTPError, secrets: Sequence[str]) -> ChalkQueryError:
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        body = redact(exc.response.text[:200], secrets).replace("\n", " ")
        transient = status >= 500 or status == 429
        return ChalkQueryError(
            f"{region}: {what} answered {status}: {body}", region=region, transient=transient, status=status
        )
    # Connection refused/reset, timeouts: the region may be coming back.
    return ChalkQueryError(f"{region}: {what} failed: {type(exc).__name__}", region=region, transient=True)


def served_deployment(
    region: RegionConfig, *, branch: str | None = None, client: httpx.Client | None = None
) -> str | None:
    """One token + one online query to the region's OWN URL; returns `meta.deployment_id`.

    The failover name is deliberately not used: it answers from whichever region is active,
    which would prove nothing about this region.
    """
    name = region.aws_region
    secret = region_secret(region)
    owned = client is None
    http = client or http_client(region.url, timeout=HTTP_TIMEOUT)
    token = ""
    try:
        api = str(region.chalk.api_server).rstrip("/")
        try:
            resp = http.post(
                f"{api}/v1/oauth/token",
                json={
                    "client_id": region.chalk.client_id,
                    "client_secret": secret,
                    "grant_type": "client_credentials",
                },
            )
            resp.raise_for_status()
            token = str(resp.json()["access_token"])
        except httpx.HTTPError as exc:
            raise _query_error(name, "token request", exc, [secret]) from None
        except (ValueError, KeyError):
            raise ChalkQueryError(
                f"{name}: token response has no access_token", region=name, transient=False
            ) from None
        headers = {"Authorization": f"Bearer {token}", "X-Chalk-Env-Id": region.chalk.environment_id}
        if branch:
            headers[BRANCH_HEADER] = branch
        try:
            resp = http.post(
                f"{region.url}/v1/query/online", json={**PROBE_QUERY, "include_meta": True}, headers=headers
            )
            resp.raise_for_status()
            meta = resp.json().get("meta") or {}
        except httpx.HTTPError as exc:
            raise _query_error(name, "online query", exc, [secret, token]) from None
        except ValueError:
            raise ChalkQueryError(
                f"{name}: online query answered non-JSON", region=name, transient=True
            ) from None
        value = meta.get("deployment_id")
        return str(value) if value else None
    finally:
        if owned:
            http.close()


def _poll_served(
    region: RegionConfig, *, branch: str | None, deadline_s: float, poll_s: float, want: str | None
) -> tuple[str | None, int, ChalkQueryError | None]:
    """Poll until the region serves `want` (or, with want=None, answers at all) or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    served: str | None = None
    last_error: ChalkQueryError | None = None
    polls = 0
    with http_client(region.url, timeout=HTTP_TIMEOUT) as http:
        while True:
            polls += 1
            try:
                served = served_deployment(region, branch=branch, client=http)
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


@task(task_run_name="read-served-{region.aws_region}", cache_policy=NO_CACHE)
def read_served_deployment(
    region: RegionConfig, *, branch: str | None = None, deadline_s: float = 30.0, poll_s: float = 0.25
) -> str | None:
    """Which deployment the region serves now; polls through transient errors until the deadline."""
    served, _, error = _poll_served(region, branch=branch, deadline_s=deadline_s, poll_s=poll_s, want=None)
    if error is not None:
        raise error
    return served


@task(task_run_name="verify-{region.aws_region}", cache_policy=NO_CACHE)
def verify_served_deployment(
    region: RegionConfig,
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
        region, branch=branch, deadline_s=timeout_s, poll_s=poll_s, want=deployment_id
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


def _git(args: Sequence[str], *, cwd: str | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}  # never hang on a credential prompt
    try:
        done = subprocess.run(  # an argument list, never a shell
            ["git", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CheckoutFailed(f"git {args[0]} timed out after {GIT_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        message = redact_url(lines[-1] if lines else "no output")
        raise CheckoutFailed(f"git {args[0]} failed ({done.returncode}): {message}")
    return done.stdout.strip()


@task(task_run_name="checkout-{sha}", cache_policy=NO_CACHE)
def checkout_code(sha: str, *, dest: str, repo_url: str | None = None, path: str | None = None) -> Checkout:
    """The code for `sha`: a fresh clone of `repo_url` at that commit, or a local path already at it.

    A local git work tree whose HEAD is not `sha` is refused: applying it would label other
    code with this sha and make the parity proof meaningless.
    """
    logger = get_run_logger()
    if repo_url:
        shown = redact_url(repo_url)
        _git(["clone", "--quiet", "--no-checkout", "--", repo_url, dest])
        try:
            full = _git(["rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}"], cwd=dest)
        except CheckoutFailed:
            raise CheckoutFailed(f"commit {sha} is not in {shown}") from None
        _git(["checkout", "--quiet", "--detach", full], cwd=dest)
        logger.info("checked out %s from %s", full, shown)
        return Checkout(sha=full, code_dir=dest, source=shown, clone_source=repo_url)
    if not path:
        raise CheckoutFailed("give repo_url (to clone) or path (a local checkout)")
    code = Path(path).resolve()
    if not code.is_dir():
        raise CheckoutFailed(f"path {path} is not a directory")
    try:
        top = _git(["rev-parse", "--show-toplevel"], cwd=str(code))
    except CheckoutFailed:
        logger.warning(
            "%s is not a git work tree: the sha %s cannot be verified or rolled back to", code, sha
        )
        return Checkout(
            sha=sha, code_dir=str(code), source=f"{code} (not a git work tree)", clone_source=None
        )
    head = _git(["rev-parse", "HEAD"], cwd=str(code))
    if not head.startswith(sha.lower()):
        raise CheckoutFailed(
            f"{code} is at {head[:12]}, not at {sha}: check out {sha} there or pass repo_url"
        )
    dirty = bool(_git(["status", "--porcelain", "--untracked-files=no"], cwd=str(code)))
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
    """The run's markdown artifact, keyed per environment so the UI keeps its history."""
    create_markdown_artifact(
        markdown=report.render_markdown(),
        key=f"chalk-apply-{report.environment}",
        description=report.summary,
    )
