"""Drill history rules without I/O: rows from reports, SLO flags, the rising-RTO trend."""

from __future__ import annotations

import itertools
from io import StringIO

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from chalkdr.history import HistoryRow
from chalkdr.history import RegressionKind
from chalkdr.history import RowSource
from chalkdr.history import build_history
from chalkdr.history import find_regressions
from chalkdr.history import notes
from chalkdr.history import rising
from chalkdr.history import row_from_report
from chalkdr.history import table_rows
from chalkdr.history import terminal_table
from chalkdr.report import DrillReport
from chalkdr.report import PhaseStatus
from chalkdr.report import SloVerdict

SLO = 10.0
rto = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)
maybe_rto = st.none() | rto


def row(
    i: int, rto_s: float | None, *, scenario: str = "query-servers-down", rpo_s: float | None = 0.1
) -> HistoryRow:
    return HistoryRow(
        when=1_700_000_000.0 + i * 3600,
        drill_id=f"d{i:04d}",
        scenario=scenario,
        outcome="completed" if rto_s is not None else "aborted",
        rto_s=rto_s,
        rto_slo_s=SLO,
        rpo_s=rpo_s,
        rpo_slo_s=1.0,
        passed=rto_s is not None and rto_s <= SLO,
    )


def kinds(rows: list[HistoryRow], window: int = 3, min_rise: float = 0.1) -> set[RegressionKind]:
    return {r.kind for r in find_regressions(rows, window=window, min_rise=min_rise)}


# -- rising: the definition, edge by edge ---------------------------------------------------------


@given(st.lists(rto, max_size=2), st.integers(min_value=3, max_value=10))
def test_fewer_values_than_the_window_never_rise(values: list[float], window: int) -> None:
    assert not rising(values, window=window)


@given(st.lists(rto, min_size=3, max_size=12), st.integers(min_value=3, max_value=6))
def test_rising_needs_each_value_strictly_above_the_one_before(values: list[float], window: int) -> None:
    tail = values[-window:]
    increasing = len(tail) == window and all(b > a for a, b in itertools.pairwise(tail))
    assert rising(values, window=window, min_rise=0.0) is increasing


@given(rto, st.integers(min_value=3, max_value=8))
def test_equal_values_do_not_rise(value: float, window: int) -> None:
    assert not rising([value] * window, window=window, min_rise=0.0)


@given(st.lists(rto, min_size=3, max_size=8, unique=True))
def test_a_strictly_increasing_window_with_enough_rise_is_rising_and_reversed_is_not(
    values: list[float],
) -> None:
    up = sorted(values)
    window = len(up)
    expected = up[-1] >= up[0] * 1.1
    assert rising(up, window=window, min_rise=0.1) is expected
    assert not rising(list(reversed(up)), window=window, min_rise=0.1)


@given(st.lists(rto, max_size=10), st.lists(rto, min_size=3, max_size=3))
def test_only_the_last_window_counts(prefix: list[float], tail: list[float]) -> None:
    assert rising(prefix + tail, window=3) is rising(tail, window=3)


def test_min_rise_keeps_jitter_out() -> None:
    assert not rising([2.00, 2.01, 2.02], window=3, min_rise=0.1)  # +1%: jitter
    assert rising([2.0, 2.1, 2.3], window=3, min_rise=0.1)  # +15%
    assert rising([0.0, 0.1, 0.2], window=3, min_rise=0.1)


def test_a_window_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        rising([1.0, 2.0], window=1)


# -- regressions over rows -------------------------------------------------------------------------


@given(st.lists(maybe_rto, max_size=2))
def test_zero_one_or_two_drills_cannot_rise(values: list[float | None]) -> None:
    rows = [row(i, v) for i, v in enumerate(values)]
    assert RegressionKind.RTO_RISING not in kinds(rows)


def test_no_drills_no_regression() -> None:
    history = build_history("prod", [])
    assert history.rows == [] and history.regressions == [] and not history.regressed
    assert "0 drill(s), no regression" in history.summary()


@given(st.lists(maybe_rto, max_size=12))
def test_missing_rtos_are_left_out_of_the_trend(values: list[float | None]) -> None:
    rows = [row(i, v) for i, v in enumerate(values)]
    measured = [v for v in values if v is not None]
    assert (RegressionKind.RTO_RISING in kinds(rows)) is rising(measured, window=3)


def test_an_aborted_drill_between_rising_ones_does_not_break_the_trend() -> None:
    rows = [row(0, 2.0), row(1, None), row(2, 3.0), row(3, 4.0)]
    found = find_regressions(rows)
    assert [r.kind for r in found] == [RegressionKind.RTO_RISING]
    assert found[0].drill_ids == ["d0000", "d0002", "d0003"]


