"""The operator's path through the Prefect UI, in headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright; no browser is downloaded): a `drill-manual` run pauses for approval, the
approval form the UI generates from the drill's RunInput (flows/drill.py `DrillApproval`) is
filled in and submitted, the drill completes, and its report artifact — and the drill-history
chart, a PNG embedded in a markdown artifact — are shown.

Against a real Prefect server serving its own UI (sandbox.prefect_server.PrefectServer with
PREFECT_UI_ENABLED and PREFECT_UI_API_URL set to its port-0 address), a process worker and a
sandbox world of the module's own. The UI driven is the server's default one (3.9.1 sends `/`
to its V2 UI, under /v2). Screenshots of every step go to the test's tmp_path and to
`<basetemp>/browser-screenshots/`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import NoReturn
from uuid import UUID

import httpx
import pytest
from playwright.sync_api import BrowserContext
from playwright.sync_api import Locator
from playwright.sync_api import Page
from playwright.sync_api import expect
from playwright.sync_api import sync_playwright
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter
from prefect.client.schemas.filters import ArtifactFilterKey
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL
from prefect.settings import temporary_settings

from sandbox.harness import poll
from sandbox.prefect_cli import POOL
from sandbox.prefect_cli import prefect_cli
from sandbox.prefect_cli import prefect_env
from sandbox.prefect_cli import process_worker
from sandbox.prefect_cli import provision_world
from sandbox.prefect_server import PrefectServer

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Flags that work as root on a machine without a network or a display.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEPLOYMENT = "drill/drill-manual"  # approval on
HISTORY = REPO / "flows" / "history.py"
UI_TIMEOUT_MS = 30_000
DRILL_PARAMETERS = {"hold_seconds": 1.0, "probe_interval_seconds": 0.5, "steady_state_wait_seconds": 120.0}
APPROVER, COMMENT = "ui-operator", "approved in headless chromium"
HISTORY_MARKER = "HISTORY-FLOW-RUN "
RESUME_PATH = re.compile(r"/api/flow_runs/[0-9a-f-]{36}/resume$")


def in_ci() -> bool:
    return os.environ.get("CHALK_DR_CI") == "1" or os.environ.get("CI", "").lower() == "true"


def require(missing: str) -> NoReturn:
    """Skip locally; fail under CI, whose .ci/run installs what the test needs."""
    if in_ci():
        pytest.fail(f"{missing}; CI must have it (.ci/run, `make system-deps`)")
    pytest.skip(missing)


@dataclass
class UiWorld:
    """A Prefect server with its UI, a provisioned sandbox world and a worker running its runs."""

    server: PrefectServer
    world: Any  # tests/conftest.py SandboxWorld
    worker: subprocess.Popen[bytes]
    worker_log: Path
    results: Path  # where the worker's runs persist their results
    home: Path

    @property
    def environment(self) -> str:
        return str(self.world.topology.environment)

    def ui(self, path: str) -> str:
        return f"{self.server.ui_url}/v2{path}"

    def flow_run(self, flow_run_id: UUID) -> Any:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(flow_run_id)

    def wait_for(self, flow_run_id: UUID, done: Any, what: str, timeout: float = 300) -> Any:
        def check() -> Any:
            assert self.worker.poll() is None, f"the worker exited: {self.worker_log.read_text()[-3000:]}"
            run = self.flow_run(flow_run_id)
            return run if run.state is not None and done(run.state) else None

        return poll(check, timeout=timeout, what=f"flow run {flow_run_id} {what}", every=1.0)


class Screenshots:
    """Each step's screenshot, in the test's folder and in one folder under the basetemp."""

    def __init__(self, folder: Path, stable: Path) -> None:
        self.folder, self.stable = folder, stable
        folder.mkdir(parents=True, exist_ok=True)
        stable.mkdir(parents=True, exist_ok=True)

    def take(self, page: Page, name: str) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=path, full_page=True)
        shutil.copy(path, self.stable / path.name)
        return path


@pytest.fixture(scope="module")
def ui_world(tmp_path_factory: pytest.TempPathFactory, session_world_factory: Any) -> Iterator[UiWorld]:
    """Set up before the function-scoped `aws_env`, so it scrubs the environment the same way
    itself; the world is stopped when the module ends (`sandbox down` is idempotent, so the
    factory's own stop at session end finds nothing left)."""
    home = tmp_path_factory.mktemp("ui-world")
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.delenv(name, raising=False)
        env.setenv("AWS_CONFIG_FILE", os.devnull)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        world = session_world_factory("ui")
        server = PrefectServer.start(home / "server-home", ui=True)
        results = home / "results"
        try:
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):  # for this process's reads
                cli_env = prefect_env(server.api_url, home / "cli-home")
                provision_world(world, cli_env)
                prefect_cli(cli_env, "work-pool", "create", POOL, "--type", "process")
                # One deployment: --all (or `make setup`) also deploys the scheduled ones.
                prefect_cli(cli_env, "--no-prompt", "deploy", "--name", DEPLOYMENT.split("/")[1])
                worker_env = prefect_env(
                    server.api_url, home / "worker-home", PREFECT_LOCAL_STORAGE_PATH=str(results)
                )
                worker_env.update(
                    world.env, CHALK_DR_HOME=str(REPO), CHALK_DR_TOPOLOGY_DIR=str(world.state_dir)
                )
                log = home / "worker.log"
                with process_worker(worker_env, log) as worker:
                    yield UiWorld(server, world, worker, log, results, home)
        finally:
            try:
                server.stop()
            finally:
                subprocess.run(
                    [sys.executable, "-m", "sandbox", "down", "--state-dir", str(world.state_dir)],
                    check=True,
                    capture_output=True,
                    timeout=60,
                )


