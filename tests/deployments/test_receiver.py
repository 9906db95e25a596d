"""The push-webhook receiver (over real sockets on loopback), and the push event starting a
chalk-apply deployment run (slow)."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from sandbox.harness import poll
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
    """Records what is POSTed to /api/events (the receiver's only outbound call); `fail_next`
    answers that many posts with 503 first, `down` answers every post with 503."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.attempts = 0
        self.fail_next = 0
        self.down = False
        self.auth: str | None = None
        self.stopped = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                if outer.down or outer.fail_next > 0:
                    outer.fail_next = max(0, outer.fail_next - 1)
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                outer.events.extend(json.loads(body))
                outer.auth = self.headers.get("Authorization")
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

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


def make_config(api_url: str, state: Path, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "secret": SECRET.encode(),
        "prefect_api_url": api_url,
        "repositories": frozenset({"acme/features"}),
        "api_key": "pnu_key",
        "state_path": state,
        "post_backoff_s": (0.05, 0.1),
    }
    options.update(overrides)
    return receiver.ReceiverConfig(**options)


@contextmanager
def serving(config: Any) -> Iterator[str]:
    """The receiver under uvicorn on a socket bound first (port 0), in a thread of this process."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = receiver.make_server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        poll(lambda: server.started, timeout=30, what="the receiver started")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def receiver_url(fake_prefect: FakePrefect, tmp_path: Path) -> Iterator[str]:
    with serving(make_config(fake_prefect.url, tmp_path / "state.sqlite3")) as url:
        yield url


def deliver(
    url: str,
    payload: Any,
    *,
    kind: str = "push",
    signature: str | None = "auto",
    delivery: str | None = None,
    body: bytes | None = None,
) -> httpx.Response:
    raw = json.dumps(payload).encode() if body is None else body
    headers = {
        "X-GitHub-Event": kind,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "Content-Type": "application/json",
    }
    if signature == "auto":
        headers["X-Hub-Signature-256"] = sign(raw)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return httpx.post(url, content=raw, headers=headers, timeout=30, trust_env=False)


def healthy(url: str) -> bool:
    return httpx.get(f"{url}/healthz", timeout=10, trust_env=False).json() == {"status": "ok"}


def raw_request(url: str, data: bytes) -> bytes:
    """Send bytes as they are (what no well-behaved client would send) and read the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


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


class TestConfig:
    def test_refuses_to_run_without_a_secret_or_an_allow_list(self) -> None:
        base = {"CHALKDR_WEBHOOK_SECRET": "s", "PREFECT_API_URL": "http://x/api/"}
        with pytest.raises(SystemExit, match="CHALKDR_WEBHOOK_SECRET"):
            receiver.ReceiverConfig.from_env({"PREFECT_API_URL": "http://x/api"})
        with pytest.raises(SystemExit, match="CHALKDR_ALLOWED_REPOSITORIES"):
            receiver.ReceiverConfig.from_env(base)
        with pytest.raises(SystemExit, match="not owner/name"):
            receiver.ReceiverConfig.from_env(
                {**base, "CHALKDR_ALLOWED_REPOSITORIES": "https://github.com/a/b"}
            )

    def test_from_env(self) -> None:
        config = receiver.ReceiverConfig.from_env(
            {
                "CHALKDR_WEBHOOK_SECRET": "s",
                "PREFECT_API_URL": "http://x/api/",
                "CHALKDR_ALLOWED_REPOSITORIES": "acme/features, acme/other",
                "CHALKDR_PUSH_BRANCHES": "main, rel",
            }
        )
        assert config.prefect_api_url == "http://x/api" and config.branches == frozenset({"main", "rel"})
        assert config.allows("ACME/Features") and not config.allows("evil/features")

    def test_the_deploy_branch_is_configuration_not_the_payloads_default_branch(self) -> None:
        config = receiver.ReceiverConfig.from_env(
            {
                "CHALKDR_WEBHOOK_SECRET": "s",
                "PREFECT_API_URL": "http://x/api",
                "CHALKDR_ALLOWED_REPOSITORIES": "a/b",
            }
        )
        assert config.branches == frozenset({"main"})


class TestPushEvent:
    def test_the_event_of_a_push(self) -> None:
        push = receiver.PushPayload.model_validate(push_payload())
        event = receiver.push_event(push, key="k1", delivery="d-1")
        assert event["event"] == "chalkdr.git.push"
        assert event["resource"]["prefect.resource.id"] == "chalkdr.git.acme/features"
        assert event["payload"]["sha"] == SHA and event["payload"]["ref"] == "refs/heads/main"
        assert event["payload"]["repo_url"] == "https://github.com/acme/features.git"
        assert str(uuid.UUID(event["id"])) == event["id"]

    def test_the_event_id_follows_the_body_not_the_delivery_header(self) -> None:
        push = receiver.PushPayload.model_validate(push_payload())
        first = receiver.push_event(push, key="k1", delivery="d-1")
        assert receiver.push_event(push, key="k1", delivery="d-2")["id"] == first["id"]
        assert receiver.push_event(push, key="k2", delivery="d-1")["id"] != first["id"]


class TestDeliveries:
    def test_a_signed_push_becomes_one_event(self, receiver_url: str, fake_prefect: FakePrefect) -> None:
        resp = deliver(receiver_url, push_payload())
        assert resp.status_code == 202 and resp.json()["sha"] == SHA
        (event,) = fake_prefect.events
        assert event["event"] == "chalkdr.git.push" and event["payload"]["sha"] == SHA
        assert event["id"] == resp.json()["event_id"]
        assert fake_prefect.auth == "Bearer pnu_key"

    @pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, sign(b"something else"), "sha1=x"])
    def test_unsigned_or_wrongly_signed_is_401_and_posts_nothing(
        self, receiver_url: str, fake_prefect: FakePrefect, signature: str | None
    ) -> None:
        resp = deliver(receiver_url, push_payload(), signature=signature)
        assert resp.status_code == 401
        assert fake_prefect.attempts == 0

    def test_the_signature_is_checked_before_the_body_is_parsed(
        self, receiver_url: str, fake_prefect: FakePrefect
    ) -> None:
        """An unsigned body that is not even JSON is a 401, not a 400: nothing reads it first."""
        resp = deliver(receiver_url, None, body=b"\xff not json", signature=None)
        assert resp.status_code == 401

    def test_a_push_to_a_repository_not_on_the_list_is_refused(
        self, receiver_url: str, fake_prefect: FakePrefect
    ) -> None:
        payload = push_payload()
        payload["repository"] = {
            "full_name": "evil/features",
            "clone_url": "https://github.com/evil/features.git",
        }
        resp = deliver(receiver_url, payload)
        assert resp.status_code == 403 and "evil/features" in resp.json()["error"]
        assert fake_prefect.attempts == 0

    def test_ping_other_events_tags_deletions_and_other_branches(
        self, receiver_url: str, fake_prefect: FakePrefect
    ) -> None:
        assert deliver(receiver_url, {"zen": "hi"}, kind="ping").status_code == 200
        assert deliver(receiver_url, {"action": "opened"}, kind="pull_request").status_code == 202
        for payload in (
            push_payload(ref="refs/heads/feature"),
            push_payload(ref="refs/tags/v1.0"),
            push_payload(deleted=True),
            push_payload(sha="0" * 40),
        ):
            resp = deliver(receiver_url, payload)
            assert resp.status_code == 202 and resp.json()["status"] == "ignored", payload
        assert fake_prefect.attempts == 0

    def test_a_replayed_body_is_one_push_whatever_its_delivery_id_and_across_restarts(
        self, fake_prefect: FakePrefect, tmp_path: Path
    ) -> None:
        config = make_config(fake_prefect.url, tmp_path / "state.sqlite3")
        body = json.dumps(push_payload()).encode()
        with serving(config) as url:
            first = deliver(url, None, body=body, delivery="delivery-1")
            replay = deliver(url, None, body=body, delivery="delivery-2")  # the header is not signed
        assert first.status_code == 202
        assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
        assert replay.json()["event_id"] == first.json()["event_id"]
        with serving(config) as url:  # a restarted receiver remembers (the state is on disk)
            again = deliver(url, None, body=body, delivery="delivery-3")
            other = deliver(url, push_payload("ab" * 20))
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        assert other.status_code == 202
        assert [e["payload"]["sha"] for e in fake_prefect.events] == [SHA, "ab" * 20]

    def test_a_failed_post_is_retried(self, receiver_url: str, fake_prefect: FakePrefect) -> None:
        fake_prefect.fail_next = 2
        resp = deliver(receiver_url, push_payload())
        assert resp.status_code == 202 and resp.json()["attempts"] == 3
        assert fake_prefect.attempts == 3 and len(fake_prefect.events) == 1

    def test_prefect_down_is_a_logged_502_and_the_redelivery_goes_through(
        self, fake_prefect: FakePrefect, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="chalkdr.receiver")
        fake_prefect.down = True
        state = tmp_path / "state.sqlite3"
        body = json.dumps(push_payload()).encode()
        with serving(make_config(fake_prefect.url, state)) as url:
            resp = deliver(url, None, body=body, delivery="d-1")
            assert resp.status_code == 502 and fake_prefect.attempts == 3  # every attempt was made
            failed = [
                r for r in caplog.records if r.levelno == logging.ERROR and "could not post" in r.message
            ]
            assert failed and SHA in failed[0].message and "d-1" in failed[0].message
            key = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert receiver.DeliveryStore(state).status(key) == "failed"  # recorded, not dropped
            fake_prefect.down = False
            retried = deliver(url, None, body=body, delivery="d-1")  # GitHub's redelivery
            assert retried.status_code == 202
        assert [e["payload"]["sha"] for e in fake_prefect.events] == [SHA]

    def test_prefect_unreachable_is_502(self, fake_prefect: FakePrefect, tmp_path: Path) -> None:
        fake_prefect.stop()
        with serving(make_config(fake_prefect.url, tmp_path / "state.sqlite3")) as url:
            assert deliver(url, push_payload()).status_code == 502
            assert healthy(url)

    def test_healthz(self, receiver_url: str) -> None:
        assert healthy(receiver_url)


