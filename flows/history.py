"""The drill-history flow: every drill of an environment as a table and a chart, and regressions flagged.

Where the drills come from, and why (the most durable path through what the backend keeps):

- **Which runs**: the versions of the keyed markdown artifact `drill-<env>`. Every drill that
  reached its end publishes one (flows/drill.py `publish_report`), artifacts live in the
  backend's database without expiry, and each version names its flow run. (A drill's parameters
  cannot say its environment: a path or a file name is not one.)
- **What they measured**: each run's persisted result, the whole DrillReport (the drill flow
  runs with `persist_result=True`, Completed or Failed, the report as the state's data). Typed
  and complete, but stored in the result storage of the process that ran the drill (by default
  `$PREFECT_HOME/storage` on that machine): a history run elsewhere, or after that storage was
  cleaned, cannot read it.
- **When the result cannot be read**: the run's closing event `chalkdr.drill.finished`, whose
  payload carries the row's numbers, as long as the server still retains it
  (PREFECT_EVENTS_RETENTION_PERIOD). The row says so; and when neither can be read the row stays
  in the table with the reason, never dropped. The markdown artifacts are not parsed: they are
  for people.

A drill killed before it published has no artifact, and no report to show: the next sweep
marks it Crashed (flows/sweep.py).

A history that finds a regression (chalkdr/history.py defines them) ends **Failed** with the
reasons as the message and the history as the result, and emits `chalkdr.drill-history.regression`:
like a provision plan that finds drift, a scheduled history run is then an alarm, and an
automation can match the event precisely. The artifacts are published either way.
"""

from __future__ import annotations

import base64
import io
import math
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated
from typing import Any
from uuid import UUID

from prefect import flow
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter
from prefect.client.schemas.filters import ArtifactFilterKey
from prefect.client.schemas.filters import FlowRunFilter
from prefect.client.schemas.filters import FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import ArtifactSort
from prefect.events import emit_event
from prefect.events.filters import EventFilter
from prefect.events.filters import EventNameFilter
from prefect.events.filters import EventOccurredFilter
from prefect.events.filters import EventResourceFilter
from prefect.settings import get_current_settings
from prefect.states import Completed
from prefect.states import Failed
from prefect.types import DateTime
from pydantic import Field

from chalkdr.history import DEFAULT_MIN_RISE
from chalkdr.history import DEFAULT_TREND_WINDOW
from chalkdr.history import DrillHistory
from chalkdr.history import HistoryRow
from chalkdr.history import RowSource
from chalkdr.history import build_history
from chalkdr.history import row_from_report
from chalkdr.history import table_rows
from chalkdr.report import DrillReport

__all__ = ["chart_png", "drill_history", "read_drill_rows"]

CHART_SIZE_PX = (800, 400)
CHART_DPI = 80
_PAGE = 200  # the server's largest page of artifacts
# The flow's bounds (the Prefect form shows them; the descriptions are the docstring's `Args:`).
Last = Annotated[int, Field(ge=1, le=1000)]
TrendWindow = Annotated[int, Field(ge=3, le=50)]
MinRise = Annotated[float, Field(ge=0, le=10)]


def artifact_key(environment: str) -> str:
    return f"drill-history-{environment}"


def default_chart_path(environment: str) -> Path:
    """`$PREFECT_HOME/chalk-dr/drill-history-<env>.png`."""
    return Path(get_current_settings().home) / "chalk-dr" / f"drill-history-{environment}.png"


# -- reading the drills -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    flow_run_id: UUID
    published: DateTime  # when the drill's report artifact was created


def _drill_runs(client: Any, environment: str, last: int) -> list[_Found]:
    """The newest `last` drill runs of `environment`, newest first: one per flow run that
    published a version of the artifact `drill-<env>`."""
    found: dict[UUID, _Found] = {}
    offset = 0
    while len(found) < last:
        page = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"drill-{environment}"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=_PAGE,
            offset=offset,
        )
        for artifact in page:
            if artifact.flow_run_id is not None and artifact.flow_run_id not in found:
                found[artifact.flow_run_id] = _Found(artifact.flow_run_id, artifact.created)
        if len(page) < _PAGE:
            break
        offset += _PAGE
    return list(found.values())[:last]


