"""`chalk-dr`: the operator's terminal command. Each command runs one flow in this process.

The flow runs against the configured Prefect API (PREFECT_API_URL) or, without one, Prefect's
ephemeral mode (a temporary local server on $PREFECT_HOME's database), exactly as a deployed
run would: the same parameters, the same report, artifacts and events. While it runs, the
terminal shows each runbook phase as it ends (flows/runbook.py `phase_listener`) and the flow's
own log lines; then the report (the flows' markdown renderers) and where its artifacts are.
The report goes to standard output, progress to standard error.

Options mirror the flows' parameters: their defaults and help texts are read from the flows
themselves (`inspect.signature`, the parameter schema Prefect builds from the docstrings).

Approval. A pause for the approval form makes no sense at a terminal (nobody is in the UI), so
a command whose flow has `require_approval` asks at the terminal instead, showing what the flow
would do (apply: the plan, from a plan run first), unless `--yes` is given; then it runs the
flow with `require_approval=False`. The flows record an approver only through their approval
form (provision's audit trail, the runbooks' `approver`): with no form answered, their record
honestly says "approval: not required". Who confirmed at the terminal is recorded beside it, as
the run's tags `confirmed-by:<user>` and `confirmed-with:prompt|--yes`, `<user>` being
`getpass.getuser()`: the login name of this terminal, which no one authenticated, so it is
never written where an approver authenticated by the Prefect API would be. `--require-approval`
keeps the flow's pause (someone answers the form in the Prefect UI while the terminal waits).
"""

from __future__ import annotations

import getpass
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import ExitStack
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Annotated
from typing import Any

import typer
from prefect import tags as prefect_tags
from prefect.exceptions import ParameterTypeError
from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
from prefect.settings import get_current_settings
from prefect.settings import temporary_settings
from pydantic import ValidationError
from rich.console import Console
from rich.markdown import Markdown

from chalkdr.drill import DrillSettings
from chalkdr.drill import Scenario
from chalkdr.drill import SloOverrides
from chalkdr.errors import TopologyError
from chalkdr.history import DrillHistory
from chalkdr.history import notes
from chalkdr.history import terminal_table
from chalkdr.plan import render_plan_markdown
from chalkdr.recovery import RecoveryMode
from chalkdr.recovery import RecoveryReport
from chalkdr.recovery import default_target
from chalkdr.recovery import render_recovery_markdown
from chalkdr.report import DrillReport
from chalkdr.report import PhaseRecord
from chalkdr.report import PhaseStatus
from chalkdr.report import RunReport
from chalkdr.report import render_markdown
from chalkdr.topology import Topology
from chalkdr.topology import load_topology

__all__ = [
    "ExitCode",
    "RunOutcome",
    "app",
    "main",
    "run_apply",
    "run_drill",
    "run_history",
    "run_plan",
    "run_validate",
]


class ExitCode(IntEnum):
    OK = 0  # validated; in sync; applied; drill passed; recovery or sweep completed; no regression
    ERROR = 1  # bad input (nothing was run, nothing changed), or the run ended without a verdict
    NOT_PASSED = 2  # the run ended with a negative verdict: drift, not passed, not completed, regression
    NOT_CONFIRMED = 3  # the operator did not confirm at the prompt: nothing was run


EXIT_CODES = """\b
Exit codes:
  0  passed: topologies valid; plan in sync; apply applied (or nothing to do); drill
     passed; failover, failback or sweep completed; history without regression
  1  bad input (a topology's file, field and reason, or a bad option: nothing was run
     or changed), or the run ended without a verdict (an error)
  2  the run ended with a negative verdict: plan found drift; apply rejected; drill
     not passed (an SLO missed, aborted or failed); failover, failback or sweep not
     completed; history flagged a regression
  3  not confirmed at the prompt: nothing was run
"""


# -- the flows, and what their signatures say ----------------------------------------------------


def _flow(path: str) -> Any:
    """An object of flows/ by dotted path, imported at run time: chalkdr/ is type-checked
    strictly and flows/ is not, so mypy does not follow this import."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


class _Params:
    """One flow's parameters: their defaults (the signature) and help (Prefect's schema, built
    from the docstring's `Args:` and the Field descriptions)."""

    def __init__(self, flow: Any) -> None:
        self.flow = flow
        self.signature = inspect.signature(flow.fn)
        self.default = {k: p.default for k, p in self.signature.parameters.items()}
        self._schema = flow.parameters.properties

    def help(self, name: str, fallback: str = "") -> str:
        if name not in self.signature.parameters:
            raise KeyError(f"{self.flow.name} has no parameter {name}")
        text = str(self._schema.get(name, {}).get("description") or fallback)
        return " ".join(text.split())


