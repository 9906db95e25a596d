"""Region-scoped AWS and Kubernetes clients, made in one place.

Every boto3 client in chalk-dr comes from `AwsClients`: one base session, an optional role per
region (assumed lazily, refreshed by botocore before it expires), botocore's `standard` or
`adaptive` retry mode, explicit connect/read timeouts, and Route 53 calls paced under the
account's API rate (chalkdr.ratelimit). `AWS_ENDPOINT_URL` is honoured by
boto3 itself, which is the only way the sandbox is reached.

Kubernetes clients are built from `eks.describe_cluster` (endpoint + CA) and an EKS bearer
token made from a presigned STS GetCallerIdentity URL, exactly what `aws eks get-token` does,
without a kubeconfig or the aws CLI.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import AssumeRoleCredentialFetcher
from botocore.credentials import DeferredRefreshableCredentials
from botocore.exceptions import ConnectionClosedError
from botocore.exceptions import ConnectTimeoutError
from botocore.exceptions import EndpointConnectionError
from botocore.exceptions import ReadTimeoutError
from kubernetes import client as k8s

from chalkdr.errors import ChalkDrError
from chalkdr.errors import EksEndpointError
from chalkdr.ratelimit import ROUTE53_PACE
from chalkdr.ratelimit import Pacer
from chalkdr.settings import DEFAULT_CLIENT_SETTINGS
from chalkdr.settings import ClientSettings

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_eks import EKSClient
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client
    from mypy_boto3_fis import FISClient
    from mypy_boto3_kafka import KafkaClient
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_resourcegroupstaggingapi import ResourceGroupsTaggingAPIClient
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_route53_recovery_cluster import Route53RecoveryClusterClient
    from mypy_boto3_route53_recovery_control_config import Route53RecoveryControlConfigClient
    from mypy_boto3_sts import STSClient

    from chalkdr.topology import Topology

__all__ = [
    "ARC_CONTROL_REGION",
    "ROUTE53_CONTROL_REGION",
    "AwsClients",
    "CredentialsBlockError",
    "EksKubeClient",
    "EksToken",
    "UnreachableRegions",
    "aws_credentials_session",
    "make_eks_token",
]

# Route 53's control plane (record changes, health-check config) is served from us-east-1.
ROUTE53_CONTROL_REGION = "us-east-1"
# ARC's routing-control configuration API (clusters, control panels, routing controls) is served
# from us-west-2 only; routing-control states are read and set on the cluster's own endpoints.
ARC_CONTROL_REGION = "us-west-2"
K8S_AWS_ID_HEADER = "x-k8s-aws-id"
EKS_TOKEN_PREFIX = "k8s-aws-v1."
# The presigned URL itself says X-Amz-Expires=60, but EKS accepts the token for 15 minutes
# from its signing time (aws-iam-authenticator's rule), hence refresh before that.
EKS_TOKEN_VALIDITY_S = 15 * 60


@dataclass(frozen=True)
class EksToken:
    value: str
    signed_at: float  # time.monotonic() when made

    def fresh(self, refresh_after_s: float) -> bool:
        return time.monotonic() - self.signed_at < refresh_after_s


def _retrieve_k8s_aws_id(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    if K8S_AWS_ID_HEADER in params:
        context[K8S_AWS_ID_HEADER] = params.pop(K8S_AWS_ID_HEADER)


def _inject_k8s_aws_id_header(request: Any, **_: Any) -> None:
    if K8S_AWS_ID_HEADER in request.context:
        request.headers[K8S_AWS_ID_HEADER] = request.context[K8S_AWS_ID_HEADER]


def make_eks_token(sts: STSClient, cluster_name: str) -> EksToken:
    """`k8s-aws-v1.` + base64url(presigned GetCallerIdentity URL signed with x-k8s-aws-id).

    The cluster name travels through the request context, so one STS client can sign tokens
    for several clusters from several threads.
    """
    events = sts.meta.events
    events.register(
        "provide-client-params.sts.GetCallerIdentity", _retrieve_k8s_aws_id, unique_id="chalkdr-k8s-id"
    )
    events.register(
        "before-sign.sts.GetCallerIdentity", _inject_k8s_aws_id_header, unique_id="chalkdr-k8s-hdr"
    )
    url = sts.generate_presigned_url(
        "get_caller_identity",
        Params={K8S_AWS_ID_HEADER: cluster_name},
        ExpiresIn=60,
        HttpMethod="GET",
    )
    encoded = base64.urlsafe_b64encode(url.encode("utf-8")).decode("ascii").rstrip("=")
    return EksToken(EKS_TOKEN_PREFIX + encoded, time.monotonic())


class EksKubeClient:
    """A Kubernetes ApiClient for one EKS cluster whose bearer token renews itself.

    The kubernetes client calls `refresh_api_key_hook` before every request; the hook re-signs
    the token when it is older than the configured refresh age, so long drills never hit 401.
    """

    def __init__(
        self,
        *,
        cluster_name: str,
        endpoint: str,
        ca_data_b64: str | None,
        token_factory: Callable[[], EksToken],
        settings: ClientSettings,
    ) -> None:
        self.cluster_name = cluster_name
        self._token_factory = token_factory
        self._settings = settings
        self._lock = threading.Lock()
        self._token = token_factory()
        cfg = k8s.Configuration(host=endpoint.rstrip("/"))
        if endpoint.startswith("https://"):
            cfg.ca_cert_data = _pem_from_b64(cluster_name, ca_data_b64)
        elif not endpoint.startswith("http://"):
            raise EksEndpointError(f"EKS cluster {cluster_name}: endpoint {endpoint!r} is not an http(s) URL")
        cfg.api_key = {"authorization": self._token.value}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        cfg.refresh_api_key_hook = self._refresh  # type: ignore[assignment]
        cfg.retries = 0  # retries are decided by our own classification, not urllib3's
        self.configuration = cfg
        self.api_client = k8s.ApiClient(cfg)

    def _refresh(self, cfg: k8s.Configuration) -> None:
        with self._lock:
            if not self._token.fresh(self._settings.eks_token_refresh_s):
                self._token = self._token_factory()
            cfg.api_key["authorization"] = self._token.value

    @property
    def request_timeout(self) -> tuple[float, float]:
        """Pass as `_request_timeout=` on every call: the only real deadline on a sync call."""
        return (self._settings.connect_timeout_s, self._settings.read_timeout_s)

    def apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self.api_client)

    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api_client)

    def autoscaling(self) -> k8s.AutoscalingV2Api:
        return k8s.AutoscalingV2Api(self.api_client)

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]


def _pem_from_b64(cluster_name: str, ca_data_b64: str | None) -> str:
    if not ca_data_b64:
        raise EksEndpointError(f"EKS cluster {cluster_name}: https endpoint but no certificateAuthority data")
    try:
        pem = base64.b64decode(ca_data_b64, validate=True).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise EksEndpointError(
            f"EKS cluster {cluster_name}: certificateAuthority data is not base64"
        ) from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise EksEndpointError(
            f"EKS cluster {cluster_name}: certificateAuthority data is not a PEM certificate"
        )
    return pem


_CONNECTION_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)


class UnreachableRegions:
    """Regions whose AWS API did not answer, remembered for a cooldown (a circuit breaker).

    During a regional outage every call to that region's API fails only after botocore's whole
    retry ladder (`max_attempts`, exponential backoff): seconds per call, for every call a
    failover's assessment, lags and routing reads make. Once one call's retries all ended in a
    connection error, further calls to the same API key fail at once (EndpointConnectionError,
    classified transient like the real one) until `cooldown_s` has passed; then one call is
    let through again (and a success closes the breaker). The key is the signing region, except
    for Route 53, whose control plane is one global endpoint: it has a key of its own.
    """

    def __init__(self, cooldown_s: float) -> None:
        self.cooldown_s = cooldown_s
        self._lock = threading.Lock()
        self._down: dict[str, float] = {}  # key -> monotonic time it was found unreachable

    @staticmethod
    def key(service: str, region: str) -> str:
        return "route53" if service == "route53" else region

    def down(self) -> dict[str, float]:
        """Each key found unreachable and how long ago (seconds)."""
        now = time.monotonic()
        with self._lock:
            return {k: now - at for k, at in self._down.items() if now - at < self.cooldown_s}

    def gate(self, key: str, endpoint: str) -> None:
        if self.cooldown_s <= 0:
            return
        with self._lock:
            at = self._down.get(key)
            if at is None:
                return
            age = time.monotonic() - at
            if age >= self.cooldown_s:
                del self._down[key]  # half-open: this call tries again
                return
        raise EndpointConnectionError(
            endpoint_url=(
                f"{endpoint} ({key} unreachable {age:.1f} s ago; not asked again for {self.cooldown_s:g} s)"
            )
        )

    def trip(self, key: str, exception: BaseException | None) -> None:
        if self.cooldown_s > 0 and isinstance(exception, _CONNECTION_ERRORS):
            with self._lock:
                self._down[key] = time.monotonic()

    def clear(self, key: str) -> None:
        with self._lock:
            self._down.pop(key, None)

    def register(self, client: Any, service: str, region: str) -> None:
        key = self.key(service, region)
        endpoint = str(client.meta.endpoint_url)
        events = client.meta.events
        events.register("before-call", lambda **_: self.gate(key, endpoint))
        events.register("after-call-error", lambda exception=None, **_: self.trip(key, exception))
        events.register("after-call", lambda **_: self.clear(key))


class CredentialsBlockError(ChalkDrError):
    """The topology's aws_credentials_block could not be loaded."""


