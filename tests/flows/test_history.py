"""The drill-history flow against the Prefect backend: drill runs recorded as a drill records them
(flow `drill`, persisted result, `publish_report`'s artifacts and closing event), then the history's
table, chart and flags; a run whose result cannot be read stays in the table, saying why."""

from __future__ import annotations

import base64
import json
import re
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter
from prefect.client.schemas.filters import ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.events.filters import EventFilter
from prefect.events.filters import EventNameFilter
from prefect.events.filters import EventResourceFilter
from prefect.states import Completed
from prefect.states import Failed

from chalkdr.history import DrillHistory
from chalkdr.history import RegressionKind
from chalkdr.history import RowSource
from chalkdr.report import DrillReport
from chalkdr.report import PhaseStatus
from chalkdr.report import SloVerdict
from flows.drill import publish_report
from flows.history import drill_history
from sandbox.harness import poll

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(180)]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@flow(name="drill", persist_result=True, validate_parameters=False)
def recorded_drill(report: DrillReport) -> Any:
    """What the drill flow does once its runbook has ended (flows/drill.py): publish the report
    (artifacts `drill-<env>`, `drill-<env>-timeline`, event `chalkdr.drill.finished`) and end
    Completed or Failed with the report as the persisted result."""
    publish_report(report)
    state = Completed if report.outcome is PhaseStatus.COMPLETED else Failed
    return state(message=f"drill {report.drill_id}: {report.outcome.value}", data=report)


def make_report(env: str, n: int, rto_s: float | None, *, rpo_s: float = 0.3) -> DrillReport:
    outcome = PhaseStatus.COMPLETED if rto_s is not None else PhaseStatus.ABORTED
    report = DrillReport(
        drill_id=f"d2026010{n}t000000-{uuid.uuid4().hex[:6]}",
        environment=env,
        scenario="query-servers-down",
        routing="failover",
        primary_region="us-east-1",
        secondary_regions=["us-west-2"],
        probe_interval_s=0.5,
        outcome=outcome,
        outcome_reason=None if rto_s is not None else "pre-flight: us-west-2: /healthz is not serving",
        rto_s=rto_s,
    )
    report.rpo.exposure_s = rpo_s if rto_s is not None else None
    if rto_s is not None:
        report.slos = [
            SloVerdict(name="RTO", target=10.0, measured=rto_s, passed=rto_s <= 10.0),
            SloVerdict(name="RPO", target=5.0, measured=rpo_s, passed=rpo_s <= 5.0),
        ]
    return report


def record(env: str, rtos: list[float | None]) -> list[DrillReport]:
    reports = [make_report(env, i, v) for i, v in enumerate(rtos)]
    for report in reports:
        recorded_drill(report, return_state=True)
    return reports


def latest_artifact(key: str) -> Any:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1
        )
    return found[0] if found else None


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def run_history(env: str, tmp_path: Path) -> tuple[Any, DrillHistory]:
    state = drill_history(environment=env, chart_path=str(tmp_path / "chart.png"), return_state=True)
    history = state.result(raise_on_failure=False)
    assert isinstance(history, DrillHistory), history
    return state, history


def test_history_of_good_drills_publishes_table_and_chart_and_completes(tmp_path: Path) -> None:
    env = f"h{uuid.uuid4().hex[:8]}"
    reports = record(env, [2.0, 2.5, 2.2])
    state, history = run_history(env, tmp_path)
    assert state.is_completed(), state.message
    assert [r.drill_id for r in history.rows] == [r.drill_id for r in reports]  # oldest first
    assert all(r.source is RowSource.RESULT for r in history.rows)
    assert [r.rto_s for r in history.rows] == [2.0, 2.5, 2.2]
    assert {(r.rto_slo_s, r.rpo_s, r.rpo_slo_s, r.passed) for r in history.rows} == {(10.0, 0.3, 5.0, True)}
    assert history.regressions == []

    table = latest_artifact(f"drill-history-{env}")
    assert table.type == "table"
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    assert [r["drill"] for r in rows] == [r.drill_id for r in reports]
    assert [r["RTO (s)"] for r in rows] == ["2.00", "2.50", "2.20"]

    chart = latest_artifact(f"drill-history-{env}-chart")
    assert chart.type == "markdown"
    match = re.search(r"!\[RTO/RPO trend\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", chart.data)
    assert match, chart.data[:200]
    png = base64.b64decode(match.group(1))
    assert png_size(png) == (800, 400)
    assert len(png) < 150_000  # small enough for an artifact
    assert (tmp_path / "chart.png").read_bytes() == png
    assert history.chart_path == str(tmp_path / "chart.png")


def test_a_rising_rto_and_a_breach_fail_the_run_and_emit_the_regression_event(tmp_path: Path) -> None:
    env = f"h{uuid.uuid4().hex[:8]}"
    started = time.time()
    reports = record(env, [2.0, None, 4.0, 12.0])  # an aborted drill in between: left out of the trend
    state, history = run_history(env, tmp_path)
    assert state.is_failed()
    assert {r.kind for r in history.regressions} == {RegressionKind.RTO_ABOVE_SLO, RegressionKind.RTO_RISING}
    assert "REGRESSION" in state.message and "RTO rising" in state.message
    rising = next(r for r in history.regressions if r.kind is RegressionKind.RTO_RISING)
    assert rising.drill_ids == [reports[0].drill_id, reports[2].drill_id, reports[3].drill_id]
    assert history.rows[1].outcome == "aborted" and history.rows[1].rto_s is None
    assert history.rows[3].flags == [RegressionKind.RTO_ABOVE_SLO]

    def regression_event() -> Any:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=["chalkdr.drill-history.regression"]),
                    resource=EventResourceFilter(id=[f"chalkdr.drill-history.{env}"]),
                ),
                limit=50,
            )
        return next((e for e in page.events if e.occurred.timestamp() >= started - 5), None)

    event = poll(regression_event, timeout=30, every=0.5, what="the regression event")
    assert {r["kind"] for r in event.payload["regressions"]} == {"rto-above-slo", "rto-rising"}


def test_a_run_whose_result_cannot_be_read_stays_in_the_table(tmp_path: Path) -> None:
    env = f"h{uuid.uuid4().hex[:8]}"
    reports = record(env, [2.0, 3.0])
    # The second run's persisted result is gone (another machine's storage, or cleaned): its row
    # comes from its closing event, and says so.
    with get_client(sync_client=True) as client:
        artifact = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"drill-{env}"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )[0]
        run = client.read_flow_run(artifact.flow_run_id)
    assert run.state is not None
    Path(run.state.data.storage_key).unlink()

    @flow(name="drill")
    def published_nothing_else() -> None:
        """A run that left only its report artifact: no persisted result, no closing event."""
        create_markdown_artifact(markdown="# a drill", key=f"drill-{env}")

    published_nothing_else()

    def event_retained() -> Any:
        _, h = run_history(env, tmp_path)
        by_source = [r.source for r in h.rows]
        return h if by_source.count(RowSource.EVENT) == 1 else None

    history = poll(event_retained, timeout=30, every=1.0, what="the closing event to be readable")
    event_row = next(r for r in history.rows if r.source is RowSource.EVENT)
    assert (
        event_row.drill_id == reports[1].drill_id and event_row.rto_s == 3.0 and event_row.rto_slo_s == 10.0
    )
    assert "result unreadable" in (event_row.note or "")
    lost = [r for r in history.rows if r.source is RowSource.NONE]
    assert len(lost) == 1 and lost[0].note and lost[0].when is not None
    assert len(history.rows) == 3 and "1 unreadable" in history.summary()
