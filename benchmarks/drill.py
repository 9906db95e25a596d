"""Benchmark: repeated sandbox drills; RTO error vs ground truth, RTO vs configuration, overhead.

    .venv/bin/python benchmarks/drill.py [--runs 5] [--interval 0.5]

Starts its own sandbox world and Prefect server (temporary PREFECT_HOME), provisions it, then
runs `query-servers-down` drills. Ground truth is the sandbox edge's own log of when it
started answering from the secondary; the drill never sees it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.__main__ import down
from sandbox.__main__ import up
from sandbox.demo import _load_env
from sandbox.demo import ensure_prefect_server
from sandbox.demo import stop_prefect_server


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--hold", type=float, default=1.0, help="hold_seconds per drill (game days use 60)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="chalkdr-bench-"))
    home, state = tmp / "prefect", tmp / "world"
    api = ensure_prefect_server(home, 0)
    os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=str(home))
    up(state, time_scale=10.0, routing="failover", timeout_s=60)
    try:
        _load_env(state / "sandbox.env")
        from chalkdr.failover import expected_failover_seconds
        from chalkdr.report import DrillReport
        from chalkdr.topology import load_topology
        from flows.drill import drill
        from flows.provision import provision

        topo_path = str(state / "topology.yaml")
        topo = load_topology(topo_path)
        prov = provision(topology=topo_path, mode="apply", require_approval=False, return_state=True)
        assert prov.is_completed(), prov.message
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        world = httpx.get(f"{endpoint}/_sandbox/world", timeout=10, trust_env=False).json()
        secondary_alb = world["regions"]["us-west-2"]["alb_dns"].lower()
        hc = topo.route53.health_check
        bound = expected_failover_seconds(topo) / topo.time_scale  # interval x threshold + TTL
        # Fastest possible: the first failed check lands right after the fault, the remaining
        # threshold-1 checks follow one interval apart, and every cached answer expires at once.
        floor = (hc.failure_threshold - 1) * hc.request_interval / topo.time_scale
        errors, rtos, overheads, engine, outside_s = [], [], [], [], []
        for i in range(args.runs):
            started = time.time()
            t0 = time.monotonic()
            st = drill(
                topology=topo_path,
                hold_seconds=args.hold,
                probe_interval_seconds=args.interval,
                return_state=True,
            )
            wall = time.monotonic() - t0
            report = st.result(raise_on_failure=False)
            assert isinstance(report, DrillReport) and report.rto_s is not None, report
            inject = next(e.wall for e in report.timeline if e.event == "fault injected")
            truth = httpx.get(
                f"{endpoint}/_sandbox/truth",
                params={"kind": "edge.answer", "since": started},
                trust_env=False,
            ).json()
            flip = next(e["ts"] for e in truth if str(e["answer"]).lower().rstrip(".") == secondary_alb)
            errors.append(report.rto_s - (flip - inject))
            rtos.append(report.rto_s)
            phase_time = sum(p.duration_s or 0.0 for p in report.phases.values())
            overheads.append(max(wall - phase_time, 0.0) / wall)
            outside_s.append(max(wall - phase_time, 0.0))
            span = (report.ended_wall or 0.0) - report.started_wall
            engine.append(max(wall - span, 0.0) / wall)
            print(f"run {i + 1}: RTO {report.rto_s:.2f} s, truth {flip - inject:.2f} s, wall {wall:.1f} s")
        abs_err = [abs(e) for e in errors]
        print()
        print(f"runs: {args.runs}, probe interval {args.interval} s, time scale x{topo.time_scale:g}")
        print(
            "RTO measurement error vs ground truth: "
            f"median {statistics.median(abs_err):.3f} s, max {max(abs_err):.3f} s"
        )
        med = statistics.median(rtos)
        print(f"measured RTO median {med:.2f} s (min {min(rtos):.2f}, max {max(rtos):.2f})")
        print(
            f"configuration allows {floor:.2f} s at best and {bound:.2f} s at worst "
            f"(median/best {med / floor:.2f}, median/worst {med / bound:.2f})"
        )
        print(
            "orchestration overhead (wall time outside phases): "
            f"median {100 * statistics.median(overheads):.1f}% "
            f"max {100 * max(overheads):.1f}% (target <= 5%); "
            f"median {statistics.median(outside_s):.2f} s per drill, hold {args.hold:g} s"
        )
        print(
            "Prefect engine share (flow wall time outside the drill's own span): "
            f"median {100 * statistics.median(engine):.1f}% max {100 * max(engine):.1f}%"
        )
        return 0
    finally:
        down(state, timeout_s=20)
        stop_prefect_server(home)


if __name__ == "__main__":
    raise SystemExit(main())
