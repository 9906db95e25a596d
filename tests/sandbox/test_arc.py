"""ARC routing control in the sandbox: the configuration API (us-west-2), the cluster data plane on
each regional endpoint, safety rules, and Route 53 RECOVERY_CONTROL health checks that route DNS."""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import dns.message
import dns.query
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.exceptions import ConnectionClosedError

from chalkdr.topology import RecoveryConfig
from sandbox.arc import CLUSTER_ENDPOINT_REGIONS
from sandbox.arc import ArcSim
from sandbox.aws import SandboxAwsApp
from sandbox.clock import SandboxClock
from sandbox.dns import DnsServer
from sandbox.harness import CREDENTIALS
from sandbox.harness import AwsSandbox
from sandbox.harness import poll
from sandbox.route53 import Route53Sim
from sandbox.truth import GroundTruth
from sandbox.world import World
from sandbox.world import WorldSpec

# 100 AWS seconds per real second: a cluster deploys in 0.2 s, the rest in 0.05 s.
TIME_SCALE = 100.0
ARN = re.compile(r"^arn:aws:route53-recovery-control::\d{12}:")


@dataclass
class Arc:
    aws: AwsSandbox
    arc: ArcSim
    route53: Route53Sim
    dns: DnsServer

    @property
    def config(self) -> Any:
        return self.aws.client("route53-recovery-control-config", "us-west-2")

    @property
    def r53(self) -> Any:
        return self.aws.client("route53")

    def cluster(self, name: str = "demo-arc") -> dict[str, Any]:
        arn = self.config.create_cluster(ClusterName=name)["Cluster"]["ClusterArn"]
        return self.deployed("cluster", arn)

    def panel(self, cluster_arn: str, name: str = "demo-panel") -> dict[str, Any]:
        arn = self.config.create_control_panel(ClusterArn=cluster_arn, ControlPanelName=name)["ControlPanel"][
            "ControlPanelArn"
        ]
        return self.deployed("control_panel", arn)

    def control(self, cluster_arn: str, panel_arn: str, name: str) -> str:
        created = self.config.create_routing_control(
            ClusterArn=cluster_arn, ControlPanelArn=panel_arn, RoutingControlName=name
        )
        arn = str(created["RoutingControl"]["RoutingControlArn"])
        self.deployed("routing_control", arn)
        return arn

    def deployed(self, kind: str, arn: str) -> dict[str, Any]:
        key = "".join(part.capitalize() for part in kind.split("_"))
        describe = getattr(self.config, f"describe_{kind}")
        arn_arg = {f"{key}Arn": arn}

        def ready() -> dict[str, Any] | None:
            found: dict[str, Any] = describe(**arn_arg)[key]
            return found if found["Status"] == "DEPLOYED" else None

        return poll(ready, timeout=5, what=f"{kind} {arn} DEPLOYED")

    def setup(self, *names: str) -> tuple[dict[str, Any], str, list[str]]:
        """A DEPLOYED cluster and control panel with routing controls `names` (all Off)."""
        cluster = self.cluster()
        panel = self.panel(cluster["ClusterArn"])["ControlPanelArn"]
        return cluster, panel, [self.control(cluster["ClusterArn"], panel, n) for n in names]

    def data_plane(self, endpoint: dict[str, str], *, region: str | None = None, attempts: int = 1) -> Any:
        """A data-plane client exactly as product code makes one (chalkdr.clients.AwsClients.arc_cluster)."""
        make: Any = boto3.client
        return make(
            "route53-recovery-cluster",
            region_name=region or endpoint["Region"],
            endpoint_url=endpoint["Endpoint"],
            config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}),
            **CREDENTIALS,
        )

    def dig(self, name: str) -> list[str]:
        host, _, port = self.dns.nameserver.rpartition(":")
        response = dns.query.udp(dns.message.make_query(name, "A"), host, port=int(port), timeout=2)
        return sorted(r.to_text() for rrset in response.answer for r in rrset)

    def healthy(self, health_check_id: str) -> bool:
        checks = self.aws.control("GET", "/_sandbox/route53/health").json()["health_checks"]
        return bool(next(c for c in checks if c["health_check_id"] == health_check_id)["healthy"])

    def recovery_check(self, routing_control_arn: str, **config: Any) -> str:
        created = self.r53.create_health_check(
            CallerReference=uuid.uuid4().hex,
            HealthCheckConfig={
                "Type": "RECOVERY_CONTROL",
                "RoutingControlArn": routing_control_arn,
                **config,
            },
        )
        return str(created["HealthCheck"]["Id"])


