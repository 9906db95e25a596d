"""Region-scoped clients: retry/timeouts, assumed roles, endpoint override, EKS tokens, kube client."""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlparse

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from botocore.exceptions import ConnectionClosedError
from botocore.exceptions import EndpointConnectionError

from chalkdr.classify import classify_aws_error
from chalkdr.classify import classify_kube_error
from chalkdr.clients import AwsClients
from chalkdr.clients import EksKubeClient
from chalkdr.clients import EksToken
from chalkdr.clients import make_eks_token
from chalkdr.errors import EksEndpointError
from chalkdr.errors import PermanentAwsError
from chalkdr.errors import TransientAwsError
from chalkdr.errors import TransientKubeError
from chalkdr.settings import ClientSettings
from sandbox.harness import AwsSandbox
from sandbox.harness import poll


def _decode(token: str) -> str:
    assert token.startswith("k8s-aws-v1.")
    body = token.removeprefix("k8s-aws-v1.")
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


class TestAwsClients:
    def test_retry_mode_and_timeouts_are_applied(self) -> None:
        clients = AwsClients(
            settings=ClientSettings(retry_mode="adaptive", max_attempts=7, read_timeout_s=4.5)
        )
        cfg = clients.dynamodb("us-west-2").meta.config
        assert cfg.retries["mode"] == "adaptive" and cfg.retries["total_max_attempts"] == 7
        assert cfg.read_timeout == 4.5 and cfg.connect_timeout == 3.0
        assert clients.dynamodb("us-west-2").meta.region_name == "us-west-2"

    def test_clients_are_cached_per_service_and_region(self) -> None:
        clients = AwsClients()
        assert clients.dynamodb("us-east-1") is clients.dynamodb("us-east-1")
        assert clients.dynamodb("us-east-1") is not clients.dynamodb("us-west-2")

    def test_route53_uses_the_global_control_plane_region(self) -> None:
        # botocore names Route 53's partition-global endpoint "aws-global" (served from us-east-1).
        assert AwsClients().route53().meta.region_name == "aws-global"

    @pytest.mark.usefixtures("moto_inprocess")
    def test_assumes_the_region_role(self) -> None:
        role = boto3.client("iam").create_role(RoleName="chalk-dr-operator", AssumeRolePolicyDocument="{}")
        clients = AwsClients(role_arns={"us-west-2": role["Role"]["Arn"]}, role_session_name="chalk-dr-test")
        west = clients.sts("us-west-2").get_caller_identity()["Arn"]
        east = clients.sts("us-east-1").get_caller_identity()["Arn"]
        assert ":assumed-role/chalk-dr-operator/chalk-dr-test" in west
        assert "assumed-role" not in east

    def test_aws_endpoint_url_is_honoured(self, moto_server: str) -> None:
        clients = AwsClients()
        assert clients.dynamodb("us-west-2").meta.endpoint_url == moto_server
        assert clients.dynamodb("us-west-2").list_tables()["TableNames"] == []


class TestEksToken:
    @pytest.mark.usefixtures("moto_inprocess")
    def test_token_structure(self) -> None:
        token = make_eks_token(AwsClients().sts("us-west-2"), "chalk-prod-west")
        url = urlparse(_decode(token.value))
        q = parse_qs(url.query)
        assert url.scheme == "https" and url.hostname == "sts.us-west-2.amazonaws.com"
        assert q["Action"] == ["GetCallerIdentity"] and q["Version"] == ["2011-06-15"]
        assert q["X-Amz-Expires"] == ["60"]
        assert q["X-Amz-SignedHeaders"] == ["host;x-k8s-aws-id"]
        assert "/us-west-2/sts/aws4_request" in q["X-Amz-Credential"][0]
        assert "=" not in token.value

    @pytest.mark.usefixtures("moto_inprocess")
    def test_token_is_accepted_by_sts(self) -> None:
        token = make_eks_token(AwsClients().sts("us-east-1"), "chalk-prod-east")
        resp = requests.get(_decode(token.value), headers={"x-k8s-aws-id": "chalk-prod-east"}, timeout=5)
        assert resp.status_code == 200
        assert "<GetCallerIdentityResult>" in resp.text and "<Account>123456789012</Account>" in resp.text

    @pytest.mark.usefixtures("moto_inprocess")
    def test_one_sts_client_signs_for_several_clusters(self) -> None:
        sts = AwsClients().sts("us-east-1")
        a, b = make_eks_token(sts, "a"), make_eks_token(sts, "b")
        assert a.value != b.value


