"""The topology of one multi-region Chalk environment, loaded from YAML and validated up front.

Every flow starts from a Topology. Validation happens entirely at load time and never touches
AWS: a bad file fails with one line per problem (`file: field.path: reason`), all problems at
once, so an operator fixes the file in one pass instead of replaying a drill to find the next
typo. Secrets are never in the file, only references to where they live.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from typing import Any
from typing import Literal

import yaml
from pydantic import AnyHttpUrl
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationError
from pydantic import field_validator
from pydantic import model_validator
from pydantic_core import PydanticCustomError

from chalkdr.errors import TopologyError
from chalkdr.errors import TopologyProblem

__all__ = [
    "ROUTE53_CHECKER_REGIONS",
    "AuroraConfig",
    "ChalkEnvConfig",
    "EksConfig",
    "Guards",
    "HealthCheckConfig",
    "MskConfig",
    "RegionConfig",
    "Route53Config",
    "RoutingMode",
    "SecretRef",
    "Slo",
    "Topology",
    "load_topology",
    "parse_topology",
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
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_K8S_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


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
        if self.prefect_secret is not None and not _BLOCK_RE.match(self.prefect_secret):
            raise _error(f"prefect_secret {self.prefect_secret!r} is not a block name (a-z, 0-9, -)")
        return self

    def describe(self) -> str:
        return f"env:{self.env}" if self.env else f"prefect-secret:{self.prefect_secret}"


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
    environment_id: str = Field(min_length=1)
    api_server: AnyHttpUrl
    client_id: str = Field(min_length=1, description="OAuth client id (not secret)")
    client_secret: SecretRef


class RegionConfig(_Strict):
    aws_region: str
    resource_group: str = Field(min_length=1, description="Chalk resource group, e.g. prod-east")
    primary: bool = False
    weight: Annotated[int, Field(ge=0, le=255)] | None = Field(
        default=None, description="Route 53 weight (weighted routing only)"
    )
    query_hostname: str = Field(description="Regional hostname, e.g. prod-east.query.example.com")
    query_url: AnyHttpUrl | None = Field(default=None, description="Defaults to https://<query_hostname>")
    alb: str = Field(description="The regional ALB, by name or ARN; DNS name and zone are looked up")
    eks: EksConfig
    online_store_tables: list[str] = Field(min_length=1)
    msk_cluster_arn: str
    aurora_cluster_id: str = Field(min_length=1, max_length=63)
    chalk: ChalkEnvConfig
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
        return self

    @property
    def url(self) -> str:
        """The regional query URL (the resource group's own hostname, not the failover name)."""
        return str(self.query_url).rstrip("/") if self.query_url else f"https://{self.query_hostname}"

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
    failover_url: AnyHttpUrl | None = Field(default=None, description="Defaults to https://<failover_record>")
    record_ttl_seconds: int = Field(
        default=60,
        ge=0,
        le=86400,
        description="TTL resolvers apply to the failover answer (ALB alias records: 60 s)",
    )
    health_check: HealthCheckConfig = Field(default_factory=HealthCheckConfig)

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


class AuroraConfig(_Strict):
    global_cluster_id: str = Field(min_length=1, max_length=63)


class MskConfig(_Strict):
    replicator_name: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z-]{0,127}$")
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


class Topology(_Strict):
    environment: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    routing: RoutingMode = RoutingMode.FAILOVER
    regions: list[RegionConfig] = Field(min_length=2)
    route53: Route53Config
    aurora: AuroraConfig
    msk: MskConfig
    slo: Slo
    guards: Guards = Field(default_factory=Guards)
    fis_role_arn: str | None = Field(
        default=None, description="IAM role AWS FIS assumes for drill experiments (replication-paused)"
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
        elif self.routing is RoutingMode.WEIGHTED:
            if any(r.weight is None for r in self.regions):
                problems.append("weighted routing needs a weight on every region")
            elif not any(r.weight for r in self.regions):
                problems.append("weighted routing needs at least one region with weight > 0")
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


def load_topology(path: str | Path) -> Topology:
    """Load and validate a topology YAML file. Pure: reads one file, calls no AWS API."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(str(p), [TopologyProblem("", f"cannot read file: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError(str(p), [TopologyProblem(where, f"YAML syntax error: {problem}")]) from None
    return parse_topology(data, source=str(p))
