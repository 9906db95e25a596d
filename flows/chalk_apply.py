"""Flow: ship one git sha to every region with `chalk apply`, and prove parity from what each region serves.

The runbook:
0. refuse what is not allowed, before anything runs: a repository that is not on the topology's
   `deploy.repositories`, a ref that is not its protected branch, a credential URL that is
   plain http to another machine (the run ends REFUSED: failed, with the reason in its report,
   its artifact and a `chalkdr.deploy.refused` event);
1. take the environment's apply lock (global concurrency limit `chalk-apply-<env>`, 1 slot):
   a newer push waits for the running apply;
2. check out the sha: clone the protected branch of `repo_url` (the sha must be reachable from
   its tip, else REFUSED) and order the sha against the last good one: already deployed or
   older ends the run SKIPPED (completed, recorded, a `chalkdr.deploy.skipped` event), so
   pushes delivered out of order end with the newest deployed, never an older one. Or a local
   path that must be at that sha (the operator's own choice: neither branch-checked nor ordered);
3. read which deployment every region serves now (each region's own URL);
4. apply: `parallel` (all regions at once) or `canary` (each secondary applied and verified
   serving, then the primary; a failing canary stops the run before the primary is touched);
5. parity: every region serves the deployment its own apply printed;
6. drift (some regions moved, some not): a drift report and a `chalkdr.deploy.drift` event; with
   `rollback_on_drift`, re-apply the last good sha to the regions that moved, re-check parity.

Two entrypoints. `chalk_apply_on_push` is what the push deployment runs: its only parameters are
what a push may say (sha, ref, repo_url) and how to roll it out; the topology is a file in the
worker's $CHALK_DR_TOPOLOGY_DIR and the binary the worker's $CHALK_DR_CHALK_BIN. `chalk_apply`
is the operator's, with every option (a topology mapping, a local path, another binary); run
from a deployment, it refuses those three as well. Both are the Prefect flow `chalk-apply`.

What this guards against, and what it cannot: an event can only fill the trigger's templated
parameters, and a run started through the API only this flow's parameters; both are checked
against the worker's configuration. Whoever can create deployments or set job variables on the
work pool can run any code on the worker (a pull step is a shell script): keep the Prefect API
key away from CI where the webhook receiver can post the event instead (deployments/ci/).

Where a rollback's code comes from: after every run that reaches parity, the flow records the
environment's last good sha, its clone source (the repo URL, or the local git repository the
path belonged to) and each region's deployment id in the Prefect Variable
`chalk-apply-last-good-<env>`. A rollback clones that source at that sha into a temporary
directory, under the same rules as a push (an allowed repository, a sha on the protected
branch). A path that is not a git work tree cannot be checked out again, so a run from one
records no clone source and cannot be rolled back to.

Cancelling a run stops `chalk`: it runs in its own process group (so its own timeout kills its
children), which a signal to the flow's process would not reach, so any exception leaving the
run (Prefect's cancellation arrives as a TerminationSignal) first kills every child process
group the run started (tasks.chalk `stop_children`).

The run ends Failed unless every region serves the new sha (or it was skipped), even after a
successful rollback: the push was not deployed, and CI must see that.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Sequence
from typing import Annotated
from typing import Any

from prefect import flow
from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.futures import PrefectFuture
from prefect.futures import as_completed
from pydantic import Field

from chalkdr.deploy import ApplyReport
from chalkdr.deploy import DeployFailed
from chalkdr.deploy import LastGood
from chalkdr.deploy import Outcome
from chalkdr.deploy import PushRefused
from chalkdr.deploy import RegionApply
from chalkdr.deploy import RegionStatus
from chalkdr.deploy import RollbackReport
from chalkdr.deploy import Strategy
from chalkdr.deploy import decide_outcome
from chalkdr.deploy import evaluate_parity
from chalkdr.deploy import order_skip_reason
from chalkdr.errors import CredentialsError
from chalkdr.secrets import redact_url
from chalkdr.topology import Topology
from flows.runbook import TOPOLOGY_DIR_ENV
from flows.runbook import TopologyRefused
from flows.runbook import configured_topology
from flows.runbook import deployed_run
from flows.runbook import load_topology_parameter
from tasks.chalk import CliRun
from tasks.chalk import Verification
from tasks.chalk import apply_region
from tasks.chalk import check_credential_destinations
from tasks.chalk import checkout_code
from tasks.chalk import ensure_apply_lock
from tasks.chalk import last_good_variable
from tasks.chalk import publish_apply_report
from tasks.chalk import publish_drift
from tasks.chalk import read_last_good
from tasks.chalk import read_served_deployment
from tasks.chalk import record_last_good
from tasks.chalk import stop_children
from tasks.chalk import verify_served_deployment

__all__ = ["CHALK_BIN_ENV", "TOPOLOGY_DIR_ENV", "chalk_apply", "chalk_apply_on_push"]

_SHA_RE = re.compile(r"^[0-9a-fA-F]{7,40}$")
# The worker's configuration, never a parameter of a run that came through the Prefect API.
CHALK_BIN_ENV = "CHALK_DR_CHALK_BIN"


# Task runs reach the backend asynchronously (the client orchestrates them and reports them as
# events the server records): right after a task finished, its record may not exist yet.
_TASK_RECORD_WAIT_S = 30.0


def _attempts(future: PrefectFuture[Any]) -> int:
    """How many times the task ran (1 + retries), read back from the backend; 0 when the backend
    has not recorded the run's final state within `_TASK_RECORD_WAIT_S` (the report then says 0,
    not a guess)."""
    deadline = time.monotonic() + _TASK_RECORD_WAIT_S
    with get_client(sync_client=True) as client:
        while True:
            try:
                run = client.read_task_run(future.task_run_id)
            except ObjectNotFound:
                run = None
            if run is not None and run.state is not None and run.state.is_final():
                return run.run_count
            if time.monotonic() > deadline:
                get_run_logger().warning(
                    "task run %s not recorded by the backend within %.0f s: attempts unknown",
                    future.task_run_id,
                    _TASK_RECORD_WAIT_S,
                )
                return 0
            time.sleep(0.2)


class _Applier:
    """Applies one sha to a set of regions and verifies each serves what its apply printed."""

    def __init__(
        self,
        topo: Topology,
        *,
        sha: str,
        code_dir: str,
        chalk_bin: str,
        no_promote: bool,
        branch: str | None,
        apply_timeout_s: float,
        verify_timeout_s: float,
        rollback: bool = False,
    ) -> None:
        self.topo, self.sha, self.code_dir, self.chalk_bin = topo, sha, code_dir, chalk_bin
        self.no_promote, self.branch, self.rollback = no_promote, branch, rollback
        self.apply_timeout_s, self.verify_timeout_s = apply_timeout_s, verify_timeout_s
        self.logger = get_run_logger()

    @property
    def build_only(self) -> bool:
        """--no-promote and branch applies build a deployment but change nothing a region serves."""
        return self.no_promote or bool(self.branch)

    def _submit_apply(self, slot: RegionApply) -> PrefectFuture[CliRun]:
        slot.started_at = time.time()
        task = apply_region
        if self.rollback:
            task = apply_region.with_options(task_run_name="rollback-apply-{region.aws_region}")
        return task.submit(
            self.topo.region(slot.region),
            self.topo.chalk,
            sha=self.sha,
            environment=self.topo.environment,
            code_dir=self.code_dir,
            chalk_bin=self.chalk_bin,
            no_promote=self.no_promote,
            branch=self.branch,
            timeout_s=self.apply_timeout_s,
            rollback=self.rollback,
        )

    def _applied(
        self, slot: RegionApply, future: PrefectFuture[CliRun]
    ) -> PrefectFuture[Verification] | None:
        """Record the apply's outcome; submit the verification if it succeeded."""
        result = future.result(raise_on_failure=False)
        slot.attempts = _attempts(future)
        if not isinstance(result, CliRun):
            slot.status, slot.error, slot.finished_at = RegionStatus.FAILED, str(result), time.time()
            return None
        slot.status, slot.deployment_id, slot.applied_at = (
            RegionStatus.APPLIED,
            result.deployment_id,
            result.finished_at,
        )
        # A build-only apply must leave the served deployment where it was.
        want = slot.served_before if self.build_only else result.deployment_id
        if want is None:
            slot.status, slot.error = (
                RegionStatus.FAILED,
                "cannot verify: the served deployment was unknown before",
            )
            slot.finished_at = time.time()
            return None
        region = self.topo.region(slot.region)
        return verify_served_deployment.submit(region, self.topo, want, timeout_s=self.verify_timeout_s)

    @staticmethod
    def _verified(slot: RegionApply, future: PrefectFuture[Verification]) -> bool:
        result = future.result(raise_on_failure=False)
        slot.finished_at = time.time()
        if not isinstance(result, Verification):
            slot.status, slot.error = RegionStatus.FAILED, str(result)
            return False
        slot.status, slot.verified_at = RegionStatus.VERIFIED, result.verified_at
        return True

    def run(self, slots: Sequence[RegionApply], strategy: Strategy) -> None:
        if strategy is Strategy.CANARY:
            self._canary(slots)
        else:
            self._parallel(slots)

    def _parallel(self, slots: Sequence[RegionApply]) -> None:
        applies = {self._submit_apply(slot): slot for slot in slots}
        verifies: dict[PrefectFuture[Verification], RegionApply] = {}
        for future in as_completed(list(applies)):
            slot = applies[future]
            verify = self._applied(slot, future)
            if verify is not None:
                verifies[verify] = slot
        for verify, slot in verifies.items():
            self._verified(slot, verify)

    def _canary(self, slots: Sequence[RegionApply]) -> None:
        """Secondaries first, one by one, each proven serving before the next; the primary last."""
        primary = self.topo.primary.aws_region
        order = sorted(slots, key=lambda s: s.region == primary)
        for i, slot in enumerate(order):
            self.logger.info("canary step %d/%d: %s", i + 1, len(order), slot.region)
            verify = self._applied(slot, self._submit_apply(slot))
            if verify is not None and self._verified(slot, verify):
                continue
            for rest in order[i + 1 :]:
                rest.status = RegionStatus.SKIPPED
                rest.error = f"not attempted: canary region {slot.region} failed"
            return


