"""Task retry policy: retry only what is safe and only when the failure is transient."""

from __future__ import annotations

from typing import Any

from chalkdr.errors import ChalkCliError
from chalkdr.errors import TransientAwsError
from chalkdr.errors import TransientKubeError
from chalkdr.settings import DEFAULT_RETRIES
from chalkdr.settings import RetrySettings

__all__ = ["retry_options", "retry_transient"]


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: throttling/5xx/connection errors retry, the rest fail fast."""
    try:
        state.result()
    except (TransientAwsError, TransientKubeError):
        return True
    except ChalkCliError as exc:
        return exc.transient
    except Exception:  # noqa: BLE001 - anything else is permanent by definition
        return False
    return False


def retry_options(settings: RetrySettings = DEFAULT_RETRIES) -> dict[str, Any]:
    """Keyword arguments for `@task(...)` on idempotent tasks (ensure_*, read_*).

    Never use on a task that runs inside a fault-injection transaction: a failed attempt rolls
    the whole transaction back even if the retry succeeds (PREFECT-NOTES.md).
    """
    return {
        "retries": settings.task_retries,
        "retry_delay_seconds": list(settings.task_retry_delays_s),
        "retry_jitter_factor": settings.task_retry_jitter_factor,
        "retry_condition_fn": retry_transient,
    }