@pytest.fixture(scope="module")
def chromium() -> Iterator[BrowserContext]:
    """System Chromium with a fresh profile (Playwright's persistent context owns --user-data-dir)."""
    if not CHROMIUM.is_file():
        require(f"{CHROMIUM} not found: install Debian's chromium (`make system-deps`)")
    profile = Path(tempfile.mkdtemp(prefix="chalkdr-chromium-"))
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1000},
            )
            context.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)  # assertions too (their default is 5 s)
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(chromium: BrowserContext) -> Iterator[Page]:
    page = chromium.new_page()
    yield page
    page.close()


@pytest.fixture
def shots(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Screenshots:
    stable = tmp_path_factory.getbasetemp() / "browser-screenshots" / request.node.name
    return Screenshots(tmp_path / "screenshots", stable)


def open_artifact(page: Page, ui_world: UiWorld, flow_run_id: UUID, key: str, shots: Screenshots) -> None:
    """From the run's Artifacts tab, open the artifact `key` by its card, as an operator does."""
    page.goto(ui_world.ui(f"/runs/flow-run/{flow_run_id}?tab=Artifacts"))
    card = page.locator("a[href*='/artifacts/artifact/']").filter(has=page.get_by_text(key, exact=True))
    expect(card).to_be_visible()
    shots.take(page, f"artifacts-of-{key}")
    card.click()
    expect(page).to_have_url(re.compile(r"/v2/artifacts/artifact/[0-9a-f-]{36}"))


def submit_resume(page: Page, button: Locator, shots: Screenshots, tries: int = 4) -> None:
    """Click the form's Resume until the server accepts it. The server answers 503 when its
    SQLite database is locked by another writer (Prefect's "retry me": a write transaction that
    lost a WAL race; `is_client_retryable_exception`) and rolls everything back; Prefect's Python
    client retries that by itself, the UI leaves the form open for the operator to submit again,
    which is what this does — any other answer fails the test."""
    for attempt in range(1, tries + 1):
        with page.expect_response(
            lambda r: r.request.method == "POST" and RESUME_PATH.search(r.url) is not None
        ) as answer:
            button.click()
        response = answer.value
        if response.status == 503 and attempt < tries:
            shots.take(page, f"02-approval-form-retry-{attempt}")
            continue
        assert response.ok, (response.status, response.text())
        assert response.json()["status"] == "ACCEPT", response.text()
        return


def test_a_paused_drill_is_approved_in_the_ui_and_its_report_is_shown(
    ui_world: UiWorld, page: Page, shots: Screenshots
) -> None:
    # The UI the server serves talks to this server's API (its port was chosen by the OS).
    settings = httpx.get(f"{ui_world.server.ui_url}/ui-settings", timeout=10, trust_env=False).json()
    assert settings["api_url"] == ui_world.server.api_url and "v2" in settings["available_uis"], settings
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        created = client.create_flow_run_from_deployment(
            deployment.id, parameters={"topology": ui_world.world.topology_path.name, **DRILL_PARAMETERS}
        )
    paused = ui_world.wait_for(created.id, lambda s: s.type is StateType.PAUSED or s.is_final(), "paused")
    assert paused.state.type is StateType.PAUSED, (paused.state, ui_world.worker_log.read_text()[-3000:])

    page.goto(ui_world.ui(f"/runs/flow-run/{created.id}"))
    expect(page.get_by_text("Paused", exact=True).first).to_be_visible()
    shots.take(page, "01-paused")
    # The run's menu (top right) holds Resume; it opens the form built from DrillApproval.
    page.get_by_role("button", name="Open menu", exact=True).first.click()
    page.get_by_role("menuitem", name="Resume").click()
    form = page.get_by_role("dialog")
    expect(form.get_by_text("Approve to inject.")).to_be_visible()  # the pause's description
    approve = form.get_by_label(re.compile(r"^Approve\b"))  # a switch; "Approver" is the text field
    expect(approve).to_have_attribute("aria-checked", "false")  # DrillApproval.approve defaults False
    approve.click()
    expect(approve).to_have_attribute("aria-checked", "true")
    form.get_by_label(re.compile(r"^Approver\b")).fill(APPROVER)
    form.get_by_label(re.compile(r"^Comment\b")).fill(COMMENT)
    shots.take(page, "02-approval-form")
    submit_resume(page, form.get_by_role("button", name="Resume", exact=True), shots)
    expect(form).to_be_hidden()
    shots.take(page, "03-resumed")

    done = ui_world.wait_for(created.id, lambda s: s.is_final(), "final", timeout=400)
    assert done.state.is_completed(), (done.state, ui_world.worker_log.read_text()[-5000:])
    page.reload()
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
    shots.take(page, "04-completed")

    key = f"drill-{ui_world.environment}"
    open_artifact(page, ui_world, created.id, key, shots)
    rendered = page.get_by_test_id("markdown-display")  # the rendered markdown (not the Raw tab)
    expect(rendered.get_by_role("heading", name=re.compile(r"DR drill .* PASS"))).to_be_visible()
    expect(rendered.get_by_role("cell", name=re.compile(r"^RTO \("))).to_be_visible()
    # What the form said reached the flow: the report names the approver and the comment.
    expect(rendered.get_by_text(f"approved by {APPROVER}: {COMMENT}")).to_be_visible()
    shots.take(page, "05-drill-report")
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert artifact.flow_run_id == created.id and "RTO" in str(artifact.data)


def test_the_drill_history_chart_is_shown_in_the_ui(
    ui_world: UiWorld, page: Page, shots: Screenshots
) -> None:
    """drill_history (flows/history.py) after a drill of this test's own (approval off); its chart
    artifact embeds a PNG as a data URI, which the UI's markdown renderer must show as a loaded
    image. Until flows/history.py exists this skips locally and fails under CI."""
    if not HISTORY.is_file():
        require(f"{HISTORY.relative_to(REPO)} (the drill_history flow) does not exist yet")
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        created = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "topology": ui_world.world.topology_path.name,
                "require_approval": False,
                **DRILL_PARAMETERS,
            },
        )
    done = ui_world.wait_for(created.id, lambda s: s.is_final(), "final", timeout=400)
    assert done.state.is_completed(), (done.state, ui_world.worker_log.read_text()[-5000:])

    # In a process of its own (as a deployment's run would be), reading the drills' persisted
    # results from the worker's result storage.
    code = (
        "import json, sys; from flows.history import drill_history;"
        "state = drill_history(environment=sys.argv[1], last=20, return_state=True);"
        f"print({HISTORY_MARKER!r} + json.dumps("
        "[str(state.state_details.flow_run_id), state.type.value, state.message]))"
    )
    env = prefect_env(
        ui_world.server.api_url,
        ui_world.home / "history-home",
        PREFECT_LOCAL_STORAGE_PATH=str(ui_world.results),
    )
    history = subprocess.run(
        [sys.executable, "-c", code, ui_world.environment],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    marker = [line for line in history.stdout.splitlines() if line.startswith(HISTORY_MARKER)]
    assert marker, history.stdout[-3000:] + history.stderr[-3000:]
    run_id, state_type, message = json.loads(marker[-1].removeprefix(HISTORY_MARKER))
    assert state_type == "COMPLETED", (state_type, message, history.stderr[-3000:])

    open_artifact(page, ui_world, UUID(run_id), f"drill-history-{ui_world.environment}-chart", shots)
    chart = page.get_by_test_id("markdown-display").locator("img[src^='data:image/png;base64,']")
    expect(chart).to_be_visible()
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"img[src^='data:image/png;base64,']\")]"
        ".some(i => i.complete && i.naturalWidth > 0)",
        timeout=UI_TIMEOUT_MS,
    )
    shots.take(page, "06-history-chart")
    assert chart.first.evaluate("i => i.naturalWidth") > 0