PROVISION = _Params(_flow("flows.provision.provision"))
DRILL = _Params(_flow("flows.drill.drill"))
FAILOVER = _Params(_flow("flows.recovery.failover"))
FAILBACK = _Params(_flow("flows.recovery.failback"))
SWEEP = _Params(_flow("flows.sweep.sweep"))
HISTORY = _Params(_flow("flows.history.drill_history"))


# -- output -------------------------------------------------------------------------------------


def _out() -> Console:
    # Made per call: a console binds to the sys.stdout of the moment (a test runner swaps it).
    return Console(highlight=False, soft_wrap=not sys.stdout.isatty())


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _print_markdown(md: str) -> None:
    """Rendered in a terminal; the markdown itself when piped (for a file, a ticket, a chat)."""
    if sys.stdout.isatty():
        _out().print(Markdown(md))
    else:
        sys.stdout.write(md if md.endswith("\n") else md + "\n")
        sys.stdout.flush()


_MARKS = {
    PhaseStatus.COMPLETED: ("✓", "green"),
    PhaseStatus.SKIPPED: ("-", "dim"),
    PhaseStatus.ABORTED: ("!", "yellow"),
    PhaseStatus.FAILED: ("✗", "red"),
    PhaseStatus.INTERRUPTED: ("✗", "red"),
    PhaseStatus.PENDING: ("?", "yellow"),
}


class _Progress(logging.Handler):
    """What the terminal shows while a flow runs: each runbook phase as it ends, and the
    flow's own INFO log lines (its warnings and errors Prefect's console handler prints)."""

    def __init__(self, console: Console) -> None:
        super().__init__(level=logging.INFO)
        self.console = console

    def phase(self, kind: str, report: RunReport, name: str, rec: PhaseRecord) -> None:
        mark, style = _MARKS[rec.status]
        took = "" if rec.duration_s is None else f"{rec.duration_s:.2f} s"
        line = f"  {mark} {kind} {name:<11} {rec.status.value:<11} {took:>9}"
        self.console.print(line + (f"  {rec.reason}" if rec.reason else ""), style=style, markup=False)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            return
        try:
            self.console.print(f"  · {record.getMessage()}", style="dim", markup=False)
        except Exception:  # noqa: BLE001 - logging's own policy for a handler that fails
            self.handleError(record)


class _QuietConsole(logging.Filter):
    """Keeps Prefect's console handler to warnings and errors of run loggers: the progress
    lines say the rest, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        run_logger = record.name.startswith(("prefect.flow_runs", "prefect.task_runs"))
        return not run_logger or record.levelno >= logging.WARNING


def _console_handlers() -> list[logging.Handler]:
    handlers: list[logging.Handler] = []
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        handlers += [
            h for h in logging.getLogger(name).handlers if type(h).__name__ == "PrefectConsoleHandler"
        ]
    return handlers


@contextmanager
def _showing_progress(verbose: bool) -> Iterator[None]:
    progress = _Progress(_err())
    flow_logger = logging.getLogger("prefect.flow_runs")
    quiet = _QuietConsole()
    handlers = [] if verbose else _console_handlers()
    phase_listener = _flow("flows.runbook.phase_listener")
    with ExitStack() as stack:
        stack.enter_context(phase_listener(progress.phase))
        flow_logger.addHandler(progress)
        stack.callback(flow_logger.removeHandler, progress)
        for h in handlers:
            h.addFilter(quiet)
            stack.callback(h.removeFilter, quiet)
        yield


# -- running a flow -----------------------------------------------------------------------------

STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
EPHEMERAL_STARTUP_S = 120  # unless the operator set it


@dataclass
class RunOutcome:
    """What a command did: its exit code, the flow run's final state and its result (a report,
    or the exception the run ended with); state and result are None when nothing was run."""

    code: ExitCode
    state: Any = None
    result: Any = None

    @property
    def flow_run_id(self) -> str | None:
        details = getattr(self.state, "state_details", None)
        run_id = getattr(details, "flow_run_id", None)
        return None if run_id is None else str(run_id)


class _BadInput(Exception):
    """Refused before anything ran; the message names the file or option, and why."""


def _load(path: Path) -> Topology:
    try:
        return load_topology(path)
    except TopologyError as exc:
        raise _BadInput(str(exc)) from None


def _region(t: Topology, path: Path, option: str, region: str | None) -> None:
    known = [r.aws_region for r in t.regions]
    if region is not None and region not in known:
        raise _BadInput(f"{path}: {option}: {region} is not a region of {t.environment} ({', '.join(known)})")


def _validated(params: _Params, values: dict[str, Any]) -> dict[str, Any]:
    """The flow's own parameter validation (the bounds the Prefect form enforces), before any run."""
    try:
        params.flow.validate_parameters(values)
    except ParameterTypeError as exc:
        raise _BadInput(f"invalid options for {params.flow.name}: {exc}") from None
    return values


