"""Route 53 in the plan: a health check per region, the failover records, the regional names.

Identity rules (what makes a re-run find what an earlier run made):
- a health check is ours by its CallerReference, `chalkdr-<env>-<region>-<hash>`, where the hash
  covers the settings Route 53 cannot change in place (Type, RequestInterval): a new hash means a
  new check (replace), and an interrupted replace leaves a check with the old hash to clean up;
- a record is (name, type, SetIdentifier); failover/weighted/latency records use `<env>-<region>`
  so that every SetIdentifier in the zone is unique (moto deletes by SetIdentifier alone).

Ownership (what makes provision leave other people's things alone):
- a health check is this environment's when it carries the tag `chalk-dr:environment=<env>`;
  one with this environment's CallerReference but not that tag is an error naming it, unless
  the topology's `adopt.health_checks` lists its id;
- DNS names cannot be tagged, so each name chalk-dr writes A records under has an ownership TXT
  record beside it, as external-dns's TXT registry keeps one (kubernetes-sigs/external-dns,
  docs/registry/txt.md): named with a prefix that carries the record type (external-dns's
  `--txt-prefix` with `%{record_type}`, here `_chalk-dr-a.<name>`, a label of its own so it
  never collides with external-dns's own `a-<name>` records), valued in external-dns's label
  format with chalk-dr as the heritage: `"heritage=chalk-dr,chalk-dr/owner=<env>"`. It is
  written in the same atomic change batch as the name's records. An existing record the plan
  would change under a name without this environment's TXT record is an error naming it,
  unless `adopt.records` lists the name.

With ARC routing controls (`recovery.arc`, chalkdr.plan.arc), each region has two more checks:
- a RECOVERY_CONTROL check on the region's routing control (RoutingControlArn; healthy while
  the control is On), CallerReference `chalkdr-<env>-<region>-rc-<hash>`, the hash over the
  routing control's cluster, panel and name (RoutingControlArn cannot be updated: a routing
  control made anew means a new check);
- a CALCULATED check, CallerReference `chalkdr-<env>-<region>-calc-<hash>`, whose children are
  the region's HTTPS /healthz check and its RECOVERY_CONTROL check, with HealthThreshold 2:
  healthy only when both are. The region's failover record carries this one. That keeps the
  automatic /healthz failover the drills measure (the HTTPS child failing fails the parent) and
  lets a failover force traffic away with the routing control alone (a data-plane call that
  needs no Route 53 API in us-east-1). Without `recovery.arc` the records carry the HTTPS checks
  as before. Route 53 has no status API for a calculated check ("You can't use
  GetHealthCheckStatus to get the status of a calculated health check", API reference): drills
  read the verdict of its HTTPS child (tasks/route53.py `discover_routing`).
Both are owned like the HTTPS check (tag, `adopt.health_checks`). A replaced or no longer wanted
check is deleted only after nothing points at it: records first, then the calculated check's
children.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal

from pydantic import Field

from chalkdr.plan.arc import arc_view
from chalkdr.plan.arc import pending_routing_control
from chalkdr.plan.arc import routing_control_names
from chalkdr.plan.core import OWNER_TAG_KEY
from chalkdr.plan.core import RECOVERY_TAG
from chalkdr.plan.core import Action
from chalkdr.plan.core import Change
from chalkdr.plan.core import FieldDiff
from chalkdr.plan.core import Findings
from chalkdr.plan.core import PlanModel
from chalkdr.plan.core import ResourceKind
from chalkdr.plan.core import Spec
from chalkdr.plan.core import StageDef
from chalkdr.plan.core import claim
from chalkdr.plan.core import compare
from chalkdr.plan.core import normalize_dns
from chalkdr.plan.core import ownership_tags
from chalkdr.plan.core import resource_ref
from chalkdr.topology import RegionConfig
from chalkdr.topology import RoutingMode
from chalkdr.topology import Topology

if TYPE_CHECKING:
    from chalkdr.plan.systems import DesiredState
    from chalkdr.plan.systems import ObservedState

__all__ = [
    "CALCULATED_HEALTH_THRESHOLD",
    "STAGES",
    "AliasTarget",
    "CalculatedCheckSpec",
    "HealthCheckSpec",
    "ObservedAlb",
    "ObservedHealthCheck",
    "ObservedRecord",
    "ObservedRoute53",
    "RecordSpec",
    "RoutingControlCheckSpec",
    "calculated_check_name",
    "calculated_check_reference",
    "caller_reference",
    "caller_reference_prefix",
    "caller_reference_prefixes",
    "changes",
    "check_ref",
    "desired",
    "health_check_name",
    "ownership_record_name",
    "ownership_value",
    "record_owner",
    "routing_control_check_name",
    "routing_control_check_reference",
    "set_identifier",
]

_CALLER_REFERENCE_MAX = 64  # Route 53's limit
_HASH_LEN = 10
_RC = "rc"  # CallerReference role of a RECOVERY_CONTROL check
_CALC = "calc"  # ... of a CALCULATED check
CALCULATED_HEALTH_THRESHOLD = 2  # both children healthy
OWNERSHIP_RECORD_TTL = 300  # external-dns's default TTL for its registry records
OWNERSHIP_HERITAGE = "chalk-dr"


# -- names ------------------------------------------------------------------------------------


def health_check_name(environment: str, region: str) -> str:
    return f"chalkdr-{environment}-{region}"


def routing_control_check_name(environment: str, region: str) -> str:
    return f"chalkdr-{environment}-{region}-routing-control"


def calculated_check_name(environment: str, region: str) -> str:
    return f"chalkdr-{environment}-{region}-calculated"


def caller_reference_prefix(environment: str, region: str, role: str = "") -> str:
    """`chalkdr-<env>-<region>-` (the HTTPS check), or with a role (`rc`, `calc`) for the ARC ones;
    a hashed form when the name would leave no room for the hash and a retry suffix."""
    prefix = f"chalkdr-{environment}-{region}-" + (f"{role}-" if role else "")
    if len(prefix) + _HASH_LEN + 3 > _CALLER_REFERENCE_MAX:  # room for a ".NN" retry suffix
        key = f"{environment}|{region}" + (f"|{role}" if role else "")
        prefix = f"chalkdr-{hashlib.sha256(key.encode()).hexdigest()[:16]}-"
    return prefix


def caller_reference_prefixes(environment: str, region: str) -> tuple[str, ...]:
    """Every CallerReference prefix of a region's checks: what the Route 53 read lists."""
    return tuple(caller_reference_prefix(environment, region, role) for role in ("", _RC, _CALC))


