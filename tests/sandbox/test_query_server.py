"""Sandbox Chalk query servers (engines): health, host rules, online queries, and what they refuse."""

from __future__ import annotations

import threading
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import httpx
import pytest

from sandbox.api_server import ApiServer
from sandbox.chalk import ChalkEnvironment
from sandbox.chalk import ChalkRegion
from sandbox.chalk import served_hosts
from sandbox.query_server import QueryServer
from sandbox.truth import GroundTruth

ENV_ID = "prod"
CLIENT_ID = "client-prod"
SECRET = "s3cret-value"
FAILOVER = "chalk-failover.example.com"
EAST_HOST, WEST_HOST = "prod-east.query.example.com", "prod-west.query.example.com"
API_HOST = "api.chalk.example.com"


@dataclass
class Store:
    """A region's online store as the query server reads it: pk -> item, or the read's failure."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    failure: Exception | None = None
    serving: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, pk: str) -> dict[str, Any] | Exception:
        with self.lock:
            return self.failure if self.failure is not None else dict(self.items.get(pk, {}))

    def is_serving(self) -> bool:
        with self.lock:
            return self.serving


def region(name: str, group: str, store: Store, truth: GroundTruth | None = None) -> ChalkRegion:
    return ChalkRegion(
        region=name,
        resource_group=group,
        is_serving=store.is_serving,
        read_item=store.read,
        publish=lambda rows: None,
        truth=truth,
    )


def environment(env_id: str = ENV_ID, secret: str = SECRET) -> ChalkEnvironment:
    return ChalkEnvironment(environment_id=env_id, client_id=f"client-{env_id}", client_secret=secret)


@dataclass
class Served:
    """One region's Chalk: its query servers (answering `host` and the failover name) and API server."""

    chalk: ChalkRegion
    store: Store
    query: QueryServer
    api: ApiServer
    host: str

    def query_url(self, path: str) -> str:
        return f"{self.query.url}{path}"

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Host": self.host, **extra}


@pytest.fixture
def make_region() -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def make(
        name: str = "us-east-1", host: str = EAST_HOST, env: ChalkEnvironment | None = None, **kw: Any
    ) -> Served:
        store = Store()
        chalk = region(name, f"prod-{name}", store, kw.pop("truth", None))
        env = env or shared_env
        query = QueryServer(region=chalk, environment=env, hosts=served_hosts(host, FAILOVER)).start()
        api = ApiServer(
            region=chalk,
            environment=env,
            hosts=served_hosts(API_HOST, "127.0.0.1"),
            engine_url=f"https://{host}",
        ).start()
        served = Served(chalk, store, query, api, host)
        started.append(served)
        return served

    shared_env = environment()
    yield make
    for served in started:
        served.query.stop()
        served.api.stop()