def _confirm(what: str, *, yes: bool) -> list[str]:
    """Ask at the terminal (unless --yes); the tags that record who confirmed, and how."""
    user = getpass.getuser()
    if not yes:
        _err().print(what, markup=False)
        try:
            ok = typer.confirm("Proceed?", default=False, err=True)
        except typer.Abort:  # end of input: nobody confirmed
            ok = False
        if not ok:
            raise _NotConfirmed
    return [f"confirmed-by:{user}", f"confirmed-with:{'--yes' if yes else 'prompt'}"]


class _NotConfirmed(Exception):
    pass


def _run(params: _Params, values: dict[str, Any], *, tags: list[str], verbose: bool) -> RunOutcome:
    """Run the flow in this process with progress; the outcome's code is decided by the caller."""
    err = _err()
    api = get_current_settings().api.url
    if values.get("require_approval"):
        if not api:
            raise _BadInput(
                "--require-approval: the run would wait for its approval form, which is answered in the "
                "Prefect UI of a server: set PREFECT_API_URL (ephemeral mode has no UI to answer it in)"
            )
        err.print("the run pauses for its approval form: answer it in the Prefect UI", style="yellow")
    err.print(
        f"running {params.flow.name} against " + (api or "Prefect's ephemeral mode (no PREFECT_API_URL)"),
        style="bold",
        markup=False,
    )
    with ExitStack() as stack:
        if not api and STARTUP_TIMEOUT_ENV not in os.environ:
            # A first start migrates a new database: on a busy machine past Prefect's 20 s default.
            stack.enter_context(
                temporary_settings(
                    updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: EPHEMERAL_STARTUP_S}
                )
            )
        stack.enter_context(_showing_progress(verbose))
        stack.enter_context(prefect_tags("chalk-dr-cli", *tags))
        try:
            state = params.flow(**values, return_state=True)
        except Exception as exc:  # noqa: BLE001 - the engine could not run the flow at all (no API, ...)
            err.print(
                f"{params.flow.name} could not run: {type(exc).__name__}: {exc}", style="red", markup=False
            )
            return RunOutcome(ExitCode.ERROR, None, exc)
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 - a result that cannot be read is reported as the run's end
        result = exc
    return RunOutcome(ExitCode.ERROR, state, result)


def _footer(outcome: RunOutcome, artifacts: list[str]) -> None:
    err = _err()
    run_id = outcome.flow_run_id
    ui = get_current_settings().ui_url
    where = f"{ui.rstrip('/')}/runs/flow-run/{run_id}" if ui and run_id else f"flow run {run_id}"
    err.print(f"{where}; artifacts: {', '.join(artifacts)}", markup=False)


def _no_report(outcome: RunOutcome) -> RunOutcome:
    outcome.code = ExitCode.ERROR
    if outcome.state is None:  # the flow never ran; `_run` said why
        return outcome
    message = getattr(outcome.state, "message", None)
    _err().print(f"the run ended without a report: {outcome.result!r} ({message})", style="red", markup=False)
    return outcome


def _guard(body: Callable[[], RunOutcome]) -> RunOutcome:
    """Bad input and a declined prompt end the command before anything runs."""
    try:
        return body()
    except _BadInput as exc:
        _err().print(str(exc), style="red", markup=False)
        return RunOutcome(ExitCode.ERROR)
    except _NotConfirmed:
        _err().print("not confirmed: nothing was run, nothing changed", style="yellow")
        return RunOutcome(ExitCode.NOT_CONFIRMED)


# -- what each command does (plain functions: sandbox/demo.py calls them too) -----------------


