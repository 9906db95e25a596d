"""`python -m sandbox up|down|serve`: run the sandbox world as a background process.

`up` starts `serve` detached, waits (poll with a deadline) until it has written its topology
and env file, and prints where they are. `down` stops it with SIGTERM (SIGKILL after a
deadline) and waits until the process is gone, so no process or port is left behind.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

DEFAULT_STATE_DIR = Path(".sandbox")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; treat it as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


# The regions a world of N regions has, in order (the first is the primary).
_REGIONS = (("us-east-1", "east"), ("us-west-2", "west"), ("eu-west-1", "eu"))


def serve(
    state_dir: Path,
    time_scale: float,
    routing: str,
    environment: str = "demo",
    regions: int = 2,
    *,
    arc: bool = False,
    failback_readiness: bool = False,
) -> int:
    from sandbox.world import RegionSpec
    from sandbox.world import World
    from sandbox.world import WorldSpec

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    world = World(
        WorldSpec(
            time_scale=time_scale,
            routing=routing,
            environment=environment,
            regions=tuple(RegionSpec(a, short) for a, short in _REGIONS[:regions]),
            arc=arc,
            failback_readiness=failback_readiness,
        ),
        state_dir,
    ).start()
    (state_dir / "ready").write_text(str(os.getpid()))
    try:
        done.wait()
    finally:
        world.stop()
        for name in ("ready", "pid"):
            (state_dir / name).unlink(missing_ok=True)
    return 0


def up(
    state_dir: Path,
    time_scale: float,
    routing: str,
    timeout_s: float,
    environment: str = "demo",
    regions: int = 2,
    *,
    arc: bool = False,
    failback_readiness: bool = False,
) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    pid_file = state_dir / "pid"
    if pid_file.exists() and _alive(int(pid_file.read_text() or 0)):
        print(f"sandbox already running (pid {pid_file.read_text()}); env: {state_dir / 'sandbox.env'}")
        return 0
    (state_dir / "ready").unlink(missing_ok=True)
    log = (state_dir / "sandbox.log").open("w")
    cmd = [
        sys.executable,
        "-m",
        "sandbox",
        "serve",
        "--state-dir",
        str(state_dir),
        "--time-scale",
        str(time_scale),
        "--routing",
        routing,
        "--environment",
        environment,
        "--regions",
        str(regions),
        *(["--arc"] if arc else []),
        *(["--failback-readiness"] if failback_readiness else []),
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (state_dir / "ready").exists():
            print(f"sandbox up (pid {proc.pid}, time x{time_scale:g})")
            print(f"  topology: {state_dir / 'topology.yaml'}")
            print(f"  env:      {state_dir / 'sandbox.env'}")
            return 0
        if proc.poll() is not None:
            print(f"sandbox failed to start; see {state_dir / 'sandbox.log'}", file=sys.stderr)
            print((state_dir / "sandbox.log").read_text()[-3000:], file=sys.stderr)
            return 1
        time.sleep(0.05)
    proc.kill()
    print(f"sandbox did not become ready within {timeout_s:g} s", file=sys.stderr)
    return 1


def down(state_dir: Path, timeout_s: float) -> int:
    pid_file = state_dir / "pid"
    if not pid_file.exists():
        print("sandbox not running")
        return 0
    pid = int(pid_file.read_text() or 0)
    if pid and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    for name in ("pid", "ready"):
        (state_dir / name).unlink(missing_ok=True)
    print("sandbox down")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "serve", "down"):
        p = sub.add_parser(name)
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
        if name != "down":
            p.add_argument("--time-scale", type=float, default=10.0, help="AWS seconds per real second")
            p.add_argument("--routing", choices=["failover", "weighted"], default="failover")
            p.add_argument("--environment", default="demo", help="Chalk environment name in the topology")
            p.add_argument("--regions", type=int, choices=[2, 3], default=2, help="regions in the world")
            p.add_argument(
                "--arc", action="store_true", help="the topology asks for ARC routing controls (recovery.arc)"
            )
            p.add_argument(
                "--failback-readiness",
                action="store_true",
                help="the topology asks for reverse replication (recovery.failback_readiness)",
            )
        p.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    options = (
        {"arc": args.arc, "failback_readiness": args.failback_readiness} if args.command != "down" else {}
    )
    if args.command == "serve":
        return serve(args.state_dir, args.time_scale, args.routing, args.environment, args.regions, **options)
    if args.command == "up":
        return up(
            args.state_dir,
            args.time_scale,
            args.routing,
            args.timeout,
            args.environment,
            args.regions,
            **options,
        )
    return down(args.state_dir, args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