def caller_reference(environment: str, region: str, *, check_type: str, request_interval: int) -> str:
    """Deterministic: a retried create returns the same check; a new immutable setting, a new check."""
    digest = hashlib.sha256(f"{check_type}|{request_interval}".encode()).hexdigest()[:_HASH_LEN]
    return caller_reference_prefix(environment, region) + digest


def routing_control_check_reference(
    environment: str, region: str, *, cluster: str, panel: str, control: str
) -> str:
    digest = hashlib.sha256(f"RECOVERY_CONTROL|{cluster}|{panel}|{control}".encode()).hexdigest()[:_HASH_LEN]
    return caller_reference_prefix(environment, region, _RC) + digest


def calculated_check_reference(environment: str, region: str) -> str:
    digest = hashlib.sha256(b"CALCULATED").hexdigest()[:_HASH_LEN]
    return caller_reference_prefix(environment, region, _CALC) + digest


def check_ref(kind: str, region: str) -> str:
    """Where an apply keeps a region's health-check id once made: by region alone for the HTTPS
    check (as the records always found it), `<kind>:<region>` for the ARC ones."""
    return region if kind == ResourceKind.HEALTH_CHECK.value else resource_ref(kind, region)


def set_identifier(environment: str, region: str) -> str:
    return f"{environment}-{region}"


def ownership_record_name(name: str, record_type: str = "A") -> str:
    """The TXT record that says whose `name`'s records of `record_type` are (external-dns's
    `--txt-prefix=_chalk-dr-%{record_type}.`)."""
    return f"_chalk-dr-{record_type.lower()}.{normalize_dns(name)}"


def ownership_value(environment: str) -> str:
    """The TXT value as Route 53 takes it (quoted), in external-dns's `heritage=..,<h>/owner=..` form."""
    return f'"heritage={OWNERSHIP_HERITAGE},{OWNERSHIP_HERITAGE}/owner={environment}"'


def record_owner(values: tuple[str, ...]) -> str | None:
    """The environment an ownership TXT record's values name, or None when none is chalk-dr's."""
    for value in values:
        labels = dict(p.split("=", 1) for p in value.strip().strip('"').split(",") if "=" in p)
        owner = labels.get(f"{OWNERSHIP_HERITAGE}/owner")
        if labels.get("heritage") == OWNERSHIP_HERITAGE and owner:
            return owner
    return None


# -- models -----------------------------------------------------------------------------------


