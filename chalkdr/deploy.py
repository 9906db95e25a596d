"""Dual-region `chalk apply`: the CLI contract, failure classification, parity and the run report.

Pure logic, no Prefect and no I/O: the task layer (tasks/chalk.py) runs the CLI and the queries,
the flow (flows/chalk_apply.py) sequences them, and both record into one `ApplyReport`, created
at the start of a run with a slot for every region, so the report always says what happened to
every region even when the run stopped early.

Parity means every region *serves* the deployment built from the same git sha, proven by
`meta.deployment_id` from a query sent to each region's own URL. One Chalk environment is served
from every region (a resource group each), and each region's apply creates that region's own
deployment, with its own id: parity compares each region with the id its own apply printed,
never the regions' ids with each other.

Where code may come from is decided here too, from server-side configuration only (the
topology's `deploy:` section), never from what a push event says: `parse_repository` turns a
clone URL into the one transport, host and path git will use (https or ssh, or a local
repository the topology names; a URL with credentials is refused), `allowed_repositories`
expands the topology's allow-list entries, and `order_skip_reason` says whether a sha that is on
the protected branch is newer than what is deployed. `git_env` is git's allow-listed environment,
as `chalk_cli_env` is the CLI's.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

from chalkdr.errors import ChalkDrError

__all__ = [
    "CHALK_CHILD_ENV",
    "ApplyReport",
    "ChalkQueryError",
    "CliFailure",
    "DeployFailed",
    "DeploymentNotServed",
    "LastGood",
    "Outcome",
    "ParityCheck",
    "PushRefused",
    "RegionApply",
    "RegionParity",
    "RegionStatus",
    "Repository",
    "RollbackReport",
    "ShaOrder",
    "Strategy",
    "allowed_repositories",
    "chalk_apply_command",
    "chalk_cli_env",
    "classify_cli_failure",
    "decide_outcome",
    "evaluate_parity",
    "git_env",
    "order_skip_reason",
    "parse_deployment_id",
    "parse_repository",
]

# The variables the Chalk CLI reads its target and credentials from (chalk-go config/manager.go,
# chalkpy auth_config.py): the only CHALK_* variables the child gets.
CHALK_CHILD_ENV = ("CHALK_ACTIVE_ENVIRONMENT", "CHALK_API_SERVER", "CHALK_CLIENT_ID", "CHALK_CLIENT_SECRET")
# What else the CLI may need from the worker: where programs and home are, the locale, proxies.
# Everything else (AWS keys, the Prefect API key, other regions' secrets) stays with the worker.
CHILD_ENV_ALLOWED = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "XDG_CONFIG_HOME")
CHILD_ENV_ALLOWED_PREFIXES = ("LC_",)
CHILD_ENV_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
# git needs a little more than the CLI: the ssh agent and ssh command (deploy keys), and the CA
# bundle settings of an https clone. Its credential helper comes from the worker's git config.
GIT_ENV_ALLOWED = (
    *CHILD_ENV_ALLOWED,
    "SSH_AUTH_SOCK",
    "GIT_SSH_COMMAND",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# sysexits(3): EX_UNAVAILABLE and EX_TEMPFAIL say "try again later"; 2 is a usage error and
# 126/127 mean the binary could not be run at all, which no retry can fix.
_TRANSIENT_EXIT_CODES = frozenset({69, 75})
_PERMANENT_EXIT_CODES = frozenset({2, 126, 127})
_PERMANENT_MARKERS = re.compile(
    r"unauthori[sz]ed|forbidden|invalid[ _-]?(client|credentials|token|grant)|authentication failed"
    r"|permission denied|access denied|(http|status|code)\W{0,3}40[0134]\b"
    r"|validation (error|failed)|syntax ?error|failed to (parse|import|compile)|no such file|not found",
    re.IGNORECASE,
)
_TRANSIENT_MARKERS = re.compile(
    r"timed? ?out|timeout|connection (refused|reset|aborted|error)|temporar(il)?y|unavailable"
    r"|bad gateway|too many requests|rate.?limit|throttl|try again|retry later"
    r"|(http|status|code)\W{0,3}(429|50[0234])\b",
    re.IGNORECASE,
)


class Strategy(StrEnum):
    PARALLEL = "parallel"  # every region at once
    CANARY = "canary"  # secondaries first, each verified serving, then the primary


class RegionStatus(StrEnum):
    PENDING = "pending"  # not started yet
    APPLIED = "applied"  # the CLI succeeded; not yet proven served
    VERIFIED = "verified"  # the region serves the deployment its apply printed
    FAILED = "failed"  # the CLI failed, or the region never served the new deployment
    SKIPPED = "skipped"  # not attempted: an earlier canary region failed


class Outcome(StrEnum):
    RUNNING = "running"
    PARITY = "parity"  # every region serves the deployment built from this sha
    FAILED = "failed"  # the run failed and no region moved: nothing to reconcile
    DRIFT = "drift"  # regions serve code from different shas
    ROLLED_BACK = "rolled-back"  # drift undone: every region serves the previous sha again
    REFUSED = "refused"  # not allowed (repository, branch, parameters): nothing was run; fails the run
    SKIPPED = "skipped"  # already deployed, or older than what is deployed: nothing was run; not a failure


class ShaOrder(StrEnum):
    """Where a sha stands against the last good (deployed) sha, in the protected branch's history."""

    FIRST = "first"  # nothing was recorded as deployed yet
    NEWER = "newer"  # the deployed sha is an ancestor of this one: a later push
    SAME = "same"  # this sha is the deployed one
    OLDER = "older"  # an ancestor of the deployed sha: an earlier push arriving late
    DIVERGED = "diverged"  # neither contains the other
    UNKNOWN = "unknown"  # the deployed sha is not in this repository (another source, rewritten history)