def _signed_raw(body: bytes, *, extra_headers: str = "") -> bytes:
    return (
        "POST / HTTP/1.1\r\nHost: receiver\r\nX-GitHub-Event: push\r\n"
        f"X-Hub-Signature-256: {sign(body)}\r\nContent-Length: {len(body)}\r\n{extra_headers}\r\n"
    ).encode() + body


MALFORMED_BODIES = {
    "not json": b"this is not json",
    "not utf-8": b"\xff\xfe\x00{",
    "a list": b"[1, 2]",
    "a string": b'"push"',
    "null": b"null",
    "a number": b"42",
    "an empty object": b"{}",
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "after is a number": json.dumps(push_payload(sha=123)).encode(),  # type: ignore[arg-type]
    "after is not a sha": json.dumps(push_payload(sha="HEAD")).encode(),
    "repository is a string": json.dumps({**push_payload(), "repository": "acme/features"}).encode(),
    "repository without a name": json.dumps({**push_payload(), "repository": {"clone_url": "x"}}).encode(),
    "deleted is a string": json.dumps(push_payload(deleted="false")).encode(),
    "ref is null": json.dumps(push_payload(ref=None)).encode(),  # type: ignore[arg-type]
    "pusher is a list": json.dumps(push_payload(pusher=[])).encode(),
}


