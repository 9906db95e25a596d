"""Route 53 and ALB tasks: what is read, what each ensure changes, what it audits (against moto);
how the live routing is discovered and attributed by address, and how Route 53 calls are paced
(against the sandbox's Route 53, its DNS server and its API throttle).
"""

from __future__ import annotations

import copy
import io
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import dns.rcode
import pytest
import yaml
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from werkzeug.wrappers import Response

from chalkdr.audit import AuditRecord
from chalkdr.clients import AwsClients
from chalkdr.dns import Resolver
from chalkdr.drill import RegionRoute
from chalkdr.drill import Routing
from chalkdr.errors import PermanentAwsError
from chalkdr.plan import Action
from chalkdr.plan import Change
from chalkdr.plan import ObservedState
from chalkdr.plan import RecordSpec
from chalkdr.plan import ResourceKind
from chalkdr.plan import WaitPolicy
from chalkdr.plan import plan_for
from chalkdr.topology import ALB_ALIAS_TTL_S
from chalkdr.topology import Topology
from chalkdr.topology import parse_topology
from sandbox.clock import SandboxClock
from sandbox.dns import DnsAnswer
from sandbox.dns import DnsServer
from sandbox.harness import AwsSandbox
from sandbox.http import LoopbackServer
from sandbox.net import region_address
from sandbox.net import sockets_on_one_port
from sandbox.route53 import Route53Sim
from tasks.audit import ApplyContext
from tasks.route53 import delete_stale_health_checks
from tasks.route53 import discover_routing
from tasks.route53 import ensure_health_check
from tasks.route53 import ensure_records
from tasks.route53 import read_alb
from tasks.route53 import read_route53
from tasks.route53 import read_route53_health

EXAMPLE = Path(__file__).resolve().parents[2] / "deployments" / "topology.example.yaml"
FAST = WaitPolicy(time_scale=1000.0, timeout_s=60)


def client(service: str, region: str = "us-east-1") -> Any:
    return boto3.client(service, region_name=region)


def make_alb(region: str, name: str) -> dict[str, Any]:
    ec2 = client("ec2", region)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{region}{z}")["Subnet"][
            "SubnetId"
        ]
        for i, z in enumerate("ab")
    ]
    lb: dict[str, Any] = client("elbv2", region).create_load_balancer(
        Name=name, Subnets=subnets, Type="application"
    )["LoadBalancers"][0]
    return lb


@pytest.fixture
def world(moto_server: str) -> dict[str, Any]:
    """A hosted zone and two ALBs in moto, and a topology pointing at them (unique names per test)."""
    suffix = uuid.uuid4().hex[:6]
    zone = client("route53").create_hosted_zone(Name="example.com", CallerReference=f"z-{suffix}")[
        "HostedZone"
    ]
    d = yaml.safe_load(EXAMPLE.read_text())
    d["environment"] = f"t{suffix}"
    d["route53"]["hosted_zone_id"] = zone["Id"].removeprefix("/hostedzone/")
    albs = {}
    for r in d["regions"]:
        r["alb"] = f"alb-{suffix}-{r['aws_region'][-6:]}"
        albs[r["aws_region"]] = make_alb(r["aws_region"], r["alb"])
    return {"topology": parse_topology(d), "zone_id": d["route53"]["hosted_zone_id"], "albs": albs, "dict": d}


def observe(clients: AwsClients, t: Topology) -> ObservedState:
    """Only what the Route 53 tasks read (the rest of the plan is not under test here)."""
    albs = {r.aws_region: read_alb.fn(clients, r) for r in t.regions}
    r53 = read_route53.fn(clients, t)
    return ObservedState(
        route53=r53.model_copy(update={"albs": {r: alb for r, alb in albs.items() if alb is not None}})
    )


def route53_changes(t: Topology, obs: ObservedState, kind: ResourceKind) -> list[Change]:
    return [c for c in plan_for(t, obs).changes if c.kind is kind]


def route53_plan(t: Topology, obs: ObservedState) -> list[Change]:
    kinds = (ResourceKind.HEALTH_CHECK, ResourceKind.RECORD)
    return [c for c in plan_for(t, obs).changes if c.kind in kinds]