def run_validate(paths: list[Path]) -> ExitCode:
    """Every problem of every file at once, one line each (file: field: reason); no AWS call."""
    out, err = _out(), _err()
    bad = 0
    for path in paths:
        try:
            t = load_topology(path)
        except TopologyError as exc:
            bad += 1
            for line in str(exc).splitlines():
                err.print(line, style="red", markup=False)
            continue
        out.print(
            f"{path}: ok ({t.environment}: {len(t.regions)} regions, {t.routing.value} routing)", markup=False
        )
    if bad:
        err.print(f"{bad} of {len(paths)} topology file(s) invalid", style="red")
    return ExitCode.ERROR if bad else ExitCode.OK


def run_plan(topology: Path, *, verbose: bool = False) -> RunOutcome:
    def body() -> RunOutcome:
        t = _load(topology)
        outcome = _run(
            PROVISION, {"topology": str(topology.resolve()), "mode": "plan"}, tags=[], verbose=verbose
        )
        report = outcome.result
        if not hasattr(report, "plan"):
            return _no_report(outcome)
        _print_markdown(render_plan_markdown(report.plan))
        _footer(outcome, [f"provision-plan-{t.environment}", f"provision-plan-table-{t.environment}"])
        outcome.code = ExitCode.OK if report.outcome == "in-sync" else ExitCode.NOT_PASSED
        return outcome

    return _guard(body)


def run_apply(
    topology: Path,
    *,
    yes: bool = False,
    require_approval: bool = False,
    approval_timeout_s: int = PROVISION.default["approval_timeout_s"],
    wait_timeout_s: float = PROVISION.default["wait_timeout_s"],
    wait_for_lock_seconds: float = PROVISION.default["wait_for_lock_seconds"],
    verbose: bool = False,
) -> RunOutcome:
    """Plan, confirm at the terminal (unless --yes or --require-approval), apply."""

    def body() -> RunOutcome:
        t = _load(topology)
        values = _validated(
            PROVISION,
            {
                "topology": str(topology.resolve()),
                "mode": "apply",
                "require_approval": require_approval,
                "approval_timeout_s": approval_timeout_s,
                "wait_timeout_s": wait_timeout_s,
                "wait_for_lock_seconds": wait_for_lock_seconds,
            },
        )
        tags: list[str] = []
        if not require_approval:
            if yes:
                tags = _confirm("", yes=True)
            else:
                planned = _run(
                    PROVISION, {"topology": values["topology"], "mode": "plan"}, tags=[], verbose=verbose
                )
                report = planned.result
                if not hasattr(report, "plan"):
                    return _no_report(planned)
                plan = report.plan
                _print_markdown(render_plan_markdown(plan))
                if plan.errors:
                    raise _BadInput(
                        f"{topology}: the plan has errors; apply refuses to start until they are fixed"
                    )
                if plan.empty:
                    tags = ["confirmed-with:nothing-to-change"]
                else:
                    tags = _confirm(
                        f"Apply {len(plan.pending)} change(s) to {t.environment} ({plan.summary()})? "
                        "The apply plans again under the environment's lock and makes what that plan lists.",
                        yes=False,
                    )
        outcome = _run(PROVISION, values, tags=tags, verbose=verbose)
        report = outcome.result
        if not hasattr(report, "outcome") or not hasattr(report, "plan"):
            return _no_report(outcome)
        applied = len(report.applied)
        verified = "verified: the plan is now empty" if report.verified else "not verified"
        _out().print(
            f"provision {t.environment}: {report.outcome}; {applied} change(s) made; {verified}"
            + (f"; error: {report.error}" if report.error else ""),
            markup=False,
        )
        _footer(outcome, [f"provision-audit-{t.environment}", f"provision-verify-{t.environment}"])
        ok = report.outcome in ("applied", "in-sync")
        outcome.code = (
            ExitCode.OK if ok else (ExitCode.NOT_PASSED if report.outcome == "rejected" else ExitCode.ERROR)
        )
        return outcome

    return _guard(body)


def _drill_summary(t: Topology, settings: DrillSettings) -> str:
    secondaries = ", ".join(r.aws_region for r in t.secondaries)
    back = "observe the way back" if settings.failback else "skip observing the way back"
    return (
        f"Drill {t.environment}: inject {settings.scenario.value} into {t.primary.aws_region} (primary), "
        f"expect traffic on {secondaries} within {settings.expected_failover_real_s(t):.1f} s "
        f"(configured worst case), hold {settings.hold_seconds:g} s, then undo the fault and {back}. "
        "This is a real fault in the environment's AWS and Chalk."
    )