class _HealthCheckSettings(PlanModel):
    """What UpdateHealthCheck can change in place, the same fields whether wanted or read."""

    fqdn: str | None = None
    port: int | None = None
    resource_path: str | None = None
    failure_threshold: int | None = None
    regions: tuple[str, ...] = ()
    inverted: bool = False
    disabled: bool = False

    def mutable(self) -> dict[str, Any]:
        """The in-place settings as compared between spec and AWS (AWS's orderings and case aside)."""
        out = self.model_dump(include=set(_HealthCheckSettings.model_fields))
        out["fqdn"] = normalize_dns(self.fqdn) if self.fqdn else None
        out["regions"] = sorted(self.regions)
        return out


class HealthCheckSpec(_HealthCheckSettings, Spec):
    kind: Literal["route53-health-check"] = "route53-health-check"
    # `region` is the region whose ALB is checked (the check itself lives in Route 53).
    name: str
    caller_reference: str
    type: str
    fqdn: str
    port: int
    resource_path: str
    request_interval: int
    failure_threshold: int
    tags: dict[str, str]

    @property
    def ref(self) -> str:
        return check_ref(self.kind, self.region)


class RoutingControlCheckSpec(Spec):
    """A RECOVERY_CONTROL check: healthy while the region's routing control is On."""

    kind: Literal["route53-routing-control-health-check"] = "route53-routing-control-health-check"
    # `region` is the region whose routing control it follows.
    name: str
    caller_reference: str
    routing_control: str  # its name
    routing_control_arn: str | None = None  # None: created by the same apply
    tags: dict[str, str]

    @property
    def ref(self) -> str:
        return check_ref(self.kind, self.region)


class CalculatedCheckSpec(Spec):
    """The check a region's failover record carries with ARC: its HTTPS and RECOVERY_CONTROL
    checks as children, healthy only when both are."""

    kind: Literal["route53-calculated-health-check"] = "route53-calculated-health-check"
    name: str
    caller_reference: str
    health_threshold: int = CALCULATED_HEALTH_THRESHOLD
    tags: dict[str, str]

    @property
    def ref(self) -> str:
        return check_ref(self.kind, self.region)


class ObservedHealthCheck(_HealthCheckSettings):
    id: str
    caller_reference: str
    version: int
    type: str
    request_interval: int | None = None
    routing_control_arn: str | None = None  # RECOVERY_CONTROL
    children: tuple[str, ...] = ()  # CALCULATED: ChildHealthChecks
    health_threshold: int | None = None  # CALCULATED
    tags: dict[str, str] = Field(default_factory=dict)


class AliasTarget(PlanModel):
    dns_name: str
    hosted_zone_id: str
    evaluate_target_health: bool = False


class _Routed(PlanModel):
    """What a record set carries, the same whether wanted or read: its name and type, its
    routing settings, and its answer (an alias, or a TTL and values)."""

    # which record set: Route 53's key
    name: str
    type: str = "A"
    set_identifier: str | None = None
    # its answer: an alias, or a TTL and values
    alias: AliasTarget | None = None
    ttl: int | None = None
    values: tuple[str, ...] = ()
    # its routing policy (none of them: simple)
    failover: str | None = None
    weight: int | None = None
    latency_region: str | None = None

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (normalize_dns(self.name), self.type, self.set_identifier)

    @property
    def routing(self) -> str:
        if self.failover:
            return "failover"
        if self.weight is not None:
            return "weighted"
        if self.latency_region:
            return "latency"
        return "simple"

    @property
    def routing_value(self) -> Any:
        return {"failover": self.failover, "weighted": self.weight, "latency": self.latency_region}.get(
            self.routing
        )


class RecordSpec(_Routed, Spec):
    kind: Literal["route53-record"] = "route53-record"
    # `region` is the region the record points at ("global" for an ownership record).
    zone_id: str
    failover: Literal["PRIMARY", "SECONDARY"] | None = None
    health_check_region: str | None = None  # whose health check it carries
    # which of that region's checks: the HTTPS one, or (with ARC) the calculated one
    health_check_kind: Literal["route53-health-check", "route53-calculated-health-check"] = (
        "route53-health-check"
    )
    owner_of: str | None = None  # an ownership TXT record: the name whose records it claims
    # A name a health check probes (a region's query_hostname, and its ownership record): written
    # before the checks, which resolve it from their first request (see STAGES).
    probed: bool = False

    @property
    def batch_name(self) -> str:
        """The name whose atomic change batch this record is written in (its own, or the one it owns)."""
        return normalize_dns(self.owner_of or self.name)

    @property
    def resource_id(self) -> str:
        name, rtype, ident = self.key
        return f"{name} {rtype}" + (f" {ident}" if ident else "")


class ObservedRecord(_Routed):
    health_check_id: str | None = None