class TestReadAlb:
    def test_by_name_and_by_arn(self, world: dict[str, Any]) -> None:
        t: Topology = world["topology"]
        east = t.region("us-east-1")
        lb = world["albs"]["us-east-1"]
        by_name = read_alb.fn(AwsClients(), east)
        assert by_name is not None
        assert (by_name.dns_name, by_name.canonical_hosted_zone_id) == (
            lb["DNSName"],
            lb["CanonicalHostedZoneId"],
        )
        d = copy.deepcopy(world["dict"])
        d["regions"][0]["alb"] = lb["LoadBalancerArn"]
        by_arn = read_alb.fn(AwsClients(), parse_topology(d).region("us-east-1"))
        assert by_arn == by_name

    def test_missing_alb_is_none(self, world: dict[str, Any]) -> None:
        d = copy.deepcopy(world["dict"])
        d["regions"][1]["alb"] = "no-such-alb"
        assert read_alb.fn(AwsClients(), parse_topology(d).region("us-west-2")) is None


class TestHealthChecks:
    def test_create_then_the_plan_is_empty_and_everything_is_on_aws(self, world: dict[str, Any]) -> None:
        t: Topology = world["topology"]
        clients, audit = AwsClients(), []
        for change in route53_changes(t, observe(clients, t), ResourceKind.HEALTH_CHECK):
            assert change.action is Action.CREATE
            result = ensure_health_check.fn(
                ApplyContext(clients, audit_detail={"approver": "ada"}, emit=audit.append), change
            )
            assert result.resource_id
        assert [(a.action, a.api_call) for a in audit] == [
            ("create-health-check", "route53:CreateHealthCheck"),
            ("tag-health-check", "route53:ChangeTagsForResource"),
        ] * 2
        assert len(audit) == 4
        assert {a.detail["approver"] for a in audit} == {"ada"}
        assert {a.resource.startswith("arn:aws:route53:::healthcheck/") for a in audit} == {True}
        r53 = client("route53")
        checks = [
            c
            for c in r53.list_health_checks()["HealthChecks"]
            if c["CallerReference"].startswith(f"chalkdr-{t.environment}-")
        ]
        assert len(checks) == 2
        east = next(c for c in checks if "us-east-1" in c["CallerReference"])
        cfg = east["HealthCheckConfig"]
        assert cfg["Type"] == "HTTPS" and cfg["Port"] == 443 and cfg["ResourcePath"] == "/healthz"
        assert cfg["RequestInterval"] == 10 and cfg["FailureThreshold"] == 3
        # the regional hostname, not the ALB's name: Route 53 sends it as Host and SNI
        assert cfg["FullyQualifiedDomainName"] == t.region("us-east-1").query_hostname
        # sha256("HTTPS|10")[:10]: the hash of the settings Route 53 cannot change in place
        assert east["CallerReference"] == f"chalkdr-{t.environment}-us-east-1-6f8ba49c3e"
        tags = r53.list_tags_for_resource(ResourceType="healthcheck", ResourceId=east["Id"])[
            "ResourceTagSet"
        ]["Tags"]
        assert {t_["Key"]: t_["Value"] for t_ in tags} == {
            "chalk-dr:managed": "true",
            "chalk-dr:environment": t.environment,  # whose it is
            "Name": f"chalkdr-{t.environment}-us-east-1",
        }
        hc_changes = route53_changes(t, observe(clients, t), ResourceKind.HEALTH_CHECK)
        assert {c.action for c in hc_changes} == {Action.NOOP}

    def test_out_of_band_threshold_edit_is_updated_in_place(self, world: dict[str, Any]) -> None:
        t: Topology = world["topology"]
        clients = AwsClients()
        for change in route53_changes(t, observe(clients, t), ResourceKind.HEALTH_CHECK):
            ensure_health_check.fn(ApplyContext(clients, emit=lambda _r: None), change)
        east = next(
            c
            for c in route53_changes(t, observe(clients, t), ResourceKind.HEALTH_CHECK)
            if c.region == "us-east-1"
        )
        assert east.current_id is not None
        client("route53").update_health_check(HealthCheckId=east.current_id, FailureThreshold=9)
        (drifted,) = [
            c
            for c in route53_changes(t, observe(clients, t), ResourceKind.HEALTH_CHECK)
            if c.action is Action.UPDATE
        ]
        assert drifted.current_id == east.current_id
        audit: list[AuditRecord] = []
        ensure_health_check.fn(ApplyContext(clients, emit=audit.append), drifted)
        assert [a.api_call for a in audit] == ["route53:UpdateHealthCheck"]
        cfg = client("route53").get_health_check(HealthCheckId=east.current_id)["HealthCheck"][
            "HealthCheckConfig"
        ]
        assert cfg["FailureThreshold"] == 3

    def test_a_reference_taken_by_a_deleted_check_gets_a_suffix(self, world: dict[str, Any]) -> None:
        """AWS refuses a CallerReference once used by a deleted check (HealthCheckAlreadyExists)."""
        t: Topology = world["topology"]
        refused: list[str] = []

        def already_exists(request: Any, **_: Any) -> AWSResponse | None:
            if b"CallerReference" not in (request.body or b"") or refused:
                return None
            refused.append(request.url)
            body = (
                b'<?xml version="1.0"?><ErrorResponse><Error><Type>Sender</Type>'
                b"<Code>HealthCheckAlreadyExists</Code><Message>taken</Message></Error></ErrorResponse>"
            )
            return AWSResponse(request.url, 409, {}, _Raw(body))

        clients = AwsClients(event_hooks=[("before-send.route53.CreateHealthCheck", already_exists)])
        change = next(
            c
            for c in route53_changes(t, observe(clients, t), ResourceKind.HEALTH_CHECK)
            if c.region == "us-east-1"
        )
        audit: list[AuditRecord] = []
        ensure_health_check.fn(ApplyContext(clients, emit=audit.append), change)
        assert refused and audit[0].detail["caller_reference"].endswith(".2")
        # the suffixed check is still recognised as this region's check
        again = next(
            c
            for c in route53_changes(t, observe(clients, t), ResourceKind.HEALTH_CHECK)
            if c.region == "us-east-1"
        )
        assert again.action is Action.NOOP