def run_drill(
    topology: Path,
    *,
    yes: bool = False,
    require_approval: bool = False,
    rto_slo_seconds: float | None = None,
    rpo_slo_seconds: float | None = None,
    verbose: bool = False,
    **options: Any,
) -> RunOutcome:
    """Confirm (unless --yes, --require-approval or a dry run), drill, print the report.
    `options` are the drill flow's other parameters (scenario, hold_seconds, ...)."""

    def body() -> RunOutcome:
        t = _load(topology)
        slo = {
            k: v
            for k, v in (("rto_seconds", rto_slo_seconds), ("rpo_seconds", rpo_slo_seconds))
            if v is not None
        }
        values = _validated(
            DRILL,
            {
                "topology": str(topology.resolve()),
                **options,
                "slo": slo or None,
                "require_approval": require_approval,
            },
        )
        fields = {k: v for k, v in values.items() if k in DrillSettings.model_fields and k != "slo"}
        try:
            settings = DrillSettings(**fields, slo=SloOverrides(**slo))
        except ValidationError as exc:
            problems = "; ".join(
                f"--{'-'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()
            )
            raise _BadInput(f"invalid drill options: {problems}") from None
        if require_approval or settings.dry_run:
            tags = ["confirmed-with:approval-form" if require_approval else "confirmed-with:dry-run"]
        else:
            tags = _confirm(_drill_summary(t, settings), yes=yes)
        outcome = _run(DRILL, values, tags=tags, verbose=verbose)
        report = outcome.result
        if not isinstance(report, DrillReport):
            return _no_report(outcome)
        _print_markdown(render_markdown(report))
        env = report.environment
        _footer(outcome, [f"drill-{env}", f"drill-{env}-timeline"])
        outcome.code = ExitCode.OK if report.passed else ExitCode.NOT_PASSED
        return outcome

    return _guard(body)


def _recovery(
    params: _Params,
    topology: Path,
    values: dict[str, Any],
    summary: Callable[[Topology], str],
    *,
    yes: bool,
    verbose: bool,
) -> RunOutcome:
    def body() -> RunOutcome:
        t = _load(topology)
        for option in ("from_region", "to_region"):
            _region(t, topology, "--" + option.replace("_", "-"), values.get(option))
        checked = _validated(params, {"topology": str(topology.resolve()), **values})
        tags = (
            ["confirmed-with:approval-form"]
            if checked.get("require_approval")
            else _confirm(summary(t), yes=yes)
        )
        outcome = _run(params, checked, tags=tags, verbose=verbose)
        report = outcome.result
        if not isinstance(report, RecoveryReport):
            return _no_report(outcome)
        _print_markdown(render_recovery_markdown(report))
        _footer(outcome, [f"{report.kind}-{report.environment}"])
        outcome.code = ExitCode.OK if report.outcome is PhaseStatus.COMPLETED else ExitCode.NOT_PASSED
        return outcome

    return _guard(body)


def run_sweep(topology: Path, *, verbose: bool = False, **options: Any) -> RunOutcome:
    def body() -> RunOutcome:
        t = _load(topology)
        values = _validated(SWEEP, {"topology": str(topology.resolve()), **options})
        outcome = _run(SWEEP, values, tags=[], verbose=verbose)
        report = outcome.result
        if not isinstance(report, RunReport):
            return _no_report(outcome)
        _print_markdown(_flow("flows.sweep.render_sweep")(report))
        _footer(outcome, [f"sweep-{t.environment}"])
        outcome.code = ExitCode.OK if outcome.state.is_completed() else ExitCode.NOT_PASSED
        return outcome

    return _guard(body)


def run_history(environment: str, *, verbose: bool = False, **options: Any) -> RunOutcome:
    def body() -> RunOutcome:
        values = _validated(HISTORY, {"environment": environment, **options})
        outcome = _run(HISTORY, values, tags=[], verbose=verbose)
        history = outcome.result
        if not isinstance(history, DrillHistory):
            return _no_report(outcome)
        out = _out() if sys.stdout.isatty() else Console(width=250, highlight=False)
        out.print(terminal_table(history))
        for regression in history.regressions:
            out.print(f"REGRESSION {regression.kind.value}: {regression.detail}", style="red", markup=False)
        for note in notes(history):
            out.print(note, style="yellow", markup=False)
        _err().print(f"chart: {history.chart_path}", markup=False)
        _footer(outcome, [f"drill-history-{environment}", f"drill-history-{environment}-chart"])
        outcome.code = ExitCode.NOT_PASSED if history.regressed else ExitCode.OK
        return outcome

    return _guard(body)


