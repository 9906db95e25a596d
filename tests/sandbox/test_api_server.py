"""Sandbox Chalk API servers (metadata plane): tokens, uploads onto the persistence path, deploys."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import httpx
import pytest

from sandbox.api_server import PERMANENT_APPLY_ERROR
from sandbox.api_server import TRANSIENT_APPLY_ERROR
from sandbox.api_server import ApiServer
from sandbox.chalk import ChalkEnvironment
from sandbox.chalk import ChalkRegion
from sandbox.chalk import new_deployment_id
from sandbox.chalk import served_hosts
from sandbox.query_server import QueryServer
from sandbox.truth import GroundTruth

ENV_ID = "prod"
CLIENT_ID = "client-prod"
SECRET = "s3cret-value"
API_HOST = "api.chalk.example.com"
DEPLOYMENT_ID_RE = re.compile(r"^c[a-z0-9]{24}$")


@dataclass
class Region:
    """One region's Chalk: the API server, its query servers, and what uploads published."""

    chalk: ChalkRegion
    api: ApiServer
    query: QueryServer
    host: str
    published: list[dict[str, Any]] = field(default_factory=list)
    serving: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def api_url(self, path: str) -> str:
        return f"{self.api.url}{path}"


@pytest.fixture
def truth() -> GroundTruth:
    return GroundTruth()


@pytest.fixture
def env() -> ChalkEnvironment:
    return ChalkEnvironment(environment_id=ENV_ID, client_id=CLIENT_ID, client_secret=SECRET)


@pytest.fixture
def make_region(env: ChalkEnvironment, truth: GroundTruth) -> Iterator[Callable[[str, str], Region]]:
    started: list[Region] = []

    def make(name: str, short: str) -> Region:
        host = f"prod-{short}.query.example.com"
        holder: dict[str, Region] = {}

        def publish(rows: list[dict[str, Any]]) -> None:
            with holder["region"].lock:
                holder["region"].published.extend(rows)

        def serving() -> bool:
            with holder["region"].lock:
                return holder["region"].serving

        chalk = ChalkRegion(
            region=name,
            resource_group=f"prod-{short}",
            is_serving=serving,
            read_item=lambda pk: {},
            publish=publish,
            truth=truth,
        )
        api = ApiServer(
            region=chalk,
            environment=env,
            hosts=served_hosts(f"prod-{short}.api.chalk.example.com", API_HOST, "127.0.0.1"),
            engine_url=f"https://{host}",
        ).start()
        api.public_url = f"https://prod-{short}.api.chalk.example.com"
        query = QueryServer(region=chalk, environment=env, hosts=served_hosts(host)).start()
        region = Region(chalk, api, query, host)
        holder["region"] = region
        started.append(region)
        return region

    yield make
    for region in started:
        region.api.stop()
        region.query.stop()


@pytest.fixture
def east(make_region: Callable[[str, str], Region]) -> Region:
    return make_region("us-east-1", "east")


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def token_response(http: httpx.Client, region: Region, **body: Any) -> httpx.Response:
    payload = {"client_id": CLIENT_ID, "client_secret": SECRET, "grant_type": "client_credentials", **body}
    return http.post(region.api_url("/v1/oauth/token"), json=payload)


def auth(http: httpx.Client, region: Region) -> dict[str, str]:
    token = token_response(http, region).json()["access_token"]
    return {"Authorization": f"Bearer {token}", "X-Chalk-Env-Id": ENV_ID}


def served_deployment(http: httpx.Client, region: Region) -> str:
    """The deployment id the region's query servers report (meta.deployment_id)."""
    body = {"inputs": {"user.id": 1}, "outputs": ["user.name"], "include_meta": True}
    resp = http.post(
        f"{region.query.url}/v1/query/online", headers={**auth(http, region), "Host": region.host}, json=body
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["meta"]["deployment_id"])


class TestToken:
    """chalkpy ExchangeCredentialsResponse: access_token, token_type, expires_in, api_server,
    primary_environment, engines (environment id -> the engine's URL)."""

    def test_client_credentials_give_a_bearer_token(self, east: Region, http: httpx.Client) -> None:
        resp = token_response(http, east)
        assert resp.status_code == 200
        body = resp.json()
        assert body["token_type"] == "Bearer"
        assert body["access_token"]
        assert body["expires_in"] > 0
        assert body["api_server"] == "https://prod-east.api.chalk.example.com"
        assert body["primary_environment"] == ENV_ID
        assert body["engines"] == {ENV_ID: f"https://{east.host}"}
        assert SECRET not in resp.text

    def test_wrong_secret_is_401_and_not_echoed(self, east: Region, http: httpx.Client) -> None:
        resp = token_response(http, east, client_secret="wrong-Zq81")
        assert (resp.status_code, resp.json()["error"]) == (401, "invalid_client")
        assert "wrong-Zq81" not in resp.text

    def test_only_client_credentials(self, east: Region, http: httpx.Client) -> None:
        resp = token_response(http, east, grant_type="password")
        assert (resp.status_code, resp.json()["error"]) == (400, "unsupported_grant_type")

    def test_other_hosts_are_404(self, east: Region, http: httpx.Client) -> None:
        resp = http.post(east.api_url("/v1/oauth/token"), headers={"Host": "api.other.example.com"}, json={})
        assert resp.status_code == 404


