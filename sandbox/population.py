"""Ground truth for the client-population model: real virtual clients querying the failover name.

Each virtual client behaves as an application behind its own caching stub resolver does: it
resolves the failover name through the sandbox's name server, keeps the answer for its TTL
(dnspython's cache), picks one of the answer's addresses, and sends a real online query there
with the failover name as Host, on a new connection each time (the model's assumption; a pooled
connection would stay on the old ALB longer). Clients start at moments spread uniformly over
one TTL, so their caches expire at spread moments, as a real population's do.

Nothing here uses chalk-dr's code: it is the independent measurement the drill's model
(chalkdr.population) is compared with in benchmarks/drill.py and tests. Every request's
outcome is kept: (wall time, client, ok, the region whose address it went to).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import httpx

__all__ = ["ClientRequest", "VirtualClients"]


@dataclass(frozen=True)
class ClientRequest:
    wall: float
    client: int
    ok: bool
    region: str | None  # whose ALB address the request went to (None: the name did not resolve)


@dataclass
class VirtualClients:
    """`count` clients, each sending a query every `period_s` through `name`:`port`."""

    count: int
    nameserver: str  # "ip:port" of the sandbox's name server
    name: str  # the failover name
    port: int
    api_url: str  # where tokens come from: the API server's address and port
    api_host: str  # the API server's name, sent as Host
    credentials: Mapping[str, str]  # client_id, client_secret, environment_id
    query: Mapping[str, Any]  # {"inputs": ..., "outputs": ...}
    regions_by_address: Mapping[str, str]
    ttl_s: float  # the record's TTL in real seconds: the clients' start moments spread over it
    period_s: float = 0.25
    requests: list[ClientRequest] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_world(
        cls, topology: Any, world: Mapping[str, Any], *, count: int, period_s: float = 0.25
    ) -> VirtualClients:
        """Clients of a sandbox world: its name server and port (`/_sandbox/world`), the topology's
        failover name, credentials and probe query, tokens from the primary's API server."""
        from chalkdr.secrets import resolve_secret

        api_host = str(topology.chalk.api_server).split("//", 1)[1].split(":")[0].rstrip("/")
        primary = world["regions"][topology.primary.aws_region]
        return cls(
            count=count,
            nameserver=world["nameserver"],
            name=topology.route53.failover_record,
            port=int(world["port"]),
            api_url=f"http://{primary['api_address']}:{world['port']}",
            api_host=api_host,
            credentials={
                "client_id": topology.chalk.client_id,
                "client_secret": resolve_secret(topology.chalk.client_secret),
                "environment_id": topology.chalk.environment_id,
            },
            query={"inputs": topology.probe.inputs, "outputs": topology.probe.outputs},
            regions_by_address={a: r for r, reg in world["regions"].items() for a in reg["alb_addresses"]},
            ttl_s=60 / topology.time_scale,
            period_s=period_s,
        )

    def _resolver(self) -> dns.resolver.Resolver:
        host, _, port = self.nameserver.rpartition(":")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, int(port))]
        resolver.cache = dns.resolver.Cache()  # its own cache: it keeps the answer for the TTL
        resolver.lifetime = resolver.timeout = 2.0
        return resolver

    def _token(self, http: httpx.Client) -> str:
        resp = http.post(
            f"{self.api_url.rstrip('/')}/v1/oauth/token",
            headers={"Host": self.api_host},
            json={
                "client_id": self.credentials["client_id"],
                "client_secret": self.credentials["client_secret"],
                "grant_type": "client_credentials",
            },
        )
        resp.raise_for_status()
        return str(resp.json()["access_token"])

    def _client(self, index: int) -> None:
        rng = random.Random(index)
        resolver = self._resolver()
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
        with httpx.Client(timeout=2.0, trust_env=False, limits=limits) as http:
            token = self._token(http)
            headers = {
                "Authorization": f"Bearer {token}",
                "X-Chalk-Env-Id": self.credentials["environment_id"],
                "Host": f"{self.name}:{self.port}",
            }
            body = {**self.query, "include_meta": True}
            # Spread the clients' first lookups (and so their cache expiries) over one TTL.
            if self._stop.wait(index / self.count * self.ttl_s):
                return
            while not self._stop.is_set():
                started = time.time()
                region: str | None = None
                ok = False
                try:
                    answer = resolver.resolve(self.name, dns.rdatatype.A, search=False)
                    address = rng.choice([r.to_text() for r in answer])
                    region = self.regions_by_address.get(address)
                    resp = http.post(
                        f"http://{address}:{self.port}/v1/query/online", json=body, headers=headers
                    )
                    ok = resp.status_code == 200
                except (dns.exception.DNSException, httpx.HTTPError):
                    ok = False
                with self._lock:
                    self.requests.append(ClientRequest(started, index, ok, region))
                self._stop.wait(max(0.0, self.period_s - (time.time() - started)))

    def start(self) -> VirtualClients:
        for i in range(self.count):
            t = threading.Thread(target=self._client, args=(i,), name=f"virtual-client-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def share_failing(self, start_wall: float, end_wall: float, step_s: float) -> list[tuple[float, float]]:
        """(t after start, share of clients whose latest request at or before t failed)."""
        with self._lock:
            reqs = sorted(self.requests, key=lambda r: r.wall)
        latest: dict[int, bool] = {}
        out: list[tuple[float, float]] = []
        i = 0
        t = start_wall
        while t <= end_wall:
            while i < len(reqs) and reqs[i].wall <= t:
                latest[reqs[i].client] = reqs[i].ok
                i += 1
            if latest:
                out.append(
                    (round(t - start_wall, 3), sum(1 for ok in latest.values() if not ok) / len(latest))
                )
            t += step_s
        return out

    def outages(self, start_wall: float, end_wall: float) -> list[float]:
        """Per client, the seconds its requests failed within [start, end] (each failed request
        counts until the client's next request)."""
        with self._lock:
            reqs = sorted(
                (r for r in self.requests if start_wall <= r.wall <= end_wall), key=lambda r: r.wall
            )
        by_client: dict[int, list[ClientRequest]] = {}
        for r in reqs:
            by_client.setdefault(r.client, []).append(r)
        out = []
        for seq in by_client.values():
            lost = 0.0
            for a, b in zip(seq, [*seq[1:], None], strict=True):
                if not a.ok:
                    lost += (b.wall if b is not None else end_wall) - a.wall
            out.append(lost)
        return out