def _read_served(topo: Topology, regions: Sequence[str], *, deadline_s: float) -> dict[str, str | None]:
    """Every region's served deployment, read in parallel; an unreadable region is None."""
    logger = get_run_logger()
    futures = {r: read_served_deployment.submit(topo.region(r), topo, deadline_s=deadline_s) for r in regions}
    served: dict[str, str | None] = {}
    for region, future in futures.items():
        result = future.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            logger.warning("%s: cannot tell which deployment it serves: %s", region, result)
            served[region] = None
        else:
            served[region] = result
    return served


def _rollback(
    report: ApplyReport,
    topo: Topology,
    last_good: LastGood | None,
    *,
    applier: _Applier,
    workdir: str,
) -> RollbackReport:
    """Re-apply the last good sha to the regions that moved, then prove parity on it."""
    assert report.parity is not None
    moved = report.parity.at_target
    if last_good is None:
        return RollbackReport(
            skipped_reason=f"no last good sha recorded for {topo.environment} "
            f"(Prefect Variable {last_good_variable(topo.environment)})"
        )
    rb = RollbackReport(sha=last_good.sha)
    if applier.build_only:
        rb.skipped_reason = "a --no-promote or branch apply changes nothing served"
    elif last_good.sha == report.sha:
        rb.skipped_reason = "the last good sha is the sha being applied"
    elif not last_good.repo_url:
        rb.skipped_reason = (
            f"the code of {last_good.sha[:12]} came from a directory that is not a git work tree"
        )
    if rb.skipped_reason:
        return rb
    assert last_good.repo_url is not None
    logger = get_run_logger()
    logger.warning("rolling %s back to %s", ", ".join(moved), last_good.sha)
    try:
        # The same rules as a push: an allowed repository, a sha on the protected branch.
        code = checkout_code.with_options(task_run_name="checkout-rollback-{sha}")(
            last_good.sha,
            dest=os.path.join(workdir, "rollback"),
            repo_url=last_good.repo_url,
            deploy=topo.deploy,
        )
    except PushRefused as exc:
        rb.skipped_reason = f"the last good sha cannot be checked out again: {exc}"
        return rb
    rb.source = code.source
    served_now = {r.region: r.served for r in report.parity.regions}
    rb.regions = [
        RegionApply(
            region=r,
            resource_group=topo.region(r).resource_group,
            environment_id=topo.chalk.environment_id,
            primary=topo.region(r) is topo.primary,
            served_before=served_now.get(r),
        )
        for r in moved
    ]
    rollback = _Applier(
        topo,
        sha=code.sha,
        code_dir=code.code_dir,
        chalk_bin=applier.chalk_bin,
        no_promote=False,
        branch=None,
        apply_timeout_s=applier.apply_timeout_s,
        verify_timeout_s=applier.verify_timeout_s,
        rollback=True,
    )
    rollback.run(rb.regions, Strategy.PARALLEL)
    new_ids = {s.region: s.deployment_id for s in rb.regions}
    # Moved regions must serve their new rollback deployment; the others never left the last good one.
    expected = {
        r.aws_region: new_ids.get(r.aws_region)
        if r.aws_region in moved
        else last_good.deployment_ids.get(r.aws_region)
        for r in topo.regions
    }
    served = _read_served(topo, [r.aws_region for r in topo.regions], deadline_s=applier.verify_timeout_s)
    known = {**last_good.deployment_ids_to_sha(), **{i: code.sha for i in new_ids.values() if i}}
    rb.parity = evaluate_parity(code.sha, expected=expected, served=served, known_shas=known)
    if rb.parity.in_parity:
        ids = {r: i for r, i in expected.items() if i}
        record_last_good(topo.environment, last_good.model_copy(update={"deployment_ids": ids}))
    return rb


