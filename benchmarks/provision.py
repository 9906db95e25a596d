"""Benchmark: provision plan and apply wall time for 1, 2 and 4 regions, and AWS calls per resource.

    .venv/bin/python benchmarks/provision.py [--regions 2 4]

Each measurement gets a freshly started sandbox world of its own, in a child process (so the
simulators do not share this process's GIL with the flow's threads), and all runs share one
Prefect server (temporary PREFECT_HOME). Per world it runs the provision flow three times:
`plan`, `apply` (everything is created, then verified) and `apply` again (must change nothing).
AWS calls are counted with a botocore `before-call` hook on every client the flow uses.

The sandbox answers on loopback but runs every region's simulators in one process: on a small
machine it is CPU-bound, so concurrent calls queue at the server and wall time follows the total
number of calls. Real AWS calls are latency-bound (network + service time, ~50-150 ms) and are
served in parallel. `--rtt-ms` adds that round trip on the client side (a `before-send` hook that
waits, costing the server nothing); results are printed for each value (default: 0 and 100 ms).

The 1-region baseline is the 2-region world's topology restricted to its primary region (a
topology needs two regions, so it is built with `model_copy`, which does not re-validate): the
same flow doing one region's share of the work. Regions are read and changed concurrently, so
N regions should cost little more wall time than one (target <= 1.3x). Some work is serial by
AWS's rules and grows with N regardless: DynamoDB adds one replica per table at a time, and
Route 53 changes are made one at a time (5 requests/s per account).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REGIONS = (("us-east-1", "east"), ("us-west-2", "west"), ("eu-west-1", "eu"), ("ap-southeast-1", "apse"))
READ_PREFIXES = ("Describe", "List", "Get", "Test")
TARGET_RATIO = 1.3
CRITICAL_PATH_TARGET = 1.2  # the apply phase against the longest dependency chain of its stages


def serve_world(regions: int, state_dir: Path) -> int:
    """Child mode: run a world with the first `regions` regions until SIGTERM."""
    from sandbox.world import RegionSpec
    from sandbox.world import World
    from sandbox.world import WorldSpec

    spec = WorldSpec(regions=tuple(RegionSpec(a, s) for a, s in REGIONS[:regions]))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    world = World(spec, state_dir).start()
    try:
        stop.wait()
    finally:
        world.stop()
    return 0


class WorldProcess:
    def __init__(self, regions: int, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-world", str(regions), str(state_dir)],
            stdout=subprocess.DEVNULL,
            stderr=(state_dir.parent / f"{state_dir.name}.log").open("w"),
        )
        deadline = time.monotonic() + 180
        while not (state_dir / "sandbox.env").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"sandbox world ({regions} regions) did not start; see its log")
            time.sleep(0.1)

    def env(self) -> dict[str, str]:
        lines = (self.state_dir / "sandbox.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Calls:
    """`before-call` counts a call; `after-call` (same request context) measures its latency."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []
        self.latencies: list[float] = []

    def __call__(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        context["bench_t0"] = time.monotonic()
        with self.lock:
            self.calls.append((model.service_model.service_name, model.name))

    def reset(self) -> Calls:
        """Hand over what was counted so far and start afresh (the hooks stay on the clients)."""
        snapshot = Calls()
        with self.lock:
            snapshot.calls, snapshot.latencies = self.calls, self.latencies
            self.calls, self.latencies = [], []
        return snapshot

    def done(self, context: dict[str, Any], **_: Any) -> None:
        if "bench_t0" in context:
            with self.lock:
                self.latencies.append(time.monotonic() - context["bench_t0"])

    def median_latency_ms(self) -> float:
        return 1000 * statistics.median(self.latencies) if self.latencies else 0.0

    def reads(self) -> int:
        return sum(1 for _, op in self.calls if op.startswith(READ_PREFIXES))

    def writes(self) -> int:
        return len(self.calls) - self.reads()

    def by_service(self) -> dict[str, tuple[int, int]]:
        reads: Counter[str] = Counter(s for s, op in self.calls if op.startswith(READ_PREFIXES))
        writes: Counter[str] = Counter(s for s, op in self.calls if not op.startswith(READ_PREFIXES))
        return {s: (reads[s], writes[s]) for s in sorted(set(reads) | set(writes))}


@dataclass
class Run:
    wall_s: float
    phases: dict[str, float]
    calls: Calls
    resources: int
    pending: int


@dataclass
class Measurement:
    regions: int
    cold_plan: Run
    plan: Run
    apply: Run
    noop: Run
    notes: list[str] = field(default_factory=list)


def run_flow(topology: Any, mode: str, clients: Any, calls: Calls) -> Run:
    from flows.provision import ProvisionReport
    from flows.provision import provision

    calls.reset()
    t0 = time.monotonic()
    state = provision(
        topology=topology, mode=mode, require_approval=False, clients=clients, return_state=True
    )
    wall = time.monotonic() - t0
    report = state.result(raise_on_failure=False)  # a plan with changes ends Failed ("drift")
    assert isinstance(report, ProvisionReport), report
    return Run(
        wall, dict(report.timings_s), calls.reset(), len(report.plan.changes), len(report.plan.pending)
    )


def _hooks(calls: Calls, rtt_s: float) -> list[tuple[str, Any]]:
    hooks: list[tuple[str, Any]] = [("before-call", calls), ("after-call", calls.done)]
    if rtt_s > 0:
        # A client-side wait per HTTP exchange (retries included): the network and service time a
        # real AWS call spends, which costs the sandbox server no CPU. Returning None lets the
        # request go on to the sandbox as usual.
        hooks.append(("before-send", lambda **_: time.sleep(rtt_s)))
    return hooks


def _median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]


