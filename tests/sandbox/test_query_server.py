"""Sandbox Chalk query server: health, tokens, online queries over DynamoDB, deploy routes."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from sandbox.query_server import PERMANENT_APPLY_ERROR
from sandbox.query_server import TRANSIENT_APPLY_ERROR
from sandbox.query_server import QueryServer
from sandbox.query_server import new_deployment_id
from sandbox.truth import GroundTruth

ENV_ID = "prod"
CLIENT_ID = "client-prod"
SECRET = "s3cret-value"
DEPLOYMENT_ID_RE = re.compile(r"^c[a-z0-9]{24}$")


class Serving:
    """A switchable is_serving(): the region's query-server Deployment ready or not."""

    def __init__(self) -> None:
        self.value = True
        self.lock = threading.Lock()

    def __call__(self) -> bool:
        with self.lock:
            return self.value


@pytest.fixture(scope="module")
def moto_store() -> Iterator[tuple[Any, list[str]]]:
    """In-process moto for the whole module (its start-up is the slow part); items use unique keys."""
    from moto import mock_aws

    with mock_aws():
        client = boto3.client(
            "dynamodb", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        )
        yield client, [make_table(client), make_table(client)]


@pytest.fixture
def dynamodb(moto_store: tuple[Any, list[str]]) -> Any:
    return moto_store[0]


@pytest.fixture
def tables(moto_store: tuple[Any, list[str]]) -> list[str]:
    return moto_store[1]


def make_table(dynamodb: Any) -> str:
    name = f"chalk-online-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@pytest.fixture
def serving() -> Serving:
    return Serving()


@pytest.fixture
def truth() -> GroundTruth:
    return GroundTruth()


def make_server(
    dynamodb: Any, tables: list[str], serving: Serving, truth: GroundTruth, **kw: Any
) -> QueryServer:
    return QueryServer(
        region=kw.pop("region", "us-east-1"),
        environment_name="prod-east",
        environment_id=ENV_ID,
        client_id=CLIENT_ID,
        client_secret=kw.pop("client_secret", SECRET),
        table_names=tables,
        dynamodb=dynamodb,
        is_serving=serving,
        truth=truth,
        **kw,
    ).start()


@pytest.fixture
def server(dynamodb: Any, tables: list[str], serving: Serving, truth: GroundTruth) -> Iterator[QueryServer]:
    srv = make_server(dynamodb, tables, serving, truth, deployment_id="c" + "a" * 24)
    yield srv
    srv.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def token_for(http: httpx.Client, url: str, secret: str = SECRET) -> httpx.Response:
    body = {"client_id": CLIENT_ID, "client_secret": secret, "grant_type": "client_credentials"}
    return http.post(f"{url}/v1/oauth/token", json=body)


def auth(http: httpx.Client, url: str) -> dict[str, str]:
    token = token_for(http, url).json()["access_token"]
    return {"Authorization": f"Bearer {token}", "X-Chalk-Env-Id": ENV_ID}


def query(
    http: httpx.Client, url: str, headers: dict[str, str], outputs: list[str], **inputs: Any
) -> httpx.Response:
    body = {
        "inputs": {k.replace("__", "."): v for k, v in inputs.items()},
        "outputs": outputs,
        "include_meta": True,
    }
    return http.post(f"{url}/v1/query/online", headers=headers, json=body)


class TestHealth:
    def test_healthz_follows_is_serving(
        self, server: QueryServer, serving: Serving, http: httpx.Client
    ) -> None:
        resp = http.get(f"{server.url}/healthz")
        assert (resp.status_code, resp.json()) == (200, {"status": "ok"})
        serving.value = False
        assert http.get(f"{server.url}/healthz").status_code == 503
        serving.value = True
        assert http.get(f"{server.url}/healthz").status_code == 200

    def test_a_failing_readiness_check_means_not_serving(
        self, dynamodb: Any, tables: list[str], truth: GroundTruth, http: httpx.Client
    ) -> None:
        def broken() -> bool:
            raise RuntimeError("kube API gone")

        srv = QueryServer(
            region="us-west-2",
            environment_name="prod-west",
            environment_id=ENV_ID,
            client_id=CLIENT_ID,
            client_secret=SECRET,
            table_names=tables,
            dynamodb=dynamodb,
            is_serving=broken,
        ).start()
        try:
            assert http.get(f"{srv.url}/healthz").status_code == 503
        finally:
            srv.stop()

    def test_url_is_loopback(self, server: QueryServer) -> None:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)


