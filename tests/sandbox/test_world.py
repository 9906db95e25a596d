"""The whole world wired together: Route 53's checkers, the load balancers' host rules, Chalk's regions."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from sandbox.harness import poll
from sandbox.world import API_NAME
from sandbox.world import FAILOVER_RECORD
from sandbox.world import ZONE_NAME

LiveWorld = Any  # tests/sandbox/conftest.py's LiveWorld (conftest modules are not importable)
SUCCESS = "Success: HTTP Status Code 200, OK"
NOT_FOUND = "Failure: HTTP Status Code 404, Not Found"


def statuses(world: LiveWorld, health_check_id: str) -> set[str | None]:
    return {c["status"] for c in world.health()[health_check_id]["checkers"]}


def health_check(world: LiveWorld, fqdn: str) -> str:
    return str(
        world.client("route53").create_health_check(
            CallerReference=uuid.uuid4().hex,
            HealthCheckConfig={
                "Type": "HTTP",
                "FullyQualifiedDomainName": fqdn,
                "Port": world.world.port,
                "ResourcePath": "/healthz",
                "RequestInterval": 10,
                "FailureThreshold": 1,
                "Regions": ["us-east-1", "us-west-2", "eu-west-1"],
            },
        )["HealthCheck"]["Id"]
    )


def upsert(world: LiveWorld, record: dict[str, Any]) -> None:
    world.client("route53").change_resource_record_sets(
        HostedZoneId=world.world.zone_id,
        ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": record}]},
    )


class TestHealthCheckersThroughDns:
    """HealthCheckConfig (Route 53 API reference): with FullyQualifiedDomainName and no IPAddress,
    "Route 53 sends a DNS request to the domain that you specify for FullyQualifiedDomainName at the
    interval that you specify for RequestInterval. Using an IPv4 address that DNS returns, Route 53
    then checks the health of the endpoint", and "passes the value of FullyQualifiedDomainName in the
    Host header" ("FullyQualifiedDomainName:Port" on other ports). The load balancer's host rules
    then decide: a name it does not serve gets its default 404."""

    def test_checkers_resolve_the_name_and_send_it_as_host(self, live_world: LiveWorld) -> None:
        east = live_world.regions[0]
        checks = live_world.provision_dns()
        stale = f"stale-{uuid.uuid4().hex[:6]}.{ZONE_NAME}"  # resolves to east's ALB, not a name it serves
        upsert(
            live_world,
            {
                "Name": stale,
                "Type": "A",
                "TTL": 60,
                "ResourceRecords": [{"Value": live_world.alb_addresses(east)[0]}],
            },
        )
        stale_check = health_check(live_world, stale)
        poll(
            lambda: all(statuses(live_world, check) == {SUCCESS} for check in checks.values()),
            what="the regional checks to pass",
        )
        poll(lambda: statuses(live_world, stale_check) == {NOT_FOUND}, what="the stale name to get 404")
        poll(
            lambda: not live_world.health()[stale_check]["healthy"], what="the stale check to turn unhealthy"
        )

    def test_a_changed_record_changes_what_the_checkers_probe(self, live_world: LiveWorld) -> None:
        east, west = live_world.regions
        checks = live_world.provision_dns()
        poll(lambda: statuses(live_world, checks[east]) == {SUCCESS}, what="east's check to pass")
        reg = live_world.region(east)
        west_alb = live_world.region(west).alb_dns
        upsert(  # east's hostname now points at west's ALB, which does not serve that name
            live_world,
            {
                "Name": reg.spec.query_hostname,
                "Type": "A",
                "AliasTarget": {
                    "HostedZoneId": "Z1H1FL5HABSF5",
                    "DNSName": west_alb,
                    "EvaluateTargetHealth": False,
                },
            },
        )
        poll(
            lambda: not live_world.health()[checks[east]]["healthy"], timeout=10, what="east's check to fail"
        )
        assert statuses(live_world, checks[east]) == {NOT_FOUND}
        assert live_world.dig(FAILOVER_RECORD).values == live_world.alb_addresses(west)

    def test_a_name_without_an_a_record_fails_dns_resolution(self, live_world: LiveWorld) -> None:
        """HealthCheckConfig.FullyQualifiedDomainName: "If there's no resource record set with a type
        of A for the name ..., the health check fails with a "DNS resolution failed" error"."""
        missing = health_check(live_world, f"gone-{uuid.uuid4().hex[:6]}.{ZONE_NAME}")
        poll(
            lambda: statuses(live_world, missing) == {"Failure: DNS resolution failed."}, what="DNS failures"
        )
        poll(lambda: not live_world.health()[missing]["healthy"], what="the check to turn unhealthy")


class TestLoadBalancerHostRules:
    """Chalk's multi-region guide: each region's query servers answer its own hostname and the
    failover name; ALB host-header rules send any other Host to the default action (here 404)."""

    def test_only_the_regions_names_are_served(self, live_world: LiveWorld) -> None:
        east, west = live_world.regions
        address = live_world.alb_addresses(east)[0]
        url = f"http://{address}:{live_world.world.port}/healthz"
        expected = {
            live_world.region(east).spec.query_hostname: 200,
            FAILOVER_RECORD: 200,
            live_world.region(west).spec.query_hostname: 404,
            API_NAME: 404,
            address: 404,
        }
        with httpx.Client(timeout=10, trust_env=False) as http:
            seen = {host: http.get(url, headers={"Host": host}).status_code for host in expected}
        assert seen == expected


class TestDeployments:
    """chalk-go `Deployment` has one Id and one EnvironmentId; BuilderService.CreateDeployment
    "responds with a deployment_id": the same code applied to two regions is two deployments."""

    def test_each_region_serves_a_deployment_of_its_own(self, live_world: LiveWorld) -> None:
        def served(aws_region: str) -> str:
            return str(
                live_world.query(aws_region, ["user.name"], {"user.id": 1}).json()["meta"]["deployment_id"]
            )

        east, west = live_world.regions
        assert served(east) != served(west)
        ids = {}
        with httpx.Client(timeout=10, trust_env=False) as http:
            for aws_region in (east, west):
                resp = http.post(
                    live_world.api(aws_region, "/_sandbox/apply"),
                    headers=live_world.chalk_headers(),
                    json={"branch": None, "promote": True},
                )
                assert resp.status_code == 200, resp.text
                ids[aws_region] = resp.json()["deployment_id"]
        assert ids[east] != ids[west]
        assert {r: served(r) for r in (east, west)} == ids