def _apply(
    report: ApplyReport,
    topo: Topology,
    *,
    repo_url: str | None,
    path: str | None,
    applier_options: dict[str, Any],
    rollback_on_drift: bool,
    workdir: str,
) -> None:
    """The runbook's body: every phase writes its slot of `report`; expected failures don't raise.

    Runs under the apply lock, so the last good sha it orders against is the one the previous
    run left: pushes that arrive out of order cannot both pass the check.
    """
    logger = get_run_logger()
    last_good = read_last_good(topo.environment)
    report.previous_sha = last_good.sha if last_good else None
    code = checkout_code(
        report.sha,
        dest=os.path.join(workdir, "code"),
        repo_url=repo_url,
        path=path,
        deploy=topo.deploy,
        deployed_sha=report.previous_sha,
    )
    report.sha, report.source = code.sha, code.source + (" (uncommitted changes)" if code.dirty else "")
    report.order = code.order
    applier = _Applier(topo, sha=code.sha, code_dir=code.code_dir, **applier_options)
    if code.order is not None and not applier.build_only:
        skip = order_skip_reason(code.sha, report.previous_sha, code.order)
        if skip:
            logger.info("not applying: %s", skip)
            report.skipped = skip
            return
    regions = [r.aws_region for r in topo.regions]

    baseline = _read_served(topo, regions, deadline_s=applier.verify_timeout_s)
    for slot in report.regions:
        slot.served_before = baseline[slot.region]
    applier.run(report.regions, report.strategy)

    served = _read_served(topo, regions, deadline_s=applier.verify_timeout_s)
    expected: dict[str, str | None] = {}
    for slot in report.regions:
        slot.served_after = served[slot.region]
        expected[slot.region] = slot.served_before if applier.build_only else slot.deployment_id
    known = last_good.deployment_ids_to_sha() if last_good else {}
    known.update({s.deployment_id: code.sha for s in report.regions if s.deployment_id})
    report.parity = evaluate_parity(code.sha, expected=expected, served=served, known_shas=known)

    if report.parity.in_parity:
        logger.info("parity: every region serves %s", code.sha)
        if not applier.build_only:
            ids = {s.region: s.deployment_id for s in report.regions if s.deployment_id}
            record_last_good(
                topo.environment,
                LastGood(
                    sha=code.sha, ref=report.ref, repo_url=code.clone_source, path=path, deployment_ids=ids
                ),
            )
        return
    if report.parity.drifted:
        logger.error(
            "drift: %s serve %s, the other regions do not", ", ".join(report.parity.at_target), code.sha
        )
        publish_drift(report, report.parity)
        if rollback_on_drift:
            report.rollback = _rollback(report, topo, last_good, applier=applier, workdir=workdir)