class ObservedAlb(PlanModel):
    region: str
    name: str
    arn: str
    dns_name: str
    canonical_hosted_zone_id: str
    scheme: str = "internet-facing"  # or "internal": private addresses only


class ObservedRoute53(PlanModel):
    zone_id: str
    zone_name: str | None  # None: the hosted zone does not exist
    private_zone: bool = False
    health_checks: tuple[ObservedHealthCheck, ...] = ()  # those with this environment's reference
    # Every A record under the names the topology uses, and the ownership TXT record of each name.
    records: tuple[ObservedRecord, ...] = ()
    albs: dict[str, ObservedAlb] = Field(default_factory=dict)  # region -> its ALB (absent: not found)


# -- desired ----------------------------------------------------------------------------------


def _within_zone(name: str, zone: str) -> bool:
    zone = normalize_dns(zone)
    return name == zone or name.endswith("." + zone)


def _health_checks(
    topology: Topology, observed: ObservedRoute53, findings: Findings
) -> list[HealthCheckSpec]:
    hc = topology.route53.health_check
    specs = []
    for r in topology.regions:
        alb = observed.albs.get(r.aws_region)
        if alb is None:
            findings.errors.append(
                f"{r.aws_region}: ALB {r.alb!r} not found (elasticloadbalancing:DescribeLoadBalancers): "
                "the health check and alias records need its DNS name"
            )
            continue
        if alb.scheme == "internal":
            findings.errors.append(
                f"{r.aws_region}: ALB {alb.name} is internal (Scheme internal): Route 53 health checkers "
                "are on the internet and cannot reach private addresses (Route 53 Developer Guide, "
                "'Values that you specify when you create or update health checks'); use an "
                "internet-facing ALB or a CloudWatch-alarm health check"
            )
            continue
        name = health_check_name(topology.environment, r.aws_region)
        specs.append(
            HealthCheckSpec(
                region=r.aws_region,
                name=name,
                caller_reference=caller_reference(
                    topology.environment,
                    r.aws_region,
                    check_type=hc.protocol,
                    request_interval=hc.request_interval,
                ),
                type=hc.protocol,
                # The regional hostname, not the ALB's name: Route 53 sends it as Host and SNI,
                # which is what an ALB's host rules and certificate are for.
                fqdn=normalize_dns(r.query_hostname),
                port=hc.port,
                resource_path=hc.path,
                request_interval=hc.request_interval,
                failure_threshold=hc.failure_threshold,
                regions=tuple(sorted(hc.regions)),
                tags={**ownership_tags(topology.environment), "Name": name},
            )
        )
    return specs


def _alias(alb: ObservedAlb) -> AliasTarget:
    return AliasTarget(
        dns_name=normalize_dns(alb.dns_name),
        hosted_zone_id=alb.canonical_hosted_zone_id,
        evaluate_target_health=False,
    )


def _failover_name_routing(
    topology: Topology, findings: Findings
) -> list[tuple[RegionConfig, dict[str, Any]]]:
    """Which regions the failover name routes to, and each one's routing settings."""
    r53 = topology.route53
    if topology.routing is RoutingMode.WEIGHTED:
        return [(r, {"weight": r.weight}) for r in topology.regions]
    if topology.routing is RoutingMode.LATENCY:
        return [(r, {"latency_region": r.aws_region}) for r in topology.regions]
    routed = [(topology.primary, {"failover": "PRIMARY"})]
    if topology.secondaries:
        routed.append((topology.secondaries[0], {"failover": "SECONDARY"}))
    if len(topology.secondaries) > 1:
        left = ", ".join(r.aws_region for r in topology.secondaries[1:])
        findings.warnings.append(
            f"route53: failover routing has one PRIMARY and one SECONDARY record; {left} "
            f"not reachable through {r53.failover_record} (use weighted or latency routing)"
        )
    return routed


