"""Sandbox Kubernetes (kmock + controllers) and EKS endpoint rewriting, via the real clients."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from kubernetes import client as k8s

from sandbox.aws import AwsServer
from sandbox.aws import SandboxAwsApp
from sandbox.clock import SandboxClock
from sandbox.eks import EksSim
from sandbox.harness import poll
from sandbox.kube import RegionalKube
from sandbox.kube import label_selector_matches
from sandbox.kube import request_verb
from sandbox.truth import GroundTruth

NS = "chalk"
QS = "chalk-query-server"
PW = "chalk-persistence-worker"
TOKEN = "k8s-aws-v1.aHR0cHM6Ly9zdHMuYW1hem9uYXdzLmNvbS8_QWN0aW9uPUdldENhbGxlcklkZW50aXR5"
DELAY = 0.4


def api_client(url: str) -> k8s.ApiClient:
    """What product code builds from describe_cluster: host + bearer token, plain HTTP."""
    cfg = k8s.Configuration(host=url)
    cfg.api_key = {"authorization": TOKEN}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return k8s.ApiClient(cfg)


@pytest.fixture
def truth() -> GroundTruth:
    return GroundTruth()


@pytest.fixture
def kube(truth: GroundTruth) -> Iterator[RegionalKube]:
    k = RegionalKube(
        cluster_name="chalk-test-use1",
        namespace=NS,
        deployments={QS: 2, PW: 1},
        ready_delay=DELAY,
        truth=truth,
    ).start()
    yield k
    k.stop()


@pytest.fixture
def apps(kube: RegionalKube) -> Iterator[k8s.AppsV1Api]:
    api = api_client(kube.url)
    yield k8s.AppsV1Api(api)
    api.close()


@pytest.fixture
def core(kube: RegionalKube) -> Iterator[k8s.CoreV1Api]:
    api = api_client(kube.url)
    yield k8s.CoreV1Api(api)
    api.close()


def pod_count(core: k8s.CoreV1Api, app: str) -> int:
    return len(core.list_namespaced_pod(NS, label_selector=f"app={app}").items)


class TestSeed:
    def test_url_is_loopback_http_without_trailing_slash(self, kube: RegionalKube) -> None:
        assert kube.url.startswith("http://127.0.0.1:")
        assert not kube.url.endswith("/")

    def test_deployments_are_seeded_ready(self, apps: k8s.AppsV1Api) -> None:
        dep = apps.read_namespaced_deployment(QS, NS)
        assert dep.kind == "Deployment"
        assert dep.metadata.labels == {"app": QS}
        assert dep.spec.selector.match_labels == {"app": QS}
        assert dep.spec.replicas == 2
        assert (dep.status.replicas, dep.status.ready_replicas, dep.status.available_replicas) == (2, 2, 2)
        assert dep.status.observed_generation == dep.metadata.generation
        names = {d.metadata.name for d in apps.list_namespaced_deployment(NS).items}
        assert names == {QS, PW}

    def test_pods_are_running_and_ready(self, core: k8s.CoreV1Api) -> None:
        pods = core.list_namespaced_pod(NS).items
        assert len(pods) == 3
        for pod in pods:
            assert pod.status.phase == "Running"
            assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)

    def test_namespace_exists(self, core: k8s.CoreV1Api) -> None:
        assert core.read_namespace(NS).status.phase == "Active"

    def test_unknown_deployment_is_404(self, apps: k8s.AppsV1Api) -> None:
        with pytest.raises(k8s.ApiException) as err:
            apps.read_namespaced_deployment("nope", NS)
        assert err.value.status == 404


class TestLabelSelectors:
    def test_list_filters_pods_by_label(self, core: k8s.CoreV1Api) -> None:
        assert pod_count(core, QS) == 2
        assert pod_count(core, PW) == 1
        assert len(core.list_namespaced_pod(NS, label_selector=f"app!={QS}").items) == 1
        assert len(core.list_namespaced_pod(NS, label_selector=f"app in ({QS},{PW})").items) == 3
        assert len(core.list_namespaced_pod(NS, label_selector="app=nothing").items) == 0

    def test_list_filters_deployments_by_label(self, apps: k8s.AppsV1Api) -> None:
        items = apps.list_namespaced_deployment(NS, label_selector=f"app={PW}").items
        assert [d.metadata.name for d in items] == [PW]

    def test_malformed_selector_is_400(self, core: k8s.CoreV1Api) -> None:
        with pytest.raises(k8s.ApiException) as err:
            core.list_namespaced_pod(NS, label_selector="app in (")
        assert err.value.status == 400

    @pytest.mark.parametrize(
        ("selector", "expected"),
        [
            ("app=a", True),
            ("app==a", True),
            ("app=b", False),
            ("app!=b", True),
            ("app in (a, b),tier", True),
            ("app notin (a)", False),
            ("!tier", False),
            ("missing", False),
            ("!missing", True),
            ("", True),
        ],
    )
    def test_selector_semantics(self, selector: str, expected: bool) -> None:
        assert label_selector_matches(selector, {"app": "a", "tier": "web"}) is expected


class TestScaleSubresource:
    def test_read_scale_answers_a_scale_object(self, apps: k8s.AppsV1Api) -> None:
        scale = apps.read_namespaced_deployment_scale(QS, NS)
        assert isinstance(scale, k8s.V1Scale)
        assert scale.kind == "Scale"
        assert scale.api_version == "autoscaling/v1"
        assert scale.spec.replicas == 2
        assert scale.status.replicas == 2
        assert scale.status.selector == f"app={QS}"

    def test_patch_scale_then_ready_replicas_follow_after_the_delay(
        self, kube: RegionalKube, apps: k8s.AppsV1Api, core: k8s.CoreV1Api
    ) -> None:
        started = time.monotonic()
        scale = apps.patch_namespaced_deployment_scale(QS, NS, {"spec": {"replicas": 0}})
        assert isinstance(scale, k8s.V1Scale)
        assert scale.spec.replicas == 0

        dep = apps.read_namespaced_deployment(QS, NS)
        assert dep.kind == "Deployment"  # the Scale body did not overwrite the Deployment
        assert dep.spec.replicas == 0
        assert dep.status.ready_replicas == 2  # not yet: the controller waits ready_delay
        assert dep.metadata.generation == dep.status.observed_generation + 1

        poll(lambda: kube.ready_replicas(QS) == 0)
        assert time.monotonic() - started >= DELAY
        dep = apps.read_namespaced_deployment(QS, NS)
        assert dep.status.ready_replicas is None  # zero counts are omitted, as the API server does
        assert dep.status.observed_generation == dep.metadata.generation
        assert pod_count(core, QS) == 0

    def test_replace_scale_scales_up(
        self, kube: RegionalKube, apps: k8s.AppsV1Api, core: k8s.CoreV1Api
    ) -> None:
        body = k8s.V1Scale(metadata=k8s.V1ObjectMeta(name=PW, namespace=NS), spec=k8s.V1ScaleSpec(replicas=3))
        assert apps.replace_namespaced_deployment_scale(PW, NS, body).spec.replicas == 3
        poll(lambda: kube.ready_replicas(PW) == 3)
        assert pod_count(core, PW) == 3

    def test_negative_replicas_are_rejected(self, apps: k8s.AppsV1Api) -> None:
        with pytest.raises(k8s.ApiException) as err:
            apps.patch_namespaced_deployment_scale(QS, NS, {"spec": {"replicas": -1}})
        assert err.value.status == 422

    def test_scale_of_unknown_deployment_is_404(self, apps: k8s.AppsV1Api) -> None:
        with pytest.raises(k8s.ApiException) as err:
            apps.patch_namespaced_deployment_scale("nope", NS, {"spec": {"replicas": 1}})
        assert err.value.status == 404


class TestController:
    def test_deployment_patch_is_followed_like_a_scale(
        self, kube: RegionalKube, apps: k8s.AppsV1Api, core: k8s.CoreV1Api
    ) -> None:
        before = apps.read_namespaced_deployment(QS, NS).metadata.generation
        dep = apps.patch_namespaced_deployment(QS, NS, {"spec": {"replicas": 4}})
        assert dep.spec.replicas == 4
        assert dep.metadata.generation == before + 1  # bumped in the PATCH answer itself
        poll(lambda: kube.ready_replicas(QS) == 4)
        assert pod_count(core, QS) == 4
        assert apps.read_namespaced_deployment(QS, NS).status.available_replicas == 4

    def test_ready_changes_are_recorded_as_ground_truth(
        self, kube: RegionalKube, apps: k8s.AppsV1Api, truth: GroundTruth
    ) -> None:
        apps.patch_namespaced_deployment_scale(QS, NS, {"spec": {"replicas": 0}})
        poll(lambda: bool(truth.events("kube.ready")))
        apps.patch_namespaced_deployment_scale(QS, NS, {"spec": {"replicas": 1}})
        poll(lambda: len(truth.events("kube.ready")) == 2)
        events = truth.events("kube.ready")
        assert [(e["cluster"], e["deployment"], e["ready_replicas"]) for e in events] == [
            ("chalk-test-use1", QS, 0),
            ("chalk-test-use1", QS, 1),
        ]

    def test_a_deleted_pod_is_unready_at_once_and_replaced_after_the_delay(
        self, kube: RegionalKube, apps: k8s.AppsV1Api, core: k8s.CoreV1Api
    ) -> None:
        victim = core.list_namespaced_pod(NS, label_selector=f"app={QS}").items[0].metadata.name
        core.delete_namespaced_pod(victim, NS)
        poll(lambda: kube.ready_replicas(QS) == 1, timeout=DELAY * 0.75)
        poll(lambda: kube.ready_replicas(QS) == 2)
        names = {p.metadata.name for p in core.list_namespaced_pod(NS, label_selector=f"app={QS}").items}
        assert len(names) == 2
        assert victim not in names

    def test_a_change_within_the_delay_restarts_it(self, kube: RegionalKube, apps: k8s.AppsV1Api) -> None:
        apps.patch_namespaced_deployment_scale(QS, NS, {"spec": {"replicas": 0}})
        apps.patch_namespaced_deployment_scale(QS, NS, {"spec": {"replicas": 2}})
        time.sleep(DELAY * 1.5)  # the assertion is about nothing happening
        assert kube.ready_replicas(QS) == 2


class TestRequests:
    def test_bearer_token_is_recorded(self, kube: RegionalKube, apps: k8s.AppsV1Api) -> None:
        apps.read_namespaced_deployment_scale(QS, NS)
        recorded = [r for r in kube.requests if r.path.endswith(f"/deployments/{QS}/scale")]
        assert recorded
        assert recorded[-1].method == "GET"
        assert recorded[-1].headers["Authorization"] == f"Bearer {TOKEN}"
        assert recorded[-1].headers["authorization"].startswith("Bearer k8s-aws-v1.")

    def test_label_selector_is_recorded_as_query(self, kube: RegionalKube, core: k8s.CoreV1Api) -> None:
        pod_count(core, QS)
        assert kube.requests[-1].query == {"labelSelector": f"app={QS}"}

    def test_each_request_is_recorded_with_its_authorization_attributes(
        self, kube: RegionalKube, truth: GroundTruth, apps: k8s.AppsV1Api, core: k8s.CoreV1Api
    ) -> None:
        """What RBAC decides on: the verb from the method and the URL's shape, group, resource,
        subresource, namespace and name (Kubernetes' "Determine the request verb")."""
        since = time.time()
        apps.read_namespaced_deployment(QS, NS)
        apps.patch_namespaced_deployment_scale(QS, NS, {"spec": {"replicas": 2}})
        apps.replace_namespaced_deployment_scale(QS, NS, {"metadata": {"name": QS}, "spec": {"replicas": 2}})
        core.list_namespaced_pod(NS, label_selector=f"app={QS}")
        autoscaling = k8s.AutoscalingV2Api(apps.api_client)
        autoscaling.list_namespaced_horizontal_pod_autoscaler(NS)
        seen = [
            (e["verb"], e["api_group"], e["resource"], e["subresource"], e["namespace"], e["name"])
            for e in truth.events("kube.request", since)
        ]
        assert seen == [
            ("get", "apps", "deployments", None, NS, QS),
            ("patch", "apps", "deployments", "scale", NS, QS),
            ("update", "apps", "deployments", "scale", NS, QS),
            ("list", "", "pods", None, NS, None),
            ("list", "autoscaling", "horizontalpodautoscalers", None, NS, None),
        ]
        assert {e["cluster"] for e in truth.events("kube.request", since)} == {"chalk-test-use1"}


@pytest.mark.parametrize(
    ("method", "named", "watch", "verb"),
    [
        ("GET", True, False, "get"),
        ("HEAD", True, False, "get"),
        ("GET", False, False, "list"),
        ("GET", False, True, "watch"),
        ("GET", True, True, "watch"),
        ("POST", False, False, "create"),
        ("PUT", True, False, "update"),
        ("PATCH", True, False, "patch"),
        ("DELETE", True, False, "delete"),
        ("DELETE", False, False, "deletecollection"),
    ],
)
def test_request_verbs_follow_kubernetes(method: str, named: bool, watch: bool, verb: str) -> None:
    assert request_verb(method, named=named, watch=watch) == verb


def test_two_regions_start_and_stop_in_any_order() -> None:
    """kmock patches aiohttp's resolver per server; stop order must not matter."""
    east = RegionalKube(cluster_name="e", namespace=NS, deployments={QS: 1}, ready_delay=0.05).start()
    west = RegionalKube(cluster_name="w", namespace=NS, deployments={QS: 1}, ready_delay=0.05).start()
    assert east.url != west.url
    east.stop()
    api = api_client(west.url)
    assert k8s.AppsV1Api(api).read_namespaced_deployment(QS, NS).spec.replicas == 1
    api.close()
    west.stop()


class TestEksEndpoint:
    @pytest.fixture
    def aws(self, kube: RegionalKube) -> Iterator[tuple[str, str]]:
        """A sandbox AWS endpoint whose EKS cluster `name` in us-west-2 is `kube`."""
        name = f"chalk-{uuid.uuid4().hex[:8]}"
        app = SandboxAwsApp()
        sim = EksSim(
            app, clock=SandboxClock(), truth=GroundTruth(), endpoints={("us-west-2", name): kube.url}
        )
        server = AwsServer(app).start()
        sim.start(server.endpoint_url)
        yield server.endpoint_url, name
        sim.stop()
        server.stop()

    def eks(self, endpoint: str, region: str) -> Any:
        return boto3.client(
            "eks",
            region_name=region,
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="t",
        )

    def create(self, eks: Any, name: str) -> None:
        eks.create_cluster(
            name=name,
            roleArn="arn:aws:iam::123456789012:role/eks",
            resourcesVpcConfig={"subnetIds": ["subnet-1", "subnet-2"]},
        )

    def test_describe_cluster_points_at_the_emulator(self, aws: tuple[str, str], kube: RegionalKube) -> None:
        endpoint, name = aws
        eks = self.eks(endpoint, "us-west-2")
        self.create(eks, name)
        cluster = eks.describe_cluster(name=name)["cluster"]
        assert cluster["endpoint"] == kube.url
        assert cluster["status"] == "ACTIVE"
        assert not cluster.get("certificateAuthority", {}).get("data")
        api = api_client(cluster["endpoint"])
        assert k8s.AppsV1Api(api).read_namespaced_deployment(QS, NS).spec.replicas == 2
        api.close()

    def test_other_regions_and_clusters_are_untouched(self, aws: tuple[str, str], kube: RegionalKube) -> None:
        endpoint, name = aws
        other = self.eks(endpoint, "eu-west-1")
        self.create(other, name)
        assert other.describe_cluster(name=name)["cluster"]["endpoint"] != kube.url
        with pytest.raises(ClientError) as err:
            self.eks(endpoint, "us-west-2").describe_cluster(name=f"{name}-missing")
        assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
