"""recovery-readiness: would a failover succeed now? Evaluated on a schedule, changing nothing.

ARC Region switch's plan evaluation, for the whole Chalk data plane: for every region a
failover could move to, its serving and capacity against the primary's, its Aurora cluster
(an instance to serve from, replicating within the guard); for the environment, DynamoDB
replicas ACTIVE, the reverse MSK replicators a failback needs, the ARC routing controls
reachable through enough cluster endpoints, and a health check on every failover record.

The run reads only (no lock: it never waits for, or blocks, a drill or a recovery), publishes
the readiness report as the artifact `recovery-readiness-<env>` and the event
`chalkdr.recovery-readiness.evaluated`, and ends Failed, naming every reason, when a failover
would not succeed: a scheduled run that fails is the alarm.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC
from datetime import datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.states import Completed
from prefect.states import Failed

from chalkdr.clients import AwsClients
from chalkdr.errors import DrillAborted
from chalkdr.readiness import ReadinessReport
from chalkdr.readiness import arc_checks
from chalkdr.readiness import aurora_check
from chalkdr.readiness import capacity_check
from chalkdr.readiness import dynamodb_checks
from chalkdr.readiness import record_checks
from chalkdr.readiness import render_readiness_markdown
from chalkdr.readiness import reverse_replicator_checks
from chalkdr.readiness import serving_check
from chalkdr.recovery import RegionReading
from chalkdr.topology import Topology
from flows.runbook import load_topology_parameter
from tasks.msk import read_reverse_replicators
from tasks.probes import ProbeSet
from tasks.readiness import probe_arc
from tasks.readiness import read_dynamodb_replicas
from tasks.recovery import read_global_writer
from tasks.recovery import read_lags
from tasks.recovery import read_region
from tasks.route53 import discover_routing

__all__ = ["evaluate_readiness", "recovery_readiness"]


def _targets(t: Topology) -> list[str]:
    """Where a failover could move to: the secondaries (failover routing), or every region
    (active-active: any region may be the one that fails)."""
    return [r.aws_region for r in (t.regions if t.active_active else t.secondaries)]


def evaluate_readiness(t: Topology, clients: AwsClients, probes: ProbeSet) -> ReadinessReport:
    """Read everything a failover depends on and draw each check's verdict (no change made)."""
    now = time.time()
    report = ReadinessReport(
        environment=t.environment,
        evaluation_id=f"readiness-{t.environment}-{int(now)}-{uuid.uuid4().hex[:6]}",
        evaluated_at=datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        targets=_targets(t),
    )
    notes = report.notes
    readings = {r.aws_region: read_region(probes, r) for r in t.regions}
    try:
        writer = read_global_writer(clients, t, [r.aws_region for r in t.regions])
        for reading in readings.values():
            reading.aurora_is_writer = reading.aurora_cluster_arn == writer.writer_arn
    except DrillAborted as exc:
        notes.append(str(exc))
    read_lags(probes, list(readings.values()), notes)
    primary: RegionReading | None = readings.get(t.primary.aws_region)
    guard = t.guards.max_aurora_replication_lag_ms
    for target in report.targets:
        reading = readings[target]
        report.checks += [
            serving_check(reading),
            capacity_check(reading, primary if target != t.primary.aws_region else None),
            aurora_check(reading, max_lag_ms=guard),
        ]
    regions = [r.aws_region for r in t.regions]
    report.checks += dynamodb_checks(read_dynamodb_replicas(clients, t, notes), regions)
    report.checks += reverse_replicator_checks(
        read_reverse_replicators(t, clients),
        required=t.recovery.failback_readiness,
        primary=t.primary.aws_region,
    )
    if t.recovery.arc is not None:
        arc = probe_arc(clients, t)
        report.checks += arc_checks(
            configured=True, endpoints=arc.endpoints, controls=arc.states, regions=regions, errors=arc.errors
        )
    try:
        routing = discover_routing(t, clients, probes.resolver)
        health_checks: dict[str, str | None] | None = {
            region: route.record_health_check_id or route.health_check_id
            for region, route in routing.routes.items()
        }
    except Exception as exc:  # noqa: BLE001 - unreadable records are a not-ready check, not a crash
        notes.append(f"failover records unreadable: {type(exc).__name__}: {exc}")
        health_checks = None
    report.checks += record_checks(health_checks, regions)
    for reading in readings.values():
        notes.extend(f"{reading.region}: {e}" for e in reading.errors)
    return report


def publish_readiness(report: ReadinessReport) -> None:
    """The keyed artifact and the event; a plain call, not a task."""
    create_markdown_artifact(
        markdown=render_readiness_markdown(report),
        key=f"recovery-readiness-{report.environment}",
        description=(
            f"Recovery readiness of {report.environment}: {'ready' if report.ready else 'NOT READY'} "
            f"({len(report.not_ready)} not ready, {len(report.warnings)} warnings)"
        ),
    )
    emit_event(
        event="chalkdr.recovery-readiness.evaluated",
        resource={
            "prefect.resource.id": f"chalkdr.readiness.{report.environment}",
            "prefect.resource.name": report.evaluation_id,
            "chalkdr.environment": report.environment,
        },
        payload={
            "ready": report.ready,
            "reasons": report.reasons(),
            "warnings": len(report.warnings),
            "targets": report.targets,
        },
    )


@flow(name="recovery-readiness", persist_result=True, validate_parameters=True)
def recovery_readiness(topology: str | dict[str, Any]) -> Any:
    """Evaluate, changing nothing, whether a failover of the environment would succeed now.

    Ends Failed, with every reason, when it would not; Completed (warnings in the report) when
    it would.

    Args:
        topology: The topology: on a deployed run, the name of a file in the worker's
            $CHALK_DR_TOPOLOGY_DIR (e.g. topology.yaml).
    """
    t = load_topology_parameter(topology)
    clients = AwsClients.for_topology(t)
    probes = ProbeSet.for_topology(t, clients)
    try:
        report = evaluate_readiness(t, clients, probes)
    finally:
        probes.close()
    publish_readiness(report)
    if report.ready:
        return Completed(message=f"{t.environment}: ready ({len(report.warnings)} warnings)", data=report)
    return Failed(message=f"{t.environment}: not ready: {'; '.join(report.reasons())}", data=report)
