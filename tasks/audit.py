"""Tasks for the audit trail in the Prefect backend: events per mutation, a table per run."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from chalkdr.audit import AuditRecord
from chalkdr.clients import AwsClients
from chalkdr.plan import WaitPolicy

__all__ = ["ApplyContext", "AuditTrail", "Emit", "emit_audit_event", "publish_audit_table"]

Emit = Callable[[AuditRecord], None]


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


class AuditTrail:
    """The audit of one change: each mutating call is recorded and emitted the moment it is made.

    `detail` (who approved, why) is added to every record; `emit` defaults to a Prefect event
    and is a parameter so that tests and embedders can collect records instead.
    """

    def __init__(
        self, system: str, *, detail: Mapping[str, Any] | None = None, emit: Emit = emit_audit_event
    ) -> None:
        self.system = system
        self._detail = dict(detail or {})
        self._emit = emit
        self.records: list[AuditRecord] = []

    def record(self, action: str, resource: str, region: str, api_call: str, /, **extra: Any) -> AuditRecord:
        entry = AuditRecord(
            system=self.system,
            action=action,
            resource=resource,
            region=region,
            api_call=api_call,
            detail={**self._detail, **extra},
        )
        self._emit(entry)
        self.records.append(entry)
        return entry


@dataclass(frozen=True)
class ApplyContext:
    """What every task that applies a plan change works with: the clients, how long to wait for
    AWS's asynchronous work, and where each mutating call is recorded (with who approved it)."""

    clients: AwsClients
    waits: WaitPolicy = field(default_factory=WaitPolicy)
    audit_detail: Mapping[str, Any] = field(default_factory=dict)
    emit: Emit = emit_audit_event

    def trail(self, system: str, **detail: Any) -> AuditTrail:
        return AuditTrail(system, detail={**self.audit_detail, **detail}, emit=self.emit)


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
