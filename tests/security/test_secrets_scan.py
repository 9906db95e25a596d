"""No leaks: after every flow has run with known, distinctive secret values, nothing left in the
Prefect backend contains one of them, nor anything shaped like a bearer token or presigned URL.

The runs are the session's (tests/security/conftest.py): provision (plan and apply), three drills
and a sweep against the sandbox world, with the Chalk client secret in `CHALK_DR_DEMO_CLIENT_SECRET`
(what the topology references) and a distinctive AWS session token in the environment; and
chalk-apply (a per-run topology and the push entrypoint) with its own client secret and distinctive
AWS keys. The scan reads, through the API, every flow run (parameters, state messages), task run,
log, artifact, event and variable, then every persisted result in the result storage the states
point at, and finally the server's database file itself, so nothing the API does not show escapes.
A finding names where it is (e.g. "log of flow run 'x' (id), task 'y': ..." or "artifact drill-demo").
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter
from prefect.client.schemas.filters import LogFilterFlowRunId
from prefect.client.schemas.sorting import LogSort
from prefect.events.filters import EventFilter
from prefect.events.filters import EventNameFilter
from prefect.events.filters import EventOccurredFilter
from prefect.events.filters import EventResourceFilter
from prefect.settings import get_current_settings

from sandbox.harness import poll

# The session fixtures run every flow against the sandbox (four provisions, three drills, a
# sweep, two chalk applies): their set-up counts against the first test that needs them.
pytestmark = pytest.mark.timeout(1200)

# Shapes of credentials the runs hold without us choosing their values: an EKS bearer token, a
# presigned STS URL's signature, a Chalk access token as the sandbox's API server issues it.
TOKEN_SHAPES = {
    "an EKS bearer token": re.compile(r"k8s-aws-v1\.[A-Za-z0-9_-]{20,}"),
    "a presigned AWS URL": re.compile(r"X-Amz-Signature=[0-9a-f]{16,}", re.IGNORECASE),
    "a Chalk access token": re.compile(r"eyJlbnYiOi[A-Za-z0-9_-]+\.[0-9a-f]{64}"),
}
PAGE = 200


class Scanner:
    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        self.findings: list[str] = []
        self.scanned: dict[str, int] = {}

    def text(self, where: str, kind: str, value: Any) -> None:
        self.scanned[kind] = self.scanned.get(kind, 0) + 1
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        for what, secret in self.secrets.items():
            if secret in text:
                self.findings.append(f"{what} in {where}")
        for what, shape in TOKEN_SHAPES.items():
            if shape.search(text):
                self.findings.append(f"{what} in {where}")

    def blob(self, where: str, kind: str, data: bytes) -> None:
        self.text(where, kind, data.decode("utf-8", "replace"))


def _paged(read: Any) -> Iterator[Any]:
    offset = 0
    while True:
        page = read(offset)
        yield from page
        if len(page) < PAGE:
            return
        offset += PAGE


def _storage_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("storage_key"), str):
            yield value["storage_key"]
        for v in value.values():
            yield from _storage_keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _storage_keys(v)


def _settled(run_ids: list[str]) -> None:
    """Logs and events are written asynchronously: wait until each run's last log line and the event
    of its final state are in the backend (polls with deadlines, no sleeps)."""

    def pending() -> list[str]:
        waiting = []
        with get_client(sync_client=True) as client:
            for rid in run_ids:
                last = client.read_logs(
                    LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(rid)])),
                    limit=5,
                    sort=LogSort.TIMESTAMP_DESC,
                )
                state = client.read_flow_run(UUID(rid)).state
                name = f"prefect.flow-run.{state.name if state else '?'}"
                final = client.read_events(
                    filter=EventFilter(
                        event=EventNameFilter(name=[name]),
                        resource=EventResourceFilter(id=[f"prefect.flow-run.{rid}"]),
                    ),
                    limit=50,
                )
                if not any("Finished in state" in log.message for log in last) or not final.events:
                    waiting.append(rid)
        return waiting

    poll(lambda: not pending() or None, timeout=60, what="every run's last log and final event", every=1.0)


def scan_backend(secrets: dict[str, str], run_ids: list[str]) -> Scanner:
    _settled(run_ids)
    s = Scanner(secrets)
    storage_keys: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        names: dict[str, str] = {}
        for run in _paged(lambda o: client.read_flow_runs(limit=PAGE, offset=o)):
            where = f"flow run {run.name!r} ({run.id}) of {run.flow_id}"
            names[str(run.id)] = run.name
            s.text(f"{where}: parameters", "flow-run parameters", run.parameters)
            s.text(f"{where}: state message", "flow-run states", run.state.message if run.state else "")
            s.text(f"{where}: record", "flow-run records", run.model_dump(mode="json"))
            if run.state is not None:
                storage_keys.update(dict.fromkeys(_storage_keys(run.state.model_dump(mode="json")), where))
            for state in client.read_flow_run_states(run.id):
                s.text(
                    f"{where}: state history {state.name}", "flow-run states", state.model_dump(mode="json")
                )
                storage_keys.update(dict.fromkeys(_storage_keys(state.model_dump(mode="json")), where))
        for tr in _paged(lambda o: client.read_task_runs(limit=PAGE, offset=o)):
            where = f"task run {tr.name!r} of flow run {names.get(str(tr.flow_run_id), tr.flow_run_id)!r}"
            s.text(where, "task runs", tr.model_dump(mode="json"))
            if tr.state is not None:
                storage_keys.update(dict.fromkeys(_storage_keys(tr.state.model_dump(mode="json")), where))
        for log in _paged(lambda o: client.read_logs(limit=PAGE, offset=o)):
            run = names.get(str(log.flow_run_id), str(log.flow_run_id))
            s.text(f"log of flow run {run!r} ({log.name}): {log.message[:80]!r}", "logs", log.message)
        for art in _paged(lambda o: client.read_artifacts(limit=PAGE, offset=o)):
            where = (
                f"artifact {art.key or art.id} ({art.type}) of flow run {names.get(str(art.flow_run_id))!r}"
            )
            s.text(where, "artifacts", art.model_dump(mode="json"))
        since: Any = datetime.now(UTC) - timedelta(hours=6)
        page = client.read_events(filter=EventFilter(occurred=EventOccurredFilter(since=since)), limit=50)
        while True:
            for event in page.events:
                s.text(
                    f"event {event.event} ({event.id}) about {event.resource.id}",
                    "events",
                    event.model_dump(mode="json"),
                )
            if not page.next_page:
                break
            page = client.read_events_page(str(page.next_page))
        for var in client.read_variables():
            s.text(f"variable {var.name}", "variables", var.model_dump(mode="json"))
    # Persisted results: the files the states point at, in the default (local) result storage.
    root = Path(get_current_settings().results.local_storage_path).expanduser()
    for key, where in storage_keys.items():
        path = Path(key) if Path(key).is_absolute() else root / key
        if path.is_file():
            s.blob(f"persisted result {path} (of {where})", "persisted results", path.read_bytes())
    # The server's own database: anything stored that the reads above did not show.
    url = get_current_settings().server.database.connection_url
    db = url.get_secret_value() if url is not None else ""
    db_path = Path(db.split("///", 1)[-1]) if db.startswith("sqlite") else None
    if db_path is not None:
        for part in sorted(db_path.parent.glob(db_path.name + "*")):
            s.blob(
                f"the Prefect database file {part.name} (a table the API reads above do not show)",
                "db files",
                part.read_bytes(),
            )
    return s


def test_nothing_in_the_backend_holds_a_secret_of_the_sandbox_flows(flow_runs: Any) -> None:
    started = time.monotonic()
    scan = scan_backend(flow_runs.secrets, flow_runs.run_ids)
    # The drills' and the sweep's reports are persisted results (provision persists none).
    assert scan.scanned.get("persisted results", 0) >= 4, ("persisted results not all scanned", scan.scanned)
    for kind in ("flow-run parameters", "logs", "artifacts", "events", "variables", "db files"):
        assert scan.scanned.get(kind), (f"nothing of kind {kind!r} was scanned", scan.scanned)
    print(f"\nscanned for {sorted(flow_runs.secrets)}: {scan.scanned}", file=sys.stderr)
    assert not scan.findings, "\n".join(sorted(set(scan.findings)))
    assert time.monotonic() - started < 120


def test_nothing_in_the_backend_holds_a_secret_of_chalk_apply(chalk_apply_runs: Any) -> None:
    assert all(o.startswith("COMPLETED") for o in chalk_apply_runs.outcomes.values()), (
        chalk_apply_runs.outcomes
    )
    scan = scan_backend(chalk_apply_runs.secrets, chalk_apply_runs.run_ids)
    # chalk-apply persists no result (its report is an artifact, its last good sha a variable).
    for kind in ("flow-run parameters", "logs", "artifacts", "events", "variables"):
        assert scan.scanned.get(kind), (f"nothing of kind {kind!r} was scanned", scan.scanned)
    assert scan.scanned.get("db files"), ("the database file was not scanned", scan.scanned)
    print(f"\nscanned for {sorted(chalk_apply_runs.secrets)}: {scan.scanned}", file=sys.stderr)
    assert not scan.findings, "\n".join(sorted(set(scan.findings)))


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("k8s-aws-v1.aHR0cDovLzEyNy4wLjAuMTo0NTY3Lz9BY3Rpb249R2V0Q2FsbGVySWRlbnRpdHk", "an EKS bearer token"),
        ("GET /?Action=GetCallerIdentity&X-Amz-Signature=" + "ab" * 32, "a presigned AWS URL"),
        ("Bearer eyJlbnYiOiAiZGVtbyJ9." + "0f" * 32, "a Chalk access token"),
        ("the value s3cret-42 itself", "the secret"),
    ],
)
def test_the_scanner_finds_what_it_looks_for(text: str, found: str) -> None:
    """The scan cannot pass by looking in the wrong way."""
    scan = Scanner({"the secret": "s3cret-42"})
    scan.text("a log", "logs", text)
    assert scan.findings == [f"{found} in a log"]