class _Raw:
    """The minimum botocore reads from a raw HTTP response."""

    def __init__(self, body: bytes) -> None:
        self._body = io.BytesIO(body)

    def stream(self, *_: Any, **__: Any) -> Any:
        yield self._body.read()


def apply_route53_plan(clients: AwsClients, t: Topology, waits: WaitPolicy = FAST) -> list[AuditRecord]:
    """Create the topology's health checks, then its records, as the provision flow orders them."""
    audit: list[AuditRecord] = []
    ids: dict[str, str] = {}
    for change in route53_changes(t, observe(clients, t), ResourceKind.HEALTH_CHECK):
        result = ensure_health_check.fn(ApplyContext(clients, emit=audit.append), change)
        ids[change.region] = result.resource_id or ""
    apply_records(clients, t, ids, audit, waits)
    return audit


def apply_records(
    clients: AwsClients, t: Topology, ids: dict[str, str], audit: list[AuditRecord], waits: WaitPolicy = FAST
) -> None:
    obs = observe(clients, t)
    ids = ids or {c.region: c.current_id or "" for c in route53_changes(t, obs, ResourceKind.HEALTH_CHECK)}
    pending = [c for c in route53_changes(t, obs, ResourceKind.RECORD) if c.action is not Action.NOOP]
    by_name: dict[str, list[Change]] = {}
    for c in pending:
        by_name.setdefault(c.typed_spec(RecordSpec).batch_name, []).append(c)
    for name, changes in by_name.items():
        ensure_records.fn(ApplyContext(clients, waits=waits, emit=audit.append), name, changes, ids)