# -- the typer app ------------------------------------------------------------------------------

app = typer.Typer(
    name="chalk-dr",
    help="Multi-region DR for Chalk on AWS: provision, drill, fail over and back, from a terminal.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

TopologyArg = Annotated[
    Path, typer.Argument(help="The topology YAML file.", show_default=False, metavar="TOPOLOGY")
]
Yes = Annotated[
    bool,
    typer.Option(
        "--yes",
        "-y",
        help="Confirmed beforehand: do not ask at the terminal. Recorded as the run's tags "
        "confirmed-by:<login name> and confirmed-with:--yes.",
    ),
]
RequireApproval = Annotated[
    bool,
    typer.Option(
        "--require-approval",
        help="Keep the flow's approval pause: the run waits until someone answers its approval form in "
        "the Prefect UI (approver and comment recorded by the flow). Default: confirm at this terminal.",
    ),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Also show Prefect's own log lines.")]


def _exit(outcome: RunOutcome | ExitCode) -> None:
    code = outcome if isinstance(outcome, ExitCode) else outcome.code
    raise typer.Exit(int(code))


@app.command(epilog=EXIT_CODES)
def validate(
    topology: Annotated[
        list[Path], typer.Argument(help="Topology YAML files.", show_default=False, metavar="TOPOLOGY")
    ],
) -> None:
    """Validate topology files: every problem of every file at once (file: field: reason), exit 1
    on any. Reads the files only: no AWS call, no Prefect server."""
    _exit(run_validate(topology))


@app.command(epilog=EXIT_CODES)
def plan(topology: TopologyArg, verbose: Verbose = False) -> None:
    """Read every region and print the provision plan; changes nothing. Exit 0 in sync, 2 drift."""
    _exit(run_plan(topology, verbose=verbose))


@app.command(epilog=EXIT_CODES)
def apply(
    topology: TopologyArg,
    yes: Yes = False,
    require_approval: RequireApproval = False,
    approval_timeout_s: Annotated[
        int, typer.Option(help=PROVISION.help("approval_timeout_s"))
    ] = PROVISION.default["approval_timeout_s"],
    wait_timeout_s: Annotated[float, typer.Option(help=PROVISION.help("wait_timeout_s"))] = PROVISION.default[
        "wait_timeout_s"
    ],
    wait_for_lock_seconds: Annotated[
        float, typer.Option(help=PROVISION.help("wait_for_lock_seconds"))
    ] = PROVISION.default["wait_for_lock_seconds"],
    verbose: Verbose = False,
) -> None:
    """Converge AWS to the topology: print the plan (a plan run), ask, then apply and verify."""
    _exit(
        run_apply(
            topology,
            yes=yes,
            require_approval=require_approval,
            approval_timeout_s=approval_timeout_s,
            wait_timeout_s=wait_timeout_s,
            wait_for_lock_seconds=wait_for_lock_seconds,
            verbose=verbose,
        )
    )


@app.command(epilog=EXIT_CODES)
def drill(
    topology: TopologyArg,
    scenario: Annotated[Scenario, typer.Option(help=DRILL.help("scenario"))] = DRILL.default["scenario"],
    failback: Annotated[bool, typer.Option(help=DRILL.help("failback"))] = DRILL.default["failback"],
    hold_seconds: Annotated[float, typer.Option(help=DRILL.help("hold_seconds"))] = DRILL.default[
        "hold_seconds"
    ],
    probe_interval_seconds: Annotated[
        float, typer.Option(help=DRILL.help("probe_interval_seconds"))
    ] = DRILL.default["probe_interval_seconds"],
    rto_slo_seconds: Annotated[
        float | None,
        typer.Option(help="RTO target for this run only (default: the topology's slo.rto_seconds)."),
    ] = None,
    rpo_slo_seconds: Annotated[
        float | None,
        typer.Option(help="RPO target for this run only (default: the topology's slo.rpo_seconds)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help=DRILL.help("dry_run"))] = DRILL.default["dry_run"],
    fis_experiment_template_id: Annotated[
        str | None, typer.Option(help=DRILL.help("fis_experiment_template_id"))
    ] = DRILL.default["fis_experiment_template_id"],
    abort_after_failed_probes: Annotated[
        int, typer.Option(help=DRILL.help("abort_after_failed_probes"))
    ] = DRILL.default["abort_after_failed_probes"],
    observe_timeout_seconds: Annotated[
        float | None, typer.Option(help=DRILL.help("observe_timeout_seconds"))
    ] = DRILL.default["observe_timeout_seconds"],
    wait_for_lock_seconds: Annotated[
        float, typer.Option(help=DRILL.help("wait_for_lock_seconds"))
    ] = DRILL.default["wait_for_lock_seconds"],
    steady_state_wait_seconds: Annotated[
        float, typer.Option(help=DRILL.help("steady_state_wait_seconds"))
    ] = DRILL.default["steady_state_wait_seconds"],
    yes: Yes = False,
    require_approval: RequireApproval = False,
    verbose: Verbose = False,
) -> None:
    """Rehearse a regional failure of the primary: RTO/RPO measured from evidence, everything put
    back. Asks first (unless --yes or --dry-run). Exit 0 only when the drill passed."""
    _exit(
        run_drill(
            topology,
            yes=yes,
            require_approval=require_approval,
            rto_slo_seconds=rto_slo_seconds,
            rpo_slo_seconds=rpo_slo_seconds,
            verbose=verbose,
            scenario=scenario,
            failback=failback,
            hold_seconds=hold_seconds,
            probe_interval_seconds=probe_interval_seconds,
            dry_run=dry_run,
            fis_experiment_template_id=fis_experiment_template_id,
            abort_after_failed_probes=abort_after_failed_probes,
            observe_timeout_seconds=observe_timeout_seconds,
            wait_for_lock_seconds=wait_for_lock_seconds,
            steady_state_wait_seconds=steady_state_wait_seconds,
        )
    )


def _failover_summary(
    from_region: str, to_region: str | None, mode: RecoveryMode, force: bool
) -> Callable[[Topology], str]:
    def summary(t: Topology) -> str:
        target = t.region(to_region) if to_region else default_target(t, from_region)
        return (
            f"Failover {t.environment}: {from_region} -> {target.aws_region}, mode {mode.value}"
            + (", FORCED past an unhealthy target" if force else "")
            + ": scale its Kubernetes capacity, move the Aurora writer, change Route 53 (health check "
            "inversion) so clients leave " + from_region + "."
        )

    return summary


@app.command(epilog=EXIT_CODES)
def failover(
    topology: TopologyArg,
    from_region: Annotated[
        str,
        typer.Option(
            help=FAILOVER.help("from_region", "The region that is down (failing over)."), show_default=False
        ),
    ],
    mode: Annotated[
        RecoveryMode,
        typer.Option(
            help=FAILOVER.help(
                "mode",
                "graceful: the failed region still answers (Aurora switchover, "
                "RPO 0); ungraceful: Aurora failover with data loss accepted.",
            )
        ),
    ] = FAILOVER.default["mode"],
    force: Annotated[
        bool, typer.Option(help=FAILOVER.help("force", "Go on past an unhealthy target (recorded)."))
    ] = FAILOVER.default["force"],
    to_region: Annotated[
        str | None,
        typer.Option(
            help=FAILOVER.help("to_region", "Where to (default: the other region behind the failover name).")
        ),
    ] = FAILOVER.default["to_region"],
    min_replicas: Annotated[
        int | None,
        typer.Option(help=FAILOVER.help("min_replicas", "Query-server replicas the target needs at least.")),
    ] = FAILOVER.default["min_replicas"],
    probe_interval_seconds: Annotated[
        float, typer.Option(help=FAILOVER.help("probe_interval_seconds", "Seconds between observations."))
    ] = FAILOVER.default["probe_interval_seconds"],
    verify_observations: Annotated[
        int,
        typer.Option(
            help=FAILOVER.help("verify_observations", "Consecutive answers from the target that verify.")
        ),
    ] = FAILOVER.default["verify_observations"],
    timeout_seconds: Annotated[
        float | None, typer.Option(help=FAILOVER.help("timeout_seconds", "Real seconds each wait may take."))
    ] = FAILOVER.default["timeout_seconds"],
    wait_for_lock_seconds: Annotated[
        float,
        typer.Option(
            help=FAILOVER.help("wait_for_lock_seconds", "Seconds to wait for another runbook's lock.")
        ),
    ] = FAILOVER.default["wait_for_lock_seconds"],
    stop_drill: Annotated[
        bool,
        typer.Option(
            help=FAILOVER.help("stop_drill", "Stop a drill of the environment that holds its lock.")
        ),
    ] = FAILOVER.default["stop_drill"],
    yes: Yes = False,
    require_approval: RequireApproval = False,
    verbose: Verbose = False,
) -> None:
    """Fail the environment over from a region that is down. Asks first (unless --yes). Exit 0
    only when the failover completed."""
    values = {
        "from_region": from_region,
        "mode": mode,
        "force": force,
        "to_region": to_region,
        "min_replicas": min_replicas,
        "probe_interval_seconds": probe_interval_seconds,
        "verify_observations": verify_observations,
        "timeout_seconds": timeout_seconds,
        "wait_for_lock_seconds": wait_for_lock_seconds,
        "stop_drill": stop_drill,
        "require_approval": require_approval,
    }
    summary = _failover_summary(from_region, to_region, mode, force)
    _exit(_recovery(FAILOVER, topology, values, summary, yes=yes, verbose=verbose))


@app.command(epilog=EXIT_CODES)
def failback(
    topology: TopologyArg,
    to_region: Annotated[
        str,
        typer.Option(
            help=FAILBACK.help("to_region", "The recovered region to bring back."), show_default=False
        ),
    ],
    probe_interval_seconds: Annotated[
        float, typer.Option(help=FAILBACK.help("probe_interval_seconds", "Seconds between observations."))
    ] = FAILBACK.default["probe_interval_seconds"],
    verify_observations: Annotated[
        int,
        typer.Option(
            help=FAILBACK.help("verify_observations", "Consecutive answers from the target that verify.")
        ),
    ] = FAILBACK.default["verify_observations"],
    timeout_seconds: Annotated[
        float | None, typer.Option(help=FAILBACK.help("timeout_seconds", "Real seconds each wait may take."))
    ] = FAILBACK.default["timeout_seconds"],
    wait_for_lock_seconds: Annotated[
        float,
        typer.Option(
            help=FAILBACK.help("wait_for_lock_seconds", "Seconds to wait for another runbook's lock.")
        ),
    ] = FAILBACK.default["wait_for_lock_seconds"],
    yes: Yes = False,
    require_approval: RequireApproval = False,
    verbose: Verbose = False,
) -> None:
    """Bring a recovered region back after a failover. Asks first (unless --yes). Exit 0 only
    when the failback completed."""
    values = {
        "to_region": to_region,
        "probe_interval_seconds": probe_interval_seconds,
        "verify_observations": verify_observations,
        "timeout_seconds": timeout_seconds,
        "wait_for_lock_seconds": wait_for_lock_seconds,
        "require_approval": require_approval,
    }

    def summary(t: Topology) -> str:
        return (
            f"Failback {t.environment} to {to_region}: move the Aurora writer back (switchover, RPO 0), "
            "remove the failover's health-check inversion, verify clients on it, then restore the "
            "capacity the failover added elsewhere."
        )

    _exit(_recovery(FAILBACK, topology, values, summary, yes=yes, verbose=verbose))


@app.command(epilog=EXIT_CODES)
def sweep(
    topology: TopologyArg,
    wait_for_lock_seconds: Annotated[
        float, typer.Option(help=SWEEP.help("wait_for_lock_seconds"))
    ] = SWEEP.default["wait_for_lock_seconds"],
    verbose: Verbose = False,
) -> None:
    """Repair now what a crashed drill, failover or failback left behind. Exit 0 when completed."""
    _exit(run_sweep(topology, verbose=verbose, wait_for_lock_seconds=wait_for_lock_seconds))


@app.command(epilog=EXIT_CODES)
def history(
    environment: Annotated[
        str, typer.Argument(help=HISTORY.help("environment"), show_default=False, metavar="ENV")
    ],
    last: Annotated[int, typer.Option(help=HISTORY.help("last"))] = HISTORY.default["last"],
    trend_window: Annotated[int, typer.Option(help=HISTORY.help("trend_window"))] = HISTORY.default[
        "trend_window"
    ],
    min_rise: Annotated[float, typer.Option(help=HISTORY.help("min_rise"))] = HISTORY.default["min_rise"],
    chart_path: Annotated[str | None, typer.Option(help=HISTORY.help("chart_path"))] = HISTORY.default[
        "chart_path"
    ],
    verbose: Verbose = False,
) -> None:
    """The environment's drills as a table (RTO, RPO and their SLOs), a chart, and regressions
    flagged (runs the drill-history flow). Exit 0 without regression, 2 with one."""
    _exit(
        run_history(
            environment,
            verbose=verbose,
            last=last,
            trend_window=trend_window,
            min_rise=min_rise,
            chart_path=chart_path,
        )
    )


def main() -> None:
    """The `chalk-dr` entry point (pyproject.toml)."""
    app(prog_name="chalk-dr")
