"""The sandbox's HorizontalPodAutoscaler controller (autoscaling/v2, no metrics server), through the
kubernetes client as product code uses it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from sandbox.harness import poll
from sandbox.kube import RegionalKube
from sandbox.truth import GroundTruth

NS = "chalk"
QS = "chalk-query-server"
DELAY = 0.2


@pytest.fixture
def truth() -> GroundTruth:
    return GroundTruth()


@pytest.fixture
def kube(truth: GroundTruth) -> Iterator[RegionalKube]:
    k = RegionalKube(
        cluster_name="chalk-test-hpa",
        namespace=NS,
        deployments={QS: 2},
        ready_delay=DELAY,
        truth=truth,
        hpa_sync_s=0.02,
    ).start()
    yield k
    k.stop()


@pytest.fixture
def api(kube: RegionalKube) -> Iterator[k8s.ApiClient]:
    client = k8s.ApiClient(k8s.Configuration(host=kube.url))
    yield client
    client.close()


def hpa_body(
    name: str = "qs-hpa", *, target: str = QS, min_replicas: int | None = 2, max_replicas: int = 4
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
        "maxReplicas": max_replicas,
    }
    if min_replicas is not None:
        spec["minReplicas"] = min_replicas
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": spec,
    }


def replicas(api: k8s.ApiClient) -> tuple[int, int]:
    """(spec.replicas, status.readyReplicas) of the query-server Deployment."""
    dep = k8s.AppsV1Api(api).read_namespaced_deployment(QS, NS)
    return int(dep.spec.replicas), int(dep.status.ready_replicas or 0)


def status(api: k8s.ApiClient, name: str = "qs-hpa") -> Any:
    return k8s.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(name, NS).status


def conditions(api: k8s.ApiClient, name: str = "qs-hpa") -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status(api, name).conditions or []}


class TestBounds:
    def test_raising_min_replicas_scales_the_deployment(self, api: k8s.ApiClient, truth: GroundTruth) -> None:
        hpas = k8s.AutoscalingV2Api(api)
        hpas.create_namespaced_horizontal_pod_autoscaler(NS, hpa_body(min_replicas=2, max_replicas=4))
        hpas.patch_namespaced_horizontal_pod_autoscaler("qs-hpa", NS, {"spec": {"minReplicas": 3}})
        poll(lambda: replicas(api) == (3, 3), timeout=5, what="scaled to the HPA's new floor")
        poll(
            lambda: (status(api).current_replicas, status(api).desired_replicas) == (3, 3), what="HPA status"
        )
        assert status(api).last_scale_time is not None
        events = truth.events("kube.hpa_rescale")
        assert [(e["hpa"], e["deployment"], e["replicas_from"], e["replicas_to"]) for e in events] == [
            ("qs-hpa", QS, 2, 3)
        ]

    def test_replicas_patched_below_min_are_put_back(self, api: k8s.ApiClient) -> None:
        k8s.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(NS, hpa_body(min_replicas=2))
        k8s.AppsV1Api(api).patch_namespaced_deployment_scale(QS, NS, {"spec": {"replicas": 1}})
        poll(lambda: replicas(api)[0] == 2, timeout=5, what="spec.replicas back at minReplicas")
        poll(lambda: replicas(api) == (2, 2), timeout=5, what="ready again")

    def test_above_max_replicas_is_brought_down(self, api: k8s.ApiClient) -> None:
        k8s.AppsV1Api(api).patch_namespaced_deployment_scale(QS, NS, {"spec": {"replicas": 5}})
        k8s.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(
            NS, hpa_body(min_replicas=1, max_replicas=3)
        )
        poll(lambda: replicas(api) == (3, 3), timeout=5, what="brought to maxReplicas")
        assert conditions(api)["ScalingLimited"] == ("True", "TooManyReplicas")

    def test_within_bounds_without_metrics_replicas_are_left_alone(self, api: k8s.ApiClient) -> None:
        k8s.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(
            NS, hpa_body(min_replicas=1, max_replicas=4)
        )
        poll(
            lambda: conditions(api).get("ScalingActive") == ("False", "FailedGetResourceMetric"),
            what="no metrics",
        )
        assert (status(api).current_replicas, status(api).desired_replicas) == (2, 0)
        assert replicas(api) == (2, 2)

    def test_zero_replicas_disable_autoscaling(self, api: k8s.ApiClient) -> None:
        k8s.AppsV1Api(api).patch_namespaced_deployment_scale(QS, NS, {"spec": {"replicas": 0}})
        k8s.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(NS, hpa_body(min_replicas=2))
        poll(
            lambda: conditions(api).get("ScalingActive") == ("False", "ScalingDisabled"),
            what="scaling disabled",
        )
        assert replicas(api)[0] == 0
        assert status(api).current_replicas is None  # zero is omitted, as the API serves it

    def test_an_unknown_target_cannot_be_scaled(self, api: k8s.ApiClient) -> None:
        k8s.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(NS, hpa_body(target="nope"))
        poll(lambda: conditions(api).get("AbleToScale") == ("False", "FailedGetScale"), what="FailedGetScale")


class TestValidation:
    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (hpa_body(min_replicas=4, max_replicas=3), "must be greater than or equal to `minReplicas`"),
            (hpa_body(min_replicas=0), "spec.minReplicas: Invalid value: 0"),
            (hpa_body(max_replicas=0, min_replicas=None), "spec.maxReplicas: Invalid value: 0"),
            (hpa_body(target=""), "spec.scaleTargetRef.name: Required value"),
        ],
    )
    def test_what_the_api_server_refuses(
        self, api: k8s.ApiClient, body: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ApiException) as raised:
            k8s.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(NS, body)
        assert raised.value.status == 422
        assert message in str(raised.value.body)

    def test_a_patch_is_validated_too_and_creates_conflict(self, api: k8s.ApiClient) -> None:
        hpas = k8s.AutoscalingV2Api(api)
        hpas.create_namespaced_horizontal_pod_autoscaler(NS, hpa_body(min_replicas=2, max_replicas=4))
        with pytest.raises(ApiException) as raised:
            hpas.patch_namespaced_horizontal_pod_autoscaler("qs-hpa", NS, {"spec": {"minReplicas": 5}})
        assert raised.value.status == 422
        with pytest.raises(ApiException) as again:
            hpas.create_namespaced_horizontal_pod_autoscaler(NS, hpa_body())
        assert again.value.status == 409
        created = hpas.read_namespaced_horizontal_pod_autoscaler("qs-hpa", NS)
        assert (created.metadata.namespace, created.spec.min_replicas) == (NS, 2)

    def test_min_replicas_defaults_to_one(self, api: k8s.ApiClient) -> None:
        hpas = k8s.AutoscalingV2Api(api)
        hpas.create_namespaced_horizontal_pod_autoscaler(NS, hpa_body(min_replicas=None))
        assert hpas.read_namespaced_horizontal_pod_autoscaler("qs-hpa", NS).spec.min_replicas == 1