class TestRecords:
    def _create_all(self, clients: AwsClients, t: Topology) -> list[AuditRecord]:
        return apply_route53_plan(clients, t)

    def _apply_records(
        self, clients: AwsClients, t: Topology, ids: dict[str, str], audit: list[AuditRecord]
    ) -> None:
        apply_records(clients, t, ids, audit)

    def test_failover_aliases_and_regional_names(self, world: dict[str, Any]) -> None:
        t: Topology = world["topology"]
        clients = AwsClients()
        audit = self._create_all(clients, t)
        # four records and one ownership TXT record per name (three)
        assert sum(1 for a in audit if a.api_call == "route53:ChangeResourceRecordSets") == 7
        sets = client("route53").list_resource_record_sets(HostedZoneId=world["zone_id"])[
            "ResourceRecordSets"
        ]
        failover = {s["SetIdentifier"]: s for s in sets if s["Name"] == "chalk-failover.example.com."}
        primary = failover[f"{t.environment}-us-east-1"]
        assert primary["Failover"] == "PRIMARY" and primary["Type"] == "A"
        assert (
            primary["AliasTarget"]["DNSName"].rstrip(".").lower()
            == world["albs"]["us-east-1"]["DNSName"].lower()
        )
        east_check = next(
            c["Id"]
            for c in client("route53").list_health_checks()["HealthChecks"]
            if c["CallerReference"].startswith(f"chalkdr-{t.environment}-us-east-1-")
        )
        assert primary["AliasTarget"]["EvaluateTargetHealth"] is False
        assert primary["HealthCheckId"] == east_check
        assert failover[f"{t.environment}-us-west-2"]["Failover"] == "SECONDARY"
        regional = next(s for s in sets if s["Name"] == "prod-west.query.example.com.")
        assert "HealthCheckId" not in regional and "SetIdentifier" not in regional
        assert {c.action for c in route53_plan(t, observe(clients, t))} == {Action.NOOP}

    def test_repointed_record_is_repaired(self, world: dict[str, Any]) -> None:
        t: Topology = world["topology"]
        clients = AwsClients()
        self._create_all(clients, t)
        west = world["albs"]["us-west-2"]
        sets = client("route53").list_resource_record_sets(HostedZoneId=world["zone_id"])[
            "ResourceRecordSets"
        ]
        primary = next(s for s in sets if s.get("Failover") == "PRIMARY")
        primary["AliasTarget"]["DNSName"] = west["DNSName"]
        client("route53").change_resource_record_sets(
            HostedZoneId=world["zone_id"],
            ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": primary}]},
        )
        (change,) = [
            c
            for c in route53_changes(t, observe(clients, t), ResourceKind.RECORD)
            if c.action is not Action.NOOP
        ]
        assert change.action is Action.UPDATE and "alias_target" in {d.field for d in change.diffs}
        self._apply_records(clients, t, {}, [])
        after = route53_changes(t, observe(clients, t), ResourceKind.RECORD)
        assert [c.action for c in after] == [Action.NOOP] * 7

    def test_switch_to_weighted_replaces_both_records_in_one_batch(self, world: dict[str, Any]) -> None:
        t: Topology = world["topology"]
        clients = AwsClients()
        self._create_all(clients, t)
        d = copy.deepcopy(world["dict"])
        d["routing"] = "weighted"
        for i, r in enumerate(d["regions"]):
            r.pop("primary", None)
            r["weight"] = 70 if i == 0 else 30
        weighted = parse_topology(d)
        replaces = [
            c
            for c in route53_changes(weighted, observe(clients, weighted), ResourceKind.RECORD)
            if c.action is Action.REPLACE
        ]
        assert len(replaces) == 2
        audit: list[AuditRecord] = []
        self._apply_records(clients, weighted, {}, audit)
        assert len({a.detail["change_id"] for a in audit}) == 1  # one atomic batch for the name
        sets = client("route53").list_resource_record_sets(HostedZoneId=world["zone_id"])[
            "ResourceRecordSets"
        ]
        failover = [s for s in sets if s["Name"] == "chalk-failover.example.com."]
        assert sorted((s["SetIdentifier"], s.get("Weight"), s.get("Failover")) for s in failover) == [
            (f"{t.environment}-us-east-1", 70, None),
            (f"{t.environment}-us-west-2", 30, None),
        ]

    def test_request_interval_change_replaces_checks_and_cleans_up(self, world: dict[str, Any]) -> None:
        t: Topology = world["topology"]
        clients = AwsClients()
        self._create_all(clients, t)
        old_ids = {c.current_id for c in route53_changes(t, observe(clients, t), ResourceKind.HEALTH_CHECK)}
        d = copy.deepcopy(world["dict"])
        d["route53"]["health_check"]["request_interval"] = 30
        slower = parse_topology(d)
        hcs = route53_changes(slower, observe(clients, slower), ResourceKind.HEALTH_CHECK)
        assert {c.action for c in hcs} == {Action.REPLACE}
        ids = {
            c.region: ensure_health_check.fn(ApplyContext(clients, emit=lambda _r: None), c).resource_id or ""
            for c in hcs
        }
        self._apply_records(clients, slower, ids, [])
        for c in hcs:
            delete_stale_health_checks.fn(ApplyContext(clients, emit=lambda _r: None), c)
            delete_stale_health_checks.fn(
                ApplyContext(clients, emit=lambda _r: None), c
            )  # already gone: fine
        live = {c["Id"] for c in client("route53").list_health_checks()["HealthChecks"]}
        assert not (old_ids & live) and set(ids.values()) <= live
        assert [c.action for c in route53_plan(slower, observe(clients, slower))] == [Action.NOOP] * 9