def _records(topology: Topology, observed: ObservedRoute53, findings: Findings) -> list[RecordSpec]:
    r53 = topology.route53
    zone = observed.zone_name
    if zone is None:
        findings.errors.append(f"route53: hosted zone {r53.zone_id} not found (route53:GetHostedZone)")
        return []
    if observed.private_zone:
        findings.errors.append(
            f"route53: hosted zone {normalize_dns(zone)} is private: Route 53 health checkers resolve "
            "each check's domain name through public DNS and TestDNSAnswer does not answer for "
            "private zones, so the failover name and the regional hostnames need a public hosted zone"
        )
        return []
    names = [r53.failover_record, *(r.query_hostname for r in topology.regions)]
    outside = [n for n in names if not _within_zone(n, zone)]
    if outside:
        findings.errors.append(f"route53: {', '.join(outside)} not within hosted zone {normalize_dns(zone)}")
        return []
    specs: list[RecordSpec] = []
    check_kind: Literal["route53-health-check", "route53-calculated-health-check"] = (
        "route53-calculated-health-check" if topology.recovery.arc else "route53-health-check"
    )
    for r, routing in _failover_name_routing(topology, findings):
        alb = observed.albs.get(r.aws_region)
        if alb is not None:
            specs.append(
                RecordSpec(
                    zone_id=r53.zone_id,
                    name=r53.failover_record,
                    set_identifier=set_identifier(topology.environment, r.aws_region),
                    alias=_alias(alb),
                    region=r.aws_region,
                    health_check_region=r.aws_region,
                    health_check_kind=check_kind,
                    **routing,
                )
            )
    for r in topology.regions:
        alb = observed.albs.get(r.aws_region)
        if alb is not None:
            specs.append(
                RecordSpec(
                    zone_id=r53.zone_id,
                    name=r.query_hostname,
                    alias=_alias(alb),
                    region=r.aws_region,
                    probed=True,
                )
            )
    probed = {s.batch_name for s in specs if s.probed}
    owners = [
        RecordSpec(
            zone_id=r53.zone_id,
            name=ownership_record_name(name),
            type="TXT",
            ttl=OWNERSHIP_RECORD_TTL,
            values=(ownership_value(topology.environment),),
            region="global",
            owner_of=name,
            probed=name in probed,
        )
        for name in dict.fromkeys(s.batch_name for s in specs)
    ]
    return [*specs, *owners]


def _arc_checks(
    topology: Topology, observed: ObservedState, endpoint_checks: list[HealthCheckSpec]
) -> list[Spec]:
    """With ARC: per region whose HTTPS check is wanted, its RECOVERY_CONTROL and CALCULATED checks."""
    arc = topology.recovery.arc
    if arc is None:
        return []
    env = topology.environment
    view = arc_view(topology, observed.arc)
    names = routing_control_names(topology)
    specs: list[Spec] = []
    for check in endpoint_checks:
        region, control = check.region, names[check.region]
        rc_name = routing_control_check_name(env, region)
        calc_name = calculated_check_name(env, region)
        specs.append(
            RoutingControlCheckSpec(
                region=region,
                name=rc_name,
                caller_reference=routing_control_check_reference(
                    env, region, cluster=arc.cluster_name, panel=arc.control_panel_name, control=control
                ),
                routing_control=control,
                routing_control_arn=view.routing_control_arn(region),
                tags={**ownership_tags(env), "Name": rc_name},
            )
        )
        specs.append(
            CalculatedCheckSpec(
                region=region,
                name=calc_name,
                caller_reference=calculated_check_reference(env, region),
                tags={**ownership_tags(env), "Name": calc_name},
            )
        )
    return specs


def desired(topology: Topology, observed: ObservedState, findings: Findings) -> list[Spec]:
    """Health checks on every region's ALB (with ARC, each region's routing-control and calculated
    checks too), then the records that carry them."""
    r53 = observed.route53
    checks = _health_checks(topology, r53, findings)
    return [*checks, *_arc_checks(topology, observed, checks), *_records(topology, r53, findings)]


# -- changes ----------------------------------------------------------------------------------


def _reference_hash(check: ObservedHealthCheck, prefix: str) -> str | None:
    """The immutable-settings hash of a check with this region's CallerReference, else None."""
    if not check.caller_reference.startswith(prefix):
        return None
    m = re.fullmatch(rf"([0-9a-f]{{{_HASH_LEN}}})(?:\.\d+)?", check.caller_reference[len(prefix) :])
    return m.group(1) if m else None


def _claimed_checks(
    desired: DesiredState, region: str, prefix: str, observed: ObservedRoute53, findings: Findings
) -> dict[str, tuple[ObservedHealthCheck, list[FieldDiff]]] | None:
    """The region's checks with CallerReference `prefix` + hash that are ours or adopted, with what
    adopting them takes; None when one of them belongs to someone else (an error names it)."""
    mine: dict[str, tuple[ObservedHealthCheck, list[FieldDiff]]] = {}
    blocked = False
    for c in observed.health_checks:
        if _reference_hash(c, prefix) is None:
            continue
        what = f"{region}: Route 53 health check {c.id} (CallerReference {c.caller_reference})"
        taking = desired.claim_tagged(findings, "health_checks", c.id, c.tags, what)
        if taking is None:
            blocked = True
        else:
            mine[c.id] = (c, taking)
    return None if blocked else mine


