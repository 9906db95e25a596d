"""DNS failover as a client sees it, in a fresh sandbox world provisioned by the provision flow.

The acceptance criterion: the failover name, resolved with dnspython against the sandbox's name
server, answers with the primary ALB's addresses; once the primary's query servers are scaled to
zero (through the Kubernetes API, as the drill's fault does) and Route 53's checkers have seen
it, it answers with the secondary ALB's addresses, and a resolver that cached the old answer
follows one TTL later. TestDNSAnswer agrees with the name server; the health checks probe the
regional hostnames. chalk-dr's own probe attributes every answer to a region by address.
"""

from __future__ import annotations

import time
from typing import Any

import boto3
import dns.nameserver
import dns.rdatatype
import dns.resolver
import httpx
import pytest

from chalkdr.clients import AwsClients
from chalkdr.topology import ALB_ALIAS_TTL_S
from sandbox.harness import poll
from tasks.probes import ProbeSet
from tasks.probes import read_dns_answer
from tasks.probes import take_observation
from tasks.route53 import discover_routing

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(240)]

EAST, WEST = "us-east-1", "us-west-2"


def dnspython_resolver(nameserver: str, *, cache: bool) -> dns.resolver.Resolver:
    """A plain dnspython resolver asking the sandbox's name server (SANDBOX_NAMESERVER, ip:port)."""
    host, port = nameserver.rsplit(":", 1)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(host, int(port))]
    resolver.lifetime = resolver.timeout = 2.0
    resolver.cache = dns.resolver.Cache() if cache else None
    return resolver


def addresses(resolver: dns.resolver.Resolver, name: str) -> tuple[str, ...]:
    return tuple(sorted(r.to_text() for r in resolver.resolve(name, dns.rdatatype.A, search=False)))


@pytest.fixture
def world(own_world_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    world = own_world_factory("--environment", "dnsflip").provision()
    for key, value in world.env.items():
        monkeypatch.setenv(key, value)
    return world


def test_the_failover_name_moves_to_the_secondary_after_query_servers_go_down(world: Any) -> None:
    t = world.topology
    name = t.route53.failover_record
    truth = httpx.get(f"{world.aws_endpoint}/_sandbox/world", timeout=10, trust_env=False).json()
    alb = {r: tuple(sorted(v["alb_addresses"])) for r, v in truth["regions"].items()}
    assert alb[EAST] != alb[WEST]
    nameserver = world.env["SANDBOX_NAMESERVER"]
    uncached = dnspython_resolver(nameserver, cache=False)
    cached = dnspython_resolver(nameserver, cache=True)
    r53 = boto3.client("route53", region_name=EAST)

    # The health checks probe each region's own hostname (Route 53 resolves it, sends it as Host).
    checks = {
        r.aws_region: next(
            c
            for c in r53.list_health_checks()["HealthChecks"]
            if c["CallerReference"].startswith(f"chalkdr-{t.environment}-{r.aws_region}-")
        )
        for r in t.regions
    }
    assert {r: c["HealthCheckConfig"]["FullyQualifiedDomainName"] for r, c in checks.items()} == {
        r.aws_region: r.query_hostname for r in t.regions
    }

    # Before: the primary's ALB addresses, with the ELB's TTL (an alias has none of its own).
    answer = cached.resolve(name, dns.rdatatype.A, search=False)
    ttl = answer.rrset.ttl if answer.rrset is not None else None
    assert ttl == max(1, round(ALB_ALIAS_TTL_S / t.time_scale))
    assert tuple(sorted(r.to_text() for r in answer)) == alb[EAST] == addresses(uncached, name)
    before = r53.test_dns_answer(HostedZoneId=t.route53.zone_id, RecordName=name, RecordType="A")
    assert (before["ResponseCode"], tuple(sorted(before["RecordData"]))) == ("NOERROR", alb[EAST])

    # chalk-dr's probe: the same answer, attributed to the primary by its addresses
    clients = AwsClients.for_topology(t)
    probes = ProbeSet.for_topology(t, clients)
    try:
        routing = discover_routing(t, clients, probes.resolver)
        assert routing.addresses == {r: alb[r] for r in (EAST, WEST)}
        assert read_dns_answer(probes, routing) == (EAST, alb[EAST])
        seen = take_observation(probes, routing, canary_id=None)
        assert seen.dns_answer == EAST and seen.query.ok and seen.query.region == EAST

        # The fault: the primary's query-server Deployment to zero, through its Kubernetes API.
        primary = t.primary
        kube = clients.kube(primary.eks.cluster_name, primary.aws_region)
        kube.apps().patch_namespaced_deployment_scale(
            primary.eks.query_server_deployment,
            primary.eks.namespace,
            {"spec": {"replicas": 0}},
            _request_timeout=kube.request_timeout,
        )
        moved = poll(
            lambda: addresses(uncached, name) == alb[WEST],
            timeout=60,
            what="the failover name answering with the secondary's addresses",
            every=0.1,
        )
        assert moved
        # What Route 53 itself says: the primary's check failed, the secondary's did not.
        status = {
            r: [
                o["StatusReport"]["Status"]
                for o in r53.get_health_check_status(HealthCheckId=c["Id"])["HealthCheckObservations"]
            ]
            for r, c in checks.items()
        }
        assert all(s.startswith("Failure") for s in status[EAST]), status
        assert all(s.startswith("Success") for s in status[WEST]), status
        after = r53.test_dns_answer(HostedZoneId=t.route53.zone_id, RecordName=name, RecordType="A")
        assert tuple(sorted(after["RecordData"])) == alb[WEST]

        # A resolver that cached the primary's answer follows once that answer's TTL has run out.
        poll(lambda: addresses(cached, name) == alb[WEST], timeout=60, what="the cached answer expiring")
        assert time.time() >= answer.expiration  # not before the primary's answer had lived its TTL

        # chalk-dr's probe attributes the new answer, and the query it sent, to the secondary.
        assert read_dns_answer(probes, routing) == (WEST, alb[WEST])
        seen = poll(
            lambda: (o := take_observation(probes, routing, canary_id=None)).query.ok and o,
            timeout=30,
            what="a good answer through the failover name",
        )
        assert seen.dns_answer == WEST and seen.query.region == WEST
    finally:
        probes.close()