class TestOwnership:
    """What chalk-dr writes carries its environment; what it did not write is not changed silently."""

    def test_each_name_has_its_ownership_txt_record_beside_it(self, world: dict[str, Any]) -> None:
        t: Topology = world["topology"]
        apply_route53_plan(AwsClients(), t)
        sets = client("route53").list_resource_record_sets(HostedZoneId=world["zone_id"])[
            "ResourceRecordSets"
        ]
        owners = {s["Name"]: s for s in sets if s["Type"] == "TXT"}
        assert set(owners) == {
            "_chalk-dr-a.chalk-failover.example.com.",
            "_chalk-dr-a.prod-east.query.example.com.",
            "_chalk-dr-a.prod-west.query.example.com.",
        }
        txt = owners["_chalk-dr-a.chalk-failover.example.com."]
        assert txt["TTL"] == 300
        assert txt["ResourceRecords"] == [{"Value": f'"heritage=chalk-dr,chalk-dr/owner={t.environment}"'}]

    def test_a_record_someone_else_made_is_an_error_until_adopted(self, world: dict[str, Any]) -> None:
        t: Topology = world["topology"]
        clients = AwsClients()
        theirs = {
            "Name": "prod-east.query.example.com",
            "Type": "A",
            "AliasTarget": {
                "HostedZoneId": world["albs"]["us-east-1"]["CanonicalHostedZoneId"],
                "DNSName": world["albs"]["us-east-1"]["DNSName"],
                "EvaluateTargetHealth": False,
            },
        }
        client("route53").change_resource_record_sets(
            HostedZoneId=world["zone_id"],
            ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": theirs}]},
        )
        plan = plan_for(t, observe(clients, t))
        assert any(
            e.startswith(
                "route53: DNS name prod-east.query.example.com (record prod-east.query.example.com A)"
            )
            for e in plan.errors
        ), plan.errors
        d = copy.deepcopy(world["dict"])
        d["adopt"] = {"records": ["prod-east.query.example.com"]}
        adopting = parse_topology(d)
        audit = apply_route53_plan(clients, adopting)
        (adopted,) = [a for a in audit if a.action == "adopt-records"]
        assert adopted.detail["owner_of"] == "prod-east.query.example.com"
        assert (adopted.detail["adopted_from"], adopted.detail["owner"]) == (None, t.environment)
        plan = plan_for(adopting, observe(clients, adopting))
        assert not [e for e in plan.errors if e.startswith("route53")]
        assert {c.action for c in route53_plan(adopting, observe(clients, adopting))} == {Action.NOOP}
        # ...and once it is ours, the topology no longer needs to say so
        assert {c.action for c in route53_plan(t, observe(clients, t))} == {Action.NOOP}

    def test_an_untagged_check_with_our_reference_is_an_error_until_adopted(
        self, world: dict[str, Any]
    ) -> None:
        t: Topology = world["topology"]
        clients = AwsClients()
        for change in route53_changes(t, observe(clients, t), ResourceKind.HEALTH_CHECK):
            ensure_health_check.fn(ApplyContext(clients, emit=lambda _r: None), change)
        east = next(c for c in observe(clients, t).route53.health_checks if "us-east-1" in c.caller_reference)
        client("route53").change_tags_for_resource(
            ResourceType="healthcheck", ResourceId=east.id, RemoveTagKeys=["chalk-dr:environment"]
        )
        plan = plan_for(t, observe(clients, t))
        assert any(e.startswith(f"us-east-1: Route 53 health check {east.id} ") for e in plan.errors)
        d = copy.deepcopy(world["dict"])
        d["adopt"] = {"health_checks": [east.id]}
        adopting = parse_topology(d)
        (change,) = [
            c
            for c in route53_changes(adopting, observe(clients, adopting), ResourceKind.HEALTH_CHECK)
            if c.action is not Action.NOOP
        ]
        audit: list[AuditRecord] = []
        ensure_health_check.fn(ApplyContext(clients, emit=audit.append), change)
        assert [(a.action, a.api_call, a.detail["owner"]) for a in audit] == [
            ("adopt-health-check", "route53:ChangeTagsForResource", t.environment)
        ]
        assert {c.action for c in route53_changes(t, observe(clients, t), ResourceKind.HEALTH_CHECK)} == {
            Action.NOOP
        }