class TestKubeClient:
    def test_reads_a_deployment_with_an_eks_bearer_token(self, kube_emulators: dict[str, Any]) -> None:
        kube = kube_emulators["us-east-1"]
        with _moto_sts() as sts:
            client = EksKubeClient(
                cluster_name="chalk-us-east-1",
                endpoint=kube.url + "/",  # moto's endpoints end with '/'
                ca_data_b64=None,
                token_factory=lambda: make_eks_token(sts, "chalk-us-east-1"),
                settings=ClientSettings(),
            )
            dep = client.apps().read_namespaced_deployment(
                "chalk-query-server", "chalk", _request_timeout=client.request_timeout
            )
        assert dep.spec.replicas == 2
        auths = [r.headers.get("Authorization", "") for r in kube.requests]
        assert auths and all(a.startswith("Bearer k8s-aws-v1.") for a in auths)

    def test_token_is_refreshed_before_it_expires(self, kube_emulators: dict[str, Any]) -> None:
        kube = kube_emulators["us-west-2"]
        made: list[int] = []

        def factory() -> EksToken:
            made.append(len(made))
            # The first token was signed 15 minutes ago (past the 14-minute refresh age), the
            # second one just now: ages relative to "now", whatever the machine's uptime.
            age_s = 15 * 60 if len(made) == 1 else 0.0
            return EksToken(f"k8s-aws-v1.token{len(made)}", signed_at=time.monotonic() - age_s)

        client = EksKubeClient(
            cluster_name="c",
            endpoint=kube.url,
            ca_data_b64=None,
            token_factory=factory,
            settings=ClientSettings(),
        )
        client.apps().read_namespaced_deployment("chalk-query-server", "chalk")
        client.apps().read_namespaced_deployment("chalk-query-server", "chalk")
        assert len(made) == 2  # the first token was stale, the second one is reused
        assert kube.requests[-1].headers["Authorization"] == "Bearer k8s-aws-v1.token2"

    def test_https_endpoint_needs_a_pem_ca(self) -> None:
        placeholder = base64.b64encode(b"not a certificate").decode()
        with pytest.raises(EksEndpointError, match="not a PEM certificate"):
            EksKubeClient(
                cluster_name="c",
                endpoint="https://abc.gr7.us-east-1.eks.amazonaws.com",
                ca_data_b64=placeholder,
                token_factory=lambda: EksToken("k8s-aws-v1.x", 0.0),
                settings=ClientSettings(),
            )


class _moto_sts:
    def __enter__(self) -> Any:
        from moto import mock_aws

        self._mock = mock_aws()
        self._mock.start()
        return AwsClients().sts("us-east-1")

    def __exit__(self, *exc: object) -> None:
        self._mock.stop()


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_client_error("ThrottlingException", 400), TransientAwsError),
        (_client_error("Throttling", 400), TransientAwsError),
        (_client_error("InternalFailure", 500), TransientAwsError),
        (_client_error("Whatever", 503), TransientAwsError),
        (EndpointConnectionError(endpoint_url="https://x"), TransientAwsError),
        (_client_error("AccessDenied", 403), PermanentAwsError),
        (_client_error("ValidationException", 400), PermanentAwsError),
        (_client_error("ResourceNotFoundException", 400), PermanentAwsError),
    ],
)
def test_aws_errors_are_classified(exc: Exception, expected: type) -> None:
    err = classify_aws_error(exc, service="dynamodb", operation="UpdateTable", resource="table/x")
    assert type(err) is expected
    assert "dynamodb:UpdateTable on table/x failed" in str(err)