def _kept_check_change(
    spec: HealthCheckSpec | RoutingControlCheckSpec | CalculatedCheckSpec,
    keep: ObservedHealthCheck,
    claimed: dict[str, tuple[ObservedHealthCheck, list[FieldDiff]]],
    stale: tuple[str, ...],
    current: dict[str, Any],
    wanted: dict[str, Any],
    findings: Findings,
) -> Change:
    """The change of a check that stays: its in-place settings, our tags, the stale ones to delete.

    A check a failover inverted (RECOVERY_TAG) stays inverted: traffic stays away from that
    region until failback."""
    if keep.inverted and RECOVERY_TAG in keep.tags:
        findings.warnings.append(
            f"route53: health check {keep.id} ({spec.region}) is inverted by recovery "
            f"{keep.tags[RECOVERY_TAG]}: left inverted until failback"
        )
        wanted = {**wanted, "inverted": True}
    action, diffs = compare(current, wanted)
    # Only our keys count: tags an operator added are theirs, and AddTags leaves them alone.
    tags = {k: v for k in spec.tags if (v := keep.tags.get(k)) is not None}
    if tags != spec.tags:
        diffs += [FieldDiff(field="tags", old=tags, new=dict(spec.tags)), *claimed[keep.id][1]]
        action = Action.UPDATE
    if stale:
        diffs.append(FieldDiff(field="stale_health_checks", old=list(stale), new=[]))
        action = Action.REPLACE
    return Change.of(
        spec, action, diffs, current_id=keep.id, current_version=str(keep.version), stale_ids=stale
    )


def _health_check_change(
    desired: DesiredState, spec: HealthCheckSpec, observed: ObservedRoute53, findings: Findings
) -> Change | None:
    prefix = caller_reference_prefix(desired.environment, spec.region)
    claimed = _claimed_checks(desired, spec.region, prefix, observed, findings)
    if claimed is None:
        return None
    want = spec.caller_reference[len(prefix) :]
    keep = next(
        (
            c
            for c, _ in claimed.values()
            if _reference_hash(c, prefix) == want
            and c.type == spec.type
            and c.request_interval == spec.request_interval
        ),
        None,
    )
    stale = tuple(i for i in claimed if keep is None or i != keep.id)
    if keep is None:
        if not stale:
            created = FieldDiff(field="health_check", new=f"{spec.type} {spec.fqdn}:{spec.port}")
            return Change.of(spec, Action.CREATE, [created])
        old = claimed[stale[0]][0]
        _, immutable = compare(
            {"type": old.type, "request_interval": old.request_interval},
            {"type": spec.type, "request_interval": spec.request_interval},
        )
        _, mutable = compare(old.mutable(), spec.mutable())
        return Change.of(spec, Action.REPLACE, [*immutable, *mutable], stale_ids=stale)
    return _kept_check_change(spec, keep, claimed, stale, keep.mutable(), spec.mutable(), findings)


def _flags(check: ObservedHealthCheck) -> dict[str, Any]:
    return {"inverted": check.inverted, "disabled": check.disabled}


_NO_FLAGS = {"inverted": False, "disabled": False}


def _routing_control_check_change(
    desired: DesiredState, spec: RoutingControlCheckSpec, observed: ObservedRoute53, findings: Findings
) -> Change | None:
    """The check to keep is the one on the routing control's ARN (RoutingControlArn is immutable);
    any other of the region's RECOVERY_CONTROL references is stale."""
    prefix = caller_reference_prefix(desired.environment, spec.region, _RC)
    claimed = _claimed_checks(desired, spec.region, prefix, observed, findings)
    if claimed is None:
        return None
    arn = spec.routing_control_arn
    keep = next(
        (
            c
            for c, _ in claimed.values()
            if arn is not None and c.type == "RECOVERY_CONTROL" and c.routing_control_arn == arn
        ),
        None,
    )
    stale = tuple(i for i in claimed if keep is None or i != keep.id)
    if keep is None:
        new = arn or pending_routing_control(spec.routing_control)
        if not stale:
            return Change.of(spec, Action.CREATE, [FieldDiff(field="routing_control_arn", new=new)])
        old = claimed[stale[0]][0].routing_control_arn
        diff = FieldDiff(field="routing_control_arn", old=old, new=new)
        return Change.of(spec, Action.REPLACE, [diff], stale_ids=stale)
    return _kept_check_change(spec, keep, claimed, stale, _flags(keep), dict(_NO_FLAGS), findings)