def test_scenarios_trend_apart() -> None:
    # Interleaved: neither scenario rises on its own, though the sequence as a whole does.
    rows = [
        row(0, 1.0, scenario="health-check-inverted"),
        row(1, 2.0),
        row(2, 1.0, scenario="health-check-inverted"),
        row(3, 3.0),
        row(4, 1.0, scenario="health-check-inverted"),
    ]
    assert RegressionKind.RTO_RISING not in kinds(rows)
    rows.append(row(5, 4.0))  # query-servers-down: 2 → 3 → 4
    rising_ = [r for r in find_regressions(rows) if r.kind is RegressionKind.RTO_RISING]
    assert len(rising_) == 1 and rising_[0].detail.startswith("query-servers-down:")


@given(rto)
def test_only_the_newest_drill_s_slo_breach_is_a_regression(value: float) -> None:
    breach = row(0, SLO + 1 + value)
    fine = row(1, SLO / 2)
    assert RegressionKind.RTO_ABOVE_SLO not in kinds([breach, fine])
    assert RegressionKind.RTO_ABOVE_SLO in kinds([fine, breach])
    history = build_history("prod", [breach, fine])
    assert history.rows[0].flags == [RegressionKind.RTO_ABOVE_SLO] and history.rows[1].flags == []


def test_rto_equal_to_its_slo_is_no_breach_and_a_missing_target_says_nothing() -> None:
    assert kinds([row(0, SLO)]) == set()
    no_target = row(0, 99.0).model_copy(update={"rto_slo_s": None})
    assert kinds([no_target]) == set()


def test_rpo_above_slo_is_flagged() -> None:
    assert kinds([row(0, 1.0, rpo_s=1.5)]) == {RegressionKind.RPO_ABOVE_SLO}
    assert kinds([row(0, 1.0, rpo_s=None)]) == set()


def test_rows_are_ordered_oldest_first_and_undated_ones_last() -> None:
    undated = HistoryRow(source=RowSource.NONE, note="result unreadable")
    history = build_history("prod", [row(2, 1.0), undated, row(0, 1.0), row(1, 1.0)])
    assert [r.drill_id for r in history.rows] == ["d0000", "d0001", "d0002", None]
    assert history.unreadable == [undated]
    assert "1 unreadable" in history.summary()


# -- from a report, and the renderings -------------------------------------------------------------


def _report(**update: object) -> DrillReport:
    report = DrillReport(
        drill_id="d20260101t000000-abcdef",
        environment="prod",
        scenario="query-servers-down",
        routing="failover",
        primary_region="us-east-1",
        secondary_regions=["us-west-2"],
        probe_interval_s=1.0,
        outcome=PhaseStatus.COMPLETED,
        rto_s=3.5,
        slos=[
            SloVerdict(name="RTO", target=120.0, measured=3.5, passed=True),
            SloVerdict(name="RPO", target=5.0, measured=0.4, passed=True),
        ],
    )
    report.rpo.exposure_s = 0.4
    return report.model_copy(update=update)


def test_a_row_takes_its_targets_from_the_verdicts() -> None:
    r = row_from_report(_report(), flow_run_id="run-1")
    assert (r.rto_s, r.rto_slo_s, r.rpo_s, r.rpo_slo_s, r.passed) == (3.5, 120.0, 0.4, 5.0, True)
    assert r.source is RowSource.RESULT and r.flow_run_id == "run-1" and r.flags == []
    aborted = row_from_report(_report(outcome=PhaseStatus.ABORTED, rto_s=None, slos=[]))
    assert (aborted.rto_slo_s, aborted.rpo_slo_s, aborted.passed) == (None, None, False)


def test_table_and_terminal_rendering_show_every_column_and_the_flags() -> None:
    history = build_history("prod", [row(0, 2.0), row(1, 3.0), row(2, 12.0)])
    cells = table_rows(history)
    assert list(cells[0]) == [
        "when (UTC)",
        "drill",
        "scenario",
        "outcome",
        "RTO (s)",
        "RTO SLO (s)",
        "RPO est. (s)",
        "RPO SLO (s)",
        "passed",
        "flags",
        "source",
        "note",
    ]
    assert cells[2]["flags"] == "RTO>SLO, RTO rising" and cells[0]["flags"] == "RTO rising"
    assert cells[2]["passed"] == "NO" and cells[2]["RTO (s)"] == "12.00"
    buf = StringIO()
    Console(file=buf, width=250).print(terminal_table(history))
    text = buf.getvalue()
    assert "Drill history: prod" in text and "d0002" in text and "REGRESSION" in text
    assert "RTO SLO" in text and "RTO>SLO, RTO rising" in text


def test_an_empty_history_renders() -> None:
    buf = StringIO()
    Console(file=buf, width=250).print(terminal_table(build_history("prod", [])))
    assert "RTO SLO" in buf.getvalue()


def test_notes_say_where_a_row_came_from() -> None:
    lost = HistoryRow(
        flow_run_id="run-9", source=RowSource.NONE, note="result unreadable; no closing event retained"
    )
    assert notes(build_history("prod", [row(0, 1.0), lost])) == [
        "run-9: none: result unreadable; no closing event retained"
    ]