@pytest.fixture
def arc() -> Iterator[Arc]:
    def simulators(app: SandboxAwsApp, truth: GroundTruth) -> list[Any]:
        clock = SandboxClock(TIME_SCALE)
        route53 = Route53Sim(
            app, clock=clock, truth=truth, resolve=lambda *_: None, rng=random.Random(3), throttle=False
        )
        return [route53, ArcSim(app, clock=clock, truth=truth, route53=route53)]

    with AwsSandbox(simulators) as aws:
        route53, sim = aws.simulators
        name_server = DnsServer(route53.resolve).start()
        try:
            yield Arc(aws=aws, arc=sim, route53=route53, dns=name_server)
        finally:
            name_server.stop()


def failure(call: Callable[[], object]) -> tuple[str, int] | None:
    """(AWS error code, HTTP status) of the call, or None when it succeeds."""
    try:
        call()
    except ClientError as exc:
        response: Any = exc.response
        return str(response["Error"]["Code"]), int(response["ResponseMetadata"]["HTTPStatusCode"])
    return None


def error_of(call: Callable[[], object]) -> tuple[str, int]:
    found = failure(call)
    assert found is not None, "the call succeeded"
    return found


class TestClusters:
    def test_pending_then_deployed_with_five_regional_endpoints(self, arc: Arc) -> None:
        created = arc.config.create_cluster(ClusterName="demo-arc")["Cluster"]
        assert created["Status"] == "PENDING"
        assert "ClusterEndpoints" not in created
        assert re.match(ARN.pattern + r"cluster/[0-9a-f-]{36}$", created["ClusterArn"])
        cluster = arc.deployed("cluster", created["ClusterArn"])
        cluster_id = created["ClusterArn"].rsplit("/", 1)[1]
        assert [e["Region"] for e in cluster["ClusterEndpoints"]] == list(CLUSTER_ENDPOINT_REGIONS)
        for endpoint in cluster["ClusterEndpoints"]:
            assert endpoint["Endpoint"] == f"{arc.aws.endpoint}/arc/{cluster_id}/{endpoint['Region']}/v1"
        assert (cluster["Name"], cluster["Owner"], cluster["NetworkType"]) == (
            "demo-arc",
            "123456789012",
            "IPV4",
        )
        assert [c["ClusterArn"] for c in arc.config.list_clusters()["Clusters"]] == [created["ClusterArn"]]

    def test_a_cluster_comes_with_its_default_control_panel(self, arc: Arc) -> None:
        cluster = arc.cluster()
        panels = arc.config.list_control_panels(ClusterArn=cluster["ClusterArn"])["ControlPanels"]
        assert [(p["Name"], p["DefaultControlPanel"], p["RoutingControlCount"]) for p in panels] == [
            ("DefaultControlPanel", True, 0)
        ]
        assert re.match(ARN.pattern + r"controlpanel/[0-9a-f]{32}$", panels[0]["ControlPanelArn"])
        code, _ = error_of(
            lambda: arc.config.delete_control_panel(ControlPanelArn=panels[0]["ControlPanelArn"])
        )
        assert code == "ConflictException"

    def test_delete_goes_through_pending_deletion(self, arc: Arc) -> None:
        arn = arc.cluster()["ClusterArn"]
        arc.config.delete_cluster(ClusterArn=arn)
        assert arc.config.describe_cluster(ClusterArn=arn)["Cluster"]["Status"] == "PENDING_DELETION"
        poll(
            lambda: (
                failure(lambda: arc.config.describe_cluster(ClusterArn=arn))
                == ("ResourceNotFoundException", 404)
            ),
            what="cluster gone",
        )
        assert arc.config.list_control_panels()["ControlPanels"] == []  # its default panel went with it
        assert [e["status"] for e in arc.aws.truth.events("arc.resource") if e["arn"] == arn] == [
            "PENDING",
            "DEPLOYED",
            "PENDING_DELETION",
            "DELETED",
        ]

    def test_a_cluster_with_panels_or_controls_cannot_be_deleted(self, arc: Arc) -> None:
        cluster, panel, (control,) = arc.setup("demo-us-east-1")
        code, status = error_of(lambda: arc.config.delete_cluster(ClusterArn=cluster["ClusterArn"]))
        assert (code, status) == ("ConflictException", 409)
        code, _ = error_of(lambda: arc.config.delete_control_panel(ControlPanelArn=panel))
        assert code == "ConflictException"
        arc.config.delete_routing_control(RoutingControlArn=control)
        poll(
            lambda: not arc.config.list_routing_controls(ControlPanelArn=panel)["RoutingControls"],
            what="gone",
        )
        arc.config.delete_control_panel(ControlPanelArn=panel)
        poll(lambda: len(arc.config.list_control_panels()["ControlPanels"]) == 1, what="custom panel gone")
        arc.config.delete_cluster(ClusterArn=cluster["ClusterArn"])

    def test_unknown_arns_are_not_found(self, arc: Arc) -> None:
        missing = f"arn:aws:route53-recovery-control::123456789012:cluster/{uuid.uuid4()}"
        assert error_of(lambda: arc.config.describe_cluster(ClusterArn=missing)) == (
            "ResourceNotFoundException",
            404,
        )
        assert error_of(lambda: arc.config.describe_control_panel(ControlPanelArn=missing))[0] == (
            "ResourceNotFoundException"
        )
        assert error_of(lambda: arc.config.create_control_panel(ClusterArn=missing, ControlPanelName="p"))[
            0
        ] == ("ResourceNotFoundException")

    def test_names_must_be_1_to_64_non_space_characters(self, arc: Arc) -> None:
        for bad in ("has space", "x" * 65):
            assert error_of(lambda bad=bad: arc.config.create_cluster(ClusterName=bad)) == (
                "ValidationException",
                400,
            )
        arc.config.create_cluster(ClusterName="x" * 64)

    def test_client_token_makes_create_idempotent(self, arc: Arc) -> None:
        first = arc.config.create_cluster(ClusterName="demo-arc", ClientToken="token-1")["Cluster"]
        again = arc.config.create_cluster(ClusterName="demo-arc", ClientToken="token-1")["Cluster"]
        assert again["ClusterArn"] == first["ClusterArn"]
        assert len(arc.config.list_clusters()["Clusters"]) == 1
        code, _ = error_of(lambda: arc.config.create_cluster(ClusterName="other", ClientToken="token-1"))
        assert code == "ConflictException"

    def test_the_api_is_served_from_us_west_2_only(self, arc: Arc) -> None:
        elsewhere = arc.aws.client("route53-recovery-control-config", "us-east-1")
        assert error_of(elsewhere.list_clusters) == ("InvalidSignatureException", 403)

    def test_list_pages(self, arc: Arc) -> None:
        for i in range(3):
            arc.config.create_cluster(ClusterName=f"c{i}")
        page = arc.config.list_clusters(MaxResults=2)
        assert len(page["Clusters"]) == 2
        rest = arc.config.list_clusters(MaxResults=2, NextToken=page["NextToken"])
        assert len(rest["Clusters"]) == 1 and "NextToken" not in rest

    def test_tags(self, arc: Arc) -> None:
        arn = arc.config.create_cluster(ClusterName="demo-arc", Tags={"owner": "chalk-dr"})["Cluster"][
            "ClusterArn"
        ]
        arc.config.tag_resource(ResourceArn=arn, Tags={"env": "demo", "tmp": "x"})
        arc.config.untag_resource(ResourceArn=arn, TagKeys=["tmp", "owner"])
        assert arc.config.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"env": "demo"}
        assert error_of(lambda: arc.config.list_tags_for_resource(ResourceArn=arn + "0"))[0] == (
            "ResourceNotFoundException"
        )

    def test_unsimulated_operations_say_so(self, arc: Arc) -> None:
        arn = arc.cluster()["ClusterArn"]
        assert error_of(lambda: arc.config.get_resource_policy(ResourceArn=arn)) == ("NotImplemented", 501)