def _refusal(topo: Topology, *, repo_url: str | None, ref: str | None) -> str | None:
    """Why this push must not run at all (checked before the lock: nothing is cloned or applied)."""
    if repo_url:
        if topo.deploy is None:
            return "the topology has no deploy: section, so no repository may be cloned for it"
        try:
            topo.deploy.repository(repo_url)
        except PushRefused as exc:
            return str(exc)
        if ref and not topo.deploy.is_branch_ref(ref):
            return f"ref {ref} is not the protected branch {topo.deploy.branch}"
    try:
        check_credential_destinations(topo)
    except CredentialsError as exc:
        return f"refusing to send credentials: {exc}"
    return None


def _run(
    topo: Topology,
    *,
    sha: str,
    ref: str | None,
    repo_url: str | None,
    path: str | None,
    strategy: Strategy,
    no_promote: bool,
    branch: str | None,
    rollback_on_drift: bool,
    chalk_bin: str,
    apply_timeout_s: float,
    verify_timeout_s: float,
) -> ApplyReport:
    """One apply, start to end, recorded in one report; both flows are this with their own rules.

    A refusal ends the run REFUSED (failed) with nothing run; a skip ends it SKIPPED (completed).
    Any other way out (an error, a cancellation, an interrupt) first kills every child process
    this run started: `chalk` runs in its own process group, which no signal to the flow's own
    process reaches.
    """
    logger = get_run_logger()
    report = ApplyReport(
        environment=topo.environment,
        sha=sha,
        ref=ref,
        source=redact_url(repo_url) if repo_url else str(path),
        strategy=Strategy(strategy),
        no_promote=no_promote,
        branch=branch,
        rollback_on_drift=rollback_on_drift,
        regions=[
            RegionApply(
                region=r.aws_region,
                resource_group=r.resource_group,
                environment_id=topo.chalk.environment_id,
                primary=r is topo.primary,
            )
            for r in topo.regions
        ],
    )
    options = {
        "chalk_bin": chalk_bin,
        "no_promote": no_promote,
        "branch": branch,
        "apply_timeout_s": apply_timeout_s,
        "verify_timeout_s": verify_timeout_s,
    }
    try:
        report.refused = _refusal(topo, repo_url=repo_url, ref=ref)
        if report.refused is None:
            lock = ensure_apply_lock(topo.environment)
            logger.info("waiting for the apply lock %s (one apply per environment at a time)", lock)
            with (
                concurrency(lock, occupy=1, strict=True),
                tempfile.TemporaryDirectory(prefix="chalk-apply-") as tmp,
            ):
                report.started_at = time.time()
                _apply(
                    report,
                    topo,
                    repo_url=repo_url,
                    path=path,
                    applier_options=options,
                    rollback_on_drift=rollback_on_drift,
                    workdir=tmp,
                )
    except PushRefused as exc:
        report.refused = str(exc)
    except BaseException as exc:  # an error, a cancellation (TerminationSignal), an interrupt
        killed = stop_children()
        report.error = f"{type(exc).__name__}: {exc}"
        if killed:
            report.error += f" ({killed} running child process group(s) killed)"
        raise
    finally:
        report.finished_at = time.time()
        report.outcome = decide_outcome(report)
        publish_apply_report(report)
        logger.info("chalk apply %s: %s", report.outcome.value, report.summary)
    if report.outcome is Outcome.REFUSED:
        logger.error("refused: %s", report.refused)
    if report.outcome not in (Outcome.PARITY, Outcome.SKIPPED):
        raise DeployFailed(report)
    return report


