"""prefect.yaml as a person meets it: `prefect --no-prompt deploy --all` against a real local server,
then every deployment read back through the API. Each is registered as written (description,
pool, heartbeats, parameters), each form field says what it is for, choices are enums, the
scheduled ones have upcoming runs on their cron, and a finished drill starts the history."""

from __future__ import annotations

import os
import subprocess
import sys
import typing
import uuid
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter
from prefect.client.schemas.filters import DeploymentFilterId
from prefect.client.schemas.filters import FlowRunFilter
from prefect.client.schemas.filters import FlowRunFilterState
from prefect.client.schemas.filters import FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL
from prefect.settings import temporary_settings

from chalkdr.deploy import Strategy
from chalkdr.drill import Scenario
from chalkdr.recovery import RecoveryMode
from flows.provision import Mode
from sandbox.harness import poll
from sandbox.prefect_server import PrefectServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]
PREFECT_FILE = ROOT / "prefect.yaml"
HEARTBEAT = {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "60"}}
# The choice parameters of the deployed flows, by entrypoint: the form must offer exactly these.
CHOICES: dict[str, dict[str, set[str]]] = {
    "flows/drill.py:drill": {"scenario": {s.value for s in Scenario}},
    "flows/provision.py:provision": {"mode": set(typing.get_args(Mode))},
    "flows/chalk_apply.py:chalk_apply_on_push": {"strategy": {s.value for s in Strategy}},
    "flows/recovery.py:failover": {"mode": {m.value for m in RecoveryMode}},
}


def _entries() -> list[dict[str, Any]]:
    return list(yaml.safe_load(PREFECT_FILE.read_text())["deployments"])


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A local server with the process pool and everything in prefect.yaml deployed, as the
    README tells an operator; yields the deployments read back, by name."""
    home = tmp_path_factory.mktemp("prefect-home")
    server = PrefectServer.start(home, ui=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home), PREFECT_API_URL=server.api_url, PREFECT_SERVER_ANALYTICS_ENABLED="false"
    )

    def prefect(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (
            f"prefect {' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )

    try:
        prefect("work-pool", "create", "chalk-dr", "--type", "process")
        prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE))
        with (
            temporary_settings(updates={PREFECT_API_URL: server.api_url}),
            get_client(sync_client=True) as client,
        ):
            by_name = {d.name: d for d in client.read_deployments()}
        yield {"api_url": server.api_url, "deployments": by_name}
    finally:
        server.stop()


def _resolve(schema: dict[str, Any], prop: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives a property allows, with $refs followed (null excluded)."""
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return _resolve(schema, schema["definitions"][name])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in prop:
            return [alt for sub in prop[key] for alt in _resolve(schema, sub)]
    return [] if prop.get("type") == "null" else [prop]


def _cron_matches(cron: str, when: datetime) -> bool:
    """Whether `when` (in the schedule's time zone) is an occurrence of `cron` (minute hour
    day-of-month month day-of-week; `*` or comma-separated numbers, as prefect.yaml uses)."""
    fields = cron.split()
    values = (when.minute, when.hour, when.day, when.month, (when.weekday() + 1) % 7)
    return when.second == 0 and all(
        f == "*" or v in {int(x) for x in f.split(",")} for f, v in zip(fields, values, strict=True)
    )


def test_every_deployment_is_registered_as_written(deployed: dict[str, Any]) -> None:
    registered = deployed["deployments"]
    entries = _entries()
    assert set(registered) == {e["name"] for e in entries}
    for entry in entries:
        d = registered[entry["name"]]
        assert d.entrypoint == entry["entrypoint"]
        assert d.description and d.description == entry["description"], entry["name"]
        assert d.work_pool_name == "chalk-dr"
        assert d.enforce_parameter_schema is True
        # Job variables live under work_pool: (prefect deploy ignores them anywhere else): every
        # run heartbeats, so the zombie automation can tell a dead run from a live one.
        assert d.job_variables == HEARTBEAT, entry["name"]
        assert d.parameters == entry["parameters"], entry["name"]
        # The worker's home, resolved when the run starts, not on the machine that deployed.
        assert d.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $CHALK_DR_HOME }}"}}
        ]
        assert {"chalk-dr"} <= set(d.tags)


