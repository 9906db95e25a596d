"""The topology of one multi-region Chalk environment, loaded from YAML and validated up front.

Every flow starts from a Topology. Validation happens entirely at load time and never touches
AWS: a bad file fails with one line per problem (`file: field.path: reason`), all problems at
once, so an operator fixes the file in one pass instead of replaying a drill to find the next
typo. Secrets are never in the file, only references to where they live, and only to where
chalk-dr's own secrets live (`CHALK_DR_*` environment variables, `chalk-*` Prefect Secret
blocks): a topology must not be able to name the worker's AWS keys or Prefect API key and have
them sent to Chalk. For the same reason every URL that receives a credential or a token is
https unless it is this machine (loopback). A YAML mapping with the same key twice is an error
(PyYAML would silently keep the last one), and so is more than one `primary: true`.

The `deploy:` section is the server side of the push path: the repositories this environment's
feature code may be cloned from and its protected branch. A push event names a repository and a
sha; the flow applies it only when this section allows both.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Hashable
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from typing import Any
from typing import Literal

import yaml
from pydantic import AfterValidator
from pydantic import AnyHttpUrl
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationError
from pydantic import ValidationInfo
from pydantic import field_validator
from pydantic import model_validator
from pydantic_core import PydanticCustomError

from chalkdr.deploy import PushRefused
from chalkdr.deploy import Repository
from chalkdr.deploy import allowed_repositories
from chalkdr.deploy import parse_repository
from chalkdr.errors import TopologyError
from chalkdr.errors import TopologyProblem

__all__ = [
    "ALB_ALIAS_TTL_S",
    "ROUTE53_CHECKER_REGIONS",
    "SECRET_BLOCK_PREFIX",
    "SECRET_ENV_PREFIX",
    "AdoptConfig",
    "AuroraConfig",
    "AuroraRegionConfig",
    "ChalkEnvConfig",
    "DeployConfig",
    "DnsConfig",
    "EksConfig",
    "Guards",
    "HealthCheckConfig",
    "MskConfig",
    "ProbeConfig",
    "RegionConfig",
    "Route53Config",
    "RoutingMode",
    "SecretRef",
    "Slo",
    "Topology",
    "load_topology",
    "parse_topology",
    "topology_file_in",
]

# Where Route 53 runs health checkers (the API's HealthCheckRegion enum).
ROUTE53_CHECKER_REGIONS = frozenset(
    {
        "us-east-1",
        "us-west-1",
        "us-west-2",
        "eu-west-1",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-northeast-1",
        "sa-east-1",
    }
)
_REGION_RE = re.compile(
    r"^[a-z]{2}(-gov|-iso[a-z]?)?-(north|south|east|west|central|northeast|southeast|northwest|southwest)-\d$"
)
_ENV_VAR_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_BLOCK_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_DNS_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\.?$")
_ALB_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:elasticloadbalancing:(?P<region>[a-z0-9-]+):\d{12}:loadbalancer/app/[A-Za-z0-9-]+/[0-9a-f]+$"
)
_ALB_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?$")
_MSK_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:kafka:(?P<region>[a-z0-9-]+):\d{12}:cluster/[A-Za-z0-9-]+(/[A-Za-z0-9-]+)?$"
)
_REPLICATOR_NAME_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,127}$")
_ARC_NAME_RE = re.compile(r"^\S{1,64}$")  # ARC names: 1-64 non-whitespace characters (the API's pattern)
_HEALTH_CHECK_ID_RE = re.compile(r"^[0-9A-Za-z-]{1,64}$")  # Route 53 HealthCheckId: at most 64 characters
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_K8S_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SNS_ARN_RE = re.compile(r"^arn:aws[a-z-]*:sns:(?P<region>[a-z0-9-]+):\d{12}:[A-Za-z0-9_-]{1,256}$")
_FEATURE_RE = r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+$"
# Route 53 answers an alias to a load balancer with the ELB's own TTL (60 s); an alias has none.
ALB_ALIAS_TTL_S = 60
# Where a topology's secret references may point: chalk-dr's own variables and blocks only.
SECRET_ENV_PREFIX = "CHALK_DR_"
SECRET_BLOCK_PREFIX = "chalk-"
# git check-ref-format, in short: no "..", "//", "@{", control or special characters, no leading
# "-" or "/", no trailing "/", "." or ".lock".
_BRANCH_RE = re.compile(r"^(?![-/])(?!.*(\.\.|//|@\{|/\.))[A-Za-z0-9._/-]+(?<![/.])(?<!\.lock)$")


def _error(reason: str) -> PydanticCustomError:
    return PydanticCustomError("topology", reason)


class _Strict(BaseModel):
    """Unknown fields are errors: a misspelt key must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class RoutingMode(StrEnum):
    FAILOVER = "failover"  # active-passive: PRIMARY/SECONDARY records
    WEIGHTED = "weighted"  # active-active: weighted records
    LATENCY = "latency"  # active-active: latency records