class TestUpload:
    """chalkpy `upload_features`: `POST /v1/upload_features` to the API server (a metadata request)
    with UploadFeaturesRequest `{"input": {fqn: [value]}}`; the answer is UploadFeaturesResponse
    `{"errors": [...], "trace_id": ...}`."""

    def test_rows_go_onto_the_persistence_path(self, east: Region, http: httpx.Client) -> None:
        body = {"input": {"user.id": [7, 8], "user.name": ["Ada", "Grace"]}}
        resp = http.post(east.api_url("/v1/upload_features"), headers=auth(http, east), json=body)
        assert resp.status_code == 200
        answer = resp.json()
        assert answer["errors"] == [] and answer["trace_id"]
        assert east.published == [{"user.id": 7, "user.name": "Ada"}, {"user.id": 8, "user.name": "Grace"}]

    @pytest.mark.parametrize(
        "body",
        [
            {"inputs": {"user.id": [1]}},  # a query's key, not an upload's
            {"input": {"user.id": 1, "user.name": "Ada"}},  # values must be lists
            {"input": {"user.id": [1, 2], "user.name": ["Ada"]}},  # one value per row in every list
            {"input": {"user.name": ["Ada"]}},  # no primary key
            {"input": {"name": ["Ada"]}},  # not a feature name
        ],
    )
    def test_invalid_uploads_are_400(self, east: Region, http: httpx.Client, body: dict[str, Any]) -> None:
        resp = http.post(east.api_url("/v1/upload_features"), headers=auth(http, east), json=body)
        assert resp.status_code == 400
        assert resp.json()["errors"][0]["code"] == "INVALID_QUERY"
        assert east.published == []

    def test_uploads_need_a_token_and_the_environment(self, east: Region, http: httpx.Client) -> None:
        body = {"input": {"user.id": [1], "user.name": ["Ada"]}}
        headers = auth(http, east)
        no_env = {"Authorization": headers["Authorization"]}
        assert http.post(east.api_url("/v1/upload_features"), json=body).status_code == 401
        assert http.post(east.api_url("/v1/upload_features"), headers=no_env, json=body).status_code == 400
        assert east.published == []


class TestDeployRoutes:
    def apply(self, http: httpx.Client, region: Region, **body: Any) -> httpx.Response:
        return http.post(region.api_url("/_sandbox/apply"), headers=auth(http, region), json=body)

    def state(self, http: httpx.Client, region: Region) -> dict[str, Any]:
        return dict(http.get(region.api_url("/_sandbox/state")).json())

    def test_promoted_apply_is_served_and_recorded(
        self, east: Region, http: httpx.Client, truth: GroundTruth
    ) -> None:
        resp = self.apply(http, east, branch=None, promote=True)
        assert resp.status_code == 200
        new = resp.json()["deployment_id"]
        assert DEPLOYMENT_ID_RE.match(new)
        assert self.state(http, east)["deployment_id"] == new
        assert served_deployment(http, east) == new
        assert [(e["region"], e["deployment_id"]) for e in truth.events("chalk.deployment")] == [
            ("us-east-1", new)
        ]

    def test_unpromoted_and_branch_applies_keep_the_served_deployment(
        self, east: Region, http: httpx.Client, truth: GroundTruth
    ) -> None:
        before = self.state(http, east)["deployment_id"]
        assert self.apply(http, east, branch=None, promote=False).status_code == 200
        assert self.apply(http, east, branch="feature-x", promote=True).json()["promoted"] is False
        assert self.state(http, east)["deployment_id"] == before
        assert truth.events("chalk.deployment") == []

    def test_apply_needs_a_token(self, east: Region, http: httpx.Client) -> None:
        assert http.post(east.api_url("/_sandbox/apply"), json={"promote": True}).status_code == 401

    def test_transient_faults_fail_the_next_applies_then_clear(
        self, east: Region, http: httpx.Client
    ) -> None:
        faults = http.post(east.api_url("/_sandbox/apply-faults"), json={"mode": "transient", "count": 2})
        assert faults.status_code == 200
        for _ in range(2):
            resp = self.apply(http, east, promote=True)
            assert (resp.status_code, resp.json()["error"]) == (503, TRANSIENT_APPLY_ERROR)
        assert self.apply(http, east, promote=True).status_code == 200

    def test_permanent_faults_are_400(self, east: Region, http: httpx.Client) -> None:
        http.post(east.api_url("/_sandbox/apply-faults"), json={"mode": "permanent", "count": 1})
        resp = self.apply(http, east, promote=True)
        assert (resp.status_code, resp.json()["error"]) == (400, PERMANENT_APPLY_ERROR)

    def test_bad_fault_spec_is_400(self, east: Region, http: httpx.Client) -> None:
        assert http.post(east.api_url("/_sandbox/apply-faults"), json={"mode": "flaky"}).status_code == 400

    def test_apply_fails_while_the_region_is_not_serving(self, east: Region, http: httpx.Client) -> None:
        headers = auth(http, east)
        with east.lock:
            east.serving = False
        assert self.state(http, east)["serving"] is False
        assert (
            http.post(east.api_url("/_sandbox/apply"), headers=headers, json={"promote": True}).status_code
            == 503
        )

    def test_each_regions_deployment_has_its_own_id(
        self, make_region: Callable[[str, str], Region], http: httpx.Client
    ) -> None:
        """Chalk's deployment record has one id per deployment (chalk-go `Deployment.Id`;
        BuilderService.CreateDeployment "responds with a deployment_id"): the same feature code
        applied to two regions' resource groups makes two deployments, with two ids."""
        east, west = make_region("us-east-1", "east"), make_region("us-west-2", "west")
        assert served_deployment(http, east) != served_deployment(http, west)
        ids = [
            self.apply(http, region, branch=None, promote=True).json()["deployment_id"]
            for region in (east, west)
        ]
        assert ids[0] != ids[1]
        assert [served_deployment(http, east), served_deployment(http, west)] == ids


def test_generated_deployment_ids_look_like_chalks() -> None:
    ids = {new_deployment_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(DEPLOYMENT_ID_RE.match(i) for i in ids)
