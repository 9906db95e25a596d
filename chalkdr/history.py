"""Drill history without I/O: one row per drill of an environment, and the regressions they show.

The drill-history flow (flows/history.py) reads every drill report of an environment from the
Prefect backend and asks this module what they mean; `python -m chalkdr.history ENV [--last N]`
runs that flow and prints the table in a terminal (it is `chalk-dr history`).

Regressions (what makes a history run end Failed, flows/history.py):

- **RTO above SLO** / **RPO above SLO**: the newest drill's measured RTO (RPO estimate) is
  above its SLO target. Every drill's row carries the same flags for itself; only the newest
  one's make a regression (an old breach followed by good drills is history, not news).
- **RTO rising**: among the drills of one scenario that measured an RTO, the last `window`
  (N >= 3, default 3) are each strictly higher than the one before, and the newest is at least
  `min_rise` (default 10%) above the oldest of them. Drills without a measured RTO (aborted,
  dry runs, replication-paused) are left out: they are no evidence either way. Scenarios are
  kept apart because their RTOs differ by design (an inverted health check flips at once).
  Strictly increasing with a minimum total rise, not a least-squares slope: with N = 3 and
  random noise, three increasing values happen one time in six, and the minimum rise keeps
  sub-second jitter from counting as a trend.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from rich import box
from rich.table import Table

from chalkdr.report import DrillReport

__all__ = [
    "DEFAULT_MIN_RISE",
    "DEFAULT_TREND_WINDOW",
    "DrillHistory",
    "HistoryRow",
    "Regression",
    "RegressionKind",
    "RowSource",
    "build_history",
    "find_regressions",
    "main",
    "notes",
    "rising",
    "row_flags",
    "row_from_report",
    "table_rows",
    "terminal_table",
]

DEFAULT_TREND_WINDOW = 3
DEFAULT_MIN_RISE = 0.10  # the newest of the window at least 10% above its oldest


class RowSource(StrEnum):
    """Where a row's numbers come from."""

    RESULT = "result"  # the drill run's persisted result: the whole DrillReport
    EVENT = "event"  # its closing event `chalkdr.drill.finished` (result unreadable, event retained)
    NONE = "none"  # neither could be read: the row says why


class RegressionKind(StrEnum):
    RTO_ABOVE_SLO = "rto-above-slo"
    RPO_ABOVE_SLO = "rpo-above-slo"
    RTO_RISING = "rto-rising"


class HistoryRow(BaseModel):
    """One drill as the history shows it; every number may be missing (None)."""

    model_config = ConfigDict(extra="forbid")

    when: float | None = None  # the drill's start, wall clock (epoch seconds)
    flow_run_id: str | None = None
    drill_id: str | None = None
    scenario: str | None = None
    outcome: str | None = None
    rto_s: float | None = None
    rto_slo_s: float | None = None
    rpo_s: float | None = None  # the RPO estimate (exposure), seconds
    rpo_slo_s: float | None = None
    passed: bool | None = None
    source: RowSource = RowSource.RESULT
    note: str | None = None  # e.g. why the result could not be read
    flags: list[RegressionKind] = Field(default_factory=list)