def aws_credentials_session(block_name: str) -> boto3.Session:
    """The boto3 session of the prefect-aws `AwsCredentials` block `block_name` (its keys, session
    token, or profile, and region), as prefect-aws's own tasks make it (`get_boto3_session`).

    The Prefect way to hand a worker AWS credentials without putting them in its environment:
    the block's secret fields are stored encrypted by the Prefect server and never logged.
    """
    from prefect_aws import AwsCredentials

    try:
        # `load` dispatches to its async twin inside an event loop; here it is called sync.
        block: Any = AwsCredentials.load(block_name, _sync=True)  # type: ignore[call-arg]
    except ValueError as exc:  # Block.load: "Unable to find block document named ..."
        raise CredentialsBlockError(
            f"aws_credentials_block: no AwsCredentials block named {block_name!r} on the Prefect server "
            f"({exc}); create it in the UI (Blocks -> AWS Credentials) or with prefect-aws"
        ) from exc
    session: boto3.Session = block.get_boto3_session()
    return session


class AwsClients:
    """Clients per (service, region), from one session, thread-safe, optionally via a role.

    Tasks receive an AwsClients (or make one from the topology) rather than calling
    `boto3.client` themselves, so credentials, retries and timeouts are decided here once.
    """

    def __init__(
        self,
        *,
        settings: ClientSettings = DEFAULT_CLIENT_SETTINGS,
        session: boto3.Session | None = None,
        role_arns: Mapping[str, str] | None = None,
        role_session_name: str = "chalk-dr",
        event_hooks: Sequence[tuple[str, Callable[..., Any]]] = (),
    ) -> None:
        """`event_hooks`: (botocore event name, handler) pairs registered on every client made here.

        For observing or shaping calls without patching product code: count calls (tests,
        benchmarks: `("before-call", handler)`), or inject a fault at the transport
        (`("before-send.dynamodb.UpdateTable", handler)` returning an AWSResponse) so that
        botocore's own retry logic is what handles it.
        """
        self.settings = settings
        self._event_hooks = tuple(event_hooks)
        self._base = session or boto3.Session()
        self._roles = dict(role_arns or {})
        self._role_session_name = role_session_name
        self._lock = threading.RLock()
        self._sessions: dict[str, boto3.Session] = {}
        self._clients: dict[tuple[str, str], Any] = {}
        self._kube: dict[tuple[str, str], EksKubeClient] = {}
        # Route 53's API rate is per account, whatever region a client names (chalkdr.ratelimit).
        operations = ROUTE53_PACE[1]
        self.route53_pacer = Pacer((settings.route53_requests_per_s, settings.route53_burst), operations)
        self.unreachable = UnreachableRegions(settings.unreachable_cooldown_s)

    @classmethod
    def for_topology(
        cls, topology: Topology, *, settings: ClientSettings = DEFAULT_CLIENT_SETTINGS
    ) -> AwsClients:
        roles = {r.aws_region: r.role_arn for r in topology.regions if r.role_arn}
        session = None
        if topology.aws_credentials_block is not None:
            session = aws_credentials_session(topology.aws_credentials_block)
        return cls(
            settings=settings,
            session=session,
            role_arns=roles,
            role_session_name=f"chalk-dr-{topology.environment}",
        )

    def config(self, region: str) -> Config:
        s = self.settings
        return Config(
            region_name=region,
            retries={"mode": s.retry_mode, "total_max_attempts": s.max_attempts},
            connect_timeout=s.connect_timeout_s,
            read_timeout=s.read_timeout_s,
            user_agent_extra="chalk-dr",
        )

    def session(self, region: str) -> boto3.Session:
        """The base session, or one whose credentials come from this region's assumed role."""
        role = self._roles.get(region)
        if role is None:
            return self._base
        with self._lock:
            if region not in self._sessions:
                base_bc = self._base._session  # botocore session behind boto3's

                def creator(service: str, **kwargs: Any) -> Any:
                    kwargs.setdefault("region_name", region)
                    return base_bc.create_client(service, **kwargs)

                fetcher = AssumeRoleCredentialFetcher(
                    client_creator=creator,
                    source_credentials=self._base.get_credentials(),
                    role_arn=role,
                    extra_args={"RoleSessionName": self._role_session_name},
                )
                bc = botocore.session.Session()
                # botocore has no public setter for refreshable credentials on a session.
                bc._credentials = DeferredRefreshableCredentials(  # type: ignore[attr-defined]
                    method="assume-role", refresh_using=fetcher.fetch_credentials
                )
                self._sessions[region] = boto3.Session(botocore_session=bc, region_name=region)
            return self._sessions[region]

    def client(self, service: str, region: str, endpoint_url: str | None = None) -> Any:
        key = (service if endpoint_url is None else f"{service}@{endpoint_url}", region)
        with self._lock:
            if key not in self._clients:
                client = self.session(region).client(
                    service,  # type: ignore[call-overload]
                    region_name=region,
                    config=self.config(region),
                    endpoint_url=endpoint_url,
                )
                if service == "route53":
                    client.meta.events.register("before-call.route53", self.route53_pacer)
                self.unreachable.register(client, service, region)
                for event, handler in self._event_hooks:
                    client.meta.events.register(event, handler)
                self._clients[key] = client
            return self._clients[key]

    # Typed accessors: the services chalk-dr touches.
    def route53(self) -> Route53Client:
        return self.client("route53", ROUTE53_CONTROL_REGION)  # type: ignore[no-any-return]

    def arc_config(self) -> Route53RecoveryControlConfigClient:
        """ARC's routing-control configuration API (us-west-2 only)."""
        return self.client("route53-recovery-control-config", ARC_CONTROL_REGION)  # type: ignore[no-any-return]

    def arc_cluster(self, endpoint: str, region: str) -> Route53RecoveryClusterClient:
        """One of an ARC cluster's regional data-plane endpoints, as DescribeCluster lists them
        (ClusterEndpoints: Endpoint and Region); AWS: sign with that endpoint's region."""
        return self.client("route53-recovery-cluster", region, endpoint_url=endpoint)  # type: ignore[no-any-return]

    def dynamodb(self, region: str) -> DynamoDBClient:
        return self.client("dynamodb", region)  # type: ignore[no-any-return]

    def cloudwatch(self, region: str) -> CloudWatchClient:
        return self.client("cloudwatch", region)  # type: ignore[no-any-return]

    def kafka(self, region: str) -> KafkaClient:
        return self.client("kafka", region)  # type: ignore[no-any-return]

    def rds(self, region: str) -> RDSClient:
        return self.client("rds", region)  # type: ignore[no-any-return]

    def fis(self, region: str) -> FISClient:
        return self.client("fis", region)  # type: ignore[no-any-return]

    def elbv2(self, region: str) -> ElasticLoadBalancingv2Client:
        return self.client("elbv2", region)  # type: ignore[no-any-return]

    def eks(self, region: str) -> EKSClient:
        return self.client("eks", region)  # type: ignore[no-any-return]

    def sts(self, region: str) -> STSClient:
        return self.client("sts", region)  # type: ignore[no-any-return]

    def tagging(self, region: str) -> ResourceGroupsTaggingAPIClient:
        return self.client("resourcegroupstaggingapi", region)  # type: ignore[no-any-return]

    def kube(self, cluster_name: str, region: str) -> EksKubeClient:
        """A Kubernetes client for an EKS cluster, from describe_cluster and an STS token."""
        key = (cluster_name, region)
        with self._lock:
            if key not in self._kube:
                cluster = self.eks(region).describe_cluster(name=cluster_name)["cluster"]
                endpoint = cluster.get("endpoint")
                if not endpoint:
                    raise EksEndpointError(f"EKS cluster {cluster_name} in {region} has no endpoint yet")
                sts = self.sts(region)
                self._kube[key] = EksKubeClient(
                    cluster_name=cluster_name,
                    endpoint=endpoint,
                    ca_data_b64=cluster.get("certificateAuthority", {}).get("data"),
                    token_factory=lambda: make_eks_token(sts, cluster_name),
                    settings=self.settings,
                )
            return self._kube[key]