def _check_sha(sha: str) -> None:
    if not _SHA_RE.match(sha):
        raise ValueError(f"sha {sha!r} is not a git commit sha (7 to 40 hex digits)")


def _configured_topology(name: str) -> Topology:
    """A topology file from the worker's $CHALK_DR_TOPOLOGY_DIR (the only place a run that came
    through the API may take one from); unset, such a run cannot start (refused, like any push
    the worker may not run)."""
    try:
        return configured_topology(name)
    except TopologyRefused as exc:
        raise PushRefused(str(exc)) from None


def _worker_chalk_bin() -> str:
    return os.environ.get(CHALK_BIN_ENV) or "chalk"


@flow(name="chalk-apply")
def chalk_apply(
    topology: str | dict[str, Any],
    sha: str,
    ref: str | None = None,
    repo_url: str | None = None,
    path: str | None = None,
    strategy: Strategy = Strategy.PARALLEL,
    no_promote: bool = False,
    branch: str | None = None,
    rollback_on_drift: bool = False,
    chalk_bin: str | None = None,
    apply_timeout_s: float = 900.0,
    verify_timeout_s: float = 120.0,
) -> ApplyReport:
    """Apply git `sha` to every region of the topology and prove every region serves it.

    The operator's flow. `topology` is a topology YAML path or the topology itself; the code
    comes from `repo_url` (cloned at `sha`: the topology's `deploy:` section must allow the
    repository, and `sha` must be on its protected branch and newer than the last good sha,
    else the run is refused or skipped) or `path` (a local checkout at `sha`, the operator's
    explicit choice: not branch-checked, not ordered). `chalk_bin` defaults to
    $CHALK_DR_CHALK_BIN, else `chalk` on PATH. Fails (DeployFailed, with the report) unless
    every region serves the new sha, or the sha was skipped.

    Run from a deployment (its parameters came through the Prefect API), what reaches the
    worker's files, binaries and secrets is the worker's configuration, not a parameter:
    `topology` must name a file in $CHALK_DR_TOPOLOGY_DIR, and `path` and `chalk_bin` are
    refused. Push-triggered deployments use `chalk_apply_on_push`, which has no such parameters.

    Args:
        topology: The topology whose regions get the code. From a deployment: the name of a YAML
            file in the worker's $CHALK_DR_TOPOLOGY_DIR; from Python, also a path or a mapping.
        sha: The git commit to apply, 7 to 40 hex digits.
        ref: The pushed ref (e.g. refs/heads/main); when given, it must be the topology's
            protected branch, else the run is refused.
        repo_url: The repository to clone at `sha`; it must be on the topology's
            deploy.repositories. Give this or `path`, not both.
        path: Not from a deployment: a local checkout already at `sha` (neither branch-checked
            nor ordered against the last good sha). Give this or `repo_url`.
        strategy: parallel: every region at once. canary: each secondary applied and verified
            serving first, then the primary (a failing canary leaves the primary untouched).
        no_promote: Run `chalk apply --no-promote`: build a preview deployment that no region
            serves (verified: each region still serves what it served before).
        branch: Run `chalk apply --branch <branch>`: a branch deployment, which changes nothing a
            region serves.
        rollback_on_drift: When the regions end up on different code, re-apply the last good sha
            to the regions that moved and check parity again (the run still ends Failed).
        chalk_bin: Not from a deployment: the chalk CLI to run. Empty: $CHALK_DR_CHALK_BIN, else
            `chalk` on PATH.
        apply_timeout_s: Seconds each region's `chalk apply` may take before it is killed with
            everything it started.
        verify_timeout_s: Seconds to wait for each region to serve the deployment its apply
            printed (read through the region's own hostname).
    """
    _check_sha(sha)
    if bool(repo_url) == bool(path):
        raise ValueError("give exactly one of repo_url (to clone) or path (a local checkout)")
    if deployed_run():
        problems = []
        if not isinstance(topology, str):
            problems.append(f"topology must name a file in ${TOPOLOGY_DIR_ENV}, not be a mapping")
        if path:
            problems.append("path (a directory on the worker) is not accepted from the API: give repo_url")
        if chalk_bin:
            problems.append(f"chalk_bin is the worker's configuration (${CHALK_BIN_ENV}), not a parameter")
        if problems:
            raise PushRefused("refused parameters of a deployed run: " + "; ".join(problems))
        topo = _configured_topology(str(topology))
    else:
        topo = load_topology_parameter(topology)
    return _run(
        topo,
        sha=sha,
        ref=ref,
        repo_url=repo_url,
        path=path,
        strategy=Strategy(strategy),
        no_promote=no_promote,
        branch=branch,
        rollback_on_drift=rollback_on_drift,
        chalk_bin=chalk_bin or _worker_chalk_bin(),
        apply_timeout_s=apply_timeout_s,
        verify_timeout_s=verify_timeout_s,
    )