class TestControlPanelsAndRoutingControls:
    def test_a_control_panel_needs_a_deployed_cluster(self, arc: Arc) -> None:
        arn = arc.config.create_cluster(ClusterName="demo-arc")["Cluster"]["ClusterArn"]
        code, status = error_of(lambda: arc.config.create_control_panel(ClusterArn=arn, ControlPanelName="p"))
        assert (code, status) == ("ConflictException", 409)

    def test_a_routing_control_is_created_off_in_its_panel(self, arc: Arc) -> None:
        cluster, panel, (control,) = arc.setup("demo-us-east-1")
        panel_id = panel.rsplit("/", 1)[1]
        assert re.match(ARN.pattern + rf"controlpanel/{panel_id}/routingcontrol/[0-9a-f]{{16}}$", control)
        described = arc.config.describe_routing_control(RoutingControlArn=control)["RoutingControl"]
        assert (described["Name"], described["ControlPanelArn"], described["Status"]) == (
            "demo-us-east-1",
            panel,
            "DEPLOYED",
        )
        assert (
            arc.config.describe_control_panel(ControlPanelArn=panel)["ControlPanel"]["RoutingControlCount"]
            == 1
        )
        endpoint = cluster["ClusterEndpoints"][0]
        state = arc.data_plane(endpoint).get_routing_control_state(RoutingControlArn=control)
        assert (state["RoutingControlState"], state["RoutingControlName"]) == ("Off", "demo-us-east-1")

    def test_routing_control_names_are_unique_within_a_panel(self, arc: Arc) -> None:
        cluster, panel, _ = arc.setup("demo-us-east-1")
        code, _ = error_of(
            lambda: arc.config.create_routing_control(
                ClusterArn=cluster["ClusterArn"], ControlPanelArn=panel, RoutingControlName="demo-us-east-1"
            )
        )
        assert code == "ConflictException"

    def test_without_a_panel_the_control_goes_to_the_default_one(self, arc: Arc) -> None:
        cluster = arc.cluster()
        control = arc.config.create_routing_control(ClusterArn=cluster["ClusterArn"], RoutingControlName="rc")
        default = arc.config.list_control_panels(ClusterArn=cluster["ClusterArn"])["ControlPanels"][0]
        assert control["RoutingControl"]["ControlPanelArn"] == default["ControlPanelArn"]

    def test_routing_controls_take_no_tags(self, arc: Arc) -> None:
        _, _, (control,) = arc.setup("rc")
        assert error_of(lambda: arc.config.tag_resource(ResourceArn=control, Tags={"a": "b"}))[0] == (
            "ValidationException"
        )


