"""Retry and timeout numbers, in one place so they can be reasoned about together."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

__all__ = ["DEFAULT_CLIENT_SETTINGS", "DEFAULT_RETRIES", "ClientSettings", "RetrySettings"]


class ClientSettings(BaseModel):
    """How every AWS client talks to AWS.

    botocore's `standard` mode retries throttling, 5xx and connection errors with exponential
    backoff and jitter; `adaptive` adds client-side rate limiting for bursty control-plane
    work. Explicit timeouts matter because a Prefect task's timeout cannot interrupt a blocked
    sync call: the socket timeout is the only real deadline (see PREFECT-NOTES.md).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    retry_mode: Literal["standard", "adaptive"] = "standard"
    max_attempts: int = Field(default=5, ge=1, le=20, description="Total attempts, the first included")
    connect_timeout_s: float = Field(default=3.0, gt=0)
    read_timeout_s: float = Field(default=10.0, gt=0)
    # EKS tokens are valid for 15 minutes from signing; refresh with margin to spare.
    eks_token_refresh_s: float = Field(default=14 * 60, gt=0, le=15 * 60)
    # Route 53 API pacing (chalkdr.ratelimit): requests per second and burst for the account. The
    # default is the Knowledge Center's five per second; the current token-bucket guide allows
    # 10 per second with a burst of 50, which a caller that owns the account's budget may use.
    route53_requests_per_s: float = Field(default=5.0, gt=0, le=10.0)
    route53_burst: float = Field(default=5.0, ge=1, le=50.0)
    # A region whose API did not answer (a connection error after every retry) is not asked again
    # for this long: each further call fails at once (chalkdr.clients.UnreachableRegions) instead
    # of paying the whole retry ladder again. 0 turns it off.
    unreachable_cooldown_s: float = Field(default=30.0, ge=0, le=600)


class RetrySettings(BaseModel):
    """Prefect task retries, used only on tasks whose operation is safe to repeat (ensure/read)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_retries: int = Field(default=3, ge=0)
    task_retry_delays_s: tuple[float, ...] = (1.0, 2.0, 4.0)  # exponential backoff
    task_retry_jitter_factor: float = 0.2


DEFAULT_CLIENT_SETTINGS = ClientSettings()
DEFAULT_RETRIES = RetrySettings()
