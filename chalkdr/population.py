"""What a whole population of clients saw during a transition, computed from the drill's timeline.

One probe is one client. The clients users care about resolved the failover name at their own
moments and keep the answer for its TTL (an alias to an ALB: the ELB's 60 s), so when Route 53
moves the answer, each client moves at its next refresh, and in active-active routing each
client is on one region of the answer set. From the timeline the drill records — the
authoritative answer set over time (uncached resolution), each region's own availability (a
query through its own hostname), the TTL — this module computes what a population of clients
whose caches were filled at uniformly spread moments experiences:

- the share of clients failing over time (a client fails while the region it resolved to does
  not answer through its own hostname, or while its answer was empty);
- each client's outage, and the mean, p95 and maximum over clients, and client-seconds lost
  per client (the mean outage);
- the peak share failing (about 1/N of clients when one of N active-active regions fails);
- when the last client recovered (the share back to zero).

The population is deterministic: client i refreshes at (i + 1/2)/M of the TTL, and its choice
within an answer set at each refresh is drawn by the regions' weights from a fixed hash of
(client, refresh), so the same timeline gives the same figures. It models a resolver per client (no shared
caches) and clients that reconnect per request (a pooled connection would stay on the old ALB
longer); the benchmark compares it with a population of real virtual clients in the sandbox.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from collections.abc import Sequence

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

__all__ = ["PopulationOutage", "Sample", "population_outage"]

_MASK = (1 << 64) - 1


def _uniform(client: int, refresh: int) -> float:
    """A deterministic, independent-looking number in [0, 1) per (client, refresh): splitmix64.
    Independent draws matter: a client's region at one refresh says nothing about the next."""
    z = (client * 0x9E3779B97F4A7C15 + (refresh & _MASK) * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return ((z ^ (z >> 31)) >> 11) / float(1 << 53)


class Sample(BaseModel):
    """One point of the timeline, `t` seconds after the reference instant (injection or undo)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    t: float
    answer: dict[str, float]  # region -> share of answers (weights over the answer set; empty: none)
    available: dict[str, bool]  # region -> answered a query through its own hostname


class PopulationOutage(BaseModel):
    """The population's view of one transition; times in seconds after the reference instant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    clients: int
    ttl_s: float
    curve: list[tuple[float, float]] = Field(default_factory=list)  # (t, share of clients failing)
    peak_share: float = 0.0
    mean_outage_s: float = 0.0  # client-seconds lost per client
    p95_outage_s: float = 0.0
    max_outage_s: float = 0.0
    affected_share: float = 0.0  # clients that failed at least once
    recovered_s: float | None = None  # first moment after the last failure when no client fails
    first_failure_s: float | None = None


def _choose(shares: Mapping[str, float], u: float) -> str | None:
    total = sum(w for w in shares.values() if w > 0)
    if total <= 0:
        return None
    acc = 0.0
    for region in sorted(shares):
        w = shares[region]
        if w <= 0:
            continue
        acc += w / total
        if u < acc:
            return region
    return max(sorted(shares), key=lambda r: shares[r])


def _answer_at(samples: Sequence[Sample], t: float) -> Mapping[str, float]:
    """The answer set in force at `t`: the last sample at or before it (the first before any)."""
    chosen = samples[0]
    for s in samples:
        if s.t > t:
            break
        chosen = s
    return chosen.answer


def population_outage(samples: Sequence[Sample], *, ttl_s: float, clients: int = 1000) -> PopulationOutage:
    """The population's outage over the sampled span (see the module docstring)."""
    if ttl_s <= 0:
        raise ValueError("the TTL must be positive")
    if clients < 1:
        raise ValueError("a population needs at least one client")
    ordered = sorted(samples, key=lambda s: s.t)
    if len(ordered) < 2:
        return PopulationOutage(clients=clients, ttl_s=ttl_s)
    start = ordered[0].t
    # Each sample stands for the span from halfway since the previous one to halfway to the next
    # (the first and last for their own halves): a transition between two samples is placed at
    # their midpoint, unbiased, instead of at the later one (which overstated every outage by
    # half a sampling gap, about a second at a 0.5 s probe interval under load).
    times = [s.t for s in ordered]
    lo = [times[0], *((a + b) / 2 for a, b in itertools.pairwise(times))]
    hi = [*lo[1:], times[-1]]
    outage = [0.0] * clients
    failing_at = [0] * len(ordered)
    for i in range(clients):
        phase = (i + 0.5) / clients * ttl_s
        # the refresh in force at the start: the last one at or before it
        k = math.floor((start - phase) / ttl_s)
        refresh = phase + k * ttl_s
        region = _choose(_answer_at(ordered, refresh), _uniform(i, k))
        for j, s in enumerate(ordered):
            while refresh + ttl_s <= s.t:
                k += 1
                refresh += ttl_s
                region = _choose(_answer_at(ordered, refresh), _uniform(i, k))
            if region is None or not s.available.get(region, False):
                failing_at[j] += 1
                outage[i] += hi[j] - lo[j]
    curve = [(round(s.t, 3), round(n / clients, 4)) for s, n in zip(ordered, failing_at, strict=True)]
    failing = [j for j, n in enumerate(failing_at) if n]
    recovered = None
    first = None
    if failing:
        first = round(ordered[failing[0]].t, 3)
        last = failing[-1]
        recovered = round(ordered[last + 1].t, 3) if last + 1 < len(ordered) else None
    ranked = sorted(outage)
    p95 = ranked[min(clients - 1, math.ceil(0.95 * clients) - 1)]
    return PopulationOutage(
        clients=clients,
        ttl_s=ttl_s,
        curve=curve,
        peak_share=max((n / clients for n in failing_at), default=0.0),
        mean_outage_s=round(sum(outage) / clients, 3),
        p95_outage_s=round(p95, 3),
        max_outage_s=round(ranked[-1], 3),
        affected_share=round(sum(1 for o in outage if o > 0) / clients, 4),
        recovered_s=recovered,
        first_failure_s=first,
    )