class TestDataPlane:
    def test_every_endpoint_reads_and_sets_the_same_state(self, arc: Arc) -> None:
        cluster, _, (control,) = arc.setup("demo-us-east-1")
        endpoints = cluster["ClusterEndpoints"]
        for i, endpoint in enumerate(endpoints):
            state = "On" if i % 2 == 0 else "Off"
            arc.data_plane(endpoint).update_routing_control_state(
                RoutingControlArn=control, RoutingControlState=state
            )
            other = endpoints[(i + 1) % len(endpoints)]
            read = arc.data_plane(other).get_routing_control_state(RoutingControlArn=control)
            assert read["RoutingControlState"] == state
        changes = arc.aws.truth.events("arc.routing_control")
        assert [(e["state"], e["endpoint_region"]) for e in changes] == [
            ("On", "us-east-1"),
            ("Off", "us-west-2"),
            ("On", "eu-west-1"),
            ("Off", "ap-northeast-1"),
            ("On", "ap-southeast-2"),
        ]

    def test_an_endpoint_signed_for_another_region_is_refused(self, arc: Arc) -> None:
        cluster, _, (control,) = arc.setup("rc")
        client = arc.data_plane(cluster["ClusterEndpoints"][0], region="eu-west-1")
        assert error_of(lambda: client.get_routing_control_state(RoutingControlArn=control)) == (
            "InvalidSignatureException",
            403,
        )

    def test_a_cluster_knows_only_its_own_routing_controls(self, arc: Arc) -> None:
        _, _, (control,) = arc.setup("rc")
        other = arc.cluster("other-arc")
        client = arc.data_plane(other["ClusterEndpoints"][1])
        assert error_of(lambda: client.get_routing_control_state(RoutingControlArn=control))[0] == (
            "ResourceNotFoundException"
        )

    def test_an_endpoint_of_no_cluster_does_not_answer(self, arc: Arc) -> None:
        cluster, _, (control,) = arc.setup("rc")
        endpoint = dict(cluster["ClusterEndpoints"][0])
        endpoint["Endpoint"] = endpoint["Endpoint"].replace(
            cluster["ClusterArn"].rsplit("/", 1)[1], str(uuid.uuid4())
        )
        with pytest.raises(ConnectionClosedError):
            arc.data_plane(endpoint).get_routing_control_state(RoutingControlArn=control)

    def test_update_states_is_all_or_nothing(self, arc: Arc) -> None:
        cluster, _, (east, west) = arc.setup("east", "west")
        client = arc.data_plane(cluster["ClusterEndpoints"][2])
        missing = east[:-4] + "ffff"
        entries = [
            {"RoutingControlArn": east, "RoutingControlState": "On"},
            {"RoutingControlArn": missing, "RoutingControlState": "On"},
        ]
        code, _ = error_of(
            lambda: client.update_routing_control_states(UpdateRoutingControlStateEntries=entries)
        )
        assert code == "ResourceNotFoundException"
        bad = [
            {"RoutingControlArn": east, "RoutingControlState": "On"},
            {"RoutingControlArn": west, "RoutingControlState": "ON"},
        ]
        code, _ = error_of(lambda: client.update_routing_control_states(UpdateRoutingControlStateEntries=bad))
        assert code == "ValidationException"
        assert client.get_routing_control_state(RoutingControlArn=east)["RoutingControlState"] == "Off"
        client.update_routing_control_states(
            UpdateRoutingControlStateEntries=[
                {"RoutingControlArn": east, "RoutingControlState": "On"},
                {"RoutingControlArn": west, "RoutingControlState": "On"},
            ]
        )
        listed = client.list_routing_controls()["RoutingControls"]
        assert sorted((c["RoutingControlName"], c["RoutingControlState"]) for c in listed) == [
            ("east", "On"),
            ("west", "On"),
        ]
        assert {c["ControlPanelName"] for c in listed} == {"demo-panel"}
        assert {c["Owner"] for c in listed} == {"123456789012"}


