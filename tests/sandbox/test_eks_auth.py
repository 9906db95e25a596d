"""EKS bearer tokens at the sandbox's Kubernetes API servers, sent by the real kubernetes client."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest
from botocore.auth import SIGV4_TIMESTAMP
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from sandbox.eks_auth import TokenVerifier
from sandbox.harness import AwsSandbox
from sandbox.kube import RegionalKube

CLUSTER = "chalk-prod-east"
NS = "chalk"
QS = "chalk-query-server"
CLUSTER_ID_HEADER = "x-k8s-aws-id"


@pytest.fixture(scope="module")
def aws() -> Iterator[AwsSandbox]:
    """The sandbox's STS endpoint: where clients presign GetCallerIdentity."""
    with AwsSandbox() as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def kube(aws: AwsSandbox) -> Iterator[RegionalKube]:
    verifier = TokenVerifier(
        CLUSTER,
        sts_hosts=[aws.endpoint.removeprefix("http://")],
        credentials={"testing": "testing"},
    )
    k = RegionalKube(
        cluster_name=CLUSTER, namespace=NS, deployments={QS: 1}, ready_delay=0.1, verify_token=verifier.verify
    ).start()
    yield k
    k.stop()


def presigned_token(aws: AwsSandbox, cluster: str) -> str:
    """What `aws eks get-token` makes: a presigned STS GetCallerIdentity URL whose signature covers
    the x-k8s-aws-id header, base64url-encoded behind `k8s-aws-v1.`."""
    sts = aws.client("sts")

    def sign_cluster_header(request: Any, **_: Any) -> None:
        request.headers[CLUSTER_ID_HEADER] = cluster

    sts.meta.events.register("before-sign.sts.GetCallerIdentity", sign_cluster_header)
    url = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=60, HttpMethod="GET")
    return _token(url)


class _SignedAt(SigV4QueryAuth):
    """Query-string SigV4 as botocore signs it, at a chosen moment instead of now."""

    def __init__(self, when: datetime) -> None:
        super().__init__(Credentials("testing", "testing"), "sts", "us-east-1", expires=60)
        self._when = when

    def add_auth(self, request: AWSRequest) -> None:
        request.context["timestamp"] = self._when.strftime(SIGV4_TIMESTAMP)
        self._modify_request_before_signing(request)
        canonical = self.canonical_request(request)
        self._inject_signature_to_request(
            request, self.signature(self.string_to_sign(request, canonical), request)
        )


def token_signed_at(aws: AwsSandbox, cluster: str, when: datetime) -> str:
    request = AWSRequest(
        method="GET",
        url=f"{aws.endpoint}/",
        params={"Action": "GetCallerIdentity", "Version": "2011-06-15"},
        headers={CLUSTER_ID_HEADER: cluster},
    )
    _SignedAt(when).add_auth(request)
    return _token(request.url)


def _token(url: str) -> str:
    return "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def apps(kube: RegionalKube, token: str) -> k8s.AppsV1Api:
    """What product code builds from DescribeCluster: the endpoint and a bearer token."""
    cfg = k8s.Configuration(host=kube.url)
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return k8s.AppsV1Api(k8s.ApiClient(cfg))


def status_of(kube: RegionalKube, token: str) -> tuple[int, str]:
    api = apps(kube, token)
    try:
        api.read_namespaced_deployment(QS, NS)
    except ApiException as exc:
        return int(exc.status), str(exc.body)
    finally:
        api.api_client.close()
    return 200, ""


class TestBearerToken:
    """aws-iam-authenticator `pkg/token/token.go` (Verify): a token is `k8s-aws-v1.` + a presigned
    STS GetCallerIdentity URL that signed `x-k8s-aws-id`; the server calls STS with its *own* cluster
    name in that header, so a token for another cluster fails the signature, and the URL expires
    15 minutes after X-Amz-Date ("presigned STS urls are valid for 15 minutes"). The API server
    answers an unauthenticated request 401 (Kubernetes "Authenticating": "401 Unauthorized")."""

    def test_a_token_presigned_for_this_cluster_is_accepted(
        self, aws: AwsSandbox, kube: RegionalKube
    ) -> None:
        assert status_of(kube, presigned_token(aws, CLUSTER)) == (200, "")

    @pytest.mark.parametrize(
        "token",
        [
            "not-a-token",
            "k8s-aws-v1.",
            "k8s-aws-v1.aHR0cHM6Ly9zdHMuYW1hem9uYXdzLmNvbS8_QWN0aW9uPUdldENhbGxlcklkZW50aXR5",
        ],
    )
    def test_any_other_string_is_401(self, kube: RegionalKube, token: str) -> None:
        status, body = status_of(kube, token)
        assert status == 401
        assert "Unauthorized" in body

    def test_a_token_for_another_cluster_is_401(self, aws: AwsSandbox, kube: RegionalKube) -> None:
        status, body = status_of(kube, presigned_token(aws, "chalk-prod-west"))
        assert status == 401
        assert "SignatureDoesNotMatch" in body

    def test_an_expired_token_is_401(self, aws: AwsSandbox, kube: RegionalKube) -> None:
        fresh = token_signed_at(aws, CLUSTER, datetime.now(UTC) - timedelta(minutes=1))
        assert status_of(kube, fresh) == (200, "")  # the hand-signed form is a valid token ...
        stale = token_signed_at(aws, CLUSTER, datetime.now(UTC) - timedelta(minutes=16))
        status, body = status_of(kube, stale)
        assert status == 401  # ... until 15 minutes after its X-Amz-Date
        assert "expired" in body

    def test_a_token_signed_with_other_credentials_is_401(self, aws: AwsSandbox, kube: RegionalKube) -> None:
        request = AWSRequest(
            method="GET",
            url=f"{aws.endpoint}/",
            params={"Action": "GetCallerIdentity", "Version": "2011-06-15"},
            headers={CLUSTER_ID_HEADER: CLUSTER},
        )
        signer = SigV4QueryAuth(Credentials("testing", "not-the-secret"), "sts", "us-east-1", expires=60)
        signer.add_auth(request)
        assert status_of(kube, _token(request.url))[0] == 401
