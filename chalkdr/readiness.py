"""Recovery readiness without I/O: would a failover succeed now, for the whole Chalk data plane?

ARC Region switch evaluates its plans continuously; it has no step for DynamoDB Global Tables,
MSK Replicator or Chalk. The `recovery-readiness` flow (flows/readiness.py) reads, changing
nothing, what a failover to each possible target would depend on, and asks this module what it
means. Each check is one fact with a verdict:

- ready: a failover would find it in place;
- warning: a failover would still succeed, but something would be worse than it could be (the
  target runs fewer query servers than the primary serves with: failover scales it first, which
  adds the time pods take to become ready; no reverse replicator while the topology does not ask
  for failback readiness: a failback would lose what clients write during the failover);
- not ready: a failover would be refused or would fail (no ready query server, an Aurora
  secondary without an instance, a missing reverse replicator the topology asks for, a DynamoDB
  replica not ACTIVE, routing controls unreachable, a failover record without a health check).

What could not be read is not ready: a readiness check that cannot see a part cannot vouch for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

from chalkdr.recovery import RegionReading

__all__ = [
    "MIN_ARC_ENDPOINTS",
    "ReadinessCheck",
    "ReadinessReport",
    "ReadinessStatus",
    "arc_checks",
    "aurora_check",
    "capacity_check",
    "dynamodb_checks",
    "record_checks",
    "render_readiness_markdown",
    "reverse_replicator_checks",
    "serving_check",
]

# ARC: "we recommend that you ... try each endpoint in turn" — a routing-control change needs one
# answering endpoint; readiness asks for two, so that one endpoint's region being down (as in the
# incident a failover answers) still leaves a way to move traffic.
MIN_ARC_ENDPOINTS = 2


class ReadinessStatus(StrEnum):
    READY = "ready"
    WARNING = "warning"
    NOT_READY = "not ready"


class ReadinessCheck(BaseModel):
    """One fact a failover depends on, where it was read, and its verdict."""

    model_config = ConfigDict(extra="forbid")

    check: str  # capacity | serving | aurora | dynamodb | reverse-replicator | arc | record
    region: str | None = None  # the region the fact is about (None: the environment)
    target: str | None = None  # the failover target this check is for (None: every target)
    status: ReadinessStatus
    detail: str


class ReadinessReport(BaseModel):
    """The readiness run's result: every check, and whether a failover would succeed now."""

    model_config = ConfigDict(extra="forbid")

    environment: str
    evaluation_id: str
    evaluated_at: str  # ISO 8601, UTC
    targets: list[str]
    checks: list[ReadinessCheck] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.not_ready

    @property
    def not_ready(self) -> list[ReadinessCheck]:
        return [c for c in self.checks if c.status is ReadinessStatus.NOT_READY]

    @property
    def warnings(self) -> list[ReadinessCheck]:
        return [c for c in self.checks if c.status is ReadinessStatus.WARNING]

    def reasons(self) -> list[str]:
        return [f"{c.check} ({c.region or 'environment'}): {c.detail}" for c in self.not_ready]


def _check(
    check: str, status: ReadinessStatus, detail: str, *, region: str | None, target: str | None
) -> ReadinessCheck:
    return ReadinessCheck(check=check, region=region, target=target, status=status, detail=detail)


def serving_check(target: RegionReading) -> ReadinessCheck:
    """The target answers /healthz and the probe query through its own hostname."""
    region = target.region
    if target.healthz and target.query_ok:
        return _check(
            "serving",
            ReadinessStatus.READY,
            f"/healthz and the probe query answer (deployment {target.deployment_id or 'unknown'})",
            region=region,
            target=region,
        )
    why = []
    if not target.healthz:
        why.append(f"/healthz not serving ({target.healthz_detail or 'no answer'})")
    if not target.query_ok:
        why.append(f"probe query failed ({target.query_error or 'no answer'})")
    return _check("serving", ReadinessStatus.NOT_READY, "; ".join(why), region=region, target=region)


