"""Route 53 in the sandbox: health checkers that really probe, and DNS answers that follow them.

moto stores health checks but never evaluates them (GetHealthCheckStatus is a hard-coded
"Success"), so a failover record would never fail over. Route53Sim adds the part of Route 53
that DNS failover depends on, as AWS documents it:

- one checker per region of the check (AWS's default eight when `Regions` is empty) probes the
  endpoint every RequestInterval, independently of the others; a checker changes its verdict
  after FailureThreshold consecutive results that contradict it, and a new check starts healthy;
- the endpoint is healthy when MORE than 18% of the checkers say so; Disabled makes a check
  healthy without probing, and Inverted then flips the verdict (Disabled + Inverted is AWS's
  documented way to force a check unhealthy);
- DNS answers (the sandbox's name server, sandbox/dns.py, asks `resolve`) and TestDNSAnswer are
  one evaluation: simple, failover, weighted, latency and multivalue records, routed by those
  verdicts (see `route`). An alias to a load balancer is answered with the load balancer's IP
  addresses and the ELB's TTL (60 s), as Route 53 answers it ("an IP address or a domain name for
  the AWS resource", TestDNSAnswer's RecordDataEntry); TestDNSAnswer "only supports querying
  public hosted zones" (API reference), so a private zone is refused (InvalidInput: AWS documents
  the limit, not the error text), and the name server answers public zones only;
- the API is throttled as AWS's current guide describes (throttling-api-requests): every request
  takes a token from the account's bucket (50 burst, 10 per second) and from its operation's
  bucket (GetHealthCheckStatus and GetHealthCheckLastFailureReason 4 burst, 1 per second;
  CreateHealthCheck 50, 0.5/s; DeleteHealthCheck 15, 3/s; others 50, 10/s); an empty bucket is
  HTTP 400 `Throttling` "Rate exceeded" (the same body the older "five requests per second per
  account" limit used). Real seconds: an API's rate limit is not one of the scaled durations;
- CreateHealthCheck honours CallerReference idempotency; UpdateHealthCheck changes only what it
  names (moto drops Regions), applies ResetElements and bumps HealthCheckVersion;
- RECOVERY_CONTROL health checks (moto has no RoutingControlArn): "If the routing control state is
  ON, the health check is considered healthy. If the state is OFF, the health check is considered
  unhealthy" (HealthCheckConfig.Type), then Disabled and Inverted apply as for any check; a
  CALCULATED parent follows it. They are stored and returned with HealthCheckConfig.Type and
  RoutingControlArn (plus Inverted, Disabled); RequestInterval and FailureThreshold "are not
  supported" with this type, nor MeasureLatency (AWS refuses templates that set them, aws-cdk
  issue 34262), and neither are IPAddress, Port or a domain name: InvalidInput. A RoutingControlArn
  that names no routing control of the sandbox's ARC (sandbox/arc.py) is refused (InvalidInput;
  the text is the sandbox's), and UpdateHealthCheck of such a check is refused with AWS's own
  "Invalid parameter : Update is not supported for this health check type." (terraform-provider-aws
  issue 44247). A check whose routing control was deleted is unhealthy (no control is On);
- GetHealthCheckStatus and GetHealthCheckLastFailureReason refuse a CALCULATED check ("You can't
  use GetHealthCheckStatus to get the status of a calculated health check", API reference) with
  InvalidInput, the operation's modelled error; for checks without checkers (RECOVERY_CONTROL,
  CLOUDWATCH_METRIC) AWS documents no such limit and the sandbox answers no observations.

Sandbox-only: every probe carries `X-Sandbox-Checker-Region`. Real checkers in different
regions reach an endpoint from different source addresses and so can see different things (a
partitioned region); on loopback they cannot, so a target that wants to fail for some checker
regions only reads this header.
"""

from __future__ import annotations

import http
import ipaddress
import json
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import unquote
from urllib.parse import urlsplit

import dns.rcode as dns_rcode
import httpx
from moto.core.model import ServiceModel
from moto.core.parse import PROTOCOL_PARSERS
from moto.core.serialize import RestXMLSerializer
from moto.core.serialize import XFormedAttributePicker
from moto.core.utils import get_service_model
from moto.route53.exceptions import Route53ClientError
from moto.route53.models import FakeZone
from moto.route53.models import HealthCheck
from moto.route53.models import RecordSet
from moto.route53.models import Route53Backend
from moto.route53.models import route53_backends
from werkzeug.datastructures import Headers
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from sandbox.aws import ACCOUNT_ID
from sandbox.aws import AwsCall
from sandbox.aws import SandboxAwsApp
from sandbox.aws import xml_error
from sandbox.clock import SandboxClock
from sandbox.clock import Ticker
from sandbox.dns import DnsAnswer
from sandbox.truth import GroundTruth

__all__ = [
    "CHECKER_REGION_HEADER",
    "DEFAULT_CHECKER_REGIONS",
    "DnsResolutionFailed",
    "Resolver",
    "Route53Sim",
    "RoutedRecord",
    "checker_step",
    "endpoint_healthy",
    "reported_health",
    "route",
]

# Given (host = FQDN or IP, port, health check type): the base URL to probe, or None (no route);
# raises DnsResolutionFailed when the FQDN has no A record (AWS: "DNS resolution failed").
Resolver = Callable[[str, int, str], str | None]


class DnsResolutionFailed(Exception):
    """A checker's DNS request for FullyQualifiedDomainName found no A record."""


# A routing control's ARN -> its state, "On" or "Off" (None: no such routing control); ARC's.
RoutingControlStates = Callable[[str], str | None]

