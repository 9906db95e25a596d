"""Tasks for Amazon Route 53: health checks on each region's ALB, the failover and regional alias records.

Also the ALB lookup (Elastic Load Balancing), because an alias record and a health check are
only as right as the ALB DNS name and hosted zone they carry. Reads observe; each ensure makes
the one change its plan entry names and emits an audit event per mutating call. Route 53's
control plane is global (served from us-east-1) and allows 5 requests/s per account, so changes
are made one at a time by the flow and reads run at most five at once. With ARC routing controls
(`recovery.arc`), `ensure_health_check` also makes each region's RECOVERY_CONTROL and CALCULATED
checks, and the failover records carry the calculated ones (chalkdr.plan.route53 says why).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError
from prefect import task
from prefect.cache_policies import NO_CACHE

from chalkdr.classify import aws_call
from chalkdr.clients import ROUTE53_CONTROL_REGION
from chalkdr.clients import AwsClients
from chalkdr.dns import Resolver
from chalkdr.drill import RegionRoute
from chalkdr.drill import Routing
from chalkdr.drill import health_verdict
from chalkdr.errors import AwsCallError
from chalkdr.plan import Action
from chalkdr.plan import AliasTarget
from chalkdr.plan import CalculatedCheckSpec
from chalkdr.plan import Change
from chalkdr.plan import ChangeResult
from chalkdr.plan import HealthCheckSpec
from chalkdr.plan import ObservedAlb
from chalkdr.plan import ObservedHealthCheck
from chalkdr.plan import ObservedRecord
from chalkdr.plan import ObservedRoute53
from chalkdr.plan import RecordSpec
from chalkdr.plan import ResourceKind
from chalkdr.plan import RoutingControlCheckSpec
from chalkdr.plan import WaitPolicy
from chalkdr.plan import caller_reference_prefixes
from chalkdr.plan import check_ref
from chalkdr.plan import normalize_dns
from chalkdr.plan import ownership_record_name
from chalkdr.plan import resource_ref
from chalkdr.plan import tag_list
from chalkdr.topology import RegionConfig
from chalkdr.topology import Topology
from tasks.audit import ApplyContext
from tasks.retry import retry_options

__all__ = [
    "delete_stale_health_checks",
    "discover_routing",
    "ensure_health_check",
    "ensure_records",
    "read_alb",
    "read_records_named",
    "read_route53",
    "read_route53_health",
]

_TAG_BATCH = 10  # ListTagsForResources takes at most 10 ids
_MAX_REFERENCE_ATTEMPTS = 5
_ROUTE53_CONCURRENCY = 5  # Route 53's control-plane limit is 5 requests/s per account


def health_check_arn(health_check_id: str) -> str:
    return f"arn:aws:route53:::healthcheck/{health_check_id}"


def record_resource(zone_id: str, name: str, rtype: str, set_id: str | None) -> str:
    """Records have no ARN; this names one the way the audit trail and events need."""
    return f"arn:aws:route53:::hostedzone/{zone_id}/recordset/{normalize_dns(name)}/{rtype}" + (
        f"/{set_id}" if set_id else ""
    )


# -- reads ------------------------------------------------------------------------------------


@task(task_run_name="read-alb-{region.aws_region}", cache_policy=NO_CACHE, **retry_options())
def read_alb(clients: AwsClients, region: RegionConfig) -> ObservedAlb | None:
    """The region's ALB by name or ARN: its DNS name and canonical hosted zone, or None if absent."""
    elbv2 = clients.elbv2(region.aws_region)
    with aws_call("elasticloadbalancing", "DescribeLoadBalancers", region.alb):
        try:
            if region.alb.startswith("arn:"):
                found = elbv2.describe_load_balancers(LoadBalancerArns=[region.alb])["LoadBalancers"]
            else:
                found = elbv2.describe_load_balancers(Names=[region.alb])["LoadBalancers"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "LoadBalancerNotFound":
                return None
            raise
    if not found:
        return None
    lb = found[0]
    return ObservedAlb(
        region=region.aws_region,
        name=lb["LoadBalancerName"],
        arn=lb["LoadBalancerArn"],
        dns_name=lb["DNSName"],
        canonical_hosted_zone_id=lb["CanonicalHostedZoneId"],
        scheme=lb.get("Scheme", "internet-facing"),
    )


def _health_check(raw: Mapping[str, Any], tags: Mapping[str, str]) -> ObservedHealthCheck:
    cfg = raw.get("HealthCheckConfig", {})
    return ObservedHealthCheck(
        id=raw["Id"],
        caller_reference=raw["CallerReference"],
        version=int(raw.get("HealthCheckVersion", 1)),
        type=cfg.get("Type", ""),
        fqdn=cfg.get("FullyQualifiedDomainName"),
        port=cfg.get("Port"),
        resource_path=cfg.get("ResourcePath"),
        request_interval=cfg.get("RequestInterval"),
        failure_threshold=cfg.get("FailureThreshold"),
        regions=tuple(cfg.get("Regions") or ()),
        inverted=bool(cfg.get("Inverted", False)),
        disabled=bool(cfg.get("Disabled", False)),
        routing_control_arn=cfg.get("RoutingControlArn"),
        children=tuple(cfg.get("ChildHealthChecks") or ()),
        health_threshold=cfg.get("HealthThreshold"),
        tags=dict(tags),
    )


def _record(raw: Mapping[str, Any]) -> ObservedRecord:
    alias = raw.get("AliasTarget")
    return ObservedRecord(
        name=raw["Name"],
        type=raw["Type"],
        set_identifier=raw.get("SetIdentifier"),
        failover=raw.get("Failover"),
        weight=raw.get("Weight"),
        latency_region=raw.get("Region"),
        alias=(
            AliasTarget(
                dns_name=alias["DNSName"],
                hosted_zone_id=alias["HostedZoneId"],
                evaluate_target_health=bool(alias.get("EvaluateTargetHealth", False)),
            )
            if alias
            else None
        ),
        ttl=raw.get("TTL"),
        values=tuple(r["Value"] for r in raw.get("ResourceRecords") or ()),
        health_check_id=raw.get("HealthCheckId"),
    )


def read_records_named(
    clients: AwsClients, zone_id: str, name: str, record_type: str = "A"
) -> list[ObservedRecord]:
    """The records of one name and type: a listing that starts at (name, type) and stops when
    the name or the type changes."""
    route53 = clients.route53()
    found: list[ObservedRecord] = []
    params: dict[str, Any] = {
        "HostedZoneId": zone_id,
        "StartRecordName": name,
        "StartRecordType": record_type,
    }
    while True:
        with aws_call("route53", "ListResourceRecordSets", f"{zone_id}/{name}/{record_type}"):
            page = route53.list_resource_record_sets(**params)
        sets = page.get("ResourceRecordSets", [])
        mine = [
            s for s in sets if normalize_dns(s["Name"]) == normalize_dns(name) and s["Type"] == record_type
        ]
        found += [_record(s) for s in mine]
        if (
            not page.get("IsTruncated")
            or len(mine) < len(sets)
            or normalize_dns(page.get("NextRecordName", "")) != normalize_dns(name)
            or page.get("NextRecordType") != record_type
        ):
            return found
        params["StartRecordName"] = page["NextRecordName"]
        params["StartRecordType"] = page["NextRecordType"]
        if page.get("NextRecordIdentifier"):
            params["StartRecordIdentifier"] = page["NextRecordIdentifier"]


@task(task_run_name="read-route53", cache_policy=NO_CACHE, **retry_options())
def read_route53(clients: AwsClients, topology: Topology) -> ObservedRoute53:
    """The hosted zone, this environment's health checks (by CallerReference) with their tags, the
    topology's A records and each name's ownership TXT record.

    The zone, the health-check listing and one listing per record name and type are independent: they run
    concurrently, at most `_ROUTE53_CONCURRENCY` at a time (Route 53 allows 5 requests/s per
    account; botocore retries the odd throttle), so the read does not lengthen with each region.
    """
    zone_id = topology.route53.zone_id
    names = list(
        dict.fromkeys([topology.route53.failover_record, *(r.query_hostname for r in topology.regions)])
    )
    prefixes = tuple(
        p for r in topology.regions for p in caller_reference_prefixes(topology.environment, r.aws_region)
    )
    with ThreadPoolExecutor(max_workers=_ROUTE53_CONCURRENCY, thread_name_prefix="read-route53") as pool:
        zone = pool.submit(_zone, clients, zone_id)
        checks = pool.submit(_health_checks, clients, prefixes)
        listings = [pool.submit(read_records_named, clients, zone_id, name) for name in names]
        listings += [
            pool.submit(read_records_named, clients, zone_id, ownership_record_name(name), "TXT")
            for name in names
        ]
        zone_name, private = zone.result()
        raw_checks, tags = checks.result()
        records: list[ObservedRecord] = []
        for listing in listings:
            try:
                records += listing.result()
            except AwsCallError:
                if zone_name is not None:
                    raise  # without the zone, listing its records fails too: already reported
    return ObservedRoute53(
        zone_id=zone_id,
        zone_name=zone_name,
        private_zone=private,
        health_checks=tuple(_health_check(c, tags.get(c["Id"], {})) for c in raw_checks),
        records=tuple(records) if zone_name is not None else (),
    )


def _zone(clients: AwsClients, zone_id: str) -> tuple[str | None, bool]:
    """(zone name, whether it is private); (None, False) when the zone does not exist."""
    with aws_call("route53", "GetHostedZone", zone_id):
        try:
            zone = clients.route53().get_hosted_zone(Id=zone_id)["HostedZone"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchHostedZone":
                raise
            return None, False
    return str(zone["Name"]), bool(zone.get("Config", {}).get("PrivateZone", False))


def _health_checks(
    clients: AwsClients, prefixes: tuple[str, ...]
) -> tuple[list[Mapping[str, Any]], dict[str, dict[str, str]]]:
    """Checks whose CallerReference is this environment's, and their tags (10 ids per call)."""
    route53 = clients.route53()
    raw_checks: list[Mapping[str, Any]] = []
    with aws_call("route53", "ListHealthChecks", "*"):
        for page in route53.get_paginator("list_health_checks").paginate():
            raw_checks += [
                c for c in page.get("HealthChecks", []) if c["CallerReference"].startswith(prefixes)
            ]
    tags: dict[str, dict[str, str]] = {}
    ids = [c["Id"] for c in raw_checks]
    for i in range(0, len(ids), _TAG_BATCH):
        batch = ids[i : i + _TAG_BATCH]
        with aws_call("route53", "ListTagsForResources", ",".join(batch)):
            resp = route53.list_tags_for_resources(ResourceType="healthcheck", ResourceIds=batch)
        for entry in resp.get("ResourceTagSets", []):
            tags[entry["ResourceId"]] = {t["Key"]: t.get("Value", "") for t in entry.get("Tags", [])}
    return raw_checks, tags


# -- changes ----------------------------------------------------------------------------------


def _create_health_check(
    clients: AwsClients, caller_reference: str, config: Mapping[str, Any]
) -> tuple[str, str]:
    """Create with the deterministic reference: a retried create returns the same check (AWS
    idempotency). A reference once used by a now-deleted check is refused by AWS
    (HealthCheckAlreadyExists) forever, so a replace back to earlier settings takes `<ref>.2`."""
    route53 = clients.route53()
    for attempt in range(1, _MAX_REFERENCE_ATTEMPTS + 1):
        reference = caller_reference if attempt == 1 else f"{caller_reference}.{attempt}"
        try:
            with aws_call("route53", "CreateHealthCheck", reference):
                created = route53.create_health_check(
                    CallerReference=reference,
                    HealthCheckConfig=dict(config),  # type: ignore[arg-type]
                )
            return created["HealthCheck"]["Id"], reference
        except Exception as exc:
            if getattr(exc, "code", None) != "HealthCheckAlreadyExists" or attempt == _MAX_REFERENCE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


AnyCheckSpec = HealthCheckSpec | RoutingControlCheckSpec | CalculatedCheckSpec


def _resolved_id(refs: Mapping[str, str], kind: str, region: str) -> str:
    """A region's check id the plan knew or an earlier stage of this apply made."""
    found = refs.get(check_ref(kind, region))
    if not found or found.startswith("("):
        raise ValueError(f"no {kind} id for {region}: the stage that makes it has not run")
    return found


def _children(spec: CalculatedCheckSpec, refs: Mapping[str, str]) -> list[str]:
    return [
        _resolved_id(refs, ResourceKind.HEALTH_CHECK.value, spec.region),
        _resolved_id(refs, ResourceKind.ROUTING_CONTROL_HEALTH_CHECK.value, spec.region),
    ]


def _config(spec: AnyCheckSpec, refs: Mapping[str, str]) -> dict[str, Any]:
    """CreateHealthCheck's HealthCheckConfig for the spec (a RECOVERY_CONTROL check takes no
    interval, threshold or checker regions: Route 53 refuses them)."""
    if isinstance(spec, RoutingControlCheckSpec):
        arn = spec.routing_control_arn or refs.get(resource_ref("arc-routing-control", spec.routing_control))
        if not arn:
            raise ValueError(f"no routing control ARN for {spec.routing_control}: its stage has not run")
        return {"Type": "RECOVERY_CONTROL", "RoutingControlArn": arn}
    if isinstance(spec, CalculatedCheckSpec):
        return {
            "Type": "CALCULATED",
            "ChildHealthChecks": _children(spec, refs),
            "HealthThreshold": spec.health_threshold,
        }
    return {
        "Type": spec.type,
        "FullyQualifiedDomainName": spec.fqdn,
        "Port": spec.port,
        "ResourcePath": spec.resource_path,
        "RequestInterval": spec.request_interval,
        "FailureThreshold": spec.failure_threshold,
        "Regions": list(spec.regions),
    }


def _update(spec: AnyCheckSpec, refs: Mapping[str, str]) -> dict[str, Any]:
    """UpdateHealthCheck's settings for the spec (those it can change in place)."""
    flags: dict[str, Any] = {"Inverted": False, "Disabled": False}
    if isinstance(spec, RoutingControlCheckSpec):
        return flags
    if isinstance(spec, CalculatedCheckSpec):
        return {"ChildHealthChecks": _children(spec, refs), "HealthThreshold": spec.health_threshold, **flags}
    return {
        "FullyQualifiedDomainName": spec.fqdn,
        "Port": spec.port,
        "ResourcePath": spec.resource_path,
        "FailureThreshold": spec.failure_threshold,
        "Regions": list(spec.regions),
        **flags,
    }


@task(task_run_name="ensure-health-check-{change.region}", cache_policy=NO_CACHE)
def ensure_health_check(
    apply: ApplyContext, change: Change, refs: Mapping[str, str] | None = None
) -> ChangeResult:
    """Create the region's check (create/replace) or update it in place (version-checked), then tag
    it; an adopted check gets this environment's tags (audited as its adoption).

    The same task for the HTTPS check and, with ARC, the RECOVERY_CONTROL and CALCULATED checks;
    `refs` has what earlier stages of the apply made (a new routing control's ARN, a new child's id)."""
    spec = change.spec
    if not isinstance(spec, HealthCheckSpec | RoutingControlCheckSpec | CalculatedCheckSpec):
        raise TypeError(f"{change.kind} change {change.id} carries a {type(spec).__name__}")
    refs = refs or {}
    route53 = apply.clients.route53()
    trail = apply.trail("route53")
    changed = {d.field for d in change.diffs}
    updated = sorted(changed - {"tags", "owner", "stale_health_checks"})
    hc_id = change.current_id
    if hc_id is None:
        config = _config(spec, refs)
        hc_id, reference = _create_health_check(apply.clients, spec.caller_reference, config)
        trail.record(
            "create-health-check",
            health_check_arn(hc_id),
            ROUTE53_CONTROL_REGION,
            "route53:CreateHealthCheck",
            caller_reference=reference,
            type=config["Type"],
            name=spec.name,
            **({"fqdn": spec.fqdn} if isinstance(spec, HealthCheckSpec) else {}),
        )
        changed.add("tags")
    elif updated:
        with aws_call("route53", "UpdateHealthCheck", hc_id):
            route53.update_health_check(
                HealthCheckId=hc_id,
                HealthCheckVersion=int(change.current_version or 1),  # refused if someone changed it since
                **_update(spec, refs),
            )
        trail.record(
            "update-health-check",
            health_check_arn(hc_id),
            ROUTE53_CONTROL_REGION,
            "route53:UpdateHealthCheck",
            fields=updated,
        )
    if "tags" in changed:
        with aws_call("route53", "ChangeTagsForResource", hc_id):
            route53.change_tags_for_resource(
                ResourceType="healthcheck",
                ResourceId=hc_id,
                AddTags=tag_list(spec.tags),  # type: ignore[arg-type]
            )
        trail.record(
            "adopt-health-check" if "owner" in changed else "tag-health-check",
            health_check_arn(hc_id),
            ROUTE53_CONTROL_REGION,
            "route53:ChangeTagsForResource",
            **change.adoption,
        )
    return change.result(trail.records, resource_id=hc_id)


def _record_set(spec: RecordSpec, health_check_id: str | None) -> dict[str, Any]:
    rrset: dict[str, Any] = {"Name": spec.name, "Type": spec.type}
    if spec.alias is not None:
        rrset["AliasTarget"] = {
            "HostedZoneId": spec.alias.hosted_zone_id,
            "DNSName": spec.alias.dns_name,
            "EvaluateTargetHealth": spec.alias.evaluate_target_health,
        }
    else:
        rrset["TTL"] = spec.ttl
        rrset["ResourceRecords"] = [{"Value": v} for v in spec.values]
    if spec.set_identifier:
        rrset["SetIdentifier"] = spec.set_identifier
    if spec.failover:
        rrset["Failover"] = spec.failover
    if spec.weight is not None:
        rrset["Weight"] = spec.weight
    if spec.latency_region:
        rrset["Region"] = spec.latency_region
    if health_check_id:
        rrset["HealthCheckId"] = health_check_id
    return rrset


def _observed_set(rec: ObservedRecord) -> dict[str, Any]:
    """The record exactly as Route 53 holds it: a DELETE must match every field."""
    rrset: dict[str, Any] = {"Name": rec.name, "Type": rec.type}
    for key, value in (
        ("SetIdentifier", rec.set_identifier),
        ("Failover", rec.failover),
        ("Weight", rec.weight),
        ("Region", rec.latency_region),
        ("HealthCheckId", rec.health_check_id),
        ("TTL", rec.ttl),
    ):
        if value is not None:
            rrset[key] = value
    if rec.alias is not None:
        rrset["AliasTarget"] = {
            "HostedZoneId": rec.alias.hosted_zone_id,
            "DNSName": rec.alias.dns_name,
            "EvaluateTargetHealth": rec.alias.evaluate_target_health,
        }
    if rec.values:
        rrset["ResourceRecords"] = [{"Value": v} for v in rec.values]
    return rrset


def _wait_insync(clients: AwsClients, change_id: str, waits: WaitPolicy) -> None:
    def read() -> str:
        with aws_call("route53", "GetChange", change_id):
            return str(clients.route53().get_change(Id=change_id)["ChangeInfo"]["Status"])

    waits.poll(
        read, lambda status: status == "INSYNC", lambda status: f"route53 change {change_id} still {status}"
    )


@task(task_run_name="ensure-records-{name}", cache_policy=NO_CACHE)
def ensure_records(
    apply: ApplyContext,
    name: str,
    changes: Sequence[Change],
    health_check_ids: Mapping[str, str],
) -> list[ChangeResult]:
    """One atomic change batch for all of one name's records, then wait until it is INSYNC.

    `health_check_ids` has each record's check by `check_ref(kind, region)`: the HTTPS check by
    region, the calculated one (ARC) by `route53-calculated-health-check:<region>`.

    One batch per name keeps PRIMARY/SECONDARY consistent at every instant, and lets a routing
    policy change (failover -> weighted) delete and create every record of the name at once:
    Route 53 refuses a name that mixes policies. The name's ownership TXT record is in the same
    batch, so records are never written without it. Waiting for INSYNC matters before a replaced
    health check is deleted.
    """
    if not changes:
        return []
    specs = [c.typed_spec(RecordSpec) for c in changes]
    zone_id = specs[0].zone_id
    batch: list[dict[str, Any]] = []
    for change, spec in zip(changes, specs, strict=True):
        region = spec.health_check_region
        hc = health_check_ids.get(check_ref(spec.health_check_kind, region)) if region else None
        if region and (hc is None or hc.startswith("(")):
            raise ValueError(f"no {spec.health_check_kind} id for {region}: cannot write {change.id}")
        if change.replaces is not None:
            replaced = ObservedRecord.model_validate(change.replaces)
            batch.append({"Action": "DELETE", "ResourceRecordSet": _observed_set(replaced)})
            batch.append({"Action": "CREATE", "ResourceRecordSet": _record_set(spec, hc)})
        else:
            batch.append({"Action": "UPSERT", "ResourceRecordSet": _record_set(spec, hc)})
    route53 = apply.clients.route53()
    with aws_call("route53", "ChangeResourceRecordSets", f"{zone_id}/{name}"):
        info = route53.change_resource_record_sets(
            HostedZoneId=zone_id,
            ChangeBatch={"Comment": "chalk-dr provision", "Changes": batch},  # type: ignore[typeddict-item]
        )["ChangeInfo"]
    results = []
    for change, spec in zip(changes, specs, strict=True):
        trail = apply.trail("route53")
        adopted = change.adoption
        trail.record(
            "adopt-records" if adopted else f"{change.action.value}-record",
            record_resource(zone_id, spec.name, spec.type, spec.set_identifier),
            ROUTE53_CONTROL_REGION,
            "route53:ChangeResourceRecordSets",
            change_id=info["Id"],
            action="DELETE+CREATE" if change.replaces else "UPSERT",
            target=spec.alias.dns_name if spec.alias else ", ".join(spec.values),
            **({"owner_of": spec.owner_of, **adopted} if spec.owner_of else {}),
        )
        results.append(change.result(trail.records))
    _wait_insync(apply.clients, info["Id"], apply.waits)
    return results


@task(task_run_name="delete-stale-health-checks-{change.region}", cache_policy=NO_CACHE)
def delete_stale_health_checks(apply: ApplyContext, change: Change) -> ChangeResult:
    """The second half of a replace: delete the checks no record points at any more."""
    route53 = apply.clients.route53()
    trail = apply.trail("route53")
    for hc_id in change.stale_ids:
        with aws_call("route53", "DeleteHealthCheck", hc_id):
            try:
                route53.delete_health_check(HealthCheckId=hc_id)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchHealthCheck":
                    raise
                continue  # already gone: the goal is reached
        trail.record(
            "delete-health-check",
            health_check_arn(hc_id),
            ROUTE53_CONTROL_REGION,
            "route53:DeleteHealthCheck",
            replaced_by=change.id,
        )
    return change.result(trail.records, action=Action.REPLACE)


# -- observation (drills, incidents) -------------------------------------------------------


def discover_routing(topology: Topology, clients: AwsClients, resolver: Resolver) -> Routing:
    """The failover name's records as Route 53 has them, each mapped to its region by ALB DNS name,
    and the addresses each region's ALB name resolves to through the clients' resolver.

    With ARC (`recovery.arc`), a record's check is CALCULATED: the route's `health_check_id` is its
    HTTPS child (whose verdict Route 53 reports and a drill inverts), `record_health_check_id` the
    record's own check and `routing_control_arn` the routing control its other child follows.

    Drills and the incident flow observe the routing that is live, not the one the topology
    says should be: a provision run that never happened shows up here as a missing route. A DNS
    answer for the failover name is addresses (an alias to an ALB is answered with the ALB's
    addresses), so those addresses are how an answer is attributed to a region.
    """
    alb_dns: dict[str, str] = {}
    addresses: dict[str, tuple[str, ...]] = {}
    for r in topology.regions:
        alb = read_alb.fn(clients, r)
        if alb is not None:
            dns = normalize_dns(alb.dns_name).removeprefix("dualstack.")
            alb_dns[dns] = r.aws_region
            found = resolver.resolve(dns)
            if found.ok:
                addresses[r.aws_region] = found.addresses
    name = topology.route53.failover_record
    routes: dict[str, RegionRoute] = {}
    for rec in read_records_named(clients, topology.route53.zone_id, name):
        if rec.alias is None:
            continue
        dns = normalize_dns(rec.alias.dns_name).removeprefix("dualstack.")
        region = alb_dns.get(dns)
        if region is None:
            continue
        role = rec.failover or (
            f"weight={rec.weight}" if rec.weight is not None else rec.latency_region or "simple"
        )
        probed, control = rec.health_check_id, None
        if rec.health_check_id and topology.recovery.arc is not None:
            probed, control = _calculated_children(clients, rec.health_check_id)
        routes[region] = RegionRoute(
            region=region,
            alb_dns=dns,
            health_check_id=probed,
            role=str(role),
            set_identifier=rec.set_identifier or "",
            record_health_check_id=rec.health_check_id if probed != rec.health_check_id else None,
            routing_control_arn=control,
        )
    return Routing(record=name, routes=routes, addresses=addresses)


def _get_health_check(clients: AwsClients, health_check_id: str) -> Mapping[str, Any]:
    with aws_call("route53", "GetHealthCheck", health_check_id):
        return clients.route53().get_health_check(HealthCheckId=health_check_id)["HealthCheck"]


def _calculated_children(clients: AwsClients, health_check_id: str) -> tuple[str | None, str | None]:
    """For a record's check: (the check to read verdicts from, the routing control ARN).

    A CALCULATED check has no status API ("You can't use GetHealthCheckStatus to get the status of
    a calculated health check", Route 53 API reference), so its probed child (an HTTPS/HTTP check)
    stands in for it, and its RECOVERY_CONTROL child names the routing control. One GetHealthCheck
    for the record's check, and one per child (two) when it is calculated: Route 53's API rate is
    5 requests/s per account (chalkdr.ratelimit paces them). Any other type is its own verdict."""
    config = _get_health_check(clients, health_check_id).get("HealthCheckConfig", {})
    if config.get("Type") != "CALCULATED":
        return health_check_id, config.get("RoutingControlArn")
    probed: str | None = None
    control: str | None = None
    for child in config.get("ChildHealthChecks") or ():
        child_config = _get_health_check(clients, child).get("HealthCheckConfig", {})
        if child_config.get("Type") == "RECOVERY_CONTROL":
            control = child_config.get("RoutingControlArn")
        elif child_config.get("Type") not in ("CALCULATED", "CLOUDWATCH_METRIC") and probed is None:
            probed = child
    return probed, control


def read_route53_health(clients: AwsClients, routing: Routing) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    for region, route in routing.routes.items():
        if route.health_check_id is None:
            out[region] = None
            continue
        with aws_call("route53", "GetHealthCheckStatus", route.health_check_id):
            obs = clients.route53().get_health_check_status(HealthCheckId=route.health_check_id)[
                "HealthCheckObservations"
            ]
        out[region] = health_verdict([o.get("StatusReport", {}).get("Status", "") for o in obs])
    return out