class SecretRef(_Strict):
    """Where a secret lives: a Prefect Secret block or an environment variable, never the value."""

    prefect_secret: str | None = Field(default=None, description="Name of a Prefect Secret block")
    env: str | None = Field(default=None, description="Name of an environment variable")

    @model_validator(mode="before")
    @classmethod
    def _no_literal(cls, data: Any) -> Any:
        if isinstance(data, str):
            raise _error(
                "a literal secret is not allowed here; give a reference: "
                "{env: VARIABLE_NAME} or {prefect_secret: block-name}"
            )
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.prefect_secret is None) == (self.env is None):
            raise _error("give exactly one of 'env' or 'prefect_secret'")
        if self.env is not None and not _ENV_VAR_RE.match(self.env):
            raise _error(f"env {self.env!r} is not an environment variable name (A-Z, 0-9, _)")
        if self.env is not None and not self.env.startswith(SECRET_ENV_PREFIX):
            raise _error(
                f"env {self.env!r} is not allowed: secret references name {SECRET_ENV_PREFIX}* variables "
                "only (the worker's own credentials, such as AWS_* or PREFECT_API_KEY, never go to Chalk)"
            )
        if self.prefect_secret is not None and not _BLOCK_RE.match(self.prefect_secret):
            raise _error(f"prefect_secret {self.prefect_secret!r} is not a block name (a-z, 0-9, -)")
        if self.prefect_secret is not None and not self.prefect_secret.startswith(SECRET_BLOCK_PREFIX):
            raise _error(
                f"prefect_secret {self.prefect_secret!r} is not allowed: secret references name "
                f"{SECRET_BLOCK_PREFIX}* Secret blocks only"
            )
        return self

    def describe(self) -> str:
        return f"env:{self.env}" if self.env else f"prefect-secret:{self.prefect_secret}"


def _https_unless_loopback(url: AnyHttpUrl) -> AnyHttpUrl:
    """Credentials and tokens are sent to these URLs: plain http only to this machine.

    An IP address must be loopback (127.0.0.0/8, ::1) for http. A host name cannot be judged
    without resolving it, which loading a topology never does: an http URL with a name is
    accepted here and checked where a credential is about to be sent (chalkdr.secrets
    `cleartext_refusal`: every address it resolves to must be loopback).
    """
    if url.scheme != "http":
        return url
    host = (url.host or "").strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url  # a name: checked against what it resolves to, when used
    if not address.is_loopback:
        raise _error(
            f"{url} sends credentials in the clear to {host}: use https (http only to a loopback address)"
        )
    return url


CredentialUrl = Annotated[AnyHttpUrl, AfterValidator(_https_unless_loopback)]
"""A URL that receives a client secret or a bearer token: https, or http to this machine."""