@flow(name="chalk-apply")
def chalk_apply_on_push(
    sha: str,
    repo_url: str,
    ref: str | None = None,
    topology: str = "topology.yaml",
    strategy: Strategy = Strategy.CANARY,
    rollback_on_drift: bool = True,
    apply_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 900.0,
    verify_timeout_s: Annotated[float, Field(gt=0, le=1800)] = 120.0,
) -> ApplyReport:
    """The push deployment's entrypoint: a push may say which sha of which repository, nothing more.

    An event fills `sha`, `ref` and `repo_url`; everything that reaches the worker's files,
    binaries and secrets is the worker's configuration: the topology is a file in
    $CHALK_DR_TOPOLOGY_DIR (`topology` names it), the binary is $CHALK_DR_CHALK_BIN (else
    `chalk` on PATH), and there is no local path and no topology mapping to pass. The repository
    must be on the topology's `deploy.repositories`, `ref` (when given) its protected branch,
    and `sha` reachable from that branch's tip, else the run is REFUSED (failed, nothing run);
    a sha that is already deployed or older than the deployed one is SKIPPED (completed,
    recorded), so pushes delivered out of order end with the newest deployed.

    Args:
        sha: The pushed git commit, 7 to 40 hex digits (the event's payload.sha).
        repo_url: The repository to clone at `sha` (the event's payload.repo_url); it must be on
            the topology's deploy.repositories.
        ref: The pushed ref (payload.ref, e.g. refs/heads/main); when given, it must be the
            topology's protected branch. Empty: `sha` must still be reachable from that branch.
        topology: The name of a topology YAML file in the worker's $CHALK_DR_TOPOLOGY_DIR.
        strategy: parallel: every region at once. canary: each secondary applied and verified
            serving first, then the primary (a failing canary leaves the primary untouched).
        rollback_on_drift: When the regions end up on different code, re-apply the last good sha
            to the regions that moved and check parity again (the run still ends Failed).
        apply_timeout_s: Seconds each region's `chalk apply` may take before it is killed with
            everything it started.
        verify_timeout_s: Seconds to wait for each region to serve the deployment its apply
            printed (read through the region's own hostname).
    """
    _check_sha(sha)
    if not repo_url:  # a trigger templates a missing payload field as ""
        raise PushRefused("the push names no repository (repo_url is empty): nothing to clone")
    topo = _configured_topology(topology)
    return _run(
        topo,
        sha=sha,
        ref=ref or None,
        repo_url=repo_url,
        path=None,
        strategy=Strategy(strategy),
        no_promote=False,
        branch=None,
        rollback_on_drift=rollback_on_drift,
        chalk_bin=_worker_chalk_bin(),
        apply_timeout_s=apply_timeout_s,
        verify_timeout_s=verify_timeout_s,
    )