class TestMalformed:
    @pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
    def test_a_signed_malformed_body_is_400_and_posts_nothing(
        self, receiver_url: str, fake_prefect: FakePrefect, body: bytes
    ) -> None:
        resp = deliver(receiver_url, None, body=body)
        assert resp.status_code == 400, resp.text
        assert fake_prefect.attempts == 0
        assert healthy(receiver_url)

    def test_missing_fields_are_named(self, receiver_url: str) -> None:
        resp = deliver(receiver_url, {"ref": "refs/heads/main"})
        assert resp.status_code == 400
        problems = " ".join(resp.json()["problems"])
        assert "after" in problems and "repository" in problems

    @pytest.mark.parametrize(
        "content_length",
        ["\u00b2", "-1", "1e3", "0x10", " 12 34"],
        ids=["superscript two", "negative", "exponent", "hex", "two numbers"],
    )
    def test_a_bad_content_length_is_400(self, receiver_url: str, content_length: str) -> None:
        head = "POST / HTTP/1.1\r\nHost: receiver\r\nX-GitHub-Event: push\r\n"
        request = f"{head}Content-Length: {content_length}\r\n\r\n{{}}".encode()
        answer = raw_request(receiver_url, request)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert healthy(receiver_url)

    def test_two_conflicting_content_lengths_are_400(self, receiver_url: str) -> None:
        body = json.dumps(push_payload()).encode()
        answer = raw_request(
            receiver_url, _signed_raw(body, extra_headers=f"Content-Length: {len(body) + 5}\r\n")
        )
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert healthy(receiver_url)

    def test_a_body_over_the_limit_is_413_with_or_without_its_length(
        self, fake_prefect: FakePrefect, tmp_path: Path
    ) -> None:
        config = make_config(fake_prefect.url, tmp_path / "state.sqlite3", max_body_bytes=2048)
        big = json.dumps(push_payload(padding="x" * 4096)).encode()
        with serving(config) as url:
            assert deliver(url, None, body=big).status_code == 413

            def chunks() -> Iterator[bytes]:
                for i in range(0, len(big), 512):
                    yield big[i : i + 512]

            headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(big)}
            resp = httpx.post(url, content=chunks(), headers=headers, timeout=30, trust_env=False)
            assert resp.status_code == 413 and "content-length" not in {
                k.lower() for k in resp.request.headers
            }
            assert healthy(url)
        assert fake_prefect.attempts == 0

    def test_a_header_block_that_grows_past_the_limit_is_refused(
        self, fake_prefect: FakePrefect, tmp_path: Path
    ) -> None:
        """h11 buffers at most `max_header_bytes` of an unfinished request: beyond it, a 400."""
        config = make_config(fake_prefect.url, tmp_path / "state.sqlite3", max_header_bytes=4096)
        with serving(config) as url:
            answer = raw_request(url, b"POST / HTTP/1.1\r\nHost: r\r\nX-Big: " + b"a" * 8192)  # never ends
            assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
            assert healthy(url)