# A load balancer's DNS name -> its addresses (None: not a load balancer the sandbox knows).
AliasAddresses = Callable[[str], tuple[str, ...] | None]
ELB_TTL_S = 60  # an alias to a load balancer is answered with the ELB's TTL
# Route 53's API token buckets (burst, refill per second); throttling-api-requests.html.
ACCOUNT_BUCKET = (50.0, 10.0)
OPERATION_BUCKETS = {
    "GetHealthCheckStatus": (4.0, 1.0),
    "GetHealthCheckLastFailureReason": (4.0, 1.0),
    "CreateHealthCheck": (50.0, 0.5),
    "DeleteHealthCheck": (15.0, 3.0),
    "CreateHostedZone": (40.0, 2.0),
}
DEFAULT_OPERATION_BUCKET = (50.0, 10.0)

DEFAULT_CHECKER_REGIONS = (
    "us-east-1",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "sa-east-1",
)
# Plausible addresses from Route 53's published health-checker range (ROUTE53_HEALTHCHECKS).
_CHECKER_IPS = {region: f"15.177.{8 * i + 2}.21" for i, region in enumerate(DEFAULT_CHECKER_REGIONS)}
CHECKER_REGION_HEADER = "X-Sandbox-Checker-Region"
HEALTHY_PERCENT = 18  # "If more than 18% of health checkers report that an endpoint is healthy..."

_PROBED_TYPES = frozenset({"HTTP", "HTTPS", "HTTP_STR_MATCH", "HTTPS_STR_MATCH", "TCP"})
_STR_MATCH_TYPES = frozenset({"HTTP_STR_MATCH", "HTTPS_STR_MATCH"})
_STR_MATCH_BYTES = 5120  # AWS searches the first 5,120 bytes of the body
_DEFAULT_INTERVAL = 30
_DEFAULT_THRESHOLD = 3
_AWS_CONNECT_TIMEOUT = 4.0  # AWS: a TCP connection within four seconds...
_AWS_RESPONSE_TIMEOUT = 2.0  # ...and a 2xx/3xx status within two seconds after connecting
_MIN_REAL_TIMEOUT = 0.5  # loopback on a busy CI box still needs a moment
_API = "/2013-04-01"
_HEALTH_CHECK_PATH = re.compile(rf"^{_API}/healthcheck/([^/]+)(/status|/lastfailurereason)?/?$")

_TIMED_OUT = (
    "Failure: Connection timed out. The endpoint or the internet connection is down, or requests are "
    "being blocked by your firewall. See https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/"
    "dns-failover-router-firewall-rules.html"
)
_REFUSED = "Failure: Connection refused. The endpoint rejected the TCP connection."
# HealthCheckConfig.FullyQualifiedDomainName: "If there's no resource record set with a type of A
# for the name that you specify for FullyQualifiedDomainName, the health check fails with a "DNS
# resolution failed" error."
_DNS_FAILED = "Failure: DNS resolution failed."
_NO_RESPONSE = (
    "Failure: Response timed out. The endpoint did not return an HTTP status code within "
    "2 seconds after the connection was established."
)


# --- the rules, as plain functions -------------------------------------------------------------


def checker_step(healthy: bool, streak: int, success: bool, threshold: int) -> tuple[bool, int]:
    """One checker's (verdict, contrary streak) after one more probe result.

    A checker only changes its mind after `threshold` consecutive results that contradict its
    current verdict: FailureThreshold failures to turn unhealthy, as many successes to recover.
    """
    if success == healthy:
        return healthy, 0
    streak += 1
    if streak >= max(threshold, 1):
        return success, 0
    return healthy, streak


def endpoint_healthy(checker_verdicts: Sequence[bool]) -> bool:
    """Route 53's endpoint verdict: healthy when more than 18% of its checkers say healthy.

    With AWS's eight default regions one healthy checker (12.5%) is not enough and two are; with
    the minimum of three regions a single healthy checker (33%) keeps the endpoint healthy. No
    checker data yet means healthy, as AWS treats a new check.
    """
    if not checker_verdicts:
        return True
    return sum(checker_verdicts) * 100 > HEALTHY_PERCENT * len(checker_verdicts)


def reported_health(endpoint_ok: bool, *, inverted: bool, disabled: bool) -> bool:
    """The status Route 53 reports and routes on.

    Disabled: "Route 53 considers the status of the health check to always be healthy", and
    AWS's advice for stopping traffic anyway is to also set Inverted, so inversion applies last.
    """
    status = True if disabled else endpoint_ok
    return not status if inverted else status


@dataclass(frozen=True)
class RoutedRecord:
    """One record set of a (name, type) as routing sees it: its answer and routing settings."""

    values: tuple[str, ...]
    set_identifier: str | None = None
    health_check_id: str | None = None
    failover: str | None = None  # PRIMARY | SECONDARY
    weight: int | None = None
    region: str | None = None  # latency routing
    multivalue: bool = False
    alias: bool = False  # `values` is the alias target's name
    ttl: int = 300