class Regression(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: RegressionKind
    detail: str
    drill_ids: list[str] = Field(default_factory=list)


class DrillHistory(BaseModel):
    """The history of one environment's drills (oldest first) and the regressions flagged."""

    model_config = ConfigDict(extra="forbid")

    environment: str
    rows: list[HistoryRow] = Field(default_factory=list)
    regressions: list[Regression] = Field(default_factory=list)
    trend_window: int = DEFAULT_TREND_WINDOW
    min_rise: float = DEFAULT_MIN_RISE
    chart_path: str | None = None

    @property
    def unreadable(self) -> list[HistoryRow]:
        """Rows whose drill report could not be read at all."""
        return [r for r in self.rows if r.source is RowSource.NONE]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def summary(self) -> str:
        head = f"drill history of {self.environment}: {len(self.rows)} drill(s)"
        if self.unreadable:
            head += f", {len(self.unreadable)} unreadable"
        if not self.regressions:
            return head + ", no regression"
        return head + "; REGRESSION: " + "; ".join(r.detail for r in self.regressions)


def row_flags(row: HistoryRow) -> list[RegressionKind]:
    """The row's own SLO breaches (a missing number or target is no breach: it says nothing)."""
    flags = []
    if row.rto_s is not None and row.rto_slo_s is not None and row.rto_s > row.rto_slo_s:
        flags.append(RegressionKind.RTO_ABOVE_SLO)
    if row.rpo_s is not None and row.rpo_slo_s is not None and row.rpo_s > row.rpo_slo_s:
        flags.append(RegressionKind.RPO_ABOVE_SLO)
    return flags


def row_from_report(report: DrillReport, *, flow_run_id: str | None = None) -> HistoryRow:
    """A drill report's row: its targets are those its SLO verdicts were judged against (a drill
    that never reached the verdicts, an aborted one, has none)."""
    targets = {s.name: s.target for s in report.slos}
    row = HistoryRow(
        when=report.started_wall,
        flow_run_id=flow_run_id,
        drill_id=report.drill_id,
        scenario=report.scenario,
        outcome=report.outcome.value,
        rto_s=report.rto_s,
        rto_slo_s=targets.get("RTO"),
        rpo_s=report.rpo.exposure_s,
        rpo_slo_s=targets.get("RPO"),
        passed=report.passed,
        source=RowSource.RESULT,
    )
    row.flags = row_flags(row)
    return row


def rising(
    values: Sequence[float], *, window: int = DEFAULT_TREND_WINDOW, min_rise: float = DEFAULT_MIN_RISE
) -> bool:
    """Whether the last `window` values are each strictly higher than the one before and the
    last is at least `min_rise` (a fraction) above the first of them; fewer values: False."""
    if window < 2:
        raise ValueError("a trend needs a window of at least 2 values")
    if len(values) < window:
        return False
    tail = list(values[-window:])
    increasing = all(b > a for a, b in itertools.pairwise(tail))
    return increasing and tail[-1] >= tail[0] * (1 + min_rise)


def _id(row: HistoryRow) -> str:
    return row.drill_id or row.flow_run_id or "?"


def find_regressions(
    rows: Sequence[HistoryRow], *, window: int = DEFAULT_TREND_WINDOW, min_rise: float = DEFAULT_MIN_RISE
) -> list[Regression]:
    """The regressions `rows` (oldest first) show: the newest drill's SLO breaches, and each
    scenario's RTO trend (see the module's docstring for the definitions)."""
    found: list[Regression] = []
    if rows:
        newest = rows[-1]
        if RegressionKind.RTO_ABOVE_SLO in row_flags(newest):
            found.append(
                Regression(
                    kind=RegressionKind.RTO_ABOVE_SLO,
                    detail=f"newest drill {_id(newest)}: RTO {newest.rto_s:.2f} s above its SLO "
                    f"{newest.rto_slo_s:g} s",
                    drill_ids=[_id(newest)],
                )
            )
        if RegressionKind.RPO_ABOVE_SLO in row_flags(newest):
            found.append(
                Regression(
                    kind=RegressionKind.RPO_ABOVE_SLO,
                    detail=f"newest drill {_id(newest)}: RPO estimate {newest.rpo_s:.2f} s above its SLO "
                    f"{newest.rpo_slo_s:g} s",
                    drill_ids=[_id(newest)],
                )
            )
    by_scenario: dict[str, list[HistoryRow]] = {}
    for row in rows:
        if row.rto_s is not None:
            by_scenario.setdefault(row.scenario or "?", []).append(row)
    for scenario, measured in by_scenario.items():
        values = [r.rto_s for r in measured if r.rto_s is not None]
        if rising(values, window=window, min_rise=min_rise):
            tail = measured[-window:]
            shown = " → ".join(f"{r.rto_s:.2f}" for r in tail)
            found.append(
                Regression(
                    kind=RegressionKind.RTO_RISING,
                    detail=f"{scenario}: RTO rising over the last {window} drills ({shown} s)",
                    drill_ids=[_id(r) for r in tail],
                )
            )
    return found


def build_history(
    environment: str,
    rows: Sequence[HistoryRow],
    *,
    window: int = DEFAULT_TREND_WINDOW,
    min_rise: float = DEFAULT_MIN_RISE,
) -> DrillHistory:
    """The history of `rows` (any order: sorted oldest first by their start; rows without a time
    keep their place after the dated ones), each row's flags and the regressions."""
    ordered = sorted(rows, key=lambda r: (r.when is None, r.when or 0.0))
    for row in ordered:
        row.flags = row_flags(row)
    return DrillHistory(
        environment=environment,
        rows=list(ordered),
        regressions=find_regressions(ordered, window=window, min_rise=min_rise),
        trend_window=window,
        min_rise=min_rise,
    )


def _s(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _when(v: float | None) -> str:
    return "—" if v is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v))


