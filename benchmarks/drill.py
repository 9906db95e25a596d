"""Benchmark: repeated sandbox drills; RTO error vs ground truth, RTO vs configuration, overhead,
and the drill's Route 53 request rate (the API allows 5 per second per account).

    .venv/bin/python benchmarks/drill.py [--runs 5] [--interval 0.5]

Starts its own sandbox world and Prefect server (temporary PREFECT_HOME), provisions it, then
runs `query-servers-down` drills. Ground truth is the sandbox's own log of when Route 53's
verdict on the primary flipped (from then on the authoritative answer is the secondary); the
drill never sees it.
"""

from __future__ import annotations

import argparse
import json
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
from sandbox.population import VirtualClients


def _secs(value: float | None) -> str:
    """A time for the printout; "not measured" when the run had none."""
    return "not measured" if value is None else f"{value:.2f} s"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--hold", type=float, default=1.0, help="hold_seconds per drill (game days use 60)")
    ap.add_argument("--clients", type=int, default=50, help="virtual clients (ground truth for the model)")
    ap.add_argument("--regions", type=int, choices=[2, 3], default=2)
    ap.add_argument("--routing", choices=["failover", "weighted"], default="failover")
    ap.add_argument("--dump", type=Path, default=None, help="write each run's curves and requests here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="chalkdr-bench-"))
    home, state = tmp / "prefect", tmp / "world"
    api = ensure_prefect_server(home, 0)
    os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=str(home))
    up(state, time_scale=10.0, routing=args.routing, timeout_s=60, regions=args.regions)
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
        hc = topo.route53.health_check
        bound = expected_failover_seconds(topo) / topo.time_scale  # interval x threshold + TTL
        # Fastest possible: the first failed check lands right after the fault, the remaining
        # threshold-1 checks follow one interval apart, and every cached answer expires at once.
        floor = (hc.failure_threshold - 1) * hc.request_interval / topo.time_scale
        errors, rtos, overheads, engine, outside_s = [], [], [], [], []
        r53_rates, r53_peaks, throttled = [], [], 0
        curve_mean, curve_max, outage_err, peak_err = [], [], [], []
        world = httpx.get(f"{endpoint}/_sandbox/world", timeout=10, trust_env=False).json()
        ttl = 60 / topo.time_scale
        for i in range(args.runs):
            clients = VirtualClients.for_world(topo, world, count=args.clients).start()
            time.sleep(ttl + 1)  # every client has resolved (and cached) before the drill starts
            started = time.time()
            t0 = time.monotonic()
            st = drill(
                topology=topo_path,
                hold_seconds=args.hold,
                probe_interval_seconds=args.interval,
                return_state=True,
            )
            wall = time.monotonic() - t0
            clients.stop()
            report = st.result(raise_on_failure=False)
            assert isinstance(report, DrillReport) and report.rto_s is not None, report
            model = report.failover_population
            inject_wall_ = next(e.wall for e in report.timeline if e.event == "fault injected")
            if model is not None and model.curve:
                span = model.curve[-1][0]
                truth_curve = dict(clients.share_failing(inject_wall_, inject_wall_ + span, 0.05))
                # Compare where both exist, past one request period after the fault (the clients'
                # first request after it is up to a period late by construction).
                diffs = [
                    abs(share - truth_curve[min(truth_curve, key=lambda x: abs(x - t))])
                    for t, share in model.curve
                    if t > clients.period_s and truth_curve
                ]
                curve_mean.append(100 * statistics.mean(diffs) if diffs else float("nan"))
                curve_max.append(100 * max(diffs) if diffs else float("nan"))
                truth_outages = clients.outages(inject_wall_, inject_wall_ + span)
                truth_mean = statistics.mean(truth_outages) if truth_outages else 0.0
                outage_err.append(abs(model.mean_outage_s - truth_mean) / truth_mean if truth_mean else 0.0)
                truth_peak = max((s for _, s in truth_curve.items()), default=0.0)
                truth_back = next((t for t, s in sorted(truth_curve.items(), reverse=True) if s > 0), None)
                if args.dump is not None:
                    args.dump.mkdir(parents=True, exist_ok=True)
                    (args.dump / f"run-{i + 1}.json").write_text(
                        json.dumps(
                            {
                                "inject_wall": inject_wall_,
                                "model": model.model_dump(),
                                "truth_curve": sorted(truth_curve.items()),
                                "requests": [vars(r) for r in clients.requests],
                            }
                        )
                    )
                peak_err.append(100 * abs(model.peak_share - truth_peak))
                print(
                    f"  population: model mean outage {model.mean_outage_s:.2f} s vs {args.clients} clients "
                    f"{truth_mean:.2f} s; peak {100 * model.peak_share:.0f}% vs {100 * truth_peak:.0f}%; "
                    f"curve |diff| mean {curve_mean[-1]:.1f} pp max {curve_max[-1]:.1f} pp; "
                    f"last client back {_secs(model.recovered_s)} vs {_secs(truth_back)}"
                )
            inject = next(e.wall for e in report.timeline if e.event == "fault injected")
            # Ground truth: when Route 53's verdict on the primary flipped, the authoritative answer
            # moved to the secondary (the earliest any client can move, which the drill's uncached
            # probe measures).
            truth = httpx.get(
                f"{endpoint}/_sandbox/truth",
                params={"kind": "route53.health_check", "since": started},
                trust_env=False,
            ).json()
            flip = next(e["ts"] for e in truth if e["healthy"] is False and e["ts"] >= inject)
            ended = time.time()
            calls = [
                e["ts"]
                for e in httpx.get(
                    f"{endpoint}/_sandbox/truth",
                    params={"kind": "route53.call", "since": started},
                    trust_env=False,
                ).json()
                if e["ts"] <= ended
            ]
            throttled += len(
                httpx.get(
                    f"{endpoint}/_sandbox/truth",
                    params={"kind": "route53.throttled", "since": started},
                    trust_env=False,
                ).json()
            )
            r53_rates.append(len(calls) / (ended - started))
            # the busiest one-second window of the drill
            r53_peaks.append(max((sum(1 for c in calls if t <= c < t + 1.0) for t in calls), default=0))
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
            "Route 53 API requests per second during a drill: "
            f"median {statistics.median(r53_rates):.2f}, max {max(r53_rates):.2f}; busiest 1 s window "
            f"{max(r53_peaks)} requests (limit 5 per account); throttled requests {throttled}"
        )
        if curve_mean:
            print(
                f"population model vs {args.clients} virtual clients: share-failing curve |diff| median "
                f"{statistics.median(curve_mean):.1f} pp (max point {max(curve_max):.1f} pp); mean outage "
                f"error median {100 * statistics.median(outage_err):.1f}% "
                f"(max {100 * max(outage_err):.1f}%); peak share error median "
                f"{statistics.median(peak_err):.1f} pp"
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