def route(
    records: Sequence[RoutedRecord],
    healthy: Callable[[RoutedRecord], bool],
    rng: random.Random,
    *,
    resolver_region: str = "us-east-1",
) -> list[RoutedRecord]:
    """The record sets Route 53 answers with for one (name, type), as AWS documents routing.

    - failover: PRIMARY if healthy, else SECONDARY if healthy, else PRIMARY ("If both are
      unhealthy, Route 53 responds with the primary");
    - weighted: a random pick proportional to Weight among healthy records with Weight > 0;
      zero-weight records only when no positive-weight record is healthy (equal odds); when all
      are unhealthy, Route 53 considers them all healthy;
    - latency: there is no real resolver, so the resolver is taken to sit in `resolver_region`:
      that region's record if healthy, else the first healthy one by region name, else as if
      all were healthy;
    - multivalue: up to eight healthy records (all, up to eight, when none is healthy);
    - simple: the record set itself. A record without HealthCheckId is always healthy.
    """
    if not records:
        return []
    if any(r.failover for r in records):
        primary = next((r for r in records if r.failover == "PRIMARY"), None)
        secondary = next((r for r in records if r.failover == "SECONDARY"), None)
        for choice in (primary, secondary):
            if choice is not None and healthy(choice):
                return [choice]
        return [primary or secondary or records[0]]
    if any(r.weight is not None for r in records):
        return [_weighted_choice(records, healthy, rng)]
    if any(r.region for r in records):
        ordered = sorted(records, key=lambda r: (r.region != resolver_region, r.region or ""))
        return [next((r for r in ordered if healthy(r)), ordered[0])]
    if any(r.multivalue for r in records):
        return ([r for r in records if healthy(r)] or list(records))[:8]
    return [records[0]]


def _weighted_choice(
    records: Sequence[RoutedRecord], healthy: Callable[[RoutedRecord], bool], rng: random.Random
) -> RoutedRecord:
    healthy_ones = [r for r in records if healthy(r)]
    for pool in (healthy_ones, list(records)):
        positive = [r for r in pool if (r.weight or 0) > 0]
        if positive:
            return rng.choices(positive, weights=[r.weight or 0 for r in positive])[0]
        if pool:
            return rng.choice(pool)
    return records[0]


# --- moto glue: the service model, parsing and rendering as AWS's wire format ------------------


@cache
def _model() -> ServiceModel:
    return get_service_model("route53")


def _parse(operation: str, call: AwsCall, url_params: dict[str, str] | None = None) -> dict[str, Any]:
    """A request's parameters as botocore sent them, decoded by moto's own rest-xml parser."""
    parser = PROTOCOL_PARSERS["rest-xml"](_model().operation_model(operation))
    parsed = parser.parse(
        {
            "method": call.method,
            "values": MultiDict(call.query),
            "headers": Headers(dict(call.headers)),
            "body": call.body,
            "url_path": call.path,
            "url_params": url_params or {},
        }
    )
    return dict(parsed)


def _render(operation: str, result: dict[str, Any]) -> Response:
    """A response in exactly the shape botocore parses (status code and headers included)."""
    serializer = RestXMLSerializer(
        operation_model=_model().operation_model(operation), value_picker=XFormedAttributePicker()
    )
    out = serializer.serialize(result)
    return Response(out["body"], status=out["status_code"], headers=dict(out["headers"]))


def _no_such_health_check(health_check_id: str) -> Response:
    return xml_error("NoSuchHealthCheck", f"A health check with id {health_check_id} does not exist.", 404)


def _default_port(kind: str) -> int:
    return 443 if kind.startswith("HTTPS") else 80


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """A HealthCheckConfig with AWS's defaults filled in, for "same settings" comparisons."""
    kind = str(config.get("Type", ""))
    out = {k: v for k, v in config.items() if v is not None}
    if kind == "RECOVERY_CONTROL":
        out.setdefault("Inverted", False)
        out.setdefault("Disabled", False)
        return out
    out.setdefault("RequestInterval", _DEFAULT_INTERVAL)
    out.setdefault("FailureThreshold", _DEFAULT_THRESHOLD)
    for flag in ("Inverted", "Disabled", "MeasureLatency"):
        out.setdefault(flag, False)
    if kind in _PROBED_TYPES and kind != "TCP":
        out.setdefault("Port", _default_port(kind))
    for listed in ("Regions", "ChildHealthChecks"):
        if listed in out:
            out[listed] = sorted(out[listed])
    return out


_NOT_FOR_RECOVERY_CONTROL = (
    "RequestInterval",
    "FailureThreshold",
    "MeasureLatency",
    "IPAddress",
    "Port",
    "FullyQualifiedDomainName",
    "ResourcePath",
    "SearchString",
)


def _invalid_config(config: dict[str, Any]) -> str | None:
    """AWS's server-side checks that botocore cannot make (it validates minimums only)."""
    kind = config.get("Type")
    if kind == "RECOVERY_CONTROL":
        if not config.get("RoutingControlArn"):
            return "Invalid parameter : a RECOVERY_CONTROL health check needs RoutingControlArn"
        extra = [k for k in _NOT_FOR_RECOVERY_CONTROL if config.get(k) is not None]
        if extra:
            return (
                f"Invalid parameter : {', '.join(extra)} is not supported for a RECOVERY_CONTROL health check"
            )
        return None
    if config.get("RoutingControlArn"):
        return f"Invalid parameter : RoutingControlArn is only for RECOVERY_CONTROL health checks, not {kind}"
    interval = config.get("RequestInterval")
    if interval is not None and interval not in (10, 30):
        return f"Invalid parameter : RequestInterval must be 10 or 30, got {interval}"
    threshold = config.get("FailureThreshold")
    if threshold is not None and not 1 <= int(threshold) <= 10:
        return f"Invalid parameter : FailureThreshold must be between 1 and 10, got {threshold}"
    if kind in _PROBED_TYPES and not (config.get("IPAddress") or config.get("FullyQualifiedDomainName")):
        return f"Invalid parameter : a {kind} health check needs IPAddress or FullyQualifiedDomainName"
    if kind == "TCP" and config.get("Port") is None:
        return "Invalid parameter : a TCP health check needs Port"
    if kind in _STR_MATCH_TYPES and not config.get("SearchString"):
        return f"Invalid parameter : a {kind} health check needs SearchString"
    return None