class ChalkQueryError(ChalkDrError):
    """A query to a region (token or online query) failed; `transient` tells whether to poll on."""

    def __init__(self, message: str, *, region: str, transient: bool, status: int | None = None) -> None:
        self.region, self.transient, self.status = region, transient, status
        super().__init__(message)


class DeploymentNotServed(ChalkDrError):
    """The region did not serve the expected deployment before the verification deadline."""

    def __init__(self, *, region: str, expected: str, served: str | None, waited_s: float) -> None:
        self.region, self.expected, self.served = region, expected, served
        super().__init__(
            f"{region} did not serve deployment {expected} within {waited_s:.1f} s "
            f"(last served: {served or 'unknown'})"
        )


class DeployFailed(ChalkDrError):
    """The run ended without parity on the new sha; the report says which region serves what."""

    def __init__(self, report: ApplyReport) -> None:
        self.report = report
        super().__init__(report.summary)


class PushRefused(ChalkDrError):
    """What was asked is not allowed (a repository off the allow-list, a sha not on the protected
    branch, a parameter a deployment may not set); nothing was run. The run ends REFUSED."""


class CliFailure(BaseModel):
    model_config = ConfigDict(frozen=True)

    transient: bool
    reason: str


def _plain(output: str) -> str:
    return _ANSI_RE.sub("", output)


def parse_deployment_id(stdout: str) -> str | None:
    """The deployment id from `chalk apply --json`: the last JSON object on stdout that has a
    `deployment_id` (the shape Chalk's CLI wrapper parses: {deployment_id, deployment_url,
    status, response}), whether printed on one line or indented over several; None when there is
    none. Never scraped from human-readable text."""
    text = _plain(stdout)
    decoder = json.JSONDecoder()
    found: str | None = None
    at = text.find("{")
    while at != -1:
        try:
            doc, end = decoder.raw_decode(text, at)
        except ValueError:
            at = text.find("{", at + 1)
            continue
        if isinstance(doc, dict) and isinstance(doc.get("deployment_id"), str) and doc["deployment_id"]:
            found = str(doc["deployment_id"])
        at = text.find("{", end)
    return found


def classify_cli_failure(exit_code: int | None, output: str) -> CliFailure:
    """Transient (retry the apply) or permanent (fail fast), from the exit code and the output.

    `exit_code` None means the CLI was killed by our timeout; a negative code means a signal.
    Permanent evidence wins over transient evidence: a bad credential stays bad however often
    the request is repeated. Unknown failures are permanent, so a broken build is not re-applied
    three times.
    """
    if exit_code is None:
        return CliFailure(transient=True, reason="the CLI timed out and was killed")
    if exit_code < 0:
        return CliFailure(transient=True, reason=f"the CLI was killed by signal {-exit_code}")
    if exit_code in _PERMANENT_EXIT_CODES:
        return CliFailure(transient=False, reason=f"the CLI could not run (exit code {exit_code})")
    text = _plain(output)
    permanent = _PERMANENT_MARKERS.search(text)
    if permanent:
        return CliFailure(transient=False, reason=f"exit code {exit_code}: {permanent.group(0)!r} in output")
    if exit_code in _TRANSIENT_EXIT_CODES:
        return CliFailure(transient=True, reason=f"exit code {exit_code} (temporary failure)")
    transient = _TRANSIENT_MARKERS.search(text)
    if transient:
        return CliFailure(transient=True, reason=f"exit code {exit_code}: {transient.group(0)!r} in output")
    return CliFailure(transient=False, reason=f"exit code {exit_code} with no sign of a temporary failure")