def _closing_events(client: Any, environment: str, since: DateTime) -> dict[str, dict[str, Any]]:
    """The payloads of the environment's retained `chalkdr.drill.finished` events since `since`,
    by the flow run they belong to (Prefect adds the run as a related resource)."""
    by_run: dict[str, dict[str, Any]] = {}
    page = client.read_events(
        filter=EventFilter(
            occurred=EventOccurredFilter(since=since),
            event=EventNameFilter(name=["chalkdr.drill.finished"]),
            resource=EventResourceFilter(labels={"chalkdr.environment": environment}),
        ),
        limit=50,
    )
    while True:
        for event in page.events:
            for related in event.related:
                if related.id.startswith("prefect.flow-run."):
                    by_run.setdefault(related.id.removeprefix("prefect.flow-run."), dict(event.payload))
        if not page.next_page:
            return by_run
        page = client.read_events_page(str(page.next_page))


def _row_from_event(payload: dict[str, Any], flow_run_id: str, note: str) -> HistoryRow:
    return HistoryRow(
        when=payload.get("started_wall"),
        flow_run_id=flow_run_id,
        drill_id=payload.get("drill_id"),
        scenario=payload.get("scenario"),
        outcome=payload.get("outcome"),
        rto_s=payload.get("rto_s"),
        rto_slo_s=payload.get("rto_slo_s"),
        rpo_s=payload.get("rpo_s"),
        rpo_slo_s=payload.get("rpo_slo_s"),
        passed=payload.get("passed"),
        source=RowSource.EVENT,
        note=f"{note}; numbers from the closing event",
    )


def _read_report(run: FlowRun | None) -> DrillReport | str:
    """The run's DrillReport, or why it cannot be read."""
    if run is None:
        return "flow run not found"
    state = run.state
    if state is None or not state.is_final():
        return f"run is {state.name if state else 'without a state'}: no result yet"
    try:
        data = state.result(raise_on_failure=False, retry_result_failure=False)
    except Exception as exc:  # noqa: BLE001 - an unreadable result is a row's note, never the history's end
        return f"result unreadable ({type(exc).__name__}: {exc})"
    if isinstance(data, DrillReport):
        return data
    return f"result is not a drill report ({type(data).__name__}: {str(data)[:200]})"


def read_drill_rows(environment: str, last: int) -> list[HistoryRow]:
    """One row per drill run of `environment` (the newest `last`), each from the run's persisted
    DrillReport, else from its retained closing event, else a row that says why neither could
    be read."""
    with get_client(sync_client=True) as client:
        found = _drill_runs(client, environment, last)
        if not found:
            return []
        runs: dict[UUID, FlowRun] = {}
        ids = [f.flow_run_id for f in found]
        for start in range(0, len(ids), _PAGE):
            chunk = ids[start : start + _PAGE]
            for run in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)
            ):
                runs[run.id] = run
        reports = {f.flow_run_id: _read_report(runs.get(f.flow_run_id)) for f in found}
        events: dict[str, dict[str, Any]] = {}
        if any(isinstance(r, str) for r in reports.values()):
            # A drill's closing event comes a moment after its artifact; an hour's margin is ample.
            since = min(f.published for f in found) - timedelta(hours=1)
            events = _closing_events(client, environment, since)
    rows = []
    for f in found:
        report, run_id = reports[f.flow_run_id], str(f.flow_run_id)
        if isinstance(report, DrillReport):
            rows.append(row_from_report(report, flow_run_id=run_id))
        elif run_id in events:
            rows.append(_row_from_event(events[run_id], run_id, report))
        else:
            rows.append(
                HistoryRow(
                    when=f.published.timestamp(),
                    flow_run_id=run_id,
                    source=RowSource.NONE,
                    note=f"{report}; no closing event retained",
                )
            )
    return rows


# -- the chart ----------------------------------------------------------------------------------