class TestReadRoute53:
    def test_missing_zone_is_reported_not_raised(self, world: dict[str, Any]) -> None:
        d = copy.deepcopy(world["dict"])
        d["route53"]["hosted_zone_id"] = "ZNOSUCHZONE"
        seen = read_route53.fn(AwsClients(), parse_topology(d))
        assert seen.zone_name is None and seen.records == ()

    def test_other_environments_checks_and_names_are_ignored(self, world: dict[str, Any]) -> None:
        t: Topology = world["topology"]
        r53 = client("route53")
        r53.create_health_check(
            CallerReference=f"chalkdr-other-us-east-1-{uuid.uuid4().hex[:10]}",
            HealthCheckConfig={
                "Type": "HTTP",
                "FullyQualifiedDomainName": "x.example.com",
                "RequestInterval": 30,
            },
        )
        r53.change_resource_record_sets(
            HostedZoneId=world["zone_id"],
            ChangeBatch={
                "Changes": [
                    {
                        "Action": "UPSERT",
                        "ResourceRecordSet": {
                            "Name": "unrelated.example.com",
                            "Type": "A",
                            "TTL": 60,
                            "ResourceRecords": [{"Value": "192.0.2.1"}],
                        },
                    }
                ]
            },
        )
        seen = read_route53.fn(AwsClients(), t)
        assert seen.zone_name == "example.com." and seen.health_checks == () and seen.records == ()

    def test_a_permanent_error_names_the_call_and_resource(self, world: dict[str, Any]) -> None:
        def denied(request: Any, **_: Any) -> AWSResponse:
            body = b"<ErrorResponse><Error><Code>AccessDenied</Code><Message>no</Message></Error>"
            body += b"</ErrorResponse>"
            return AWSResponse(request.url, 403, {}, _Raw(body))

        clients = AwsClients(event_hooks=[("before-send.route53.GetHostedZone", denied)])
        with pytest.raises(PermanentAwsError) as caught:
            read_route53.fn(clients, world["topology"])
        assert str(caught.value).startswith(
            f"route53:GetHostedZone on {world['zone_id']} failed: AccessDenied"
        )


# -- against the sandbox's Route 53: DNS answers, live routing, the API throttle -----------------


@dataclass
class DnsWorld:
    """The sandbox's Route 53 (checkers, DNS evaluation, throttle) and a name server answering the
    zone and the load balancers' names, with two ALBs whose addresses serve /healthz."""

    aws: AwsSandbox
    route53: Route53Sim
    dns: DnsServer
    topology: Topology
    alb_addresses: dict[str, tuple[str, ...]]  # region -> its ALB's addresses

    def resolver(self) -> Resolver:
        return Resolver([self.dns.nameserver])