def test_kube_errors_are_classified() -> None:
    class ApiErr(Exception):
        def __init__(self, status: int) -> None:
            self.status, self.reason = status, "r"

    assert isinstance(classify_kube_error(ApiErr(503), operation="patch", resource="d"), TransientKubeError)
    assert not isinstance(
        classify_kube_error(ApiErr(403), operation="patch", resource="d"), TransientKubeError
    )


def test_an_unreachable_region_is_not_asked_again_until_its_cooldown(monkeypatch: pytest.MonkeyPatch) -> None:
    """After one call's retries all end in a connection error, further calls to that region fail
    at once (no request sent) while other regions and Route 53 are still asked; after the
    cooldown one call goes through again and a success closes the breaker."""
    sent: list[str] = []

    def count(request: Any, **_: Any) -> None:
        sent.append(request.url)

    with AwsSandbox() as aws:
        monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
        settings = ClientSettings(max_attempts=2, unreachable_cooldown_s=1.0)
        clients = AwsClients(settings=settings, event_hooks=[("before-send", count)])
        aws.set_unreachable("us-east-1")
        with pytest.raises(ConnectionClosedError):
            clients.dynamodb("us-east-1").list_tables()
        assert len(sent) == 2  # botocore's own attempts
        assert set(clients.unreachable.down()) == {"us-east-1"}
        with pytest.raises(EndpointConnectionError, match="us-east-1 unreachable"):
            clients.rds("us-east-1").describe_db_clusters()
        assert len(sent) == 2  # failed at once: nothing was sent
        clients.dynamodb("us-west-2").list_tables()  # another region is asked as before
        assert len(sent) == 3
        aws.set_unreachable("us-east-1", False)
        poll(
            lambda: _answers(clients), timeout=10, what="us-east-1 asked again after the cooldown", every=0.1
        )
        assert clients.unreachable.down() == {}


def _answers(clients: AwsClients) -> bool:
    try:
        clients.dynamodb("us-east-1").list_tables()
    except EndpointConnectionError:
        return False
    return True


@pytest.mark.usefixtures("prefect_backend")
def test_a_topology_can_name_an_aws_credentials_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """The base session comes from the prefect-aws AwsCredentials block the topology names: the
    requests are signed with its key, not the worker environment's."""
    from pathlib import Path

    from prefect_aws import AwsCredentials

    from chalkdr.clients import CredentialsBlockError
    from chalkdr.topology import load_topology

    AwsCredentials(
        aws_access_key_id="AKIACHALKDRBLOCK01", aws_secret_access_key="block-secret", region_name="us-east-1"
    ).save("chalkdr-test-credentials", overwrite=True)
    example = load_topology(Path(__file__).resolve().parents[2] / "deployments" / "topology.example.yaml")
    topology = example.model_copy(update={"aws_credentials_block": "chalkdr-test-credentials"})
    signed: list[Any] = []
    with AwsSandbox() as aws:
        monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
        clients = AwsClients.for_topology(topology)
        sts = clients.client("sts", "eu-central-1")  # a region without a role_arn: the base session
        sts.meta.events.register(
            "before-send", lambda request, **_: signed.append(request.headers["Authorization"])
        )
        sts.get_caller_identity()
    assert signed, "no request was signed"
    header = signed[0] if isinstance(signed[0], str) else bytes(signed[0]).decode()
    assert "Credential=AKIACHALKDRBLOCK01/" in header, header

    missing = example.model_copy(update={"aws_credentials_block": "no-such-block"})
    with pytest.raises(CredentialsBlockError, match="no AwsCredentials block named 'no-such-block'"):
        AwsClients.for_topology(missing)