class TestSafetyRules:
    def assertion(self, arc: Arc, panel: str, controls: list[str], threshold: int = 1) -> str:
        rule = arc.config.create_safety_rule(
            AssertionRule={
                "AssertedControls": controls,
                "ControlPanelArn": panel,
                "Name": "at-least-one-on",
                "RuleConfig": {"Type": "ATLEAST", "Threshold": threshold, "Inverted": False},
                "WaitPeriodMs": 5000,
            }
        )["AssertionRule"]
        arn = str(rule["SafetyRuleArn"])
        poll(
            lambda: (
                arc.config.describe_safety_rule(SafetyRuleArn=arn)["AssertionRule"]["Status"] == "DEPLOYED"
            ),
            what="rule deployed",
        )
        return arn

    def test_an_assertion_rule_refuses_a_transaction_that_breaks_it(self, arc: Arc) -> None:
        cluster, panel, (east, west) = arc.setup("east", "west")
        client = arc.data_plane(cluster["ClusterEndpoints"][0])
        client.update_routing_control_states(
            UpdateRoutingControlStateEntries=[
                {"RoutingControlArn": east, "RoutingControlState": "On"},
                {"RoutingControlArn": west, "RoutingControlState": "On"},
            ]
        )
        rule = self.assertion(arc, panel, [east, west])
        client.update_routing_control_state(
            RoutingControlArn=east, RoutingControlState="Off"
        )  # west still On
        code, status = error_of(
            lambda: client.update_routing_control_state(RoutingControlArn=west, RoutingControlState="Off")
        )
        assert (code, status) == ("ConflictException", 409)
        # a failover in one transaction keeps one On
        client.update_routing_control_states(
            UpdateRoutingControlStateEntries=[
                {"RoutingControlArn": east, "RoutingControlState": "On"},
                {"RoutingControlArn": west, "RoutingControlState": "Off"},
            ]
        )
        # break glass
        client.update_routing_control_state(
            RoutingControlArn=east, RoutingControlState="Off", SafetyRulesToOverride=[rule]
        )
        assert client.get_routing_control_state(RoutingControlArn=east)["RoutingControlState"] == "Off"
        rules = arc.config.list_safety_rules(ControlPanelArn=panel)["SafetyRules"]
        assert [r["ASSERTION"]["SafetyRuleArn"] for r in rules] == [rule]

    def test_a_gating_rule_holds_its_targets_until_the_gate_is_on(self, arc: Arc) -> None:
        cluster, panel, (gate, target) = arc.setup("gate", "target")
        arn = arc.config.create_safety_rule(
            GatingRule={
                "GatingControls": [gate],
                "TargetControls": [target],
                "ControlPanelArn": panel,
                "Name": "gate",
                "RuleConfig": {"Type": "OR", "Threshold": 1, "Inverted": False},
                "WaitPeriodMs": 5000,
            }
        )["GatingRule"]["SafetyRuleArn"]
        poll(lambda: arc.config.describe_safety_rule(SafetyRuleArn=arn)["GatingRule"]["Status"] == "DEPLOYED")
        client = arc.data_plane(cluster["ClusterEndpoints"][3])
        code, _ = error_of(
            lambda: client.update_routing_control_state(RoutingControlArn=target, RoutingControlState="On")
        )
        assert code == "ConflictException"
        client.update_routing_control_state(RoutingControlArn=gate, RoutingControlState="On")
        client.update_routing_control_state(RoutingControlArn=target, RoutingControlState="On")

    def test_rules_refer_to_controls_of_their_panel(self, arc: Arc) -> None:
        cluster, panel, (east,) = arc.setup("east")
        other_panel = arc.panel(cluster["ClusterArn"], "other")["ControlPanelArn"]
        code, _ = error_of(lambda: self.assertion(arc, other_panel, [east]))
        assert code == "ValidationException"
        code, _ = error_of(lambda: self.assertion(arc, panel, [east], threshold=2))
        assert code == "ValidationException"
        self.assertion(arc, panel, [east])
        code, _ = error_of(lambda: arc.config.delete_routing_control(RoutingControlArn=east))
        assert code == "ConflictException"