def chalk_apply_command(chalk_bin: str, *, no_promote: bool = False, branch: str | None = None) -> list[str]:
    """The argument list (never a shell string) for one non-interactive, awaited apply whose
    result comes back as JSON on stdout (`--json`)."""
    args = [chalk_bin, "apply", "--force", "--await", "--no-spinners", "--json"]
    if branch:
        args += ["--branch", branch]
    if no_promote:
        args.append("--no-promote")
    return args


def chalk_cli_env(
    base: Mapping[str, str], *, environment_id: str, api_server: str, client_id: str, client_secret: str
) -> dict[str, str]:
    """The child's environment: an allow-list of the worker's (PATH, HOME, locale, proxies) and
    the four CHALK_* variables naming one target. Nothing else reaches the CLI: not the worker's
    AWS credentials, not the Prefect API key, not another region's or environment's secret."""
    env = {
        k: v
        for k, v in base.items()
        if k in CHILD_ENV_ALLOWED
        or k.startswith(CHILD_ENV_ALLOWED_PREFIXES)
        or k.upper() in CHILD_ENV_PROXIES
    }
    env.update(
        CHALK_ACTIVE_ENVIRONMENT=environment_id,
        CHALK_API_SERVER=api_server.rstrip("/"),
        CHALK_CLIENT_ID=client_id,
        CHALK_CLIENT_SECRET=client_secret,
    )
    return env


# -- where code may come from ------------------------------------------------------------------

GITHUB_HOST = "github.com"
_GITHUB_SHORTHAND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")
_SCP_LIKE_RE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+)@(?P<host>[A-Za-z0-9.-]+):(?P<path>[^/].*)$")
_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
_CREDENTIALS_HINT = (
    "a URL with credentials (user:token@) is refused: it would be stored in run parameters, logs "
    "and the last-good record; give the worker a git credential helper or a deploy key instead"
)


@dataclass(frozen=True)
class Repository:
    """A git repository as chalk-dr compares and clones it.

    `transport` is the only protocol git may use for it (GIT_ALLOW_PROTOCOL): https or ssh, or
    `file` for a local repository the topology itself names (a mirror, a test fixture). `host`
    and `path` are normalised for comparison: lowercase host (with its port), no leading `/`, no
    trailing `/` or `.git`, and the path lowercased on github.com, whose names are
    case-insensitive. `url` is what git is given.
    """

    transport: Literal["https", "ssh", "file"]
    host: str
    path: str
    url: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.transport, self.host, self.path)

    def __str__(self) -> str:
        return self.url


def _normal_path(host: str, path: str) -> str:
    path = path.strip("/")
    path = path.removesuffix(".git").rstrip("/")
    segments = path.split("/")
    if not path or any(seg in ("", ".", "..") for seg in segments):
        raise ValueError(f"repository path {path!r} is not a plain owner/name path")
    return path.lower() if host == GITHUB_HOST else path


def _local_repository(path: str, url: str) -> Repository:
    if not os.path.isabs(path):
        raise ValueError(f"a local repository must be an absolute path, got {path!r}")
    resolved = os.path.realpath(path)
    return Repository(transport="file", host="", path=resolved, url=resolved)