class TestToken:
    def test_client_credentials_give_a_bearer_token(self, server: QueryServer, http: httpx.Client) -> None:
        resp = token_for(http, server.url)
        assert resp.status_code == 200
        body = resp.json()
        assert body["token_type"] == "Bearer"
        assert body["access_token"]
        assert body["expires_in"] > 0
        assert body["api_server"] == server.url
        assert SECRET not in resp.text

    def test_wrong_secret_is_401(self, server: QueryServer, http: httpx.Client) -> None:
        resp = token_for(http, server.url, secret="wrong")
        assert resp.status_code == 401
        assert "wrong" not in resp.text

    def test_a_token_from_one_region_is_accepted_by_the_other(
        self,
        server: QueryServer,
        dynamodb: Any,
        tables: list[str],
        serving: Serving,
        truth: GroundTruth,
        http: httpx.Client,
    ) -> None:
        west = make_server(dynamodb, tables, serving, truth, region="us-west-2")
        try:
            headers = auth(http, server.url)
            assert query(http, west.url, headers, ["user.name"], user__id=1).status_code == 200
        finally:
            west.stop()

    def test_a_token_signed_with_another_secret_is_rejected(
        self,
        server: QueryServer,
        dynamodb: Any,
        tables: list[str],
        serving: Serving,
        truth: GroundTruth,
        http: httpx.Client,
    ) -> None:
        other = make_server(dynamodb, tables, serving, truth, client_secret="another")
        try:
            token = token_for(http, other.url, secret="another").json()["access_token"]
            headers = {"Authorization": f"Bearer {token}", "X-Chalk-Env-Id": ENV_ID}
            assert query(http, server.url, headers, ["user.name"], user__id=1).status_code == 401
        finally:
            other.stop()


class TestOnlineQuery:
    def test_returns_values_from_the_online_store(
        self, server: QueryServer, dynamodb: Any, tables: list[str], http: httpx.Client
    ) -> None:
        dynamodb.put_item(
            TableName=tables[0],
            Item={"pk": {"S": "user.123"}, "user.name": {"S": "Ada"}, "user.age": {"N": "36"}},
        )
        resp = query(http, server.url, auth(http, server.url), ["user.name", "user.age"], user__id=123)
        assert resp.status_code == 200
        body = resp.json()
        assert [(d["field"], d["value"], d["pkey"], d["error"]) for d in body["data"]] == [
            ("user.name", "Ada", 123, None),
            ("user.age", 36, 123, None),
        ]
        assert all(d["ts"] for d in body["data"])
        assert body["errors"] == []
        meta = body["meta"]
        assert meta["deployment_id"] == "c" + "a" * 24
        assert (meta["environment_id"], meta["environment_name"]) == (ENV_ID, "prod-east")
        assert meta["query_id"]
        assert meta["execution_duration_s"] >= 0

    def test_reads_the_first_table_that_has_the_feature(
        self, server: QueryServer, dynamodb: Any, tables: list[str], http: httpx.Client
    ) -> None:
        dynamodb.put_item(TableName=tables[0], Item={"pk": {"S": "user.7"}, "user.age": {"N": "1"}})
        dynamodb.put_item(TableName=tables[1], Item={"pk": {"S": "user.7"}, "user.name": {"S": "Grace"}})
        data = query(http, server.url, auth(http, server.url), ["user.name"], user__id=7).json()["data"]
        assert data[0]["value"] == "Grace"

    def test_missing_feature_is_null_with_an_error(self, server: QueryServer, http: httpx.Client) -> None:
        body = query(http, server.url, auth(http, server.url), ["user.name"], user__id=404404).json()
        assert body["data"][0]["value"] is None
        error = body["data"][0]["error"]
        assert error["code"] == "RESOLVER_NOT_FOUND"
        assert "user.name" in error["message"]
        assert body["errors"] == [error]

    def test_meta_only_when_asked(self, server: QueryServer, http: httpx.Client) -> None:
        body = {"inputs": {"user.id": 1}, "outputs": ["user.name"]}
        resp = http.post(f"{server.url}/v1/query/online", headers=auth(http, server.url), json=body)
        assert resp.json()["meta"] is None

    def test_no_token_is_401(self, server: QueryServer, http: httpx.Client) -> None:
        assert (
            query(http, server.url, {"X-Chalk-Env-Id": ENV_ID}, ["user.name"], user__id=1).status_code == 401
        )
        bad = {"Authorization": "Bearer forged.token", "X-Chalk-Env-Id": ENV_ID}
        assert query(http, server.url, bad, ["user.name"], user__id=1).status_code == 401

    def test_wrong_environment_is_403(self, server: QueryServer, http: httpx.Client) -> None:
        headers = {**auth(http, server.url), "X-Chalk-Env-Id": "staging"}
        assert query(http, server.url, headers, ["user.name"], user__id=1).status_code == 403

    def test_not_serving_is_503(self, server: QueryServer, serving: Serving, http: httpx.Client) -> None:
        headers = auth(http, server.url)
        serving.value = False
        assert query(http, server.url, headers, ["user.name"], user__id=1).status_code == 503

    def test_malformed_body_is_400(self, server: QueryServer, http: httpx.Client) -> None:
        resp = http.post(
            f"{server.url}/v1/query/online", headers=auth(http, server.url), json={"outputs": []}
        )
        assert resp.status_code == 400
        assert resp.json()["errors"][0]["code"] == "INVALID_QUERY"