def _passed(v: bool | None) -> str:
    return "—" if v is None else ("yes" if v else "NO")


_FLAG_TEXT = {
    RegressionKind.RTO_ABOVE_SLO: "RTO>SLO",
    RegressionKind.RPO_ABOVE_SLO: "RPO>SLO",
    RegressionKind.RTO_RISING: "RTO rising",
}


def _row_cells(history: DrillHistory) -> list[dict[str, str]]:
    rising_ids = {i for r in history.regressions if r.kind is RegressionKind.RTO_RISING for i in r.drill_ids}
    rows = []
    for row in history.rows:
        flags = [_FLAG_TEXT[f] for f in row.flags]
        if _id(row) in rising_ids:
            flags.append(_FLAG_TEXT[RegressionKind.RTO_RISING])
        rows.append(
            {
                "when (UTC)": _when(row.when),
                "drill": row.drill_id or "—",
                "scenario": row.scenario or "—",
                "outcome": row.outcome or "—",
                "RTO (s)": _s(row.rto_s),
                "RTO SLO (s)": _s(row.rto_slo_s),
                "RPO est. (s)": _s(row.rpo_s),
                "RPO SLO (s)": _s(row.rpo_slo_s),
                "passed": _passed(row.passed),
                "flags": ", ".join(flags),
                "source": row.source.value,
                "note": row.note or "",
            }
        )
    return rows


def table_rows(history: DrillHistory) -> list[dict[str, str]]:
    """The history as table-artifact rows, oldest first."""
    return _row_cells(history)


# The terminal's narrower columns (seconds throughout, said in the title; minutes for the time);
# a row's source and note are listed below the table when it has one (`notes`).
_TERMINAL_HEADERS = {
    "when (UTC)": "when (UTC)",
    "drill": "drill",
    "scenario": "scenario",
    "outcome": "outcome",
    "RTO (s)": "RTO",
    "RTO SLO (s)": "RTO SLO",
    "RPO est. (s)": "RPO est.",
    "RPO SLO (s)": "RPO SLO",
    "passed": "passed",
    "flags": "flags",
}


def terminal_table(history: DrillHistory) -> Table:
    """The history as a rich table for a terminal (sources and notes left out: `notes` lists
    them), with the summary and regressions as its caption."""
    table = Table(
        title=f"Drill history: {history.environment} (times in seconds)",
        caption=history.summary(),
        box=box.SIMPLE_HEAD,
    )
    for name, header in _TERMINAL_HEADERS.items():
        if name.endswith("(s)"):
            table.add_column(header, justify="right", no_wrap=True)
        else:
            table.add_column(header, no_wrap=name in ("when (UTC)", "drill"), overflow="fold", min_width=7)
    for row in _row_cells(history):
        style = "red" if row["flags"] else ("yellow" if row["source"] == RowSource.NONE.value else None)
        row["when (UTC)"] = row["when (UTC)"][:16]  # to the minute
        table.add_row(*(row[name] for name in _TERMINAL_HEADERS), style=style)
    return table


def notes(history: DrillHistory) -> list[str]:
    """One line per row with a note (where its numbers came from, or why there are none)."""
    return [f"{_id(r)}: {r.source.value}: {r.note}" for r in history.rows if r.note]


def main(argv: list[str] | None = None) -> int:
    """`python -m chalkdr.history ENV [--last N]`: what `chalk-dr history ENV [--last N]` does
    (runs the drill-history flow, prints the table; exit 0, or 2 on a regression)."""
    import argparse

    from chalkdr.cli import HISTORY
    from chalkdr.cli import run_history

    parser = argparse.ArgumentParser(prog="python -m chalkdr.history", description=main.__doc__)
    last = HISTORY.default["last"]
    parser.add_argument("environment", help=HISTORY.help("environment"))
    parser.add_argument("--last", type=int, default=last, help=f"{HISTORY.help('last')} (default {last})")
    args = parser.parse_args(argv)
    return int(run_history(args.environment, last=args.last).code)


if __name__ == "__main__":
    raise SystemExit(main())