class Trickler:
    """A client that sends a request line and then one header byte at a time, never finishing."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.sock.sendall(b"POST / HTTP/1.1\r\nHost: receiver\r\n")
        self.closed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        header = b"X-Slow: " + b"a" * 10_000
        try:
            for byte in header:
                if self._stop.wait(0.05):
                    return
                self.sock.send(bytes([byte]))
        except OSError:
            self.closed.set()

    def is_open(self) -> bool:
        """Not closed by the server: no EOF and no reset waiting to be read."""
        if self.closed.is_set():
            return False
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            self.sock.setblocking(True)
        return bool(data)  # b"": the server closed it

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@contextmanager
def trickling(url: str, count: int = 1) -> Iterator[list[Trickler]]:
    """`count` clients trickling their headers into the receiver at `url`, closed at the end."""
    slow = [Trickler(url) for _ in range(count)]
    try:
        yield slow
    finally:
        for s in slow:
            s.close()


class TestSlowClients:
    def test_a_client_trickling_its_headers_does_not_block_another(
        self, fake_prefect: FakePrefect, tmp_path: Path
    ) -> None:
        config = make_config(fake_prefect.url, tmp_path / "state.sqlite3", request_timeout_s=600)
        with serving(config) as url, trickling(url) as (slow,):
            poll(lambda: slow.sock.getpeername() and True, timeout=10, what="the slow client connected")
            assert deliver(url, push_payload()).status_code == 202  # served while the other trickles
            assert slow.is_open()
        assert len(fake_prefect.events) == 1

    def test_a_client_that_does_not_finish_its_request_is_cut_off(
        self, fake_prefect: FakePrefect, tmp_path: Path
    ) -> None:
        config = make_config(fake_prefect.url, tmp_path / "state.sqlite3", request_timeout_s=1.0)
        with serving(config) as url, trickling(url) as (slow,):
            body = json.dumps(push_payload()).encode()
            host, port = url.removeprefix("http://").split(":")
            half = socket.create_connection((host, int(port)), timeout=30)  # headers, then half a body
            half.sendall(_signed_raw(body)[: -len(body) // 2])
            try:
                poll(lambda: not slow.is_open(), timeout=60, what="the trickling client cut off")
                answer = b""
                while chunk := half.recv(65536):
                    answer += chunk
                assert not answer.startswith(b"HTTP/1.1 2")  # closed, or answered with an error
                assert healthy(url)
            finally:
                half.close()
        assert fake_prefect.attempts == 0

    def test_connections_beyond_the_cap_are_refused_and_slots_come_back(
        self, fake_prefect: FakePrefect, tmp_path: Path
    ) -> None:
        config = make_config(
            fake_prefect.url, tmp_path / "state.sqlite3", max_connections=3, request_timeout_s=600
        )
        with serving(config) as url:
            with trickling(url, 3) as slow:
                poll(lambda: all(s.is_open() for s in slow), timeout=10, what="the slow clients connected")
                refused = deliver(url, push_payload())
                assert refused.status_code == 503 and fake_prefect.attempts == 0
            accepted = poll(
                lambda: (r := deliver(url, push_payload())).status_code == 202 and r,
                timeout=30,
                what="a slot free again",
            )
            assert accepted.json()["sha"] == SHA
        assert len(fake_prefect.events) == 1


# -- the whole trigger path against a real Prefect server (slow) ------------------------------------


def _deployment_entry() -> dict[str, Any]:
    """The project's own prefect.yaml entry for the push-triggered apply: this test proves it."""
    entries = yaml.safe_load((ROOT / "prefect.yaml").read_text()).get("deployments") or []
    (entry,) = [e for e in entries if e.get("name") == "chalk-apply-on-push"]
    assert entry["entrypoint"] == "flows/chalk_apply.py:chalk_apply_on_push" and entry["triggers"]
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

        # The deployment's parameters are only what a push may say and how to roll it out: no
        # binary, no local path, no topology mapping (a run naming one fails to bind before it
        # runs anything: tests/flows/test_chalk_apply.py runs one).
        schema = deployment["parameter_openapi_schema"]
        assert set(schema["properties"]) == {
            "sha",
            "repo_url",
            "ref",
            "topology",
            "strategy",
            "rollback_on_drift",
            "apply_timeout_s",
            "verify_timeout_s",
        }
        assert schema["properties"]["topology"]["type"] == "string"

        # The webhook route: a signed GitHub delivery through the receiver.
        second = "aa" * 20
        config = make_config(api, tmp_path / "receiver.sqlite3", api_key=None)
        with serving(config) as url:
            assert deliver(url, push_payload(second)).status_code == 202
            assert deliver(url, push_payload("bb" * 20), signature=None).status_code == 401
        _wait_for(lambda: run_with(second), 30, "a flow run for the webhook's push")
        assert run_with("bb" * 20) is None
    finally:
        server.stop()
