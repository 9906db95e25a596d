"""Route 53 and ALB tasks against moto: what is read, what each ensure changes, what it audits."""

from __future__ import annotations

import copy
import io
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.awsrequest import AWSResponse

from chalkdr.audit import AuditRecord
from chalkdr.clients import AwsClients
from chalkdr.errors import PermanentAwsError
from chalkdr.plan import Action
from chalkdr.plan import Change
from chalkdr.plan import ObservedState
from chalkdr.plan import ResourceKind
from chalkdr.plan import WaitPolicy
from chalkdr.plan import plan_for
from chalkdr.topology import Topology
from chalkdr.topology import parse_topology
from tasks.audit import ApplyContext
from tasks.route53 import delete_stale_health_checks
from tasks.route53 import ensure_health_check
from tasks.route53 import ensure_records
from tasks.route53 import read_alb
from tasks.route53 import read_route53

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
        assert cfg["FullyQualifiedDomainName"] == world["albs"]["us-east-1"]["DNSName"].lower()
        # sha256("HTTPS|10")[:10]: the hash of the settings Route 53 cannot change in place
        assert east["CallerReference"] == f"chalkdr-{t.environment}-us-east-1-6f8ba49c3e"
        tags = r53.list_tags_for_resource(ResourceType="healthcheck", ResourceId=east["Id"])[
            "ResourceTagSet"
        ]["Tags"]
        assert {t_["Key"]: t_["Value"] for t_ in tags} == {
            "chalk-dr:managed": "true",
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


class TestRecords:
    def _create_all(self, clients: AwsClients, t: Topology) -> list[AuditRecord]:
        audit: list[AuditRecord] = []
        obs = observe(clients, t)
        ids: dict[str, str] = {}
        for change in route53_changes(t, obs, ResourceKind.HEALTH_CHECK):
            result = ensure_health_check.fn(ApplyContext(clients, emit=audit.append), change)
            ids[change.region] = result.resource_id or ""
        self._apply_records(clients, t, ids, audit)
        return audit

    def _apply_records(
        self, clients: AwsClients, t: Topology, ids: dict[str, str], audit: list[AuditRecord]
    ) -> None:
        obs = observe(clients, t)
        ids = ids or {
            c.region: c.current_id or "" for c in route53_changes(t, obs, ResourceKind.HEALTH_CHECK)
        }
        pending = [c for c in route53_changes(t, obs, ResourceKind.RECORD) if c.action is not Action.NOOP]
        by_name: dict[str, list[Change]] = {}
        for c in pending:
            by_name.setdefault(c.spec.name, []).append(c)  # type: ignore[union-attr]
        for name, changes in by_name.items():
            ensure_records.fn(ApplyContext(clients, waits=FAST, emit=audit.append), name, changes, ids)

    def test_failover_aliases_and_regional_names(self, world: dict[str, Any]) -> None:
        t: Topology = world["topology"]
        clients = AwsClients()
        audit = self._create_all(clients, t)
        assert sum(1 for a in audit if a.api_call == "route53:ChangeResourceRecordSets") == 4
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
        assert [c.action for c in after] == [Action.NOOP] * 4

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
        assert [c.action for c in route53_plan(slower, observe(clients, slower))] == [Action.NOOP] * 6


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