def _calculated_check_change(
    desired: DesiredState,
    spec: CalculatedCheckSpec,
    children: list[str],
    observed: ObservedRoute53,
    findings: Findings,
) -> Change | None:
    """Children and threshold update in place (UpdateHealthCheck ChildHealthChecks, HealthThreshold)."""
    prefix = caller_reference_prefix(desired.environment, spec.region, _CALC)
    claimed = _claimed_checks(desired, spec.region, prefix, observed, findings)
    if claimed is None:
        return None
    wanted = {"children": sorted(children), "health_threshold": spec.health_threshold}
    keep = next((c for c, _ in claimed.values() if c.type == "CALCULATED"), None)
    stale = tuple(i for i in claimed if keep is None or i != keep.id)
    if keep is None:
        action, diffs = compare(None, wanted)
        return Change.of(spec, Action.REPLACE if stale else action, diffs, stale_ids=stale)
    current = {"children": sorted(keep.children), "health_threshold": keep.health_threshold, **_flags(keep)}
    return _kept_check_change(spec, keep, claimed, stale, current, {**wanted, **_NO_FLAGS}, findings)


def pending_health_check_id(spec: Spec) -> str:
    """What a record change shows for a health check the same apply will create."""
    return f"(new health check {spec.resource_id})"


def _record_fields(record: _Routed, health_check_id: str | None) -> dict[str, Any]:
    alias = record.alias
    return {
        "alias_target": normalize_dns(alias.dns_name) if alias else None,
        "alias_zone": alias.hosted_zone_id if alias else None,
        "evaluate_target_health": alias.evaluate_target_health if alias else None,
        "health_check_id": health_check_id,
        record.routing: record.routing_value,
        "ttl": record.ttl,
        "values": list(record.values),
    }


def _record_change(spec: RecordSpec, current: ObservedRecord | None, health_check_id: str | None) -> Change:
    wanted = _record_fields(spec, health_check_id)
    if current is None:
        return Change.of(spec, *compare(None, wanted))
    old = _record_fields(current, current.health_check_id)
    if current.routing == spec.routing:
        return Change.of(spec, *compare(old, wanted))
    # Route 53 cannot UPSERT a record set into another routing policy: delete + create.
    _, diffs = compare(old, wanted)
    diffs += [
        FieldDiff(field=k, old=v, new=None) for k, v in old.items() if k not in wanted and v is not None
    ]
    return Change.of(spec, Action.REPLACE, diffs, replaces=current.model_dump(mode="json"))


def _claimed_name(
    desired: DesiredState,
    name: str,
    group: list[RecordSpec],
    records: dict[tuple[str, str, str | None], ObservedRecord],
    findings: Findings,
) -> list[FieldDiff] | None:
    """Whether the records of `name` are this environment's to write, by the name's ownership TXT
    record: [] when they are (or nothing is there yet), the diffs that adopt them, or None."""
    owner_spec = next(r for r in group if r.owner_of is not None)
    txt = records.get(owner_spec.key)
    existing = [r.resource_id for r in group if r.owner_of is None and r.key in records]
    if txt is None and not existing:
        return []  # a name nobody has written yet: ours to create, with its ownership record
    return claim(
        findings,
        environment=desired.environment,
        owner=record_owner(txt.values) if txt else None,
        adopted=name in desired.adopt.records,
        what=f"route53: DNS name {name}" + (f" (record {', '.join(existing)})" if existing else ""),
        marker=f"ownership TXT record {owner_spec.name} saying so",
        adopt_field="records",
    )


def _check_changes(
    desired: DesiredState, r53: ObservedRoute53, findings: Findings
) -> tuple[list[Change], dict[tuple[str, str], str]]:
    """Every health check's change, and (kind, region) -> the id each record or parent will carry;
    a check that is someone else's has no entry, so nothing that needs it is changed either."""
    out: list[Change] = []
    ids: dict[tuple[str, str], str] = {}

    def add(change: Change | None, spec: Spec) -> None:
        if change is not None:
            ids[(spec.kind, spec.region)] = change.current_id or pending_health_check_id(spec)
            out.append(change)

    for check in desired.of(HealthCheckSpec):
        add(_health_check_change(desired, check, r53, findings), check)
    for rc in desired.of(RoutingControlCheckSpec):
        add(_routing_control_check_change(desired, rc, r53, findings), rc)
    for calc in desired.of(CalculatedCheckSpec):
        kinds = (ResourceKind.HEALTH_CHECK.value, ResourceKind.ROUTING_CONTROL_HEALTH_CHECK.value)
        children = [ids.get((k, calc.region)) for k in kinds]
        if None in children:
            continue  # a child is someone else's (an error says whose)
        add(_calculated_check_change(desired, calc, [c for c in children if c], r53, findings), calc)
    if not desired.of(CalculatedCheckSpec):
        for c in r53.health_checks:
            if c.tags.get(OWNER_TAG_KEY) == desired.environment and c.type in (
                "RECOVERY_CONTROL",
                "CALCULATED",
            ):
                findings.warnings.append(
                    f"route53: health check {c.id} ({c.type}, CallerReference {c.caller_reference}) is this "
                    "environment's but the topology has no recovery.arc any more (left alone; delete it once "
                    "no record uses it)"
                )
    return out, ids