def measure(regions: int, tmp: Path, *, repeats: int, warm_up: bool, rtt_s: float) -> Measurement:
    from chalkdr.clients import AwsClients
    from chalkdr.topology import load_topology

    world_regions = max(regions, 2)
    state_dir = tmp / f"world-{regions}-rtt{int(rtt_s * 1000)}"
    world = WorldProcess(world_regions, state_dir)
    saved = dict(os.environ)
    try:
        os.environ.update(world.env())
        topo = load_topology(state_dir / "topology.yaml")
        if regions == 1:
            topo = topo.model_copy(update={"regions": [topo.primary]})

        def fresh() -> tuple[Any, Calls]:
            calls = Calls()
            return AwsClients(event_hooks=_hooks(calls, rtt_s)), calls

        if warm_up:
            run_flow(topo, "plan", *fresh())  # the first flow run in a process pays imports
        cold = run_flow(topo, "plan", *fresh())  # a new AwsClients: botocore clients built in the run
        clients, calls = fresh()
        run_flow(topo, "plan", clients, calls)  # builds this AwsClients' clients; not counted
        plan = _median([run_flow(topo, "plan", clients, calls) for _ in range(repeats)])
        apply = run_flow(topo, "apply", clients, calls)  # once: only a fresh world has everything to create
        noop = _median([run_flow(topo, "apply", clients, calls) for _ in range(repeats)])
        m = Measurement(regions, cold, plan, apply, noop)
        if noop.calls.writes():
            m.notes.append(f"second apply made {noop.calls.writes()} mutating call(s)!")
        return m
    finally:
        os.environ.clear()
        os.environ.update(saved)
        world.stop()


