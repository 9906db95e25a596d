"""Dual-region `chalk apply`: the CLI contract, failure classification, parity and the run report.

Pure logic, no Prefect and no I/O: the task layer (tasks/chalk.py) runs the CLI and the queries,
the flow (flows/chalk_apply.py) sequences them, and both record into one `ApplyReport`, created
at the start of a run with a slot for every region, so the report always says what happened to
every region even when the run stopped early.

Parity means every region *serves* the deployment built from the same git sha, proven by
`meta.deployment_id` from a query sent to each region's own URL. Chalk deployment ids are per
environment (each region is its own Chalk environment), so parity compares each region with
the id its own apply printed, never the regions' ids with each other.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from collections.abc import Mapping
from datetime import UTC
from datetime import datetime
from enum import StrEnum

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
    "RegionApply",
    "RegionParity",
    "RegionStatus",
    "RollbackReport",
    "Strategy",
    "chalk_apply_command",
    "chalk_cli_env",
    "classify_cli_failure",
    "decide_outcome",
    "evaluate_parity",
    "parse_deployment_id",
]

# The variables the Chalk CLI reads its target and credentials from.
CHALK_CHILD_ENV = ("CHALK_ENVIRONMENT", "CHALK_API_SERVER", "CHALK_CLIENT_ID", "CHALK_CLIENT_SECRET")

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_DEPLOYMENT_LINE_RE = re.compile(r"(?im)^[^\w\n]*deployment[ _-]?id\s*[:=]\s*[\"']?(?P<id>[A-Za-z0-9_-]+)")
_DEPLOYMENT_JSON_RE = re.compile(r"\"deployment_id\"\s*:\s*\"(?P<id>[A-Za-z0-9_-]+)\"")

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


class CliFailure(BaseModel):
    model_config = ConfigDict(frozen=True)

    transient: bool
    reason: str


def _plain(output: str) -> str:
    return _ANSI_RE.sub("", output)


def parse_deployment_id(output: str) -> str | None:
    """The deployment id the CLI printed (`Deployment ID: c…`); the last one wins, None if absent."""
    text = _plain(output)
    ids = [m["id"] for m in _DEPLOYMENT_LINE_RE.finditer(text)] or [
        m["id"] for m in _DEPLOYMENT_JSON_RE.finditer(text)
    ]
    return ids[-1] if ids else None


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
    """The argument list (never a shell string) for one non-interactive, awaited apply."""
    args = [chalk_bin, "apply", "--force", "--await", "--no-spinners"]
    if branch:
        args += ["--branch", branch]
    if no_promote:
        args.append("--no-promote")
    return args


def chalk_cli_env(
    base: Mapping[str, str],
    *,
    environment_id: str,
    api_server: str,
    client_id: str,
    client_secret: str,
    strip: Iterable[str] = (),
) -> dict[str, str]:
    """The child's environment: the worker's, minus every CHALK_* and secret variable, plus one target.

    Stripping matters: the worker's environment may hold every region's client secret (that is
    how env references work), and one region's CLI must not see another region's credentials or
    a stray CHALK_* that would redirect it.
    """
    drop = set(strip)
    env = {k: v for k, v in base.items() if not k.startswith("CHALK_") and k not in drop}
    env.update(
        CHALK_ENVIRONMENT=environment_id,
        CHALK_API_SERVER=api_server.rstrip("/"),
        CHALK_CLIENT_ID=client_id,
        CHALK_CLIENT_SECRET=client_secret,
    )
    return env


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

    def region(self, aws_region: str) -> RegionApply:
        for r in self.regions:
            if r.region == aws_region:
                return r
        raise KeyError(aws_region)

    @property
    def summary(self) -> str:
        short = self.sha[:12]
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
            f"| started | {_iso(self.started_at)} |",
            f"| finished | {_iso(self.finished_at)} |",
            f"| duration | {_secs(self.finished_at - self.started_at if self.finished_at else None)} |",
        ]
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
    """The run's verdict from its journal: parity, rolled back, drift, or plain failure."""
    if report.error is None and report.parity is not None and report.parity.in_parity:
        return Outcome.PARITY
    if report.rollback is not None and report.rollback.restored:
        return Outcome.ROLLED_BACK
    if report.parity is not None and report.parity.drifted:
        return Outcome.DRIFT
    return Outcome.FAILED