def parse_repository(url: str) -> Repository:
    """The repository a clone URL names, or ValueError saying why git must not be given it.

    Accepted: `https://host/owner/name(.git)`, `ssh://[user@]host[:port]/path`, scp-like
    `git@host:owner/name.git`, and an absolute local path (or `file:///path`). Refused: any
    other transport (plain http, git://, ext::, fd::), credentials in the URL, a query or
    fragment, `..` segments, whitespace or control characters.
    """
    text = url.strip()
    if not text:
        raise ValueError("the repository URL is empty")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError("the repository URL contains whitespace or control characters")
    if text.startswith("/"):
        return _local_repository(text, text)
    if text.lower().startswith("file://"):
        return _local_repository(text[len("file://") :], text)
    scp = _SCP_LIKE_RE.match(text)
    if scp and "://" not in text:
        host = scp["host"].lower()
        if not _HOST_RE.match(host):
            raise ValueError(f"{host!r} is not a host name")
        return Repository(transport="ssh", host=host, path=_normal_path(host, scp["path"]), url=text)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "http":
        raise ValueError("plain http is refused (no integrity, credentials in the clear): use https or ssh")
    if scheme not in ("https", "ssh"):
        raise ValueError(f"transport {scheme or text!r} is refused: use https or ssh")
    if parts.password is not None or (scheme == "https" and parts.username is not None):
        raise ValueError(_CREDENTIALS_HINT)
    if parts.query or parts.fragment:
        raise ValueError("a repository URL has no query or fragment")
    host = (parts.hostname or "").lower()
    if not _HOST_RE.match(host):
        raise ValueError(f"{host or '(none)'!r} is not a host name")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the repository URL has an invalid port") from None
    where = f"{host}:{port}" if port else host
    transport: Literal["https", "ssh"] = "https" if scheme == "https" else "ssh"
    return Repository(transport=transport, host=where, path=_normal_path(host, parts.path), url=text)


def allowed_repositories(entry: str) -> tuple[Repository, ...]:
    """The repositories one allow-list entry stands for: `owner/name` is that GitHub repository
    over https or ssh; anything else is one repository URL (or local path) exactly."""
    text = entry.strip()
    if _GITHUB_SHORTHAND_RE.match(text) and not text.startswith("/"):
        path = _normal_path(GITHUB_HOST, text)
        return (
            Repository(
                transport="https", host=GITHUB_HOST, path=path, url=f"https://{GITHUB_HOST}/{text}.git"
            ),
            Repository(transport="ssh", host=GITHUB_HOST, path=path, url=f"git@{GITHUB_HOST}:{text}.git"),
        )
    return (parse_repository(text),)


def git_env(base: Mapping[str, str], *, transport: str) -> dict[str, str]:
    """git's environment: an allow-list of the worker's (as for the CLI, plus what ssh and TLS
    need), only `transport` allowed (GIT_ALLOW_PROTOCOL: no ext::, fd::, file or plain http, even
    through a submodule or a redirect), and nothing that could wait for a human: no terminal
    prompt for credentials, ssh in batch mode (an unknown host key fails instead of asking)."""
    env = {
        k: v
        for k, v in base.items()
        if k in GIT_ENV_ALLOWED or k.startswith(CHILD_ENV_ALLOWED_PREFIXES) or k.upper() in CHILD_ENV_PROXIES
    }
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    env.update(GIT_ALLOW_PROTOCOL=transport, GIT_TERMINAL_PROMPT="0", GCM_INTERACTIVE="never")
    return env


def order_skip_reason(sha: str, deployed: str | None, order: ShaOrder) -> str | None:
    """Why a sha on the protected branch must not be applied now, or None to apply it.

    Pushes can arrive out of order (a redelivered webhook, a CI job that waited): only a sha
    newer than the last good one moves the environment. An ancestor of it, the same sha, or a
    sha beside it (diverged: possible only through history rewriting or a hand-picked commit,
    since every tip of a protected branch contains the previous one) is skipped and recorded,
    not failed. When the last good sha is not in this repository (it came from a local path, or
    another repository), there is nothing to order against: the sha is applied, and the report
    says so.
    """
    short, was = sha[:12], (deployed or "")[:12]
    if order is ShaOrder.SAME:
        return f"{short} is already deployed (the last good sha)"
    if order is ShaOrder.OLDER:
        return f"{short} is older than the deployed {was} (an ancestor of it): a later push was applied first"
    if order is ShaOrder.DIVERGED:
        return f"{short} is neither newer nor older than the deployed {was}: their histories diverged"
    return None


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


class RegionApply(BaseModel):
    """One region's slot of the report: what was applied, what it served before and after."""

    model_config = ConfigDict(validate_assignment=True)

    region: str
    resource_group: str
    environment_id: str
    primary: bool
    status: RegionStatus = RegionStatus.PENDING
    deployment_id: str | None = None
    served_before: str | None = None
    served_after: str | None = None
    attempts: int = 0
    started_at: float | None = None
    applied_at: float | None = None
    verified_at: float | None = None
    finished_at: float | None = None
    error: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class RegionParity(BaseModel):
    model_config = ConfigDict(frozen=True)

    region: str
    expected: str | None
    served: str | None
    served_sha: str | None = None  # the sha the served deployment was built from, when known

    @property
    def in_parity(self) -> bool:
        return self.expected is not None and self.served == self.expected