def _moto_args(config: dict[str, Any]) -> dict[str, Any]:
    """moto's create_health_check arguments (with AWS's port default: 443 for HTTPS, not 80)."""
    kind = config["Type"]
    return {
        "ip_address": config.get("IPAddress"),
        "port": config.get("Port") or (_default_port(kind) if kind in _PROBED_TYPES else None),
        "type": kind,
        "resource_path": config.get("ResourcePath"),
        "fqdn": config.get("FullyQualifiedDomainName"),
        "search_string": config.get("SearchString"),
        "request_interval": config.get("RequestInterval"),
        "failure_threshold": config.get("FailureThreshold"),
        "health_threshold": config.get("HealthThreshold"),
        "measure_latency": config.get("MeasureLatency"),
        "inverted": config.get("Inverted"),
        "disabled": config.get("Disabled"),
        "enable_sni": config.get("EnableSNI"),
        "children": config.get("ChildHealthChecks", []),
        "regions": config.get("Regions", []),
    }


class _RecoveryControlCheck(HealthCheck):
    """moto's HealthCheck plus the RoutingControlArn it has no field for, rendered in AWS's shape."""

    def __init__(
        self, health_check_id: str, caller_reference: str, args: dict[str, Any], routing_control_arn: str
    ) -> None:
        super().__init__(health_check_id, caller_reference, args)
        self.routing_control_arn = routing_control_arn

    @property
    def health_check_config(self) -> dict[str, Any]:
        return {
            "Type": "RECOVERY_CONTROL",
            "Inverted": self.inverted,
            "Disabled": self.disabled,
            "RoutingControlArn": self.routing_control_arn,
        }


_UPDATABLE = {
    "IPAddress": "ip_address",
    "Port": "port",
    "ResourcePath": "resource_path",
    "FullyQualifiedDomainName": "fqdn",
    "SearchString": "search_string",
    "FailureThreshold": "failure_threshold",
    "HealthThreshold": "health_threshold",
    "Inverted": "inverted",
    "Disabled": "disabled",
    "EnableSNI": "enable_sni",
}
_RESETTABLE = {"FullyQualifiedDomainName": "fqdn", "ResourcePath": "resource_path"}


def _dns_name(name: str) -> str:
    return name.lower().rstrip(".")


def _routed(record: RecordSet) -> RoutedRecord:
    if record.alias_target:
        target = _dns_name(str(record.alias_target.get("DNSName", "")))
        values: tuple[str, ...] = (target.removeprefix("dualstack."),)
    else:  # moto keeps plain strings, except for the zone's own SOA ({"Value": ...})
        values = tuple(str(v["Value"] if isinstance(v, dict) else v) for v in record.records or ())
    return RoutedRecord(
        values=values,
        set_identifier=record.set_identifier,
        health_check_id=record.health_check_id,
        failover=record.failover,
        weight=None if record.weight is None else int(record.weight),
        region=record.region,
        multivalue=bool(record.multi_value_answer),
        alias=bool(record.alias_target),
        ttl=int(record.ttl or 300),
    )