@pytest.fixture
def east(make_region: Callable[..., Served]) -> Served:
    return make_region()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def token_from(http: httpx.Client, api: ApiServer, secret: str = SECRET, client_id: str = CLIENT_ID) -> str:
    """A token from the environment's API server (the metadata plane), as chalkpy gets one."""
    body = {"client_id": client_id, "client_secret": secret, "grant_type": "client_credentials"}
    resp = http.post(f"{api.url}/v1/oauth/token", json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def auth(http: httpx.Client, served: Served, env_id: str = ENV_ID) -> dict[str, str]:
    return served.headers(
        Authorization=f"Bearer {token_from(http, served.api)}", **{"X-Chalk-Env-Id": env_id}
    )


def query(
    http: httpx.Client, served: Served, headers: dict[str, str], outputs: list[str], **inputs: Any
) -> httpx.Response:
    body = {
        "inputs": {k.replace("__", "."): v for k, v in inputs.items()},
        "outputs": outputs,
        "include_meta": True,
    }
    return http.post(served.query_url("/v1/query/online"), headers=headers, json=body)


class TestHealth:
    def test_healthz_follows_the_deployment(self, east: Served, http: httpx.Client) -> None:
        resp = http.get(east.query_url("/healthz"), headers=east.headers())
        assert (resp.status_code, resp.json()) == (200, {"status": "ok"})
        east.store.serving = False
        assert http.get(east.query_url("/healthz"), headers=east.headers()).status_code == 503
        east.store.serving = True
        assert http.get(east.query_url("/healthz"), headers=east.headers()).status_code == 200

    def test_a_failing_readiness_check_means_not_serving(
        self, make_region: Callable[..., Served], http: httpx.Client
    ) -> None:
        west = make_region("us-west-2", WEST_HOST)

        def broken() -> bool:
            raise RuntimeError("kube API gone")

        west.chalk.is_serving = broken
        assert http.get(west.query_url("/healthz"), headers=west.headers()).status_code == 503


class TestHostRules:
    """Chalk's multi-region guide: each region's query servers sit behind their own ALB, reached by
    the region's hostname and the failover name. An ALB with host-header rules and a default
    fixed-response action answers any other Host with that response (Elastic Load Balancing,
    "Listener rules": host-header conditions; the sandbox's default action is 404)."""

    @pytest.mark.parametrize("host", [EAST_HOST, FAILOVER, f"{EAST_HOST}:443", FAILOVER.upper()])
    def test_its_own_names_are_served(self, east: Served, http: httpx.Client, host: str) -> None:
        assert http.get(east.query_url("/healthz"), headers={"Host": host}).status_code == 200

    @pytest.mark.parametrize("host", [WEST_HOST, API_HOST, "127.0.0.1", "example.com"])
    def test_any_other_host_is_404(self, east: Served, http: httpx.Client, host: str) -> None:
        assert http.get(east.query_url("/healthz"), headers={"Host": host}).status_code == 404
        headers = {**auth(http, east), "Host": host}
        assert query(http, east, headers, ["user.name"], user__id=1).status_code == 404


class TestTokensComeFromTheApiServer:
    """chalkpy `_exchange_credentials` posts to `urljoin(self._api_server, "v1/oauth/token")` and
    chalk-ts's CredentialsHolder uses `baseUrl: this.config.apiServer`: engines do not issue tokens."""

    def test_the_query_server_has_no_token_endpoint(self, east: Served, http: httpx.Client) -> None:
        body = {"client_id": CLIENT_ID, "client_secret": SECRET, "grant_type": "client_credentials"}
        resp = http.post(east.query_url("/v1/oauth/token"), headers=east.headers(), json=body)
        assert resp.status_code == 404
        assert "access_token" not in resp.text

    def test_a_token_from_the_api_server_serves_every_region(
        self, make_region: Callable[..., Served], http: httpx.Client
    ) -> None:
        """One environment, several regions: the metadata plane is global, so a token the east API
        server issued is good at the west query servers."""
        east, west = make_region("us-east-1", EAST_HOST), make_region("us-west-2", WEST_HOST)
        west.store.items["user.1"] = {"user.name": "Ada"}
        headers = {**auth(http, east), "Host": WEST_HOST}
        resp = query(http, west, headers, ["user.name"], user__id=1)
        assert resp.status_code == 200
        assert resp.json()["data"][0]["value"] == "Ada"


class TestEnvironmentHeader:
    """chalkpy `_get_headers` sends `X-Chalk-Env-Id` on every query (client_headers.py:
    CHALK_ENV_ID_HEADER); the token alone does not say which environment a query is for, so the
    sandbox refuses a query without it (400) or for an environment it does not serve (403), and a
    token issued for another environment's credentials (401), with Chalk's error shape
    `{"errors": [{"code", "category", "message"}]}`."""

    @staticmethod
    def error(resp: httpx.Response) -> tuple[int, str, str]:
        (error,) = resp.json()["errors"]
        assert error["message"]
        return resp.status_code, error["code"], error["category"]

    def test_a_missing_environment_id_is_refused(self, east: Served, http: httpx.Client) -> None:
        headers = auth(http, east)
        del headers["X-Chalk-Env-Id"]
        assert self.error(query(http, east, headers, ["user.name"], user__id=1)) == (
            400,
            "INVALID_QUERY",
            "REQUEST",
        )

    def test_an_unknown_environment_id_is_refused(self, east: Served, http: httpx.Client) -> None:
        headers = auth(http, east, env_id="staging")
        assert self.error(query(http, east, headers, ["user.name"], user__id=1)) == (
            403,
            "UNAUTHORIZED",
            "REQUEST",
        )

    def test_a_token_for_another_environment_is_refused(
        self, make_region: Callable[..., Served], http: httpx.Client
    ) -> None:
        prod = make_region("us-east-1", EAST_HOST)
        staging = make_region(
            "us-east-1", "staging-east.query.example.com", env=environment("staging", "other")
        )
        staging_token = token_from(http, staging.api, secret="other", client_id="client-staging")
        for env_id in ("prod", "staging"):
            headers = prod.headers(Authorization=f"Bearer {staging_token}", **{"X-Chalk-Env-Id": env_id})
            resp = query(http, prod, headers, ["user.name"], user__id=1)
            assert self.error(resp) == (401, "UNAUTHENTICATED", "REQUEST")

    def test_no_or_a_forged_token_is_401(self, east: Served, http: httpx.Client) -> None:
        for headers in (
            east.headers(**{"X-Chalk-Env-Id": ENV_ID}),
            east.headers(Authorization="Bearer forged.token", **{"X-Chalk-Env-Id": ENV_ID}),
        ):
            assert self.error(query(http, east, headers, ["user.name"], user__id=1))[0] == 401


class TestOnlineQuery:
    def test_returns_values_from_the_online_store(self, east: Served, http: httpx.Client) -> None:
        east.store.items["user.123"] = {"user.id": 123, "user.name": "Ada", "user.age": 36}
        resp = query(http, east, auth(http, east), ["user.name", "user.age"], user__id=123)
        assert resp.status_code == 200
        body = resp.json()
        assert [(d["field"], d["value"], d["pkey"], d["error"]) for d in body["data"]] == [
            ("user.name", "Ada", 123, None),
            ("user.age", 36, 123, None),
        ]
        assert all(d["ts"] for d in body["data"])
        assert body["errors"] == []
        meta = body["meta"]
        assert meta["deployment_id"] == east.chalk.deployment_id
        assert (meta["environment_id"], meta["environment_name"]) == (ENV_ID, "prod-us-east-1")
        assert meta["query_id"]
        assert meta["execution_duration_s"] >= 0

    def test_a_missing_feature_is_null_with_an_error(self, east: Served, http: httpx.Client) -> None:
        body = query(http, east, auth(http, east), ["user.name"], user__id=404404).json()
        assert body["data"][0]["value"] is None
        error = body["data"][0]["error"]
        assert (error["code"], error["category"]) == ("RESOLVER_NOT_FOUND", "FIELD")
        assert "user.name" in error["message"]
        assert body["errors"] == [error]

    def test_a_failing_store_is_an_upstream_error(self, east: Served, http: httpx.Client) -> None:
        east.store.failure = RuntimeError("ProvisionedThroughputExceededException")
        body = query(http, east, auth(http, east), ["user.name"], user__id=1).json()
        assert body["data"][0]["value"] is None
        assert (body["errors"][0]["code"], body["errors"][0]["category"]) == ("UPSTREAM_FAILED", "NETWORK")

    def test_meta_only_when_asked(self, east: Served, http: httpx.Client) -> None:
        body = {"inputs": {"user.id": 1}, "outputs": ["user.name"]}
        resp = http.post(east.query_url("/v1/query/online"), headers=auth(http, east), json=body)
        assert resp.json()["meta"] is None

    def test_not_serving_is_503(self, east: Served, http: httpx.Client) -> None:
        headers = auth(http, east)
        east.store.serving = False
        assert query(http, east, headers, ["user.name"], user__id=1).status_code == 503

    def test_a_malformed_body_is_400(self, east: Served, http: httpx.Client) -> None:
        resp = http.post(east.query_url("/v1/query/online"), headers=auth(http, east), json={"outputs": []})
        assert resp.status_code == 400
        assert resp.json()["errors"][0]["code"] == "INVALID_QUERY"

    def test_only_get_healthz_and_post_query(self, east: Served, http: httpx.Client) -> None:
        assert http.post(east.query_url("/healthz"), headers=east.headers()).status_code == 405
        assert http.get(east.query_url("/v1/query/online"), headers=east.headers()).status_code == 405