class ParityCheck(BaseModel):
    """Which deployment every region serves, against what it should serve for `sha`."""

    model_config = ConfigDict(frozen=True)

    sha: str
    checked_at: float = Field(default_factory=time.time)
    regions: list[RegionParity]

    @property
    def in_parity(self) -> bool:
        return bool(self.regions) and all(r.in_parity for r in self.regions)

    @property
    def at_target(self) -> list[str]:
        """Regions that serve this sha's deployment (the ones that 'moved')."""
        return [r.region for r in self.regions if r.in_parity]

    @property
    def drifted(self) -> bool:
        """Some regions serve this sha and others do not: the environment is split."""
        return not self.in_parity and bool(self.at_target)


def evaluate_parity(
    sha: str,
    *,
    expected: Mapping[str, str | None],
    served: Mapping[str, str | None],
    known_shas: Mapping[str, str] | None = None,
) -> ParityCheck:
    """Compare each region's served deployment with the one it should serve for `sha`.

    `known_shas` maps deployment ids to the sha they were built from (this run's and the last
    good run's), so a drift report can say which code a region serves, not only an opaque id.
    """
    known = dict(known_shas or {})
    regions = [
        RegionParity(
            region=region,
            expected=want,
            served=served.get(region),
            served_sha=known.get(served.get(region) or ""),
        )
        for region, want in expected.items()
    ]
    return ParityCheck(sha=sha, regions=regions)


class RollbackReport(BaseModel):
    model_config = ConfigDict(validate_assignment=True)

    sha: str | None = None
    source: str | None = None
    regions: list[RegionApply] = Field(default_factory=list)
    parity: ParityCheck | None = None
    skipped_reason: str | None = None  # why no rollback was attempted

    @property
    def restored(self) -> bool:
        return self.parity is not None and self.parity.in_parity


