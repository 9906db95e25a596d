"""Benchmark: incident failovers against the sandbox; wall time against the floor, and overhead.

    .venv/bin/python benchmarks/recovery.py [--runs 3] [--arc] [--interval 0.5]

Starts its own sandbox world and Prefect server (temporary PREFECT_HOME), provisions it, then per
run: the incident (us-east-1 really down: its query servers scaled to zero and its AWS API, with
Route 53's control plane, unreachable), an ungraceful failover to us-west-2 started at the same
instant (an operator who reacts at once: the best case), then recovery of the region and a
failback, untimed, to set up the next run.

Reported per run and as medians:

- wall: the failover flow's wall time; RTO: the flow's own measure (run start -> first good
  answer from us-west-2 through the failover name, fresh connection, uncached DNS);
- the floor, in the sandbox's time: detection (Route 53's request interval x failure threshold)
  + the record's TTL + the Aurora failover's duration (the sandbox completes one `switch_after`
  real seconds after the call) — the issue's definition: what no orchestration can beat when the
  metadata plane moves before the traffic does;
- the clients' view: `--clients` virtual clients (sandbox/population.py), each with its own
  caching resolver (the answer kept for its TTL) and a fresh connection per query, querying
  through the failover name all along; per client, the seconds from the incident to its first
  good answer from us-west-2. Their maximum is the incident's RTO for every client, the figure
  the floor bounds; the flow's RTO is measured with an uncached resolver, so it can be below the
  floor by up to the TTL;
- ground truth from the sandbox's log: when Route 53's verdict on us-east-1 flipped, and how long
  the Aurora failover took, measured (not configured);
- orchestration overhead: the wall time not spent waiting on the world — wall minus the waits the
  report measured (the Aurora writer's move, capacity becoming ready, the client-view wait in
  verify), in seconds and as a share of the wall time.

With --arc the world's topology has ARC routing controls: traffic moves by a routing control set
through a cluster endpoint outside us-east-1, no Route 53 health-check detection needed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.__main__ import down
from sandbox.__main__ import up
from sandbox.demo import _load_env
from sandbox.demo import ensure_prefect_server
from sandbox.population import VirtualClients

EAST, WEST = "us-east-1", "us-west-2"
AURORA_SWITCH_AFTER_S = 0.5  # sandbox/aurora.py AuroraSim(switch_after=...) as the world starts it


def _truth(endpoint: str, kind: str, since: float) -> list[dict[str, Any]]:
    resp = httpx.get(
        f"{endpoint}/_sandbox/truth", params={"kind": kind, "since": since}, timeout=10, trust_env=False
    )
    return list(resp.json())


def _unreachable(endpoint: str, region: str, flag: bool) -> None:
    httpx.post(
        f"{endpoint}/_sandbox/aws/unreachable",
        json={"region": region, "unreachable": flag},
        timeout=10,
        trust_env=False,
    ).raise_for_status()


def _scale(topo: Any, region: str, replicas: int) -> None:
    from chalkdr.clients import AwsClients

    r = topo.region(region)
    kube = AwsClients.for_topology(topo).kube(r.eks.cluster_name, region)
    kube.apps().patch_namespaced_deployment_scale(
        r.eks.query_server_deployment, r.eks.namespace, {"spec": {"replicas": replicas}}
    )


def _replicas(topo: Any, region: str) -> int:
    from chalkdr.clients import AwsClients

    r = topo.region(region)
    kube = AwsClients.for_topology(topo).kube(r.eks.cluster_name, region)
    return int(
        kube.apps().read_namespaced_deployment(r.eks.query_server_deployment, r.eks.namespace).spec.replicas
    )


def _ready(topo: Any, region: str, replicas: int, timeout_s: float = 60) -> None:
    from chalkdr.clients import AwsClients

    r = topo.region(region)
    kube = AwsClients.for_topology(topo).kube(r.eks.cluster_name, region)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dep = kube.apps().read_namespaced_deployment(r.eks.query_server_deployment, r.eks.namespace)
        if int(dep.status.ready_replicas or 0) >= replicas:
            return
        time.sleep(0.2)
    raise SystemExit(f"{region} query servers not ready within {timeout_s:.0f} s")


def _clients_back(clients: Any, since: float, region: str, timeout_s: float) -> list[float] | None:
    """Per virtual client, seconds from `since` to its first good answer from `region` (waiting
    until every client has had one, or the deadline: None)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with clients._lock:
            reqs = [r for r in clients.requests if r.wall >= since]
        first: dict[int, float] = {}
        for r in sorted(reqs, key=lambda r: r.wall):
            if r.ok and r.region == region and r.client not in first:
                first[r.client] = r.wall - since
        if len(first) == clients.count:
            return sorted(first.values())
        if time.monotonic() > deadline:
            return None
        time.sleep(0.5)