def capacity_check(target: RegionReading, primary: RegionReading | None) -> ReadinessCheck:
    """The target's ready query servers against the primary's serving (ready) count.

    Fewer is a warning, not a refusal: failover's capacity phase scales the target up before
    traffic moves, at the cost of the pods' start time. None ready, or unreadable, is not ready.
    """
    region = target.region
    if target.query_servers is None:
        return _check(
            "capacity",
            ReadinessStatus.NOT_READY,
            "query-server Deployment unreadable: " + "; ".join(target.errors or ["no answer"]),
            region=region,
            target=region,
        )
    ready, desired = target.query_servers
    serving = primary.query_servers[0] if primary is not None and primary.query_servers else None
    against = (
        "the primary's serving count unreadable" if serving is None else f"primary serves with {serving}"
    )
    if ready == 0:
        return _check(
            "capacity",
            ReadinessStatus.NOT_READY,
            f"no query server ready ({ready}/{desired}); {against}",
            region=region,
            target=region,
        )
    if serving is not None and ready < serving:
        return _check(
            "capacity",
            ReadinessStatus.WARNING,
            f"{ready} query servers ready, {against}: failover scales up first (pods' start time added)",
            region=region,
            target=region,
        )
    return _check(
        "capacity",
        ReadinessStatus.READY,
        f"{ready}/{desired} query servers ready; {against}",
        region=region,
        target=region,
    )


def aurora_check(target: RegionReading, *, max_lag_ms: float) -> ReadinessCheck:
    """The target's Aurora cluster can become the writer now: available, with at least one DB
    instance (a headless secondary cluster has none: RDS can promote it, but nothing can serve
    from it until an instance is created, minutes at best), and, as a secondary, replicating with
    a lag within the guard. The writer already being there is ready."""
    region = target.region
    if target.aurora_status is None:
        return _check(
            "aurora",
            ReadinessStatus.NOT_READY,
            "cluster unreadable or missing: "
            + ("; ".join(e for e in target.errors if "aurora" in e) or "no answer"),
            region=region,
            target=region,
        )
    if target.aurora_status != "available":
        return _check(
            "aurora",
            ReadinessStatus.NOT_READY,
            f"cluster is {target.aurora_status}",
            region=region,
            target=region,
        )
    if not target.aurora_instances:
        return _check(
            "aurora",
            ReadinessStatus.NOT_READY,
            "headless secondary: the cluster has no DB instance to serve after promotion (run provision)",
            region=region,
            target=region,
        )
    if target.aurora_is_writer:
        return _check(
            "aurora",
            ReadinessStatus.READY,
            f"the writer already ({target.aurora_instances} instance(s))",
            region=region,
            target=region,
        )
    lag = target.aurora_lag_ms
    if lag is None:
        return _check(
            "aurora",
            ReadinessStatus.NOT_READY,
            "no AuroraGlobalDBReplicationLag published: cannot tell the secondary is replicating",
            region=region,
            target=region,
        )
    if lag > max_lag_ms:
        return _check(
            "aurora",
            ReadinessStatus.NOT_READY,
            f"replication lag {lag:.0f} ms above the guard {max_lag_ms:.0f} ms",
            region=region,
            target=region,
        )
    return _check(
        "aurora",
        ReadinessStatus.READY,
        f"secondary with {target.aurora_instances} instance(s), lag {lag:.0f} ms (guard {max_lag_ms:.0f})",
        region=region,
        target=region,
    )


def dynamodb_checks(
    replicas: Mapping[str, Mapping[str, str | None]], regions: Sequence[str]
) -> list[ReadinessCheck]:
    """Every online-store table has an ACTIVE replica in every region (DescribeTable's
    Replicas[].ReplicaStatus; the table's own region counts by its TableStatus)."""
    out = []
    for table, by_region in sorted(replicas.items()):
        for region in regions:
            status = by_region.get(region)
            ok = status == "ACTIVE"
            out.append(
                _check(
                    "dynamodb",
                    ReadinessStatus.READY if ok else ReadinessStatus.NOT_READY,
                    f"{table}: replica {status or 'missing'}",
                    region=region,
                    target=None,
                )
            )
    return out