def changes(desired: DesiredState, observed: ObservedState, findings: Findings) -> list[Change]:
    r53 = observed.route53
    out, check_ids = _check_changes(desired, r53, findings)
    by_key = {r.key: r for r in r53.records}
    specs = desired.of(RecordSpec)
    for name in dict.fromkeys(r.batch_name for r in specs):
        group = [r for r in specs if r.batch_name == name]
        taking = _claimed_name(desired, name, group, by_key, findings)
        if taking is None:
            continue
        for record in group:
            hc = None
            if record.health_check_region:
                hc = check_ids.get((record.health_check_kind, record.health_check_region))
                if hc is None:
                    continue  # its check is someone else's: the record waits too
            change = _record_change(record, by_key.get(record.key), hc)
            if record.owner_of is not None and taking:
                change = change.model_copy(update={"diffs": (*change.diffs, *taking)})
            out.append(change)
    wanted = {r.key for r in specs}
    for rec in r53.records:
        if rec.key not in wanted and rec.type == "A":
            ident = f" (SetIdentifier {rec.set_identifier})" if rec.set_identifier else ""
            findings.warnings.append(
                f"route53: record {rec.key[0]} A{ident} is not in the topology and is left alone; "
                "Route 53 rejects mixing routing policies under one name, so remove it if it conflicts"
            )
    return out


# The names health checks probe (each region's query_hostname) exist before the checks: without an
# IPAddress, "Route 53 sends a DNS request to the domain that you specify for
# FullyQualifiedDomainName at the interval that you specify for RequestInterval" (API Reference,
# HealthCheckConfig), so a check whose name does not resolve yet fails from its first request and
# turns unhealthy after FailureThreshold of them, which would move the failover name to another
# region in the middle of a provision. Health checks exist before records point at them (with ARC:
# the routing-control checks after their routing controls, the calculated checks after both
# children, the records after the routing controls are On); replaced checks are deleted only after
# nothing points at them, the calculated ones first (they point at the others). All serial: Route
# 53 allows 5 requests/s per account.
STAGES = (
    StageDef(
        "route53-regional-records",
        ResourceKind.RECORD,
        concurrent=False,
        select=lambda c: c.typed_spec(RecordSpec).probed,
    ),
    StageDef(
        "route53-health-checks",
        ResourceKind.HEALTH_CHECK,
        concurrent=False,
        depends_on=("route53-regional-records",),
    ),
    StageDef(
        "route53-routing-control-health-checks",
        ResourceKind.ROUTING_CONTROL_HEALTH_CHECK,
        concurrent=False,
        depends_on=("arc-routing-controls",),
    ),
    StageDef(
        "route53-calculated-health-checks",
        ResourceKind.CALCULATED_HEALTH_CHECK,
        concurrent=False,
        depends_on=("route53-health-checks", "route53-routing-control-health-checks"),
    ),
    StageDef(
        "route53-records",
        ResourceKind.RECORD,
        concurrent=False,
        select=lambda c: not c.typed_spec(RecordSpec).probed,
        depends_on=(
            "route53-health-checks",
            "route53-calculated-health-checks",
            "arc-routing-control-states",
        ),
    ),
    StageDef(
        "route53-calculated-health-check-cleanup",
        ResourceKind.CALCULATED_HEALTH_CHECK,
        concurrent=False,
        cleanup=True,
        depends_on=("route53-records",),
        select=lambda c: bool(c.stale_ids),
    ),
    StageDef(
        "route53-health-check-cleanup",
        ResourceKind.HEALTH_CHECK,
        concurrent=False,
        cleanup=True,
        depends_on=("route53-records", "route53-calculated-health-check-cleanup"),
        select=lambda c: bool(c.stale_ids),
    ),
    StageDef(
        "route53-routing-control-health-check-cleanup",
        ResourceKind.ROUTING_CONTROL_HEALTH_CHECK,
        concurrent=False,
        cleanup=True,
        depends_on=("route53-records", "route53-calculated-health-check-cleanup"),
        select=lambda c: bool(c.stale_ids),
    ),
)
