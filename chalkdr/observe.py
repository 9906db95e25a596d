"""Observations of a failover as seen from outside, and the milestones derived from them.

A drill (and later the incident flow) polls at a fixed interval and records one Observation
per poll, timestamped on the monotonic clock (for durations) and the wall clock (to compare
with other processes' logs). Everything the report says about timing is computed here, from
those observations, never assumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

__all__ = [
    "Direction",
    "Milestones",
    "Observation",
    "QueryProbe",
    "TokenProbe",
    "error_window",
    "milestones",
]


class QueryProbe(BaseModel):
    """One real query through a URL: who answered, how fast, or what went wrong."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    status_code: int | None = None
    deployment_id: str | None = None
    region: str | None = None  # the region whose ALB address the query connected to
    latency_s: float | None = None
    error: str | None = None
    canary_value: str | None = None


class TokenProbe(BaseModel):
    """One credential exchange at the API server applications use (the metadata plane): whether
    a client that starts now, or whose token expires now, can get a token."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    status_code: int | None = None
    latency_s: float | None = None
    error: str | None = None


class Observation(BaseModel):
    """One poll: Route 53's view, the DNS answer, and a real query through the failover URL."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mono: float = Field(description="time.monotonic() when the poll started")
    wall: float = Field(description="time.time() when the poll started")
    health: dict[str, bool | None] = Field(
        default_factory=dict, description="Route 53 verdict per region (None = could not read)"
    )
    dns_answer: str | None = Field(default=None, description="The region the failover name resolves to")
    query: QueryProbe
    token: TokenProbe | None = Field(default=None, description="Token exchange at the configured API server")
    # The same client with a resolver that caches for the TTL (a client that resolved earlier).
    dns_answer_cached: str | None = Field(default=None, description="The region a TTL-caching client is on")
    query_cached: QueryProbe | None = None
    # The authoritative answer set as shares (weights of the regions seen in several uncached
    # resolutions), and each region's availability through its own hostname: the population
    # model's inputs (chalkdr.population).
    answer: dict[str, float] = Field(default_factory=dict)
    available: dict[str, bool] = Field(default_factory=dict)
    # When `available` was measured: the midpoint of its queries, which run after the probes
    # above (under load, a good fraction of a second after `mono`).
    available_mono: float | None = None


class Direction(StrEnum):
    FAILOVER = "failover"  # away from the faulted region
    FAILBACK = "failback"  # back to it after the undo


class Milestones(BaseModel):
    """Seconds from the reference instant (injection or undo) to each milestone; None = never."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    direction: Direction
    health_flip_s: float | None = None  # Route 53 marks the faulted region unhealthy (healthy on failback)
    dns_flip_s: float | None = None  # the failover name resolves to the target region(s)
    first_good_answer_s: float | None = None  # first successful query answered by the target region(s)
    # The same, for a client whose resolver caches the answer for its TTL.
    dns_flip_cached_s: float | None = None
    first_good_answer_cached_s: float | None = None
    canary_served_s: float | None = None  # the canary value served through the failover URL
    # From here on every observed answer was good and came from the target region(s): the
    # active-active milestone ("every answer comes from the healthy regions").
    settled_s: float | None = None
    failed_probes: int = 0
    error_window_s: tuple[float, float] | None = None  # first and last failed probe, relative
    observations: int = 0
    # Token exchanges at the API server applications use: failed / attempted (None: not probed).
    token_failures: int = 0
    token_probes: int = 0


def error_window(obs: Sequence[Observation], start: float) -> tuple[int, tuple[float, float] | None]:
    failed = [o.mono - start for o in obs if not o.query.ok]
    return len(failed), (failed[0], failed[-1]) if failed else None


def milestones(
    obs: Sequence[Observation],
    *,
    start_mono: float,
    direction: Direction,
    faulted_region: str,
    target_regions: Sequence[str],
) -> Milestones:
    """Derive the milestones of one transition.

    Failover: the faulted region turns unhealthy, the DNS answer leaves it, and a good answer
    comes from one of `target_regions`. Failback: the faulted region turns healthy, DNS comes
    back to it, and a good answer comes from it (`target_regions` = [faulted_region]). In
    active-active routing, "DNS flipped" means no answer goes to the faulted region any more,
    which a single poll cannot prove: the caller passes the healthy regions as targets and the
    first poll answered by one of them after the faulted region's health flip counts.
    """
    after = [o for o in obs if o.mono >= start_mono]
    want_healthy = direction is Direction.FAILBACK
    targets = set(target_regions)

    def first(pred: object) -> float | None:
        for o in after:
            if pred(o):  # type: ignore[operator]
                return round(o.mono - start_mono, 3)
        return None

    health_flip = first(lambda o: o.health.get(faulted_region) is want_healthy)
    dns_flip = first(lambda o: o.dns_answer in targets)
    good = first(lambda o: o.query.ok and o.query.region in targets)
    canary = first(lambda o: o.query.ok and o.query.region in targets and o.query.canary_value is not None)
    dns_flip_cached = first(lambda o: o.dns_answer_cached in targets)
    good_cached = first(
        lambda o: o.query_cached is not None and o.query_cached.ok and o.query_cached.region in targets
    )
    failed, window = error_window(after, start_mono)
    tokens = [o.token for o in after if o.token is not None]
    settled = None
    for o in reversed(after):
        if not (o.query.ok and o.query.region in targets):
            break
        settled = round(o.mono - start_mono, 3)
    return Milestones(
        direction=direction,
        health_flip_s=health_flip,
        dns_flip_s=dns_flip,
        first_good_answer_s=good,
        dns_flip_cached_s=dns_flip_cached,
        first_good_answer_cached_s=good_cached,
        canary_served_s=canary,
        settled_s=settled,
        failed_probes=failed,
        error_window_s=window,
        observations=len(after),
        token_failures=sum(1 for t in tokens if not t.ok),
        token_probes=len(tokens),
    )