def _within(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


_OPERATIONS = (
    ("POST", re.compile(rf"^{_API}/healthcheck/?$"), "CreateHealthCheck"),
    ("GET", re.compile(rf"^{_API}/healthcheck/[^/]+/status/?$"), "GetHealthCheckStatus"),
    (
        "GET",
        re.compile(rf"^{_API}/healthcheck/[^/]+/lastfailurereason/?$"),
        "GetHealthCheckLastFailureReason",
    ),
    ("DELETE", re.compile(rf"^{_API}/healthcheck/[^/]+/?$"), "DeleteHealthCheck"),
    ("POST", re.compile(rf"^{_API}/hostedzone/?$"), "CreateHostedZone"),
)


_RESOURCE_ID = re.compile(r"/(hostedzone|healthcheck|change|delegationset|trafficpolicy|tags/\w+)/[^/]+")


def _operation(call: AwsCall) -> str:
    """The Route 53 operation a request is (for its throttling bucket); others by method and path."""
    for method, pattern, name in _OPERATIONS:
        if call.method == method and pattern.match(call.path):
            return name
    template = _RESOURCE_ID.sub(r"/\1/{id}", call.path)
    return f"{call.method} {template}"


class _Buckets:
    """Token buckets on the monotonic clock: the account's and one per operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}  # bucket -> (tokens, last refill)

    def take(self, operation: str) -> bool:
        now = time.monotonic()
        with self._lock:
            account = self._level("account", ACCOUNT_BUCKET, now)
            per_op = self._level(operation, OPERATION_BUCKETS.get(operation, DEFAULT_OPERATION_BUCKET), now)
            if account < 1 or per_op < 1:
                return False
            self._state["account"] = (account - 1, now)
            self._state[operation] = (per_op - 1, now)
            return True

    def _level(self, name: str, bucket: tuple[float, float], now: float) -> float:
        burst, rate = bucket
        tokens, last = self._state.get(name, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        self._state[name] = (tokens, now)
        return tokens


# --- the checkers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Observation:
    success: bool
    status: str
    checked_time: datetime


@dataclass
class _Checker:
    region: str
    next_due: float
    healthy: bool = True
    streak: int = 0
    in_flight: bool = False
    last: _Observation | None = None
    last_failure: _Observation | None = None

    @property
    def ip(self) -> str:
        return _CHECKER_IPS.get(self.region, "15.177.0.21")


@dataclass
class _CheckState:
    checkers: dict[str, _Checker] = field(default_factory=dict)
    healthy: bool = True  # the reported status last recorded in ground truth


@dataclass(frozen=True)
class _Reference:
    health_check_id: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class _Probe:
    health_check_id: str
    region: str
    kind: str
    host: str
    port: int
    path: str
    host_header: str
    search_string: str | None


class Route53Sim:
    """Route 53's health checkers and DNS routing on top of moto's stored health checks and records.

    Health checks and records live in moto's in-process backend (the AWS endpoint's own state),
    so every way of changing them (boto3, CloudFormation) is seen; this class keeps only what
    moto has no place for: per-checker verdicts and observations, caller references, and the
    last DNS answer per name.
    """

    def __init__(
        self,
        app: SandboxAwsApp,
        *,
        clock: SandboxClock,
        truth: GroundTruth,
        resolve: Resolver,
        alias_addresses: AliasAddresses = lambda _name: None,
        resolver_region: str = "us-east-1",
        rng: random.Random | None = None,
        throttle: bool = True,
    ) -> None:
        self._clock = clock
        self._truth = truth
        self._resolve = resolve
        self._alias_addresses = alias_addresses
        self._buckets = _Buckets() if throttle else None
        self._resolver_region = resolver_region
        self._rng = rng or random.Random()
        self._lock = threading.RLock()
        self._states: dict[str, _CheckState] = {}
        self._refs: dict[str, _Reference] = {}
        self._answers: dict[tuple[str, str, str], tuple[str, tuple[str, ...]]] = {}
        self._owner: Route53Backend | None = None
        self._period = 0.1
        self._ticker: Ticker | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._http: httpx.Client | None = None
        self._routing_controls: RoutingControlStates = lambda _arn: None
        app.intercept("route53", self._intercept)
        app.control("GET", "/_sandbox/route53/health", self._health_report)

    # lifecycle

    def start(self, endpoint_url: str) -> None:
        """Start the checkers. `endpoint_url` is unused: the state lives in this process's moto."""
        # Real checkers open a fresh connection per request and do not validate certificates.
        self._http = httpx.Client(
            verify=False,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="sandbox-route53-probe")
        self._ticker = Ticker("route53-checkers", self._tick, lambda: self._period).start()

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._http is not None:
            self._http.close()

    # ARC routing controls

    def use_routing_controls(self, states: RoutingControlStates) -> None:
        """Where RECOVERY_CONTROL checks read their routing control's state (ARC's data plane)."""
        self._routing_controls = states

    def reevaluate(self) -> None:
        """Recompute every verdict now (a routing control changed state); parents after children."""
        with self._lock:
            checks = list(self._backend().health_checks.values())
            for check in sorted(checks, key=lambda c: c.type_ == "CALCULATED"):
                state = self._states.get(check.id)
                if state is not None:
                    self._refresh(check, state)

    def health_checks_for_routing_control(self, arn: str) -> list[str]:
        """The RECOVERY_CONTROL checks on a routing control (ARC's ListAssociatedRoute53HealthChecks)."""
        with self._lock:
            return [
                c.id
                for c in self._backend().health_checks.values()
                if isinstance(c, _RecoveryControlCheck) and c.routing_control_arn == arn
            ]

    # state shared with moto

    def _backend(self) -> Route53Backend:
        """moto's Route 53 backend; a new object after `/moto-api/reset`, which forgets ours too."""
        backend: Route53Backend = route53_backends[ACCOUNT_ID]["aws"]
        if backend is not self._owner:
            self._owner = backend
            self._states.clear()
            self._refs.clear()
            self._answers.clear()
        return backend

    def _adopt(self, check: HealthCheck, now: float) -> _CheckState:
        state = _CheckState()
        self._states[check.id] = state
        self._sync_checkers(state, check, now)
        state.healthy = self._verdict(check, state)
        self._truth.record("route53.health_check", health_check_id=check.id, healthy=state.healthy)
        return state

    def _sync_checkers(self, state: _CheckState, check: HealthCheck, now: float) -> None:
        probed = check.type_ in _PROBED_TYPES  # CALCULATED and CLOUDWATCH_METRIC have no checkers
        regions = list(check.regions or DEFAULT_CHECKER_REGIONS) if probed else []
        interval = self._clock.real_seconds(check.request_interval or _DEFAULT_INTERVAL)
        for region in regions:
            if region not in state.checkers:  # checkers are not synchronised with each other
                state.checkers[region] = _Checker(region, next_due=now + self._rng.uniform(0, interval))
        for region in [r for r in state.checkers if r not in regions]:
            del state.checkers[region]

    def _verdict(self, check: HealthCheck, state: _CheckState) -> bool:
        if check.type_ == "CALCULATED":
            children = [self._states.get(child) for child in check.children or ()]
            healthy_children = sum(1 for child in children if child is None or child.healthy)
            endpoint_ok = healthy_children >= int(check.health_threshold or 0)
        elif check.type_ in _PROBED_TYPES:
            endpoint_ok = endpoint_healthy([c.healthy for c in state.checkers.values()])
        elif isinstance(check, _RecoveryControlCheck):
            endpoint_ok = self._routing_controls(check.routing_control_arn) == "On"
        else:  # CLOUDWATCH_METRIC: no alarms are simulated
            endpoint_ok = True
        return reported_health(endpoint_ok, inverted=bool(check.inverted), disabled=bool(check.disabled))

    def _refresh(self, check: HealthCheck, state: _CheckState) -> None:
        healthy = self._verdict(check, state)
        if healthy != state.healthy:
            state.healthy = healthy
            self._truth.record("route53.health_check", health_check_id=check.id, healthy=healthy)

    # the checker loop

    def _tick(self) -> None:
        now = time.monotonic()
        due: list[_Probe] = []
        with self._lock:
            backend = self._backend()
            checks = list(backend.health_checks.values())
            for gone in set(self._states) - {c.id for c in checks}:
                del self._states[gone]
            intervals = []
            for check in checks:
                state = self._states.get(check.id) or self._adopt(check, now)
                self._sync_checkers(state, check, now)
                interval = self._clock.real_seconds(check.request_interval or _DEFAULT_INTERVAL)
                intervals.append(interval)
                if check.type_ not in _PROBED_TYPES or check.disabled:
                    continue  # a disabled check is not probed at all
                for checker in state.checkers.values():
                    if checker.in_flight or now < checker.next_due:
                        continue
                    checker.in_flight = True
                    checker.next_due = max(checker.next_due + interval, now)
                    due.append(_probe_of(check, checker.region))
            for check in sorted(checks, key=lambda c: c.type_ == "CALCULATED"):
                self._refresh(check, self._states[check.id])
            self._period = min([*(i / 10 for i in intervals), 0.25]) if intervals else 0.25
            self._period = max(self._period, 0.01)
        pool = self._pool
        for probe in due:
            try:
                if pool is None:
                    raise RuntimeError("the checkers are not started")
                pool.submit(self._run_probe, probe)
            except RuntimeError:  # stopping: the executor refuses new probes
                self._finish(probe, False, _TIMED_OUT)

    def _run_probe(self, probe: _Probe) -> None:
        success, status = False, _TIMED_OUT
        try:
            success, status = self._probe(probe)
        except Exception as exc:  # noqa: BLE001 - any failure to probe is a failed probe
            success, status = False, f"Failure: {type(exc).__name__}: {exc}"
        finally:
            self._finish(probe, success, status)

    def _finish(self, probe: _Probe, success: bool, status: str) -> None:
        observation = _Observation(success, status, datetime.now(UTC))
        with self._lock:
            state = self._states.get(probe.health_check_id)
            checker = state.checkers.get(probe.region) if state else None
            check = self._backend().health_checks.get(probe.health_check_id)
            if state is None or checker is None or check is None:
                return
            checker.in_flight = False
            checker.last = observation
            if not success:
                checker.last_failure = observation
            threshold = int(check.failure_threshold or _DEFAULT_THRESHOLD)
            checker.healthy, checker.streak = checker_step(
                checker.healthy, checker.streak, success, threshold
            )
            self._refresh(check, state)

    def _timeouts(self) -> tuple[float, float]:
        def scaled(aws_seconds: float) -> float:
            return min(aws_seconds, max(self._clock.real_seconds(aws_seconds), _MIN_REAL_TIMEOUT))

        return scaled(_AWS_CONNECT_TIMEOUT), scaled(_AWS_RESPONSE_TIMEOUT)

    def _probe(self, probe: _Probe) -> tuple[bool, str]:
        try:
            base = self._resolve(probe.host, probe.port, probe.kind)
        except DnsResolutionFailed:
            return False, _DNS_FAILED
        if base is None:
            return False, _TIMED_OUT
        connect, respond = self._timeouts()
        if probe.kind == "TCP":
            target = urlsplit(base)
            try:
                with socket.create_connection((target.hostname or "", target.port or probe.port), connect):
                    return True, "Success: TCP connection established"
            except TimeoutError:
                return False, _TIMED_OUT
            except OSError:
                return False, _REFUSED
        assert self._http is not None
        headers = {
            "Host": probe.host_header,
            "User-Agent": f"Amazon-Route53-Health-Check-Service (ref {probe.health_check_id}; sandbox)",
            CHECKER_REGION_HEADER: probe.region,
        }
        timeout = httpx.Timeout(connect=connect, read=respond, write=respond, pool=connect)
        try:
            with self._http.stream(
                "GET", base.rstrip("/") + probe.path, headers=headers, timeout=timeout
            ) as resp:
                body = _head_of(resp.iter_bytes(), _STR_MATCH_BYTES) if probe.search_string else b""
                code = resp.status_code
        except httpx.ConnectTimeout:
            return False, _TIMED_OUT
        except httpx.ConnectError:
            return False, _REFUSED
        except httpx.TimeoutException:
            return False, _NO_RESPONSE
        phrase = _phrase(code)
        if not 200 <= code < 400:
            return False, f"Failure: HTTP Status Code {code}, {phrase}"
        if probe.search_string and probe.search_string.encode() not in body:
            return False, (
                f"Failure: HTTP Status Code {code}, {phrase}. The search string wasn't found in the "
                f"first {_STR_MATCH_BYTES} bytes of the response body"
            )
        return True, f"Success: HTTP Status Code {code}, {phrase}"

    # the API

    def _intercept(self, call: AwsCall) -> Response | None:
        # Every request, for benchmarks that report a caller's Route 53 request rate.
        self._truth.record("route53.call", operation=_operation(call))
        if self._buckets is not None and not self._buckets.take(_operation(call)):
            self._truth.record("route53.throttled", operation=_operation(call))
            return xml_error("Throttling", "Rate exceeded", 400)
        path = call.path
        if path.rstrip("/") == f"{_API}/healthcheck" and call.method == "POST":
            return self._create_health_check(call)
        if path.rstrip("/") == f"{_API}/testdnsanswer" and call.method == "GET":
            return self._test_dns_answer(call)
        match = _HEALTH_CHECK_PATH.match(path)
        if match is None:
            return None
        health_check_id, sub = unquote(match[1]), match[2]
        if sub is None and call.method == "POST":
            return self._update_health_check(call, health_check_id)
        if sub is None and call.method == "DELETE":
            return self._delete_health_check(health_check_id)
        if sub == "/status" and call.method == "GET":
            return self._observations(health_check_id, failures=False)
        if sub == "/lastfailurereason" and call.method == "GET":
            return self._observations(health_check_id, failures=True)
        return None

    def _create_health_check(self, call: AwsCall) -> Response:
        params = _parse("CreateHealthCheck", call)
        reference, config = str(params["CallerReference"]), dict(params["HealthCheckConfig"])
        problem = _invalid_config(config)
        if problem:
            return xml_error("InvalidInput", problem)
        arn = config.get("RoutingControlArn")
        if arn and self._routing_controls(str(arn)) is None:
            return xml_error(
                "InvalidInput", f"Invalid parameter : RoutingControlArn {arn} is not a routing control"
            )
        settings = _settings(config)
        with self._lock:
            backend = self._backend()
            known = self._refs.get(reference)
            check: HealthCheck
            if known is None:
                if arn:
                    check = _RecoveryControlCheck(str(uuid.uuid4()), reference, _moto_args(config), str(arn))
                    check.set_children([])
                    check.set_regions([])
                    backend.health_checks[check.id] = check
                else:
                    check = backend.create_health_check(reference, _moto_args(config))
                self._refs[reference] = _Reference(check.id, settings)
                self._adopt(check, time.monotonic())
            else:
                existing = backend.health_checks.get(known.health_check_id)
                if existing is None or known.settings != settings:
                    why = "a deleted health check" if existing is None else "a check with other settings"
                    return xml_error(
                        "HealthCheckAlreadyExists",
                        f"CallerReference {reference} was already used by {why}.",
                        409,
                    )
                check = existing
        location = f"https://route53.amazonaws.com{_API}/healthcheck/{check.id}"
        return _render("CreateHealthCheck", {"HealthCheck": check, "Location": location})

    def _update_health_check(self, call: AwsCall, health_check_id: str) -> Response:
        params = _parse("UpdateHealthCheck", call, {"HealthCheckId": health_check_id})
        problem = _invalid_config({"FailureThreshold": params.get("FailureThreshold")})
        if problem:
            return xml_error("InvalidInput", problem)
        with self._lock:
            check = self._backend().health_checks.get(health_check_id)
            if check is None:
                return _no_such_health_check(health_check_id)
            if isinstance(check, _RecoveryControlCheck):
                return xml_error(
                    "InvalidInput", "Invalid parameter : Update is not supported for this health check type."
                )
            version = params.get("HealthCheckVersion")
            if version is not None and int(version) != check.health_check_version:
                return xml_error(
                    "HealthCheckVersionMismatch",
                    f"HealthCheckVersion {version} does not match the current version "
                    f"{check.health_check_version} of health check {health_check_id}.",
                    409,
                )
            for name, attribute in _UPDATABLE.items():
                if name in params:
                    setattr(check, attribute, params[name])
            if "Regions" in params:
                check.set_regions(list(params["Regions"]))
            if "ChildHealthChecks" in params:
                check.set_children(list(params["ChildHealthChecks"]))
            for element in params.get("ResetElements", ()):
                if element in _RESETTABLE:
                    setattr(check, _RESETTABLE[element], None)
                elif element == "Regions":
                    check.set_regions([])
                elif element == "ChildHealthChecks":
                    check.set_children([])
            check.health_check_version += 1
            state = self._states.get(check.id) or self._adopt(check, time.monotonic())
            self._sync_checkers(state, check, time.monotonic())
            self._refresh(check, state)  # Inverted/Disabled take effect at once
        return _render("UpdateHealthCheck", {"HealthCheck": check})

    def _delete_health_check(self, health_check_id: str) -> Response | None:
        with self._lock:
            if health_check_id not in self._backend().health_checks:
                return _no_such_health_check(health_check_id)  # moto answers 200 here
        return None  # moto deletes it, the checker loop forgets it; its caller reference stays taken

    def _observations(self, health_check_id: str, *, failures: bool) -> Response:
        with self._lock:
            check = self._backend().health_checks.get(health_check_id)
            if check is None:
                return _no_such_health_check(health_check_id)
            if check.type_ == "CALCULATED":
                operation = "GetHealthCheckLastFailureReason" if failures else "GetHealthCheckStatus"
                return xml_error(
                    "InvalidInput",
                    f"Invalid parameter : {operation} does not support calculated health checks "
                    f"({health_check_id}).",
                )
            state = self._states.get(health_check_id)
            checkers = list(state.checkers.values()) if state else []
            observations = [
                {
                    "Region": checker.region,
                    "IPAddress": checker.ip,
                    "StatusReport": {"Status": seen.status, "CheckedTime": seen.checked_time},
                }
                for checker in checkers
                if (seen := checker.last_failure if failures else checker.last) is not None
            ]
        operation = "GetHealthCheckLastFailureReason" if failures else "GetHealthCheckStatus"
        return _render(operation, {"HealthCheckObservations": observations})

    def _test_dns_answer(self, call: AwsCall) -> Response:
        params = _parse("TestDNSAnswer", call)
        zone_id, name, kind = (
            str(params["HostedZoneId"]),
            str(params["RecordName"]),
            str(params["RecordType"]),
        )
        with self._lock:
            try:
                zone: FakeZone = self._backend().get_hosted_zone(zone_id)
            except Route53ClientError:
                return xml_error("NoSuchHostedZone", f"No hosted zone found with ID: {zone_id}", 404)
            if zone.private_zone:
                return xml_error("InvalidInput", "TestDNSAnswer only supports querying public hosted zones.")
            code, data, _ttl = self._evaluate(zone, _dns_name(name), kind)
        return _render(
            "TestDNSAnswer",
            {
                "Nameserver": "ns-sandbox",
                "RecordName": name,
                "RecordType": kind,
                "RecordData": list(data),
                "ResponseCode": code,
                "Protocol": "UDP",
            },
        )

    def resolve(self, name: str, kind: str) -> DnsAnswer:
        """The authoritative answer for (name, type) from the public hosted zone holding `name`,
        for the sandbox's name server; REFUSED outside every public zone."""
        with self._lock:
            zones = [z for z in self._backend().zones.values() if not z.private_zone]
            holding = [z for z in zones if _within(name, _dns_name(z.name))]
            if not holding:
                return DnsAnswer.refused()
            zone = max(holding, key=lambda z: len(z.name))  # the most specific zone answers
            code, data, ttl_aws = self._evaluate(zone, name, kind)
        rcode = dns_rcode.NXDOMAIN if code == "NXDOMAIN" else dns_rcode.NOERROR
        return DnsAnswer(rcode, data, max(1, round(self._clock.real_seconds(ttl_aws))))

    def _evaluate(self, zone: FakeZone, wanted: str, kind: str) -> tuple[str, tuple[str, ...], int]:
        """(response code, values, TTL in AWS seconds) as Route 53 would answer now; the lock is held."""
        named = [r for r in zone.rrsets if _dns_name(r.name) == wanted]
        if not named:
            code, data, ttl = "NXDOMAIN", (), 0
        else:
            chosen = route(
                [_routed(r) for r in named if r.type == kind],
                self._record_healthy,
                self._rng,
                resolver_region=self._resolver_region,
            )
            data, ttl = self._values(zone, chosen, kind)
            code = "NOERROR"
        key = (zone.resource_id, wanted, kind)
        if self._answers.get(key) != (code, data):
            self._answers[key] = (code, data)
            self._truth.record(
                "route53.dns_answer",
                record=wanted,
                type=kind,
                zone_id=zone.resource_id,
                answer=list(data),
                response_code=code,
            )
        return code, data, ttl

    def _values(
        self, zone: FakeZone, chosen: Sequence[RoutedRecord], kind: str
    ) -> tuple[tuple[str, ...], int]:
        """The answer's values and TTL (AWS seconds): an alias to a load balancer becomes its
        addresses (the ELB's TTL); an alias to another record of the zone, that record's answer
        (with that record's TTL)."""
        values: list[str] = []
        ttls: list[int] = []
        for record in chosen:
            if not record.alias:
                values += record.values
                ttls.append(record.ttl)
                continue
            target = record.values[0]
            addresses = self._alias_addresses(target)
            if addresses is not None:
                values += addresses
                ttls.append(ELB_TTL_S)
            elif _within(target, _dns_name(zone.name)) and target not in record.values[1:]:
                _code, inner, inner_ttl = self._evaluate(zone, target, kind)
                values += inner
                ttls.append(inner_ttl)
            else:
                values.append(target)  # an AWS resource the sandbox does not run: its name
                ttls.append(ELB_TTL_S)
        return tuple(values), min(ttls) if ttls else ELB_TTL_S

    def _record_healthy(self, record: RoutedRecord) -> bool:
        if record.health_check_id is None:
            return True
        state = self._states.get(record.health_check_id)
        return True if state is None else state.healthy  # unknown or not yet seen: new, so healthy

    def _health_report(self, call: AwsCall) -> Response:
        """Every check's reported status and each checker's verdict, for the operator's view."""
        with self._lock:
            checks = {c.id: c for c in self._backend().health_checks.values()}
            report = []
            for health_check_id, state in self._states.items():
                check = checks.get(health_check_id)
                if check is None:
                    continue
                report.append(
                    {
                        "health_check_id": health_check_id,
                        "caller_reference": check.caller_reference,
                        "type": check.type_,
                        "target": _target_text(check),
                        "routing_control_arn": getattr(check, "routing_control_arn", None),
                        "inverted": bool(check.inverted),
                        "disabled": bool(check.disabled),
                        "healthy": state.healthy,
                        "checkers": [
                            {
                                "region": c.region,
                                "ip_address": c.ip,
                                "healthy": c.healthy,
                                "status": c.last.status if c.last else None,
                                "checked_time": c.last.checked_time.isoformat() if c.last else None,
                            }
                            for c in state.checkers.values()
                        ],
                    }
                )
        return Response(json.dumps({"health_checks": report}), content_type="application/json")