class LastGood(BaseModel):
    """The last sha every region was proven to serve, kept per environment for rollbacks.

    `repo_url` or `path` says where that sha's code can be checked out again (a git clone at
    `sha`); `deployment_ids` lets a later parity check recognise untouched regions.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    sha: str
    ref: str | None = None
    repo_url: str | None = None
    path: str | None = None
    deployment_ids: dict[str, str]
    recorded_at: float = Field(default_factory=time.time)

    def deployment_ids_to_sha(self) -> dict[str, str]:
        return {deployment_id: self.sha for deployment_id in self.deployment_ids.values()}


class ApplyReport(BaseModel):
    """The journal of one chalk-apply run; rendering reads only this."""

    model_config = ConfigDict(validate_assignment=True)

    environment: str
    sha: str
    ref: str | None = None
    source: str
    strategy: Strategy
    no_promote: bool = False
    branch: str | None = None
    rollback_on_drift: bool = False
    started_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    regions: list[RegionApply]
    parity: ParityCheck | None = None
    rollback: RollbackReport | None = None
    outcome: Outcome = Outcome.RUNNING
    error: str | None = None
    refused: str | None = None  # why nothing was run: the push is not allowed
    skipped: str | None = None  # why nothing was run: already deployed, or older than what is
    previous_sha: str | None = None  # the last good sha when this run took the apply lock
    order: ShaOrder | None = None  # this sha against `previous_sha` on the protected branch

    def region(self, aws_region: str) -> RegionApply:
        for r in self.regions:
            if r.region == aws_region:
                return r
        raise KeyError(aws_region)

    @property
    def summary(self) -> str:
        short = self.sha[:12]
        if self.outcome is Outcome.REFUSED:
            return f"{self.environment}: {short} refused, nothing run: {self.refused}"
        if self.outcome is Outcome.SKIPPED:
            return f"{self.environment}: {short} skipped, nothing run: {self.skipped}"
        if self.outcome is Outcome.PARITY:
            return f"{self.environment}: every region serves {short}"
        if self.outcome is Outcome.ROLLED_BACK and self.rollback is not None:
            return (
                f"{self.environment}: apply of {short} drifted; rolled back to "
                f"{(self.rollback.sha or '?')[:12]}, parity restored"
            )
        if self.outcome is Outcome.DRIFT and self.parity is not None:
            moved = ", ".join(self.parity.at_target)
            stale = ", ".join(r.region for r in self.parity.regions if not r.in_parity)
            return f"{self.environment}: drift: {moved} serve {short}, {stale} do not"
        failed = [
            r.error if r.error.startswith(r.region) else f"{r.region}: {r.error}"
            for r in self.regions
            if r.error
        ]
        detail = self.error or "; ".join(failed) or "no region reached parity"
        return f"{self.environment}: apply of {short} failed: {detail}"

    def render_markdown(self) -> str:
        lines = [
            f"# chalk apply: `{self.environment}` @ `{self.sha[:12]}`",
            "",
            f"**Outcome: {self.outcome.value.upper()}** — {self.summary}",
            "",
            "| | |",
            "|---|---|",
            f"| sha | `{self.sha}` |",
            f"| ref | {self.ref or '-'} |",
            f"| source | {self.source} |",
            f"| strategy | {self.strategy.value} |",
            f"| promote | {'no (--no-promote)' if self.no_promote else 'yes'} |",
            f"| branch | {self.branch or '-'} |",
            f"| rollback on drift | {'yes' if self.rollback_on_drift else 'no'} |",
            f"| deployed before | {f'`{self.previous_sha}`' if self.previous_sha else '-'} |",
            f"| order | {self.order.value if self.order else '-'} |",
            f"| started | {_iso(self.started_at)} |",
            f"| finished | {_iso(self.finished_at)} |",
            f"| duration | {_secs(self.finished_at - self.started_at if self.finished_at else None)} |",
        ]
        if self.refused:
            lines += ["", f"**Refused:** {self.refused}"]
        if self.skipped:
            lines += ["", f"**Skipped:** {self.skipped}"]
        if self.error:
            lines += ["", f"**Error:** {self.error}"]
        lines += ["", "## Regions", "", *_region_table(self.regions)]
        if self.parity is not None:
            lines += ["", f"## Parity on `{self.parity.sha[:12]}`", "", *_parity_table(self.parity)]
        if self.rollback is not None:
            rb = self.rollback
            lines += ["", "## Rollback", ""]
            if rb.skipped_reason:
                lines.append(f"Not rolled back: {rb.skipped_reason}")
            else:
                lines += [f"Re-applied `{(rb.sha or '?')[:12]}` from {rb.source or '-'}.", ""]
                lines += _region_table(rb.regions)
                if rb.parity is not None:
                    verdict = "restored" if rb.parity.in_parity else "NOT restored"
                    lines += [
                        "",
                        f"Parity on `{rb.parity.sha[:12]}` {verdict}:",
                        "",
                        *_parity_table(rb.parity),
                    ]
        return "\n".join(lines) + "\n"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _region_table(regions: Iterable[RegionApply]) -> list[str]:
    rows = [
        "| region | resource group | role | status | deployment id | served before | served after "
        "| attempts | started | verified | duration | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in regions:
        error = (r.error or "").replace("|", "\\|").replace("\n", " ")
        role = "primary" if r.primary else "secondary"
        rows.append(
            f"| {r.region} | {r.resource_group} | {role} | {r.status.value} "
            f"| {r.deployment_id or '-'} | {r.served_before or '-'} | {r.served_after or '-'} | {r.attempts} "
            f"| {_iso(r.started_at)} | {_iso(r.verified_at)} | {_secs(r.duration_s)} | {error or '-'} |"
        )
    return rows


def _parity_table(parity: ParityCheck) -> list[str]:
    rows = ["| region | should serve | serves | built from | in parity |", "|---|---|---|---|---|"]
    for r in parity.regions:
        rows.append(
            f"| {r.region} | {r.expected or '-'} | {r.served or 'unknown'} "
            f"| {r.served_sha[:12] if r.served_sha else 'unknown'} | {'yes' if r.in_parity else '**no**'} |"
        )
    return rows


def decide_outcome(report: ApplyReport) -> Outcome:
    """The run's verdict from its journal: refused or skipped (nothing run), parity, rolled back,
    drift, or plain failure."""
    if report.refused is not None:
        return Outcome.REFUSED
    if report.skipped is not None:
        return Outcome.SKIPPED
    if report.error is None and report.parity is not None and report.parity.in_parity:
        return Outcome.PARITY
    if report.rollback is not None and report.rollback.restored:
        return Outcome.ROLLED_BACK
    if report.parity is not None and report.parity.drifted:
        return Outcome.DRIFT
    return Outcome.FAILED