def _healthz(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    status = 200 if environ.get("PATH_INFO") == "/healthz" else 404
    return Response("ok", status=status)(environ, start_response)


@pytest.fixture
def dns_world() -> Iterator[DnsWorld]:
    regions = ("us-east-1", "us-west-2")
    addresses = {r: (region_address(i, 1), region_address(i, 2)) for i, r in enumerate(regions)}
    sockets = sockets_on_one_port([a for pair in addresses.values() for a in pair])
    port = int(sockets[0].getsockname()[1])
    servers = [LoopbackServer(_healthz, name=f"alb-{i}", sock=sock) for i, sock in enumerate(sockets)]
    alb_names: dict[str, str] = {}  # ALB DNS name (lower case) -> region, once the ALBs exist
    sims: list[Route53Sim] = []
    resolver: list[Resolver] = []

    def alias_addresses(name: str) -> tuple[str, ...] | None:
        region = alb_names.get(name.lower().rstrip(".").removeprefix("dualstack."))
        return addresses[region] if region else None

    def checker_target(host: str, port: int, _kind: str) -> str | None:
        found = resolver[0].resolve(host)  # Route 53 resolves FullyQualifiedDomainName itself
        return f"http://{found.addresses[0]}:{port}" if found.ok else None

    def authority(name: str, kind: str) -> DnsAnswer:
        found = alias_addresses(name)
        if found is not None:
            return DnsAnswer(dns.rcode.NOERROR, found if kind == "A" else (), 6)
        return sims[0].resolve(name, kind)

    def make(app: Any, truth: Any) -> list[Route53Sim]:
        sims.append(
            Route53Sim(
                app,
                clock=SandboxClock(10.0),
                truth=truth,
                resolve=checker_target,
                alias_addresses=alias_addresses,
            )
        )
        return sims

    for server in servers:
        server.start()
    name_server = DnsServer(authority).start()
    resolver.append(Resolver([name_server.nameserver]))
    try:
        with AwsSandbox(make) as aws:
            zone = aws.client("route53").create_hosted_zone(Name="example.com", CallerReference="dns-world")
            d = yaml.safe_load(EXAMPLE.read_text())
            d["route53"]["hosted_zone_id"] = zone["HostedZone"]["Id"].removeprefix("/hostedzone/")
            d["route53"]["health_check"].update(protocol="HTTP", port=port)
            d["dns"] = {"nameservers": [name_server.nameserver]}
            for i, r in enumerate(d["regions"]):
                ec2 = aws.client("ec2", r["aws_region"])
                vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
                subnets = [
                    ec2.create_subnet(
                        VpcId=vpc, CidrBlock=f"10.0.{j}.0/24", AvailabilityZone=f"{r['aws_region']}{z}"
                    )["Subnet"]["SubnetId"]
                    for j, z in enumerate("ab")
                ]
                lb = aws.client("elbv2", r["aws_region"]).create_load_balancer(
                    Name=f"alb-{i}", Subnets=subnets, Type="application", Scheme="internet-facing"
                )["LoadBalancers"][0]
                alb_names[lb["DNSName"].lower()] = r["aws_region"]
                r["alb"] = lb["LoadBalancerArn"]
            yield DnsWorld(aws, sims[0], name_server, parse_topology(d), addresses)
    finally:
        name_server.stop()
        for server in servers:
            server.stop()


def sandbox_clients(world: DnsWorld, monkeypatch: pytest.MonkeyPatch) -> AwsClients:
    monkeypatch.setenv("AWS_ENDPOINT_URL", world.aws.endpoint)
    return AwsClients()


class TestDiscoverRouting:
    def test_routes_by_alb_and_addresses_through_the_resolver(
        self, dns_world: DnsWorld, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        clients = sandbox_clients(dns_world, monkeypatch)
        t = dns_world.topology
        apply_route53_plan(clients, t)
        routing = discover_routing(t, clients, dns_world.resolver())
        east, west = "us-east-1", "us-west-2"
        # What each region's ALB name resolves to, through the topology's resolver: the evidence a
        # DNS answer for the failover name is attributed by.
        assert routing.addresses == dns_world.alb_addresses
        assert {r: (route.role, route.set_identifier) for r, route in routing.routes.items()} == {
            east: ("PRIMARY", f"{t.environment}-{east}"),
            west: ("SECONDARY", f"{t.environment}-{west}"),
        }
        listed = clients.route53().list_health_checks()["HealthChecks"]
        checks = {
            r: next(
                c["Id"] for c in listed if c["CallerReference"].startswith(f"chalkdr-{t.environment}-{r}-")
            )
            for r in (east, west)
        }
        assert {r: route.health_check_id for r, route in routing.routes.items()} == checks
        # The failover name answers with the primary ALB's addresses (an alias has no name of its
        # own in the answer), which is how an answer maps back to a region.
        answer = dns_world.resolver().resolve(t.route53.failover_record)
        assert answer.addresses == dns_world.alb_addresses[east]
        assert answer.ttl == ALB_ALIAS_TTL_S / 10  # the ELB's TTL, on the sandbox's clock (x10)
        assert routing.region_of_answer(answer.addresses) == east
        assert routing.region_of(dns_world.alb_addresses[west][1]) == west
        assert (
            routing.region_of_answer((*dns_world.alb_addresses[east], dns_world.alb_addresses[west][0]))
            is None
        )
        assert read_route53_health(clients, routing) == {east: True, west: True}

    def test_an_alb_name_that_does_not_resolve_has_no_addresses(
        self, dns_world: DnsWorld, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        clients = sandbox_clients(dns_world, monkeypatch)
        t = dns_world.topology
        apply_route53_plan(clients, t)
        # A resolver that answers nothing (a name server that refuses every name): the records
        # are still read from Route 53, but no answer can be attributed to a region.
        refusing = DnsServer(lambda _name, _kind: DnsAnswer.refused()).start()
        try:
            routing = discover_routing(t, clients, Resolver([refusing.nameserver], timeout_s=0.5))
        finally:
            refusing.stop()
        assert set(routing.routes) == {"us-east-1", "us-west-2"} and routing.addresses == {}
        assert routing.region_of_answer(dns_world.alb_addresses["us-east-1"]) is None


class TestPacing:
    """Route 53 throttles GetHealthCheckStatus per account (sandbox: 4 burst, 1 per second, as
    AWS's throttling guide describes); AwsClients paces its calls to stay under it."""

    BURST = 6  # more than the throttle's burst of 4

    def test_a_burst_of_status_reads_is_paced_under_the_throttle(
        self, dns_world: DnsWorld, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        clients = sandbox_clients(dns_world, monkeypatch)
        raw = dns_world.aws.client("route53")  # one attempt, unpaced: the operator's own client
        east = dns_world.topology.region("us-east-1")
        check_id = raw.create_health_check(
            CallerReference=f"pacing-{uuid.uuid4().hex[:8]}",
            HealthCheckConfig={
                "Type": "HTTP",
                "FullyQualifiedDomainName": east.query_hostname,
                "Port": dns_world.topology.route53.health_check.port,
                "ResourcePath": "/healthz",
                "RequestInterval": 10,
                "FailureThreshold": 2,
            },
        )["HealthCheck"]["Id"]
        route = RegionRoute(
            region=east.aws_region, alb_dns="-", health_check_id=check_id, role="PRIMARY", set_identifier="-"
        )
        one = Routing(record=dns_world.topology.route53.failover_record, routes={east.aws_region: route})
        truth = dns_world.aws.truth
        calls_before = len(
            [e for e in truth.events("route53.call") if e["operation"] == "GetHealthCheckStatus"]
        )
        throttled_before = len(truth.events("route53.throttled"))

        with ThreadPoolExecutor(max_workers=self.BURST) as pool:  # concurrent callers, one process
            verdicts = list(pool.map(lambda _i: read_route53_health(clients, one), range(self.BURST)))

        assert [set(v) for v in verdicts] == [{"us-east-1"}] * self.BURST  # every read answered
        status_calls = [e for e in truth.events("route53.call") if e["operation"] == "GetHealthCheckStatus"]
        assert len(status_calls) - calls_before == self.BURST  # each read once: nothing was retried
        assert len(truth.events("route53.throttled")) == throttled_before  # and nothing throttled
        assert clients.route53_pacer.waited_s > 0

        # The same burst without pacing (a plain client, no retries) is throttled by the sandbox:
        # the check above is not passing for want of a throttle.
        errors = []
        for _ in range(self.BURST):
            try:
                raw.get_health_check_status(HealthCheckId=check_id)
            except ClientError as exc:
                errors.append(exc.response["Error"]["Code"])
        assert errors and set(errors) == {"Throttling"}