class TestDeployRoutes:
    def apply(self, http: httpx.Client, server: QueryServer, **body: Any) -> httpx.Response:
        return http.post(f"{server.url}/_sandbox/apply", headers=auth(http, server.url), json=body)

    def served(self, http: httpx.Client, server: QueryServer) -> str:
        state = http.get(f"{server.url}/_sandbox/state").json()
        return str(state["deployment_id"])

    def test_promoted_apply_is_served_and_recorded(
        self, server: QueryServer, http: httpx.Client, truth: GroundTruth
    ) -> None:
        resp = self.apply(http, server, branch=None, promote=True)
        assert resp.status_code == 200
        new = resp.json()["deployment_id"]
        assert DEPLOYMENT_ID_RE.match(new)
        assert self.served(http, server) == new
        meta = query(http, server.url, auth(http, server.url), ["user.name"], user__id=1).json()["meta"]
        assert meta["deployment_id"] == new
        assert [(e["region"], e["deployment_id"]) for e in truth.events("chalk.deployment")] == [
            ("us-east-1", new)
        ]

    def test_unpromoted_and_branch_applies_keep_the_served_deployment(
        self, server: QueryServer, http: httpx.Client, truth: GroundTruth
    ) -> None:
        before = self.served(http, server)
        assert self.apply(http, server, branch=None, promote=False).status_code == 200
        assert self.apply(http, server, branch="feature-x", promote=True).status_code == 200
        assert self.served(http, server) == before
        assert truth.events("chalk.deployment") == []

    def test_apply_needs_a_token(self, server: QueryServer, http: httpx.Client) -> None:
        assert http.post(f"{server.url}/_sandbox/apply", json={"promote": True}).status_code == 401

    def test_transient_faults_fail_the_next_applies_then_clear(
        self, server: QueryServer, http: httpx.Client
    ) -> None:
        set_faults = http.post(f"{server.url}/_sandbox/apply-faults", json={"mode": "transient", "count": 2})
        assert set_faults.status_code == 200
        for _ in range(2):
            resp = self.apply(http, server, promote=True)
            assert (resp.status_code, resp.json()["error"]) == (503, TRANSIENT_APPLY_ERROR)
        assert self.apply(http, server, promote=True).status_code == 200

    def test_permanent_faults_are_400(self, server: QueryServer, http: httpx.Client) -> None:
        http.post(f"{server.url}/_sandbox/apply-faults", json={"mode": "permanent", "count": 1})
        resp = self.apply(http, server, promote=True)
        assert (resp.status_code, resp.json()["error"]) == (400, PERMANENT_APPLY_ERROR)

    def test_bad_fault_spec_is_400(self, server: QueryServer, http: httpx.Client) -> None:
        assert http.post(f"{server.url}/_sandbox/apply-faults", json={"mode": "flaky"}).status_code == 400

    def test_state_reports_serving(self, server: QueryServer, serving: Serving, http: httpx.Client) -> None:
        assert http.get(f"{server.url}/_sandbox/state").json()["serving"] is True
        serving.value = False
        assert http.get(f"{server.url}/_sandbox/state").json()["serving"] is False

    def test_apply_fails_while_the_region_is_not_serving(
        self, server: QueryServer, serving: Serving, http: httpx.Client
    ) -> None:
        headers = auth(http, server.url)
        serving.value = False
        resp = http.post(f"{server.url}/_sandbox/apply", headers=headers, json={"promote": True})
        assert resp.status_code == 503


def test_generated_deployment_ids_look_like_chalks() -> None:
    ids = {new_deployment_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(DEPLOYMENT_ID_RE.match(i) for i in ids)