def reverse_replicator_checks(
    statuses: Mapping[str, str | None], *, required: bool, primary: str
) -> list[ReadinessCheck]:
    """One MSK Replicator from each secondary back to the primary, RUNNING: without it, what
    clients write in the secondary during a failover stays there when traffic fails back.
    Required (not ready when missing) when the topology asks for failback readiness; otherwise
    a warning saying what a failback would lose."""
    out = []
    for source, status in sorted(statuses.items()):
        where = f"{source} -> {primary}"
        if status == "RUNNING":
            out.append(
                _check(
                    "reverse-replicator",
                    ReadinessStatus.READY,
                    f"{where}: RUNNING",
                    region=source,
                    target=source,
                )
            )
            continue
        seen = f"{where}: {status or 'missing'}"
        if required:
            detail = f"{seen}; recovery.failback_readiness asks for it (run provision)"
            verdict = ReadinessStatus.NOT_READY
        else:
            detail = (
                f"{seen}; recovery.failback_readiness is off: a failback would lose what clients "
                "write in this region during a failover"
            )
            verdict = ReadinessStatus.WARNING
        out.append(_check("reverse-replicator", verdict, detail, region=source, target=source))
    return out


def arc_checks(
    *,
    configured: bool,
    endpoints: Mapping[str, bool],
    controls: Mapping[str, str | None],
    regions: Sequence[str],
    errors: Sequence[str] = (),
) -> list[ReadinessCheck]:
    """ARC routing controls: at least MIN_ARC_ENDPOINTS of the cluster's endpoints answer
    (`endpoints`: endpoint region -> answered), and every region has its routing control
    (`controls`: region -> state On/Off, None when missing). Not configured: nothing to check."""
    if not configured:
        return []
    out = []
    answered = sorted(r for r, ok in endpoints.items() if ok)
    total = len(endpoints)
    enough = len(answered) >= min(MIN_ARC_ENDPOINTS, max(total, 1))
    detail = f"{len(answered)}/{total} cluster endpoints answer ({', '.join(answered) or 'none'})"
    if errors:
        detail += "; " + "; ".join(errors)
    out.append(
        _check(
            "arc",
            ReadinessStatus.READY if enough and total else ReadinessStatus.NOT_READY,
            detail,
            region=None,
            target=None,
        )
    )
    for region in regions:
        state = controls.get(region)
        if not answered:
            seen = "unreadable: no cluster endpoint answered"
        else:
            seen = "missing (run provision)" if state is None else state
        out.append(
            _check(
                "arc",
                ReadinessStatus.READY if state is not None else ReadinessStatus.NOT_READY,
                f"routing control {seen}",
                region=region,
                target=None,
            )
        )
    return out


def record_checks(
    health_checks: Mapping[str, str | None] | None, regions: Sequence[str]
) -> list[ReadinessCheck]:
    """Every region has a failover record with a health check (`health_checks`: region -> its
    record's health check id, None without one; None when the records could not be read)."""
    if health_checks is None:
        return [
            _check(
                "record",
                ReadinessStatus.NOT_READY,
                "the failover name's records could not be read from Route 53",
                region=None,
                target=None,
            )
        ]
    out = []
    for region in regions:
        if region not in health_checks:
            out.append(
                _check("record", ReadinessStatus.NOT_READY, "no failover record", region=region, target=None)
            )
            continue
        hc = health_checks[region]
        out.append(
            _check(
                "record",
                ReadinessStatus.READY if hc else ReadinessStatus.NOT_READY,
                f"failover record with health check {hc}" if hc else "failover record without a health check",
                region=region,
                target=None,
            )
        )
    return out


_CELL = re.compile(r"[|\n]")


def render_readiness_markdown(report: ReadinessReport) -> str:
    """The readiness artifact: the verdict first, then every check."""
    verdict = "READY" if report.ready else "NOT READY"
    lines = [
        f"# Recovery readiness of {report.environment}: {verdict}",
        "",
        f"Evaluated {report.evaluated_at} ({report.evaluation_id}); "
        f"failover targets: {', '.join(report.targets)}.",
        "",
    ]
    if report.not_ready:
        lines += ["## Why not ready", "", *(f"- {r}" for r in report.reasons()), ""]
    if report.warnings:
        lines += [
            "## Warnings",
            "",
            *(f"- {c.check} ({c.region or 'environment'}): {c.detail}" for c in report.warnings),
            "",
        ]
    lines += ["## Checks", "", "| check | region | status | detail |", "|---|---|---|---|"]
    for c in report.checks:
        lines.append(f"| {c.check} | {c.region or '—'} | {c.status.value} | {_CELL.sub(' ', c.detail)} |")
    if report.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in report.notes)]
    return "\n".join(lines) + "\n"
