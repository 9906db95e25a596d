"""`chalk-dr`, the terminal command: validation, help, refusals before anything runs, and real
runs against the session's sandbox world (phases printed as they end, exit codes that follow the
outcome)."""

from __future__ import annotations

import copy
import getpass
import inspect
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import get_client
from typer.testing import CliRunner

from chalkdr.cli import ExitCode
from chalkdr.cli import app
from chalkdr.report import PHASES

EXAMPLE = Path(__file__).resolve().parents[1] / "deployments" / "topology.example.yaml"
runner = CliRunner()


def invoke(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input, catch_exceptions=False, terminal_width=1000)


def write(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def example() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))


# -- validate ---------------------------------------------------------------------------------------


def test_validate_accepts_a_good_topology() -> None:
    result = invoke("validate", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    assert f"{EXAMPLE}: ok (prod: 2 regions, failover routing)" in result.output


def test_validate_reports_every_error_of_every_file_at_once(tmp_path: Path) -> None:
    bad = example()
    bad["routing"] = "failovr"
    bad["regions"][1]["aws_region"] = "us-west-99"
    bad["regions"][1]["bogus"] = 1
    del bad["route53"]
    one = write(tmp_path / "one.yaml", bad)
    two = write(tmp_path / "two.yaml", "environment: [\n")
    good = write(tmp_path / "good.yaml", example())
    result = invoke("validate", str(one), str(good), str(two), str(tmp_path / "missing.yaml"))
    assert result.exit_code == ExitCode.ERROR
    lines = result.output.splitlines()
    # Every problem of one.yaml, each naming the file, the field and the reason.
    assert f"{one}: routing: Input should be 'failover', 'weighted' or 'latency'" in lines
    assert any(
        line.startswith(f"{one}: regions[1:us-west-99].aws_region: ") and "not an AWS region" in line
        for line in lines
    )
    assert f"{one}: regions[1:us-west-99].bogus: unknown field (not part of the topology schema)" in lines
    assert f"{one}: route53: required field is missing" in lines
    assert any(line.startswith(f"{two}: line ") and "YAML syntax error" in line for line in lines)
    assert f"{tmp_path / 'missing.yaml'}: cannot read file: No such file or directory" in lines
    assert f"{good}: ok (prod: 2 regions, failover routing)" in lines
    assert "3 of 4 topology file(s) invalid" in result.output


# -- help ---------------------------------------------------------------------------------------------


def test_help_lists_the_commands_and_the_exit_codes() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("validate", "plan", "apply", "drill", "failover", "failback", "sweep", "history"):
        assert re.search(rf"^\s+{command}\s", result.output, re.M), command
    assert "Exit codes:" in result.output
    for code in ("0  passed", "1  bad input", "2  the run ended with a negative verdict", "3  not confirmed"):
        assert code in result.output


def test_options_mirror_the_flows_defaults_and_help() -> None:
    from flows.drill import drill
    from flows.recovery import failover

    defaults = {k: p.default for k, p in inspect.signature(drill.fn).parameters.items()}
    text = " ".join(invoke("drill", "--help").output.split())
    assert "--hold-seconds <float> Seconds to keep the fault in place" in text
    assert f"[default: {defaults['hold_seconds']}]" in text
    assert f"[default: {defaults['scenario'].value}]" in text
    assert "--yes" in text and "--require-approval" in text and "Exit codes:" in text
    text = " ".join(invoke("failover", "--help").output.split())
    assert "--from-region" in text and "[required]" in text
    fdefaults = {k: p.default for k, p in inspect.signature(failover.fn).parameters.items()}
    assert f"[default: {fdefaults['mode'].value}]" in text
    text = " ".join(invoke("apply", "--help").output.split())
    assert "--yes" in text and "--require-approval" in text and "--wait-for-lock-seconds" in text
    text = " ".join(invoke("history", "--help").output.split())
    assert "--last" in text and "[default: 20]" in text


# -- refused before anything runs (no Prefect backend here: nothing may reach one) ---------------------


def test_an_invalid_topology_refuses_the_run(tmp_path: Path) -> None:
    bad = example()
    bad["slo"]["rto_seconds"] = -1
    path = write(tmp_path / "t.yaml", bad)
    result = invoke("drill", str(path), "--yes")
    assert result.exit_code == ExitCode.ERROR
    assert f"{path}: slo.rto_seconds: " in result.output


def test_an_unknown_region_is_refused_naming_the_option(tmp_path: Path) -> None:
    result = invoke("failover", str(EXAMPLE), "--from-region", "us-east-9", "--yes")
    assert result.exit_code == ExitCode.ERROR
    assert (
        f"{EXAMPLE}: --from-region: us-east-9 is not a region of prod (us-east-1, us-west-2)" in result.output
    )
    result = invoke("failback", str(EXAMPLE), "--to-region", "eu-west-1", "--yes")
    assert result.exit_code == ExitCode.ERROR and "--to-region: eu-west-1 is not a region" in result.output


def test_out_of_bounds_options_are_refused() -> None:
    result = invoke("drill", str(EXAMPLE), "--hold-seconds", "-1", "--yes")
    assert result.exit_code == ExitCode.ERROR
    assert "invalid options for drill" in result.output and "hold_seconds" in result.output
    result = invoke("drill", str(EXAMPLE), "--scenario", "fis-experiment", "--yes")
    assert result.exit_code == ExitCode.ERROR
    assert "fis_experiment_template_id" in result.output


def test_a_declined_prompt_runs_nothing() -> None:
    result = invoke("drill", str(EXAMPLE), input="n\n")
    assert result.exit_code == ExitCode.NOT_CONFIRMED
    assert "Drill prod: inject query-servers-down into us-east-1 (primary)" in result.output
    assert "not confirmed: nothing was run" in result.output
    result = invoke("failover", str(EXAMPLE), "--from-region", "us-east-1", input="")  # end of input
    assert result.exit_code == ExitCode.NOT_CONFIRMED
    assert "Failover prod: us-east-1 -> us-west-2, mode graceful" in result.output


def test_require_approval_needs_a_server_with_a_ui() -> None:
    from prefect.settings import PREFECT_API_URL
    from prefect.settings import temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = invoke("drill", str(EXAMPLE), "--require-approval")
    assert result.exit_code == ExitCode.ERROR
    assert "--require-approval: " in result.output and "set PREFECT_API_URL" in result.output


# -- real runs against sandbox worlds -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_backend")
def test_plan_of_a_fresh_world_is_drift(own_world_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    world = own_world_factory()
    for key, value in world.env.items():
        monkeypatch.setenv(key, value)
    result = invoke("plan", str(world.topology_path))
    assert result.exit_code == ExitCode.NOT_PASSED, result.output
    assert "# Provision plan: " in result.output and "| create |" in result.output
    assert "  · plan: " in result.output  # the flow's log lines, as progress
    # apply without --yes: the plan (from a plan run), then the question; declined, nothing changes.
    result = invoke("apply", str(world.topology_path), input="n\n")
    assert result.exit_code == ExitCode.NOT_CONFIRMED, result.output
    assert "# Provision plan: " in result.output
    assert re.search(r"Apply \d+ change\(s\) to \S+ ", result.output), result.output
    assert "not confirmed: nothing was run, nothing changed" in result.output
    assert invoke("plan", str(world.topology_path)).exit_code == ExitCode.NOT_PASSED  # still all drift


def phase_lines(output: str) -> list[tuple[str, str]]:
    """(phase, status) of each progress line `  <mark> <kind> <phase> <status> ...`."""
    found = []
    for line in output.splitlines():
        m = re.match(r"^  \S (drill|failover|failback|sweep) (\w+)\s+(\w+)", line)
        if m:
            found.append((m.group(2), m.group(3)))
    return found


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.usefixtures("prefect_backend")
def test_apply_plan_drill_and_history_against_the_world(world_env: Any) -> None:
    from prefect.settings import PREFECT_API_URL

    topology = str(world_env.topology_path)
    env_name = world_env.topology.environment

    # apply --yes: no prompt, the confirmation recorded as the run's tags.
    result = invoke("apply", topology, "--yes")
    assert result.exit_code == ExitCode.OK, result.output
    assert f"provision {env_name}: " in result.output and "verified: the plan is now empty" in result.output
    # apply without --yes on a converged world: the plan has nothing to change, so nothing to ask.
    result = invoke("apply", topology, input="")
    assert result.exit_code == ExitCode.OK, result.output
    assert "Proceed?" not in result.output and "None: AWS already matches" in result.output
    # plan: in sync now, exit 0; the plan printed, the flow's log lines shown as progress.
    result = invoke("plan", topology)
    assert result.exit_code == ExitCode.OK, result.output
    assert f"# Provision plan: {env_name}" in result.output and "None: AWS already matches" in result.output
    assert "  · plan: " in result.output

    # The drill through the installed `chalk-dr` script, its standard error read line by line
    # as it is written: each phase shows when it ends, not all at the end.
    script = Path(sys.executable).with_name("chalk-dr")
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    proc = subprocess.Popen(
        [
            str(script),
            "drill",
            topology,
            "--yes",
            "--hold-seconds",
            "2",
            "--probe-interval-seconds",
            "0.5",
            "--steady-state-wait-seconds",
            "150",
            # A world provisioned moments ago: its new MSK replicator may still be copying its
            # backlog, its latency (the RPO estimate) above 5 s. The RPO verdict is not the point.
            "--rpo-slo-seconds",
            "600",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    arrivals: list[tuple[float, str]] = []
    out: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            arrivals.append((time.monotonic(), line.rstrip("\n")))

    def read_stdout() -> None:
        assert proc.stdout is not None
        out.extend(proc.stdout)

    readers = [threading.Thread(target=f, daemon=True) for f in (read_stderr, read_stdout)]
    for reader in readers:
        reader.start()
    proc.wait(timeout=300)
    for reader in readers:
        reader.join(timeout=10)
    err, stdout = "\n".join(line for _, line in arrivals), "".join(out)
    assert proc.returncode == ExitCode.OK, err + stdout
    phases = phase_lines(err)
    assert [p for p, _ in phases] == list(PHASES), phases
    assert dict(phases)["approval"] == "skipped" and dict(phases)["inject"] == "completed"
    at = {m.group(1): t for t, line in arrivals if (m := re.match(r"^  \S drill (\w+)", line))}
    # The hold (2 s) lies between the observe line and the hold line: they were printed as the
    # phases ended, seconds apart.
    assert at["hold"] - at["observe"] >= 2.0, at
    assert "# DR drill `" in stdout and ": PASS" in stdout  # the report, on standard output
    drill_id = re.search(r"# DR drill `([^`]+)`", stdout).group(1)  # type: ignore[union-attr]
    assert f"artifacts: drill-{env_name}, drill-{env_name}-timeline" in err
    # Who confirmed (--yes) is on the run as tags; the flow itself recorded no approval form.
    run_id = re.search(r"flow[- ]run[/ ]([0-9a-f-]{36})", err).group(1)  # type: ignore[union-attr]
    with get_client(sync_client=True) as client:
        run_tags = set(client.read_flow_run(UUID(run_id)).tags)
    assert {"chalk-dr-cli", f"confirmed-by:{getpass.getuser()}", "confirmed-with:--yes"} <= run_tags

    # An RTO target no drill can meet: the drill completes but does not pass, exit 2.
    result = invoke(
        "drill",
        topology,
        "--yes",
        "--hold-seconds",
        "0",
        "--probe-interval-seconds",
        "0.5",
        "--rto-slo-seconds",
        "0.01",
        "--steady-state-wait-seconds",
        "150",
    )
    assert result.exit_code == ExitCode.NOT_PASSED, result.output
    assert "| RTO | 0.01 s |" in result.output and ": FAIL" in result.output
    failed_id = re.search(r"# DR drill `([^`]+)`", result.output).group(1)  # type: ignore[union-attr]

    # The history: both drills, the newest above its (overridden) RTO SLO: a regression, exit 2.
    result = invoke("history", env_name, "--last", "5")
    assert result.exit_code == ExitCode.NOT_PASSED, result.output
    assert drill_id in result.output and failed_id in result.output
    assert f"REGRESSION rto-above-slo: newest drill {failed_id}" in result.output
    assert "chart: " in result.output