def test_every_field_of_every_form_says_what_it_is_for(deployed: dict[str, Any]) -> None:
    undescribed = []
    for name, d in deployed["deployments"].items():
        schema = d.parameter_openapi_schema
        assert schema["properties"], name
        for param, prop in schema["properties"].items():
            if not (prop.get("description") or "").strip():
                undescribed.append(f"{name}: {param}")
        # A default naming a parameter the flow does not have would be refused at run time.
        assert set(d.parameters) <= set(schema["properties"]), name
    assert not undescribed, f"parameters without a description (add them to the flow's Args:): {undescribed}"
    provision = deployed["deployments"]["provision-apply"].parameter_openapi_schema["properties"]
    assert "embedding only" in provision["clients"]["description"].lower()  # not a field to fill in


def test_choices_are_enums_with_the_flows_own_values(deployed: dict[str, Any]) -> None:
    checked = 0
    for name, d in deployed["deployments"].items():
        schema = d.parameter_openapi_schema
        for param, values in CHOICES.get(d.entrypoint, {}).items():
            (alternative,) = _resolve(schema, schema["properties"][param])
            assert alternative.get("type") == "string" and set(alternative["enum"]) == values, (name, param)
            checked += 1
        # Every default the deployment sets for an enum field is one of its choices.
        for param, value in d.parameters.items():
            enums = [alt["enum"] for alt in _resolve(schema, schema["properties"][param]) if "enum" in alt]
            if enums:
                assert any(value in e for e in enums), (name, param, value)
    assert checked >= 6  # two drills, two provisions, the push apply, the failover


def test_scheduled_deployments_have_upcoming_runs_on_their_schedule(deployed: dict[str, Any]) -> None:
    """The server's scheduler creates the runs (as it does in production); each falls on its cron
    in the schedule's time zone, and the first is no further off than one period."""
    api_url, registered = deployed["api_url"], deployed["deployments"]
    scheduled = {e["name"]: e["schedules"] for e in _entries() if e.get("schedules")}
    assert {"game-day-weekly", "provision-drift-check", "sweep-hourly", "recovery-readiness"} <= set(
        scheduled
    ) and "drill-history" in scheduled
    manual = {e["name"] for e in _entries()} - set(scheduled)
    assert {"drill-manual", "provision-apply", "failover", "failback", "chalk-apply-on-push"} <= manual

    def upcoming(name: str) -> list[Any]:
        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            return list(
                client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[registered[name].id])),
                    flow_run_filter=FlowRunFilter(
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
                    ),
                )
            )

    now = datetime.now(UTC)
    for name, schedules in scheduled.items():
        (spec,) = schedules
        (registered_schedule,) = registered[name].schedules
        assert registered_schedule.active is True
        assert registered_schedule.schedule.cron == spec["cron"]
        assert registered_schedule.schedule.timezone == spec["timezone"]
        runs = poll(lambda n=name: upcoming(n), timeout=120, what=f"scheduled runs of {name}", every=1.0)
        zone = ZoneInfo(spec["timezone"])
        for run in runs:
            assert run.expected_start_time is not None
            assert _cron_matches(spec["cron"], run.expected_start_time.astimezone(zone)), (name, run)
        first = min(r.expected_start_time for r in runs)
        assert first <= now + timedelta(days=7, minutes=5), (name, first)
    for name in manual:
        assert not registered[name].schedules and not upcoming(name), name


def test_a_finished_drill_starts_the_history_of_its_environment(deployed: dict[str, Any]) -> None:
    """The drill's closing event (flows/runbook.py emit_finished: resource `chalkdr.drill.<id>`
    labelled `chalkdr.environment`) runs drill-history for that environment; a phase event does not."""
    api_url, history = deployed["api_url"], deployed["deployments"]["drill-history"]
    environment, other = f"env-{uuid.uuid4().hex[:6]}", f"phase-{uuid.uuid4().hex[:6]}"

    def event(name: str, env_name: str) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": name,
            "resource": {
                "prefect.resource.id": f"chalkdr.drill.d-{env_name}",
                "chalkdr.environment": env_name,
            },
            "payload": {"outcome": "completed"},
        }

    with httpx.Client(base_url=api_url, timeout=10, trust_env=False) as http:
        http.post(
            "/events",
            json=[event("chalkdr.drill.phase.inject", other), event("chalkdr.drill.finished", environment)],
        ).raise_for_status()

    def runs() -> list[Any]:
        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            return list(
                client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[history.id]))
                )
            )

    (started,) = poll(
        lambda: [r for r in runs() if r.parameters.get("environment") == environment],
        timeout=60,
        what="a drill-history run for the finished drill's environment",
        every=0.5,
    )
    assert started.parameters["last"] == history.parameters["last"]  # the deployment's default stays
    assert not [r for r in runs() if r.parameters.get("environment") == other]