def chart_png(history: DrillHistory) -> bytes:
    """RTO and RPO estimate per drill (oldest left, labelled with its UTC start), each with its
    SLO as a dashed step line and breaches marked; 800x400 px at 80 dpi, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory only
    from matplotlib.figure import Figure

    width, height = CHART_SIZE_PX
    fig = Figure(figsize=(width / CHART_DPI, height / CHART_DPI), dpi=CHART_DPI)
    axes = fig.subplots(1, 2)
    rows = history.rows
    xs = list(range(1, len(rows) + 1))
    labels = [time.strftime("%m-%d %H:%M", time.gmtime(r.when)) if r.when else "?" for r in rows]

    def nan(v: float | None) -> float:
        return math.nan if v is None else v

    for ax, title, values, slos in (
        (axes[0], "RTO (s)", [nan(r.rto_s) for r in rows], [nan(r.rto_slo_s) for r in rows]),
        (axes[1], "RPO estimate (s)", [nan(r.rpo_s) for r in rows], [nan(r.rpo_slo_s) for r in rows]),
    ):
        ax.set_title(title, fontsize=10)
        if not rows:
            ax.text(0.5, 0.5, "no drills", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.plot(xs, values, marker="o", color="tab:blue", label="measured")
        ax.step(xs, slos, where="mid", linestyle="--", color="tab:red", label="SLO")
        over = [(x, v) for x, v, s in zip(xs, values, slos, strict=True) if v > s]
        if over:
            ax.scatter(
                [x for x, _ in over], [v for _, v in over], color="tab:red", zorder=3, label="above SLO"
            )
        ax.set_ylim(bottom=0)
        ax.set_xticks(xs, labels, rotation=45, fontsize=7)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Drill history: {history.environment}", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CHART_DPI)
    return buf.getvalue()


def _chart_markdown(history: DrillHistory, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    lines = [
        f"# Drill history: {history.environment}",
        "",
        history.summary(),
        "",
        f"![RTO/RPO trend](data:image/png;base64,{data})",
        "",
    ]
    lines += [f"- **{r.kind.value}**: {r.detail}" for r in history.regressions]
    return "\n".join(lines) + "\n"


# -- the flow -----------------------------------------------------------------------------------


def _publish(history: DrillHistory, png: bytes) -> None:
    env = history.environment
    create_table_artifact(table=table_rows(history), key=artifact_key(env), description=history.summary())
    create_markdown_artifact(
        markdown=_chart_markdown(history, png),
        key=f"{artifact_key(env)}-chart",
        description=f"RTO and RPO estimate of {env}'s drills, with their SLOs",
    )
    if history.regressed:
        emit_event(
            event="chalkdr.drill-history.regression",
            resource={"prefect.resource.id": f"chalkdr.drill-history.{env}", "chalkdr.environment": env},
            payload={
                "regressions": [r.model_dump(mode="json") for r in history.regressions],
                "drills": len(history.rows),
            },
        )


@flow(name="drill-history", persist_result=True, validate_parameters=True)
def drill_history(
    environment: str,
    last: Last = 20,
    trend_window: TrendWindow = DEFAULT_TREND_WINDOW,
    min_rise: MinRise = DEFAULT_MIN_RISE,
    chart_path: str | None = None,
) -> Any:
    """Every recorded drill of an environment as a table and a chart; regressions flagged.

    Ends Failed (the reasons as the message, the history as the result) when the newest drill
    breached its RTO or RPO SLO or a scenario's RTO is rising, and emits
    `chalkdr.drill-history.regression` then.

    Args:
        environment: The topology's `environment` whose drills to read (artifacts `drill-<env>`).
        last: How many of the newest drills to show, oldest first.
        trend_window: Over how many drills of one scenario (with a measured RTO) a rising RTO
            counts as a regression: each higher than the one before.
        min_rise: How much the newest RTO of that window must exceed its oldest, as a fraction
            (0.1 is 10%), for the rise to count.
        chart_path: Where to write the chart PNG (default
            `$PREFECT_HOME/chalk-dr/drill-history-<env>.png`).
    """
    logger = get_run_logger()
    rows = read_drill_rows(environment, last)
    history = build_history(environment, rows, window=trend_window, min_rise=min_rise)
    png = chart_png(history)
    path = Path(chart_path) if chart_path else default_chart_path(environment)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(png)
    os.replace(tmp, path)  # a reader never sees half a file
    history.chart_path = str(path)
    _publish(history, png)
    for row in history.unreadable:
        logger.warning("drill run %s: %s", row.flow_run_id, row.note)
    if history.regressed:
        logger.warning("%s", history.summary())
        return Failed(message=history.summary(), data=history)
    logger.info("%s", history.summary())
    return Completed(message=history.summary(), data=history)
