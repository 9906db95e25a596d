"""The push-webhook receiver, and the push event starting a chalk-apply deployment run (slow)."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from sandbox.prefect_server import PrefectServer

ROOT = Path(__file__).resolve().parents[2]
SECRET = "webhook-secret-for-tests"
SHA = "3f2c1d0e9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e"


def _load_receiver() -> ModuleType:
    # deployments/ is a directory of deployable artefacts, not an installed package.
    spec = importlib.util.spec_from_file_location("chalkdr_receiver", ROOT / "deployments" / "receiver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


receiver = _load_receiver()


def push_payload(sha: str = SHA, ref: str = "refs/heads/main", **extra: Any) -> dict[str, Any]:
    return {
        "ref": ref,
        "before": "0123456789abcdef0123456789abcdef01234567",
        "after": sha,
        "deleted": False,
        "repository": {
            "full_name": "acme/features",
            "clone_url": "https://github.com/acme/features.git",
            "default_branch": "main",
        },
        "pusher": {"name": "ada"},
        **extra,
    }


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class FakePrefect:
    """Records what is POSTed to /api/events (the receiver's only outbound call)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.events.extend(json.loads(body))
                outer.auth = self.headers.get("Authorization")
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.auth: str | None = None
        self.stopped = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def fake_prefect() -> Iterator[FakePrefect]:
    fake = FakePrefect()
    yield fake
    fake.stop()


def _serve(config: Any) -> tuple[str, ThreadingHTTPServer]:
    server = receiver.make_server(config, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


@pytest.fixture
def receiver_url(fake_prefect: FakePrefect) -> Iterator[str]:
    config = receiver.ReceiverConfig(
        secret=SECRET.encode(), prefect_api_url=fake_prefect.url, api_key="pnu_key"
    )
    url, server = _serve(config)
    yield url
    server.shutdown()
    server.server_close()


def deliver(url: str, payload: Any, *, kind: str = "push", signature: str | None = "auto") -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": kind,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "Content-Type": "application/json",
    }
    if signature == "auto":
        headers["X-Hub-Signature-256"] = sign(body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return httpx.post(url, content=body, headers=headers, timeout=10, trust_env=False)


class TestSignature:
    def test_valid(self) -> None:
        assert receiver.verify_signature(SECRET.encode(), b"{}", sign(b"{}"))

    @pytest.mark.parametrize(
        "header",
        [None, "", "sha256=", "sha1=abc", sign(b"{}", "other-secret"), sign(b"{ }"), "sha256=" + "0" * 64],
    )
    def test_invalid(self, header: str | None) -> None:
        assert not receiver.verify_signature(SECRET.encode(), b"{}", header)

    def test_no_secret_never_verifies(self) -> None:
        assert not receiver.verify_signature(b"", b"{}", sign(b"{}", ""))


class TestPushEvent:
    def test_push_to_default_branch(self) -> None:
        event = receiver.push_event(push_payload(), delivery="d-1")
        assert event["event"] == "chalkdr.git.push"
        assert event["resource"]["prefect.resource.id"] == "chalkdr.git.acme/features"
        assert event["payload"]["sha"] == SHA and event["payload"]["ref"] == "refs/heads/main"
        assert event["payload"]["repo_url"] == "https://github.com/acme/features.git"
        # A redelivery of the same webhook is the same event.
        assert receiver.push_event(push_payload(), delivery="d-1")["id"] == event["id"]
        assert str(uuid.UUID(event["id"])) == event["id"]
        assert receiver.push_event(push_payload(), delivery="d-2")["id"] != event["id"]

    @pytest.mark.parametrize(
        "payload",
        [
            push_payload(ref="refs/heads/feature-x"),
            push_payload(ref="refs/tags/v1.0"),
            push_payload(deleted=True),
            push_payload(sha="0" * 40),
        ],
    )
    def test_ignored(self, payload: dict[str, Any]) -> None:
        assert receiver.push_event(payload) is None

    def test_configured_branches(self) -> None:
        payload = push_payload(ref="refs/heads/release")
        event = receiver.push_event(payload, branches=frozenset({"release"}))
        assert event is not None and event["payload"]["ref"] == "refs/heads/release"
        assert receiver.push_event(push_payload(), branches=frozenset({"release"})) is None

    def test_config_refuses_to_run_without_a_secret(self) -> None:
        with pytest.raises(SystemExit, match="CHALKDR_WEBHOOK_SECRET"):
            receiver.ReceiverConfig.from_env({"PREFECT_API_URL": "http://x/api"})
        config = receiver.ReceiverConfig.from_env(
            {
                "CHALKDR_WEBHOOK_SECRET": "s",
                "PREFECT_API_URL": "http://x/api/",
                "CHALKDR_PUSH_BRANCHES": "main, rel",
            }
        )
        assert config.prefect_api_url == "http://x/api" and config.branches == frozenset({"main", "rel"})


class TestReceiverOverHttp:
    def test_signed_push_becomes_an_event(self, receiver_url: str, fake_prefect: FakePrefect) -> None:
        resp = deliver(receiver_url, push_payload())
        assert resp.status_code == 202 and resp.json()["sha"] == SHA
        (event,) = fake_prefect.events
        assert event["event"] == "chalkdr.git.push" and event["payload"]["sha"] == SHA
        assert event["id"] == resp.json()["event_id"]
        assert fake_prefect.auth == "Bearer pnu_key"

    @pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, sign(b"something else")])
    def test_unsigned_or_bad_signature_is_401_and_posts_nothing(
        self, receiver_url: str, fake_prefect: FakePrefect, signature: str | None
    ) -> None:
        resp = deliver(receiver_url, push_payload(), signature=signature)
        assert resp.status_code == 401
        assert fake_prefect.events == []

    def test_ping_other_events_and_other_branches(self, receiver_url: str, fake_prefect: FakePrefect) -> None:
        assert deliver(receiver_url, {"zen": "hi"}, kind="ping").status_code == 200
        assert deliver(receiver_url, {"action": "opened"}, kind="pull_request").status_code == 202
        resp = deliver(receiver_url, push_payload(ref="refs/heads/feature"))
        assert resp.status_code == 202 and resp.json()["status"] == "ignored"
        assert fake_prefect.events == []

    def test_prefect_unreachable_is_502(self, fake_prefect: FakePrefect) -> None:
        fake_prefect.stop()
        config = receiver.ReceiverConfig(
            secret=SECRET.encode(), prefect_api_url=fake_prefect.url, timeout_s=2
        )
        url, server = _serve(config)
        try:
            assert deliver(url, push_payload()).status_code == 502
        finally:
            server.shutdown()
            server.server_close()

    def test_healthz(self, receiver_url: str) -> None:
        assert httpx.get(f"{receiver_url}/healthz", timeout=5, trust_env=False).json() == {"status": "ok"}


