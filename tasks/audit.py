"""Tasks for the audit trail in the Prefect backend: events per mutation, a table per run."""

from __future__ import annotations

from collections.abc import Sequence

from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from chalkdr.audit import AuditRecord

__all__ = ["emit_audit_event", "publish_audit_table"]


def emit_audit_event(record: AuditRecord) -> None:
    """A Prefect event whose resource is the ARN/id touched (the flow run is related automatically)."""
    emit_event(
        event=record.event_name,
        resource={
            "prefect.resource.id": record.resource,
            "prefect.resource.role": record.system,
            "chalkdr.region": record.region,
        },
        payload={"api_call": record.api_call, "region": record.region, **record.detail},
    )


def publish_audit_table(records: Sequence[AuditRecord], *, key: str, description: str) -> None:
    """One table artifact listing every mutating call of the run, oldest first."""
    rows = [
        {
            "time": f"{r.ts:.3f}",
            "system": r.system,
            "action": r.action,
            "api_call": r.api_call,
            "region": r.region,
            "resource": r.resource,
        }
        for r in sorted(records, key=lambda r: r.ts)
    ]
    create_table_artifact(table=rows, key=key, description=description)