def _probe_of(check: HealthCheck, region: str) -> _Probe:
    """What one checker requests: AWS connects to IPAddress if set, else to the FQDN."""
    host = str(check.ip_address or check.fqdn or "")
    port = int(check.port or _default_port(str(check.type_)))
    host_header = str(check.fqdn or check.ip_address or "")
    if port not in (80, 443):  # AWS: "FullyQualifiedDomainName:Port" for other ports
        host_header = f"{_bracketed(host_header)}:{port}"
    path = str(check.resource_path or "/")
    return _Probe(
        health_check_id=check.id,
        region=region,
        kind=str(check.type_),
        host=host,
        port=port,
        path=path if path.startswith("/") else f"/{path}",
        host_header=host_header,
        search_string=check.search_string if check.type_ in _STR_MATCH_TYPES else None,
    )


def _bracketed(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def _head_of(chunks: Iterable[bytes], limit: int) -> bytes:
    body = b""
    for chunk in chunks:
        body += chunk
        if len(body) >= limit:
            break
    return body[:limit]


def _phrase(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def _target_text(check: HealthCheck) -> str:
    if check.type_ not in _PROBED_TYPES:
        return str(check.type_)
    host = check.ip_address or check.fqdn
    return f"{str(check.type_).split('_')[0].lower()}://{host}:{check.port}{check.resource_path or '/'}"