def _waits(report: Any) -> float:
    """The seconds the failover spent waiting on the world, as its report measured them."""
    waited = 0.0
    if report.aurora is not None:
        waited += (report.aurora.writer_moved_after_s or 0.0) + (report.aurora.waited_for_lag_s or 0.0)
    waited += report.phases["capacity"].duration_s or 0.0  # scale calls + pods becoming ready
    waited += report.phases["verify"].duration_s or 0.0  # until the clients are seen on the target
    return waited


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--interval", type=float, default=0.5, help="the failover's probe interval (s)")
    ap.add_argument("--arc", action="store_true", help="a topology with ARC routing controls")
    ap.add_argument("--clients", type=int, default=20, help="virtual clients with caching resolvers")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="chalkdr-bench-recovery-"))
    home, state = tmp / "prefect", tmp / "world"
    api = ensure_prefect_server(home, 0)
    os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=str(home))
    up(state, time_scale=10.0, routing="failover", timeout_s=60, arc=args.arc, failback_readiness=args.arc)
    try:
        _load_env(state / "sandbox.env")
        from chalkdr.recovery import FailbackReport
        from chalkdr.recovery import FailoverReport
        from chalkdr.topology import load_topology
        from flows.provision import provision
        from flows.recovery import failback
        from flows.recovery import failover

        topo_path = str(state / "topology.yaml")
        topo = load_topology(topo_path)
        prov = provision(topology=topo_path, mode="apply", require_approval=False, return_state=True)
        assert prov.is_completed(), prov.message
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        hc = topo.route53.health_check
        scale = topo.time_scale
        detection = hc.request_interval * hc.failure_threshold / scale
        ttl = 60 / scale  # an alias to a load balancer is answered with the ELB's TTL, 60 s
        floor = (0.0 if args.arc else detection) + ttl + AURORA_SWITCH_AFTER_S
        replicas = _replicas(topo, EAST)
        walls, rtos, overheads, shares, ratios, all_back = [], [], [], [], [], []
        world = httpx.get(f"{endpoint}/_sandbox/world", timeout=10, trust_env=False).json()
        for i in range(args.runs):
            clients = VirtualClients.for_world(topo, world, count=args.clients).start()
            time.sleep(ttl + 1)  # every client has resolved (and cached) before the incident
            started = time.time()
            _scale(topo, EAST, 0)
            _unreachable(endpoint, EAST, True)
            t0 = time.monotonic()
            st = failover(
                topology=topo_path,
                from_region=EAST,
                mode="ungraceful",
                require_approval=False,
                probe_interval_seconds=args.interval,
                return_state=True,
            )
            wall = time.monotonic() - t0
            back = _clients_back(clients, started, WEST, timeout_s=3 * floor + 30)
            clients.stop()
            report = st.result(raise_on_failure=False)
            assert isinstance(report, FailoverReport), report
            if report.rto_s is None:
                raise SystemExit(f"run {i + 1}: failover did not verify: {report.outcome_reason}")
            flips = [
                e["ts"] - started
                for e in _truth(endpoint, "route53.health_check", started)
                if e.get("healthy") is False
            ]
            ops = _truth(endpoint, "aurora.operation", started)
            writers = _truth(endpoint, "aurora.writer", started)
            aurora_s = (writers[0]["ts"] - ops[0]["ts"]) if ops and writers else None
            overhead = max(wall - _waits(report), 0.0)
            walls.append(wall)
            rtos.append(report.rto_s)
            if back is not None:
                all_back.append(max(back))
                print(
                    f"  {len(back)} clients (caching resolvers): first good answer from {WEST} after "
                    f"median {statistics.median(back):.2f} s, the last after {max(back):.2f} s "
                    f"(floor {floor:.2f} s, last/floor {max(back) / floor:.2f})"
                )
            else:
                print(f"  not every client was answered by {WEST} within {3 * floor + 30:.0f} s")
            overheads.append(overhead)
            shares.append(overhead / wall)
            ratios.append(report.rto_s / floor)
            print(
                f"run {i + 1}: wall {wall:.2f} s, RTO {report.rto_s:.2f} s, floor {floor:.2f} s "
                f"(RTO/floor {report.rto_s / floor:.2f}); traffic via {report.traffic_via}; "
                f"Route 53 verdict on {EAST} flipped at {min(flips):.2f} s"
                if flips
                else f"run {i + 1}: wall {wall:.2f} s, RTO {report.rto_s:.2f} s, floor {floor:.2f} s; "
                f"traffic via {report.traffic_via}; no Route 53 verdict flip seen"
            )
            print(
                f"  Aurora failover measured {aurora_s:.2f} s"
                if aurora_s is not None
                else "  Aurora failover duration: not in the ground truth"
            )
            print(
                f"  orchestration overhead {overhead:.2f} s ({100 * overhead / wall:.1f}% of the wall time); "
                + ", ".join(f"{p} {report.phases[p].duration_s or 0:.2f} s" for p in report.PHASES)
            )
            # Recover the region and fail back (untimed) for the next run.
            _unreachable(endpoint, EAST, False)
            _scale(topo, EAST, replicas)
            _ready(topo, EAST, replicas)
            back = failback(
                topology=topo_path,
                to_region=EAST,
                require_approval=False,
                probe_interval_seconds=args.interval,
                return_state=True,
            ).result(raise_on_failure=False)
            assert isinstance(back, FailbackReport), back
            if back.outcome.value != "completed":
                raise SystemExit(f"failback after run {i + 1} did not complete: {back.outcome_reason}")
        print()
        print(
            f"runs: {args.runs}, {'ARC routing controls' if args.arc else 'no routing controls'}, "
            f"probe interval {args.interval} s, time scale x{scale:g}"
        )
        print(
            f"floor: {'' if args.arc else f'detection {detection:.2f} s + '}TTL {ttl:.2f} s + Aurora "
            f"failover {AURORA_SWITCH_AFTER_S:.2f} s = {floor:.2f} s"
        )
        print(
            f"wall time median {statistics.median(walls):.2f} s "
            f"(min {min(walls):.2f}, max {max(walls):.2f}); "
            f"RTO median {statistics.median(rtos):.2f} s; RTO/floor median {statistics.median(ratios):.2f} "
            f"(max {max(ratios):.2f})"
        )
        if all_back:
            print(
                f"every client on {WEST} (caching resolvers) after: "
                f"median {statistics.median(all_back):.2f} s "
                f"(max {max(all_back):.2f}); vs floor {floor:.2f} s: median "
                f"{statistics.median(all_back) / floor:.2f}x"
            )
        print(
            f"orchestration overhead median {statistics.median(overheads):.2f} s, "
            f"{100 * statistics.median(shares):.1f}% of the wall time (max {100 * max(shares):.1f}%)"
        )
        return 0
    finally:
        down(state, timeout_s=20)


if __name__ == "__main__":
    raise SystemExit(main())
