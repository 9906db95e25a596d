"""Provision with ARC routing controls and failback readiness, against a sandbox world that asks
for both (`--arc --failback-readiness`).

Everything is read back with plain boto3 against the world's endpoint (never with chalk-dr's own
readers), except where the point is chalk-dr's reader (discover_routing, read_reverse_replicators).
Calls are counted with a botocore `before-call` hook on the flow's AwsClients.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import dns.nameserver
import dns.rdatatype
import dns.resolver
import httpx
import pytest

from chalkdr.clients import AwsClients
from chalkdr.dns import Resolver
from flows.provision import ProvisionReport
from flows.provision import provision
from sandbox.harness import poll
from tasks.msk import read_reverse_replicators
from tasks.route53 import discover_routing
from tasks.route53 import read_route53_health

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(300)]

EAST, WEST = "us-east-1", "us-west-2"
READ_PREFIXES = ("Describe", "List", "Get", "Test")
OWNER = "chalk-dr:environment"
IAM = Path(__file__).resolve().parents[2] / "deployments" / "iam"


def _list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


class Calls:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[str] = []

    def __call__(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls.append(f"{model.service_model.service_name}:{model.name}")

    @property
    def mutating(self) -> list[str]:
        return [c for c in self.calls if not c.split(":", 1)[1].startswith(READ_PREFIXES)]


@pytest.fixture(scope="module")
def arc_world(world_factory: Any) -> Any:
    return world_factory("--environment", "arcprov", "--arc", "--failback-readiness")


@pytest.fixture
def world(arc_world: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key, value in arc_world.env.items():
        monkeypatch.setenv(key, value)
    yield arc_world


def aws(world: Any, service: str, region: str = EAST, endpoint: str | None = None) -> Any:
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint or world.aws_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def run(world: Any) -> tuple[ProvisionReport, Calls]:
    calls = Calls()
    state = provision(
        topology=str(world.topology_path),
        mode="apply",
        require_approval=False,
        clients=AwsClients(event_hooks=[("before-call", calls)]),
        return_state=True,
    )
    report = state.result(raise_on_failure=False)
    assert isinstance(report, ProvisionReport), report
    assert state.is_completed(), state.message
    return report, calls


def tags(config: Any, arn: str) -> dict[str, str]:
    return dict(config.list_tags_for_resource(ResourceArn=arn)["Tags"])


def test_apply_builds_routing_controls_calculated_checks_and_reverse_replicators(world: Any) -> None:
    t = world.topology
    env, arc = t.environment, t.recovery.arc
    assert arc is not None and t.recovery.failback_readiness

    report, calls = run(world)
    assert report.outcome == "applied" and report.verified, report.error

    # ARC: the cluster, the control panel and one routing control per region, all tagged where
    # ARC takes tags (clusters, control panels, safety rules), all DEPLOYED
    config = aws(world, "route53-recovery-control-config", "us-west-2")
    (cluster,) = [c for c in config.list_clusters()["Clusters"] if c["Name"] == arc.cluster_name]
    cluster = config.describe_cluster(ClusterArn=cluster["ClusterArn"])["Cluster"]
    assert cluster["Status"] == "DEPLOYED" and len(cluster["ClusterEndpoints"]) == 5
    assert tags(config, cluster["ClusterArn"])[OWNER] == env
    (panel,) = [
        p
        for p in config.list_control_panels(ClusterArn=cluster["ClusterArn"])["ControlPanels"]
        if p["Name"] == arc.control_panel_name
    ]
    assert panel["Status"] == "DEPLOYED" and tags(config, panel["ControlPanelArn"])[OWNER] == env
    controls = {
        rc["Name"]: rc["RoutingControlArn"]
        for rc in config.list_routing_controls(ControlPanelArn=panel["ControlPanelArn"])["RoutingControls"]
    }
    assert set(controls) == {f"{env}-{EAST}", f"{env}-{WEST}"}
    (rule,) = config.list_safety_rules(ControlPanelArn=panel["ControlPanelArn"])["SafetyRules"]
    assertion = rule["ASSERTION"]
    assert assertion["RuleConfig"] == {"Type": "ATLEAST", "Threshold": 1, "Inverted": False}
    assert sorted(assertion["AssertedControls"]) == sorted(controls.values())
    assert tags(config, assertion["SafetyRuleArn"])[OWNER] == env

    # every routing control On, as the cluster's data plane (one of its endpoints) reports it
    endpoint = cluster["ClusterEndpoints"][0]
    data = aws(world, "route53-recovery-cluster", endpoint["Region"], endpoint["Endpoint"])
    listed = data.list_routing_controls(ControlPanelArn=panel["ControlPanelArn"])["RoutingControls"]
    assert {rc["RoutingControlName"]: rc["RoutingControlState"] for rc in listed} == dict.fromkeys(
        controls, "On"
    )
    # ...set On before any record pointed at a check on them: the failover name's batch, the last
    # record write (the regional names, which carry no check, are written before the checks)
    writes = [i for i, c in enumerate(calls.mutating) if c == "route53:ChangeResourceRecordSets"]
    assert calls.mutating.index("route53-recovery-cluster:UpdateRoutingControlStates") < writes[-1]

    # Route 53: per region an HTTPS check, a RECOVERY_CONTROL check on its routing control, and a
    # CALCULATED check of both (threshold 2) that the failover record carries
    r53 = aws(world, "route53")
    checks = r53.list_health_checks()["HealthChecks"]

    def check(region: str, role: str) -> dict[str, Any]:
        prefix = f"chalkdr-{env}-{region}-{role}"
        (found,) = [
            c
            for c in checks
            if c["CallerReference"].startswith(prefix)
            and (role or not c["CallerReference"][len(prefix) :].startswith(("rc-", "calc-")))
        ]
        return dict(found)

    records = {
        s["SetIdentifier"]: s
        for s in r53.list_resource_record_sets(HostedZoneId=t.route53.zone_id)["ResourceRecordSets"]
        if s["Name"] == f"{t.route53.failover_record}."
    }
    for region in (EAST, WEST):
        https, rc, calc = check(region, ""), check(region, "rc-"), check(region, "calc-")
        assert https["HealthCheckConfig"]["Type"] == t.route53.health_check.protocol
        assert rc["HealthCheckConfig"]["Type"] == "RECOVERY_CONTROL"
        assert rc["HealthCheckConfig"]["RoutingControlArn"] == controls[f"{env}-{region}"]
        assert calc["HealthCheckConfig"]["Type"] == "CALCULATED"
        assert calc["HealthCheckConfig"]["HealthThreshold"] == 2
        assert sorted(calc["HealthCheckConfig"]["ChildHealthChecks"]) == sorted([https["Id"], rc["Id"]])
        assert records[f"{env}-{region}"]["HealthCheckId"] == calc["Id"]
        for c in (https, rc, calc):
            found = r53.list_tags_for_resource(ResourceType="healthcheck", ResourceId=c["Id"])
            assert {"Key": OWNER, "Value": env} in found["ResourceTagSet"]["Tags"]

    # DNS still answers the primary: both calculated checks are healthy
    truth = httpx.get(f"{world.aws_endpoint}/_sandbox/world", timeout=10, trust_env=False).json()
    primary_addresses = tuple(sorted(truth["regions"][EAST]["alb_addresses"]))
    host, port = world.env["SANDBOX_NAMESERVER"].rsplit(":", 1)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(host, int(port))]
    resolver.cache = None

    def answer() -> tuple[str, ...]:
        return tuple(
            sorted(r.to_text() for r in resolver.resolve(t.route53.failover_record, dns.rdatatype.A))
        )

    poll(lambda: answer() == primary_addresses, timeout=30, what="the failover name to answer the primary")

    # what drills read: the HTTPS child's verdict, the record's calculated check and the routing control
    clients = AwsClients()
    routing = discover_routing(t, clients, Resolver(t.dns.nameservers))
    for region in (EAST, WEST):
        route = routing.routes[region]
        assert route.health_check_id == check(region, "")["Id"]
        assert route.record_health_check_id == check(region, "calc-")["Id"]
        assert route.routing_control_arn == controls[f"{env}-{region}"]
    assert read_route53_health(clients, routing) == {EAST: True, WEST: True}

    # failback readiness: a replicator from the secondary back to the primary, in the primary's
    # region, from LATEST, identical topic names, tagged, RUNNING
    kafka = aws(world, "kafka", EAST)
    name = f"{t.msk.replicator_name}-failback"
    (summary,) = kafka.list_replicators(ReplicatorNameFilter=name)["Replicators"]
    rep = kafka.describe_replicator(ReplicatorArn=summary["ReplicatorArn"])
    info = rep["ReplicationInfoList"][0]
    aliases = {c["KafkaClusterAlias"]: c["AmazonMskCluster"]["MskClusterArn"] for c in rep["KafkaClusters"]}
    assert aliases[info["SourceKafkaClusterAlias"]] == t.region(WEST).msk_cluster_arn
    assert aliases[info["TargetKafkaClusterAlias"]] == t.primary.msk_cluster_arn
    assert info["TopicReplication"]["StartingPosition"] == {"Type": "LATEST"}
    assert info["TopicReplication"]["TopicNameConfiguration"] == {"Type": "IDENTICAL"}
    assert rep["Tags"][OWNER] == env and rep["ReplicatorState"] == "RUNNING"
    assert read_reverse_replicators(t, clients) == {WEST: "RUNNING"}

    # provision's IAM policy grants every ARC, Route 53 and MSK action the apply called (the
    # security tests check every flow this way, but their world has no ARC)
    policy = json.loads((IAM / "provision.json").read_text())
    granted = {a for st in policy["Statement"] if st["Effect"] == "Allow" for a in _list(st["Action"])}
    services = ("route53-recovery-control-config", "route53-recovery-cluster", "route53", "kafka")
    called = {c for c in calls.calls if c.split(":")[0] in services}
    assert called - granted == set(), sorted(called - granted)

    # a second apply changes nothing and makes no mutating call
    again, calls = run(world)
    assert again.outcome == "in-sync" and again.plan.empty and again.applied == []
    assert calls.calls and calls.mutating == []