class DeployConfig(_Strict):
    """Where this environment's feature code may come from: configuration, never an event's say.

    `repositories` lists what `chalk apply` may clone: `owner/name` (that GitHub repository over
    https or ssh), an https or ssh URL, or an absolute local path (a mirror on the worker).
    `branch` is the protected branch: only a commit reachable from its tip is applied.
    """

    repositories: list[str] = Field(
        min_length=1,
        description="Repositories to clone from: owner/name, an https or ssh URL, or a local path",
    )
    branch: str = Field(default="main", description="The protected branch; only commits on it are applied")

    @field_validator("repositories")
    @classmethod
    def _repositories(cls, v: list[str]) -> list[str]:
        bad = []
        for entry in v:
            try:
                allowed_repositories(entry)
            except ValueError as exc:
                bad.append(f"{entry!r}: {exc}")
        if bad:
            raise _error("not a repository: " + "; ".join(bad))
        return v

    @field_validator("branch")
    @classmethod
    def _branch(cls, v: str) -> str:
        name = v.removeprefix("refs/heads/")
        if not _BRANCH_RE.match(name):
            raise _error(f"{v!r} is not a git branch name")
        return name

    def allowed(self) -> tuple[Repository, ...]:
        return tuple(repo for entry in self.repositories for repo in allowed_repositories(entry))

    def repository(self, url: str) -> Repository:
        """The allowed repository `url` names; PushRefused when it is malformed or not on the list."""
        try:
            repo = parse_repository(url)
        except ValueError as exc:
            raise PushRefused(f"repository URL refused: {exc}") from None
        if repo.key not in {r.key for r in self.allowed()}:
            raise PushRefused(
                f"repository {repo.url} is not one this environment deploys from "
                f"(deploy.repositories: {', '.join(self.repositories)})"
            )
        return repo

    def is_branch_ref(self, ref: str) -> bool:
        return ref in (self.branch, f"refs/heads/{self.branch}")


class EksConfig(_Strict):
    cluster_name: str = Field(min_length=1, max_length=100)
    namespace: str = "chalk"
    query_server_deployment: str = "chalk-query-server"
    persistence_deployment: str = "chalk-persistence-worker"

    @field_validator("namespace", "query_server_deployment", "persistence_deployment")
    @classmethod
    def _k8s_name(cls, v: str) -> str:
        if not _K8S_NAME_RE.match(v):
            raise _error(f"{v!r} is not a valid Kubernetes name (lowercase RFC 1123 label)")
        return v


class ChalkEnvConfig(_Strict):
    """The one Chalk environment every region serves (Chalk's multi-region guide: one environment,
    a resource group per region), and the credentials chalk-dr uses for it."""

    environment_id: str = Field(min_length=1, description="Sent as X-Chalk-Env-Id on every query")
    api_server: CredentialUrl = Field(
        description="The API server applications exchange credentials at (may itself be a failover name)"
    )
    client_id: str = Field(min_length=1, description="OAuth client id (not secret)")
    client_secret: SecretRef


class ProbeConfig(_Strict):
    """What the drill's probe asks Chalk: a query every deployment of the environment answers, and
    the canary feature class (written through Chalk, read back from each region)."""

    inputs: dict[str, str | int] = Field(min_length=1, description="Query inputs, e.g. {user.id: 1}")
    outputs: list[str] = Field(min_length=1, description="Features to ask for, e.g. [user.name]")
    canary_id_feature: str = Field(default="chalkdr_canary.id", pattern=_FEATURE_RE)
    canary_value_feature: str = Field(default="chalkdr_canary.value", pattern=_FEATURE_RE)

    @field_validator("inputs", "outputs")
    @classmethod
    def _features(cls, v: Any) -> Any:
        names = list(v) if isinstance(v, dict) else v
        bad = [n for n in names if not re.fullmatch(_FEATURE_RE, n)]
        if bad:
            raise _error(f"not feature names (namespace.feature): {', '.join(map(repr, bad))}")
        return v

    @model_validator(mode="after")
    def _one_canary_class(self) -> ProbeConfig:
        if self.canary_id_feature.split(".")[0] != self.canary_value_feature.split(".")[0]:
            raise _error("canary_id_feature and canary_value_feature must be features of one feature class")
        return self