def report(results: list[Measurement]) -> None:
    base = results[0]
    print()
    print(
        "cold: a new AwsClients (every botocore client built during the run); warm: clients reused.\n"
        "Wall times: flow run, median of the warm plan and no-op runs; the apply runs once, warm,\n"
        "on the fresh world. Phases are the report's own timings (Prefect run set-up excluded)."
    )
    print(
        f"{'regions':>7} | {'resources':>9} | {'plan cold':>9} | {'plan warm':>9} | {'read+plan':>9} | "
        f"{'apply':>7} | {'apply phase':>11} | {'no-op':>7} | "
        "plan reads/res | apply reads/res | apply writes/res"
    )
    for m in results:
        res = max(m.apply.resources, 1)
        print(
            f"{m.regions:>7} | {m.apply.resources:>9} | "
            f"{m.cold_plan.wall_s:>8.2f}s | {m.plan.wall_s:>8.2f}s | "
            f"{_phases(m.plan, 'read', 'plan'):>8.2f}s | {m.apply.wall_s:>6.2f}s | "
            f"{m.apply.phases.get('apply', 0):>10.2f}s | {m.noop.wall_s:>6.2f}s | "
            f"{m.plan.calls.reads() / res:>14.2f} | {m.apply.calls.reads() / res:>15.2f} | "
            f"{m.apply.calls.writes() / res:>16.2f}"
        )
    print()
    for m in results[1:]:
        ratios = {
            "plan cold (flow)": m.cold_plan.wall_s / base.cold_plan.wall_s,
            "plan warm (flow)": m.plan.wall_s / base.plan.wall_s,
            "read+plan phases warm": _phases(m.plan, "read", "plan") / _phases(base.plan, "read", "plan"),
            "apply (flow)": m.apply.wall_s / base.apply.wall_s,
            "no-op apply (flow)": m.noop.wall_s / base.noop.wall_s,
        }
        shown = ", ".join(f"{k} {v:.2f}x{'' if v <= TARGET_RATIO else ' (over)'}" for k, v in ratios.items())
        print(f"{m.regions} regions / 1 region: {shown}   [target <= {TARGET_RATIO}x]")
    print()
    print(
        "Apply phase vs its critical path (the longest chain of stage times through the stage graph;\n"
        "independent stages run at the same time, so the apply can be no shorter than this chain):"
    )
    for m in results:
        apply_s, path_s = m.apply.phases.get("apply", 0.0), m.apply.phases.get("critical_path", 0.0)
        ratio = apply_s / path_s if path_s else float("nan")
        serial = sum(v for k, v in m.apply.phases.items() if k.startswith("stage:"))
        verdict = "ok" if ratio <= CRITICAL_PATH_TARGET else "OVER"
        print(
            f"  {m.regions} region(s): apply phase {apply_s:.2f}s, critical path {path_s:.2f}s, "
            f"ratio {ratio:.2f}x [{verdict}, target <= {CRITICAL_PATH_TARGET}x]; "
            f"sum of the (overlapping) stage times {serial:.2f}s; "
            f"no-op apply {len(m.noop.calls.calls)} calls, {m.noop.calls.writes()} mutating"
        )
    print()
    for m in results:
        stages = ", ".join(
            f"{k.removeprefix('stage:')} {v:.2f}s"
            for k, v in m.apply.phases.items()
            if k.startswith("stage:")
        )
        print(f"{m.regions} region(s) apply stages: {stages}")
    print()
    for m in results:
        per = ", ".join(f"{s} {r}r/{w}w" for s, (r, w) in m.apply.calls.by_service().items())
        print(f"{m.regions} region(s) apply calls by service (reads r / writes w): {per}")
        noop = m.noop.calls
        print(
            f"{m.regions} region(s) no-op apply: {len(noop.calls)} calls, {noop.writes()} mutating; "
            f"median AWS call latency {m.plan.calls.median_latency_ms():.0f} ms (plan), "
            f"{m.apply.calls.median_latency_ms():.0f} ms (apply)"
        )
        for note in m.notes:
            print(f"  NOTE: {note}")


def _phases(run: Run, *names: str) -> float:
    return sum(run.phases.get(n, 0.0) for n in names) or 1e-9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regions", type=int, nargs="+", default=[2, 4], choices=[2, 3, 4])
    ap.add_argument("--repeats", type=int, default=3, help="plan and no-op runs per world (median)")
    ap.add_argument(
        "--rtt-ms",
        type=float,
        nargs="+",
        default=[0.0, 100.0],
        help="client-side wait per AWS call (0: raw sandbox, CPU-bound; ~100: AWS-like, latency-bound)",
    )
    ap.add_argument("--serve-world", nargs=2, metavar=("N", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_world:
        return serve_world(int(args.serve_world[0]), Path(args.serve_world[1]))

    from sandbox.demo import ensure_prefect_server
    from sandbox.demo import stop_prefect_server

    tmp = Path(tempfile.mkdtemp(prefix="chalkdr-bench-provision-"))
    home = tmp / "prefect"
    api = ensure_prefect_server(home, 0)
    os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    try:
        warm = False
        for rtt_ms in args.rtt_ms:
            results = []
            for n in [1, *sorted(set(args.regions))]:
                print(f"measuring {n} region(s), modelled RTT {rtt_ms:g} ms ...", flush=True)
                results.append(measure(n, tmp, repeats=args.repeats, warm_up=not warm, rtt_s=rtt_ms / 1000))
                warm = True
            print(f"\n=== modelled AWS round trip per call: {rtt_ms:g} ms ===")
            report(results)
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"\n(load average at the end: {load}; {os.cpu_count()} CPUs)")
        return 0
    finally:
        stop_prefect_server(home)


if __name__ == "__main__":
    raise SystemExit(main())
