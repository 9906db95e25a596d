"""Tasks for the orchestrator's own guard rails: environment locks and the global kill switch."""

from __future__ import annotations

import contextlib

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.exceptions import ObjectNotFound
from prefect.variables import Variable

__all__ = ["KILL_SWITCH_VARIABLE", "ensure_lock", "kill_switch_reason"]

# A Prefect Variable; any truthy value (true, "on", {"engaged": true, "reason": ...}) engages it.
KILL_SWITCH_VARIABLE = "chalkdr-kill-switch"


def ensure_lock(name: str, *, limit: int = 1) -> str:
    """Make sure a global concurrency limit exists (Prefect never creates one on use).

    Acquire it with `concurrency(name, occupy=1, strict=True)`: without strict, a missing limit
    silently runs unguarded (PREFECT-NOTES.md).
    """
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run created it first
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
    return name


def kill_switch_reason() -> str | None:
    """Why the kill switch is engaged, or None. Read on every observation, so it must be cheap."""
    value = Variable.get(KILL_SWITCH_VARIABLE, default=None)
    if not value or (isinstance(value, str) and value.lower() in {"off", "false", "0", "no"}):
        return None
    if isinstance(value, dict):
        if not value.get("engaged", True):
            return None
        return str(value.get("reason") or "kill switch engaged")
    return f"kill switch engaged ({value})"
