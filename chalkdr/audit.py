"""The audit record: one row per mutating action chalk-dr took, for artifacts and events."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

__all__ = ["AuditRecord"]


class AuditRecord(BaseModel):
    """What was changed, where, by which call, and when; never a secret.

    `resource` is the ARN or id the call touched: it becomes the Prefect event's
    `prefect.resource.id`, so the UI can show every change made to one resource across runs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str  # route53, dynamodb, msk, aurora, cloudwatch, eks, chalk, fis
    action: str  # e.g. create-health-check, update-table-replica
    resource: str
    region: str
    api_call: str  # e.g. route53:CreateHealthCheck
    detail: dict[str, Any] = Field(default_factory=dict)
    ts: float = Field(default_factory=time.time)

    @property
    def event_name(self) -> str:
        return f"chalkdr.{self.system}.{self.action}"