# -- the whole trigger path against a real Prefect server (slow) ------------------------------------


def _deployment_entry() -> dict[str, Any]:
    """The project's own prefect.yaml entry for the push-triggered apply: this test proves it."""
    entries = yaml.safe_load((ROOT / "prefect.yaml").read_text()).get("deployments") or []
    (entry,) = [
        e for e in entries if e.get("entrypoint") == "flows/chalk_apply.py:chalk_apply" and e.get("triggers")
    ]
    return dict(entry)


def _wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_push_event_starts_a_deployment_run_with_its_sha(tmp_path: Path) -> None:
    """`prefect server start` + `prefect deploy` of the proposed prefect.yaml entry; a push event
    (posted as CI does, and through the receiver) starts a flow run with the pushed sha."""
    server = PrefectServer.start(tmp_path / "prefect-home", ui=False)
    api = server.api_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    try:
        http = httpx.Client(base_url=api, timeout=10, trust_env=False)
        http.post("/work_pools/", json={"name": "chalk-test", "type": "process"}).raise_for_status()
        prefect_yaml = tmp_path / "prefect.yaml"
        entry = {**_deployment_entry(), "work_pool": {"name": "chalk-test"}}
        prefect_yaml.write_text(
            yaml.safe_dump(
                {
                    "name": "chalk-dr",
                    "prefect-version": "3.9.1",
                    "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}],
                    "deployments": [entry],
                },
                sort_keys=False,
            )
        )
        deploy = subprocess.run(
            [
                sys.executable,
                "-m",
                "prefect",
                "--no-prompt",
                "deploy",
                "--prefect-file",
                str(prefect_yaml),
                "--all",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        deployment = http.get(f"/deployments/name/chalk-apply/{entry['name']}").json()

        def run_with(sha: str) -> dict[str, Any] | None:
            runs = http.post(
                "/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment["id"]]}}, "limit": 50}
            ).json()
            return next((r for r in runs if r["parameters"].get("sha") == sha), None)

        def prefect_cli(*args: str) -> None:
            done = subprocess.run(
                [sys.executable, "-m", "prefect", *args], env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stdout + done.stderr

        # CI route 1 (deployments/ci/github-actions-chalk-apply.yml): `prefect event emit`.
        payload = {"sha": SHA, "ref": "refs/heads/main", "repo_url": "https://github.com/acme/features.git"}
        prefect_cli(
            "event", "emit", "chalkdr.git.push", "--resource-id", "chalkdr.git.acme/features",
            "--payload", json.dumps(payload),
        )  # fmt: skip
        run = _wait_for(lambda: run_with(SHA), 30, "a flow run for the emitted event")
        assert run["parameters"]["repo_url"] == "https://github.com/acme/features.git"
        assert run["parameters"]["ref"] == "refs/heads/main"
        assert run["parameters"]["strategy"] == "canary"  # the deployment's defaults still apply

        # CI route 2: `prefect deployment run ... --params` (JSON, so a digits-only sha stays a string).
        third = "1234567"
        prefect_cli(
            "deployment", "run", f"chalk-apply/{entry['name']}",
            "--params", json.dumps({"sha": third, "repo_url": payload["repo_url"]}),
        )  # fmt: skip
        assert _wait_for(lambda: run_with(third), 30, "the flow run started with prefect deployment run")

        # The webhook route: a signed GitHub delivery through the receiver.
        second = "aa" * 20
        config = receiver.ReceiverConfig(secret=SECRET.encode(), prefect_api_url=api)
        url, hook = _serve(config)
        try:
            assert deliver(url, push_payload(second)).status_code == 202
            assert deliver(url, push_payload("bb" * 20), signature=None).status_code == 401
        finally:
            hook.shutdown()
            hook.server_close()
        _wait_for(lambda: run_with(second), 30, "a flow run for the webhook's push")
        assert run_with("bb" * 20) is None
    finally:
        server.stop()