class DnsConfig(_Strict):
    """The resolvers chalk-dr asks, like any client of the failover name would."""

    nameservers: list[str] = Field(
        default_factory=list,
        description="Resolver addresses (IP or IP:port); empty: the system's (/etc/resolv.conf)",
    )

    @field_validator("nameservers")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for entry in v:
            host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
            try:
                ipaddress.ip_address(host or entry)
            except ValueError:
                raise _error(
                    f"{entry!r} is not a resolver address (an IP address, optionally :port)"
                ) from None
            if port and not (port.isdigit() and 0 < int(port) < 65536):
                raise _error(f"{entry!r}: port must be 1-65535")
        return v


class AuroraRegionConfig(_Strict):
    """What AWS needs to create this region's Aurora secondary (CreateDBCluster, CreateDBInstance)."""

    subnet_group: str | None = Field(default=None, description="DB subnet group in this region's VPC")
    security_group_ids: list[str] = Field(default_factory=list)
    kms_key_id: str | None = Field(
        default=None, description="A KMS key in this region: required when the global database is encrypted"
    )
    instance_class: str | None = Field(
        default=None, description="Class of the secondary's DB instance (a cluster without one cannot serve)"
    )


class RegionConfig(_Strict):
    aws_region: str
    resource_group: str = Field(min_length=1, description="Chalk resource group, e.g. prod-east")
    primary: bool = False
    weight: Annotated[int, Field(ge=0, le=255)] | None = Field(
        default=None, description="Route 53 weight (weighted routing only)"
    )
    query_hostname: str = Field(description="Regional hostname, e.g. prod-east.query.example.com")
    query_url: CredentialUrl | None = Field(default=None, description="Defaults to https://<query_hostname>")
    api_server: CredentialUrl | None = Field(
        default=None,
        description="This region's own API server (metadata plane): chalk apply and canary writes go here; "
        "defaults to chalk.api_server",
    )
    alb: str = Field(description="The regional ALB, by name or ARN; DNS name and zone are looked up")
    eks: EksConfig
    online_store_tables: list[str] = Field(min_length=1)
    online_store_kms_key: str | None = Field(
        default=None,
        description="KMS key in this region for the online-store replica (a table with a customer key)",
    )
    msk_cluster_arn: str
    aurora_cluster_id: str = Field(min_length=1, max_length=63)
    aurora: AuroraRegionConfig = Field(default_factory=AuroraRegionConfig)
    alarm_topic_arn: str | None = Field(
        default=None, description="SNS topic in this region that the replication-lag alarms notify"
    )
    role_arn: str | None = Field(default=None, description="IAM role to assume for this region")

    @field_validator("aws_region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not _REGION_RE.match(v):
            raise _error(f"{v!r} is not an AWS region name (like us-east-1)")
        return v

    @field_validator("query_hostname")
    @classmethod
    def _hostname(cls, v: str) -> str:
        if not _DNS_RE.match(v.lower()):
            raise _error(f"{v!r} is not a DNS hostname")
        return v.lower().rstrip(".")

    @field_validator("role_arn")
    @classmethod
    def _role(cls, v: str | None) -> str | None:
        if v is not None and not _ROLE_ARN_RE.match(v):
            raise _error(f"{v!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
        return v

    @model_validator(mode="after")
    def _regional_arns(self) -> RegionConfig:
        if self.alb.startswith("arn:"):
            m = _ALB_ARN_RE.match(self.alb)
            if not m:
                raise _error(f"alb {self.alb!r} is not an application load balancer ARN")
            if m["region"] != self.aws_region:
                raise _error(f"alb ARN is in {m['region']}, but this region is {self.aws_region}")
        elif not _ALB_NAME_RE.match(self.alb):
            raise _error(f"alb {self.alb!r} is neither an ALB name (1-32 of A-Z a-z 0-9 -) nor an ARN")
        m = _MSK_ARN_RE.match(self.msk_cluster_arn)
        if not m:
            raise _error(f"msk_cluster_arn {self.msk_cluster_arn!r} is not an MSK cluster ARN")
        if m["region"] != self.aws_region:
            raise _error(f"msk_cluster_arn is in {m['region']}, but this region is {self.aws_region}")
        if self.alarm_topic_arn is not None:
            m = _SNS_ARN_RE.match(self.alarm_topic_arn)
            if not m:
                raise _error(f"alarm_topic_arn {self.alarm_topic_arn!r} is not an SNS topic ARN")
            if m["region"] != self.aws_region:
                raise _error(f"alarm_topic_arn is in {m['region']}, but this region is {self.aws_region}")
        return self

    @property
    def url(self) -> str:
        """The regional query URL (the resource group's own hostname, not the failover name)."""
        return str(self.query_url).rstrip("/") if self.query_url else f"https://{self.query_hostname}"

    def metadata_url(self, chalk: ChalkEnvConfig) -> str:
        """This region's API server: its own when configured, else the environment's."""
        return str(self.api_server or chalk.api_server).rstrip("/")

    @property
    def alb_name(self) -> str:
        return self.alb.split("/")[-2] if self.alb.startswith("arn:") else self.alb


class HealthCheckConfig(_Strict):
    protocol: Literal["HTTP", "HTTPS"] = "HTTPS"
    port: int = Field(default=443, ge=1, le=65535)
    path: str = "/healthz"
    request_interval: Literal[10, 30] = Field(
        default=30, description="Seconds between checks; Route 53 allows 10 or 30, immutable after creation"
    )
    failure_threshold: int = Field(default=3, ge=1, le=10)
    regions: list[str] = Field(
        default_factory=lambda: ["us-east-1", "us-west-2", "eu-west-1"],
        description="Route 53 checker regions (at least 3)",
    )

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise _error("must start with '/'")
        return v

    @field_validator("regions")
    @classmethod
    def _checkers(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - ROUTE53_CHECKER_REGIONS)
        if unknown:
            raise _error(f"not Route 53 checker regions: {', '.join(unknown)}")
        if len(set(v)) < 3:
            raise _error("Route 53 needs at least 3 distinct checker regions")
        return v


class Route53Config(_Strict):
    hosted_zone_id: str = Field(pattern=r"^(/hostedzone/)?[A-Z0-9]{1,32}$")
    failover_record: str = Field(description="The name clients use, e.g. chalk-failover.example.com")
    failover_url: CredentialUrl | None = Field(
        default=None, description="Defaults to https://<failover_record>"
    )
    health_check: HealthCheckConfig = Field(default_factory=HealthCheckConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_record_ttl(cls, data: Any) -> Any:
        if isinstance(data, dict) and "record_ttl_seconds" in data:
            raise _error(
                "record_ttl_seconds: alias records to a load balancer are answered with the ELB's own TTL "
                f"({ALB_ALIAS_TTL_S} s); an alias has no TTL of its own, so remove this field"
            )
        return data

    @field_validator("failover_record")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _DNS_RE.match(v.lower()):
            raise _error(f"{v!r} is not a DNS name")
        return v.lower().rstrip(".")

    @property
    def zone_id(self) -> str:
        return self.hosted_zone_id.removeprefix("/hostedzone/")

    @property
    def url(self) -> str:
        return str(self.failover_url).rstrip("/") if self.failover_url else f"https://{self.failover_record}"


class AdoptConfig(_Strict):
    """Existing resources provision may take over although chalk-dr does not own them.

    Provision changes only what carries this environment's ownership (a `chalk-dr:environment`
    tag; for a DNS name, its ownership TXT record). A resource it would change that is not its
    own is a plan error naming it; listing it here makes the plan take it over instead (the
    ownership is added, and the change is recorded in the audit like any other).
    """

    records: list[str] = Field(
        default_factory=list, description="DNS names whose record sets this topology writes (any owner)"
    )
    health_checks: list[str] = Field(default_factory=list, description="Route 53 health check ids")
    alarms: list[str] = Field(default_factory=list, description="CloudWatch alarm names")
    replicators: list[str] = Field(default_factory=list, description="MSK Replicator names")
    arc_clusters: list[str] = Field(
        default_factory=list,
        description="ARC cluster names (recovery.arc.cluster_name): use an existing one, tagging it as ours",
    )
    arc_control_panels: list[str] = Field(
        default_factory=list, description="ARC control panel names (recovery.arc.control_panel_name)"
    )

    @field_validator("records")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not _DNS_RE.match(n.lower())]
        if bad:
            raise _error(f"{', '.join(map(repr, bad))} not a DNS name")
        return [n.lower().rstrip(".") for n in v]

    @field_validator("health_checks", "replicators", "arc_clusters", "arc_control_panels")
    @classmethod
    def _ids(cls, v: list[str], info: ValidationInfo) -> list[str]:
        pattern, what = {
            "health_checks": (_HEALTH_CHECK_ID_RE, "a Route 53 health check id"),
            "replicators": (_REPLICATOR_NAME_RE, "an MSK Replicator name"),
            "arc_clusters": (_ARC_NAME_RE, "an ARC cluster name (1-64 non-space characters)"),
            "arc_control_panels": (_ARC_NAME_RE, "an ARC control panel name (1-64 non-space characters)"),
        }[str(info.field_name)]
        bad = [i for i in v if not pattern.match(i)]
        if bad:
            raise _error(f"{', '.join(map(repr, bad))} not {what}")
        return v


class AuroraConfig(_Strict):
    global_cluster_id: str = Field(min_length=1, max_length=63)


class MskConfig(_Strict):
    replicator_name: str = Field(pattern=_REPLICATOR_NAME_RE.pattern)
    topics: list[str] = Field(min_length=1)
    service_execution_role_arn: str

    @field_validator("service_execution_role_arn")
    @classmethod
    def _role(cls, v: str) -> str:
        if not _ROLE_ARN_RE.match(v):
            raise _error(f"{v!r} is not an IAM role ARN")
        return v


class Slo(_Strict):
    rto_seconds: float = Field(gt=0, description="Recovery time objective")
    rpo_seconds: float = Field(ge=0, description="Recovery point objective")


class Guards(_Strict):
    """Replication lag ceilings: a drill refuses to start above them; alarms fire above them."""

    max_dynamodb_replication_lag_ms: float = Field(default=5000, gt=0)
    max_msk_replication_lag_ms: float = Field(default=10000, gt=0)
    max_msk_message_lag: float = Field(default=10000, gt=0)
    max_aurora_replication_lag_ms: float = Field(default=5000, gt=0)


class ArcConfig(_Strict):
    """Amazon Application Recovery Controller (ARC) routing controls on the failover records.

    With this section, provision creates the ARC cluster (its data plane answers on endpoints in
    five regions), a control panel, one routing control per region, and a Route 53 health check of
    type RECOVERY_CONTROL per routing control, which the region's failover record carries; a
    failover then moves traffic by setting routing-control states through the cluster's endpoints
    (trying each in turn), with no Route 53 control-plane call (that lives in us-east-1). ARC's
    routing-control configuration API is served from us-west-2 only.
    """

    cluster_name: str = Field(
        min_length=1, max_length=64, pattern=r"^\S+$", description="ARC cluster to create or use"
    )
    control_panel_name: str = Field(
        min_length=1, max_length=64, pattern=r"^\S+$", description="Control panel of the routing controls"
    )
    control_plane_region: Literal["us-west-2"] = Field(
        default="us-west-2", description="Where ARC's routing-control configuration API is served"
    )

    def routing_control_name(self, environment: str, aws_region: str) -> str:
        """One routing control per region: `<environment>-<aws_region>` (ARC allows 64 chars)."""
        return f"{environment}-{aws_region}"[:64]


class RecoveryConfig(_Strict):
    """What incident recovery needs in place beforehand (flows/recovery.py, recovery-readiness)."""

    failback_readiness: bool = Field(
        default=False,
        description=(
            "Provision a reverse MSK Replicator from each secondary to the primary, so that a failback "
            "does not lose what clients wrote in the secondary during a failover"
        ),
    )
    arc: ArcConfig | None = Field(
        default=None, description="ARC routing controls for the failover records (see ArcConfig)"
    )


class Topology(_Strict):
    environment: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    routing: RoutingMode = RoutingMode.FAILOVER
    chalk: ChalkEnvConfig
    probe: ProbeConfig
    dns: DnsConfig = Field(default_factory=DnsConfig)
    regions: list[RegionConfig] = Field(min_length=2)
    route53: Route53Config
    aurora: AuroraConfig
    msk: MskConfig
    slo: Slo
    guards: Guards = Field(default_factory=Guards)
    adopt: AdoptConfig = Field(
        default_factory=AdoptConfig,
        description="Existing resources provision takes over although they are not chalk-dr's (audited)",
    )
    deploy: DeployConfig | None = Field(
        default=None,
        description="Where chalk apply may take code from; without it, no repository may be cloned",
    )
    silent_alarms: bool = Field(
        default=False,
        description="Create the replication-lag alarms without actions (nobody is notified)",
    )
    fis_role_arn: str | None = Field(
        default=None, description="IAM role AWS FIS assumes for drill experiments (replication-paused)"
    )
    aws_credentials_block: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Name of a prefect-aws AwsCredentials block: its credentials (or profile) make the base "
            "session, from which each region's role_arn is assumed; default: the worker's own "
            "credential chain (environment, instance or pod role)"
        ),
    )
    recovery: RecoveryConfig = Field(
        default_factory=RecoveryConfig,
        description="Failback readiness (reverse replication) and ARC routing controls for incident recovery",
    )
    time_scale: float = Field(
        default=1.0,
        gt=0,
        description=(
            "Configured (AWS) seconds per real second in this environment: 1 on AWS; a simulated "
            "environment may run faster, and every report then says that time was scaled"
        ),
    )

    @field_validator("fis_role_arn")
    @classmethod
    def _fis_role(cls, v: str | None) -> str | None:
        if v is not None and not _ROLE_ARN_RE.match(v):
            raise _error(f"{v!r} is not an IAM role ARN")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        problems: list[str] = []
        for attr in ("aws_region", "resource_group", "query_hostname"):
            seen: set[str] = set()
            for r in self.regions:
                value = getattr(r, attr)
                if value in seen:
                    problems.append(f"duplicate {attr} {value!r}: each region must be distinct")
                seen.add(value)
        primaries = [r.aws_region for r in self.regions if r.primary]
        if self.routing is RoutingMode.FAILOVER:
            if len(primaries) != 1:
                problems.append(
                    f"failover routing needs exactly one region with primary: true, found {len(primaries)}"
                    + (f" ({', '.join(primaries)})" if primaries else "")
                )
            if any(r.weight is not None for r in self.regions):
                problems.append("weight is only meaningful with routing: weighted")
        elif len(primaries) > 1:
            problems.append(
                f"at most one region may have primary: true, found {len(primaries)} ({', '.join(primaries)})"
            )
        if self.routing is RoutingMode.WEIGHTED:
            if any(r.weight is None for r in self.regions):
                problems.append("weighted routing needs a weight on every region")
            elif not any(r.weight for r in self.regions):
                problems.append("weighted routing needs at least one region with weight > 0")
        missing = [r.aws_region for r in self.regions if r.alarm_topic_arn is None]
        if missing and not self.silent_alarms:
            problems.append(
                f"alarm_topic_arn missing for {', '.join(missing)}: name an SNS topic per region for the "
                "replication-lag alarms, or set silent_alarms: true to create them without actions"
            )
        names = {self.route53.failover_record, *(r.query_hostname for r in self.regions)}
        strays = [n for n in self.adopt.records if n not in names]
        if strays:
            problems.append(
                f"adopt.records: {', '.join(strays)} not a name this topology writes "
                f"(route53.failover_record or a region's query_hostname: {', '.join(sorted(names))})"
            )
        if problems:
            raise _error("; ".join(problems))
        return self

    @property
    def primary(self) -> RegionConfig:
        """The primary region (failover mode) or the first region (active-active)."""
        return next((r for r in self.regions if r.primary), self.regions[0])

    @property
    def secondaries(self) -> list[RegionConfig]:
        return [r for r in self.regions if r is not self.primary]

    def region(self, aws_region: str) -> RegionConfig:
        for r in self.regions:
            if r.aws_region == aws_region:
                return r
        raise KeyError(aws_region)

    @property
    def active_active(self) -> bool:
        return self.routing is not RoutingMode.FAILOVER


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    """A dotted field path; list indexes under `regions` also show the region for readability."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict):
                name = node[item].get("aws_region")
                if isinstance(name, str):
                    label = f"[{item}:{name}]"
            parts.append(label)
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(("." if parts else "") + item)
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts)


def _problems(exc: ValidationError, data: Any) -> Iterator[TopologyProblem]:
    for err in exc.errors(include_url=False):
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not part of the topology schema)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        yield TopologyProblem(_location(loc, data), msg)


def parse_topology(data: Any, *, source: str = "<topology>") -> Topology:
    """Validate already-parsed data (e.g. a flow parameter) with the same messages as a file."""
    if data is None or data == {}:
        raise TopologyError(source, [TopologyProblem("", "topology is empty")])
    if not isinstance(data, dict):
        raise TopologyError(
            source, [TopologyProblem("", f"expected a mapping at top level, got {type(data).__name__}")]
        )
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(source, list(_problems(exc, data))) from None


class _DuplicateKey(yaml.constructor.ConstructorError):
    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        self.key, self.first_line = key, first.line + 1
        super().__init__(
            problem=f"duplicate key {key!r} (first at line {first.line + 1})", problem_mark=again
        )


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with the same key twice.

    PyYAML keeps the last value silently: a second `primary:` or `api_server:` lower down a long
    file would quietly win. Keys brought in by a merge (`<<: *anchor`) may still be overridden,
    as YAML intends: only keys written in the mapping itself count.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base class reports an unhashable key
            if key in seen:
                raise _DuplicateKey(key, seen[key], key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_topology(path: str | Path) -> Topology:
    """Load and validate a topology YAML file. Pure: reads one file, calls no AWS API."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(str(p), [TopologyProblem("", f"cannot read file: {exc.strerror}")]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a yaml.SafeLoader subclass
    except _DuplicateKey as exc:
        mark = exc.problem_mark
        assert mark is not None
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        reason = (
            f"duplicate key {exc.key!r} (first at line {exc.first_line}): "
            "YAML would silently keep only the last one; remove one of them"
        )
        raise TopologyError(str(p), [TopologyProblem(where, reason)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError(str(p), [TopologyProblem(where, f"YAML syntax error: {problem}")]) from None
    return parse_topology(data, source=str(p))


def topology_file_in(directory: str | Path, name: str) -> Path:
    """`name` as a topology file inside `directory` (the worker's configured topology directory).

    A run that came through the Prefect API may name a topology, but not write one: it picks a
    file the operator put in that directory. `name` is relative to the directory (or absolute);
    symlinks are resolved before the check, so a link out of the directory is refused too, and
    only `.yaml`/`.yml` files count.
    """
    root = Path(os.path.realpath(directory))
    candidate = Path(os.path.realpath(root / name))
    problems = []
    if not root.is_dir():
        problems.append(f"the topology directory {root} does not exist")
    elif candidate.parent != root and root not in candidate.parents:
        problems.append(f"not a file in the topology directory {root}")
    elif candidate.suffix not in (".yaml", ".yml"):
        problems.append("a topology file ends in .yaml or .yml")
    elif not candidate.is_file():
        problems.append(f"no such topology file in {root}")
    if problems:
        raise TopologyError(name, [TopologyProblem("", p) for p in problems])
    return candidate