class TestRecoveryControlHealthChecks:
    def test_stored_in_aws_shape_and_associated(self, arc: Arc) -> None:
        _, _, (control,) = arc.setup("rc")
        hc = arc.recovery_check(control)
        config = arc.r53.get_health_check(HealthCheckId=hc)["HealthCheck"]["HealthCheckConfig"]
        assert config == {
            "Type": "RECOVERY_CONTROL",
            "Inverted": False,
            "Disabled": False,
            "RoutingControlArn": control,
        }
        listed = arc.config.list_associated_route53_health_checks(RoutingControlArn=control)
        assert listed["HealthCheckIds"] == [hc]

    def test_what_route53_refuses(self, arc: Arc) -> None:
        _, _, (control,) = arc.setup("rc")
        unknown = control[:-4] + "ffff"
        assert error_of(lambda: arc.recovery_check(unknown)) == ("InvalidInput", 400)
        assert error_of(lambda: arc.recovery_check(control, RequestInterval=10))[0] == "InvalidInput"
        assert error_of(lambda: arc.recovery_check(control, FailureThreshold=1))[0] == "InvalidInput"
        hc = arc.recovery_check(control)
        assert (
            error_of(lambda: arc.r53.update_health_check(HealthCheckId=hc, Inverted=True))[0]
            == "InvalidInput"
        )

    def test_healthy_iff_on_and_dns_follows(self, arc: Arc) -> None:
        cluster, _, (east, west) = arc.setup("east", "west")
        east_hc, west_hc = arc.recovery_check(east), arc.recovery_check(west)
        inverted_hc = arc.recovery_check(east, Inverted=True)
        domain = f"chalk-{uuid.uuid4().hex[:8]}.example.com"
        zone = arc.r53.create_hosted_zone(Name=domain, CallerReference=uuid.uuid4().hex)["HostedZone"]["Id"]
        name = f"failover.{domain}"
        arc.r53.change_resource_record_sets(
            HostedZoneId=zone,
            ChangeBatch={
                "Changes": [
                    {
                        "Action": "CREATE",
                        "ResourceRecordSet": {
                            "Name": name,
                            "Type": "A",
                            "SetIdentifier": role,
                            "Failover": role,
                            "TTL": 1,
                            "HealthCheckId": hc,
                            "ResourceRecords": [{"Value": ip}],
                        },
                    }
                    for role, hc, ip in (
                        ("PRIMARY", east_hc, "192.0.2.1"),
                        ("SECONDARY", west_hc, "192.0.2.2"),
                    )
                ]
            },
        )
        poll(lambda: not arc.healthy(east_hc) and not arc.healthy(west_hc), what="both Off: unhealthy")
        assert arc.healthy(inverted_hc)
        assert arc.dig(name) == ["192.0.2.1"]  # both unhealthy: the primary
        client = arc.data_plane(cluster["ClusterEndpoints"][4])
        client.update_routing_control_state(RoutingControlArn=west, RoutingControlState="On")
        assert arc.dig(name) == ["192.0.2.2"]  # at once: the verdict follows the state change
        client.update_routing_control_states(
            UpdateRoutingControlStateEntries=[
                {"RoutingControlArn": east, "RoutingControlState": "On"},
                {"RoutingControlArn": west, "RoutingControlState": "Off"},
            ]
        )
        assert arc.dig(name) == ["192.0.2.1"]
        assert arc.healthy(east_hc) and not arc.healthy(inverted_hc)

    def test_a_calculated_parent_follows_and_get_status_rules(self, arc: Arc) -> None:
        cluster, _, (control,) = arc.setup("rc")
        child = arc.recovery_check(control)
        parent = arc.r53.create_health_check(
            CallerReference=uuid.uuid4().hex,
            HealthCheckConfig={"Type": "CALCULATED", "ChildHealthChecks": [child], "HealthThreshold": 1},
        )["HealthCheck"]["Id"]
        poll(lambda: not arc.healthy(parent), what="parent unhealthy while the control is Off")
        arc.data_plane(cluster["ClusterEndpoints"][0]).update_routing_control_state(
            RoutingControlArn=control, RoutingControlState="On"
        )
        assert arc.healthy(parent)
        # "You can't use GetHealthCheckStatus to get the status of a calculated health check."
        assert error_of(lambda: arc.r53.get_health_check_status(HealthCheckId=parent)) == (
            "InvalidInput",
            400,
        )
        assert error_of(lambda: arc.r53.get_health_check_last_failure_reason(HealthCheckId=parent))[0] == (
            "InvalidInput"
        )
        assert arc.r53.get_health_check_status(HealthCheckId=child)["HealthCheckObservations"] == []


def test_world_topology_asks_for_arc_and_failback_readiness(tmp_path: Path) -> None:
    """`WorldSpec(arc=True, failback_readiness=True)`: the topology's recovery section, and the world's
    own ARC answering (it creates no ARC resources itself)."""
    world = World(
        WorldSpec(time_scale=TIME_SCALE, traffic=False, arc=True, failback_readiness=True), tmp_path
    )
    world.start()
    try:
        recovery = world.topology()["recovery"]
        assert recovery == {
            "failback_readiness": True,
            "arc": {"cluster_name": "demo-arc", "control_panel_name": "demo-panel"},
        }
        RecoveryConfig.model_validate(recovery)
        config = world.client("route53-recovery-control-config", "us-west-2")
        assert config.list_clusters()["Clusters"] == []
        assert (
            config.create_cluster(ClusterName=recovery["arc"]["cluster_name"])["Cluster"]["Status"]
            == "PENDING"
        )
        plain = World(WorldSpec(), tmp_path / "plain")  # not started: topology() needs only the spec here
        assert plain._recovery() == {"failback_readiness": False}
    finally:
        httpx.post(f"{world.server.endpoint_url}/moto-api/reset", timeout=10, trust_env=False)
        world.stop()
