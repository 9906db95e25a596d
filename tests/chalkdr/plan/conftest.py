"""Worlds for the plan tests, written the way AWS reports them, never derived from the plan code.

`facts` is a fresh world: what Chalk's team provisioned (ALBs, MSK clusters, the primary's
Aurora cluster and online-store table), nothing of ours. `converged` is the world after a
successful apply, spelled out from the names and settings the topology implies (names follow
the documented identity rules; AWS's own orderings and trailing dots are kept), so a test that
compares a plan against it checks the plan code instead of agreeing with it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from chalkdr.plan import AliasTarget
from chalkdr.plan import Change
from chalkdr.plan import ObservedAlarm
from chalkdr.plan import ObservedAlarms
from chalkdr.plan import ObservedAlb
from chalkdr.plan import ObservedAurora
from chalkdr.plan import ObservedDbCluster
from chalkdr.plan import ObservedDeployment
from chalkdr.plan import ObservedDynamoDb
from chalkdr.plan import ObservedEks
from chalkdr.plan import ObservedEksClusters
from chalkdr.plan import ObservedGlobalCluster
from chalkdr.plan import ObservedHealthCheck
from chalkdr.plan import ObservedMsk
from chalkdr.plan import ObservedMskCluster
from chalkdr.plan import ObservedRecord
from chalkdr.plan import ObservedReplicator
from chalkdr.plan import ObservedRoute53
from chalkdr.plan import ObservedState
from chalkdr.plan import ObservedTable
from chalkdr.plan import Plan
from chalkdr.plan import ResourceKind
from chalkdr.topology import Topology
from chalkdr.topology import parse_topology

EXAMPLE = Path(__file__).resolve().parents[3] / "deployments" / "topology.example.yaml"
ACCOUNT = "123456789012"
# Our health checks' CallerReference suffix: sha256("HTTPS|10")[:10] and sha256("HTTPS|30")[:10].
HASH_HTTPS_10 = "6f8ba49c3e"
HASH_HTTPS_30 = "bfcc1bf6a2"
THIRD_REGION: dict[str, Any] = {
    "aws_region": "eu-west-1",
    "resource_group": "prod-eu",
    "query_hostname": "prod-eu.query.example.com",
    "alb": "chalk-prod-eu",
    "eks": {"cluster_name": "chalk-prod-eu"},
    "online_store_tables": ["chalk-online-store"],
    "msk_cluster_arn": f"arn:aws:kafka:eu-west-1:{ACCOUNT}:cluster/chalk-prod-eu/abc-1",
    "online_store_kms_key": f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/eu-key",
    "aurora_cluster_id": "chalk-meta-eu",
    "aurora": {
        "subnet_group": "chalk-meta-eu",
        "security_group_ids": ["sg-eu"],
        "kms_key_id": f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/eu-key",
        "instance_class": "db.r6g.large",
    },
    "alarm_topic_arn": f"arn:aws:sns:eu-west-1:{ACCOUNT}:chalk-dr-alarms",
}
# A source cluster policy as MSK's guide shows it (msk-replicator-prepare-cluster).
REPLICATOR_POLICY = (
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
    '"Principal": {"Service": ["kafka.amazonaws.com"]}, '
    '"Action": ["kafka:CreateVpcConnection", "kafka:GetBootstrapBrokers", "kafka:DescribeClusterV2"], '
    '"Resource": "*"}]}'
)
Mutate = Callable[[dict[str, Any]], None]
# What everything chalk-dr made for the example's environment carries (whose it is).
OURS = {"chalk-dr:managed": "true", "chalk-dr:environment": "prod"}


def alb_dns(region: str) -> str:
    return f"chalk-{region}-1234567890.{region}.elb.amazonaws.com"


def alb_zone(region: str) -> str:
    return f"Z{region.replace('-', '').upper()}"


def three_regions(d: dict[str, Any]) -> None:
    d["regions"].append(copy.deepcopy(THIRD_REGION))


def weighted(d: dict[str, Any]) -> None:
    d["routing"] = "weighted"
    for i, r in enumerate(d["regions"]):
        r.pop("primary", None)
        r["weight"] = 100 if i == 0 else 50


def latency(d: dict[str, Any]) -> None:
    d["routing"] = "latency"
    for r in d["regions"]:
        r.pop("primary", None)


def topology(*mutations: Mutate) -> Topology:
    d = yaml.safe_load(EXAMPLE.read_text())
    for mutate in mutations:
        mutate(d)
    return parse_topology(d)


def _cluster_arn(region: str, cluster_id: str) -> str:
    return f"arn:aws:rds:{region}:{ACCOUNT}:cluster:{cluster_id}"


def facts(t: Topology) -> ObservedState:
    albs, tables, clusters, dbs, eks = {}, {}, {}, {}, {}
    for r in t.regions:
        a = r.aws_region
        albs[a] = ObservedAlb(
            region=a,
            name=r.alb_name,
            arn=f"arn:aws:elasticloadbalancing:{a}:{ACCOUNT}:loadbalancer/app/{r.alb_name}/1",
            dns_name=alb_dns(a),
            canonical_hosted_zone_id=alb_zone(a),
        )
        tables[a] = tuple(
            ObservedTable(
                table=n,
                region=a,
                status="ACTIVE",
                arn=f"arn:aws:dynamodb:{a}:{ACCOUNT}:table/{n}",
                kms_key_arn=f"arn:aws:kms:{a}:{ACCOUNT}:key/online-store",
                kms_customer_managed=True,
                billing_mode="PAY_PER_REQUEST",
            )
            for n in (r.online_store_tables if r is t.primary else [])
        )
        clusters[a] = ObservedMskCluster(
            arn=r.msk_cluster_arn,
            region=a,
            state="ACTIVE",
            subnet_ids=(f"subnet-{a}",),
            brokers=3,
            iam_enabled=True,
            vpc_iam_enabled=True,
            policy=REPLICATOR_POLICY,
        )
        if r is t.primary:
            dbs[a] = ObservedDbCluster(
                id=r.aurora_cluster_id,
                arn=_cluster_arn(a, r.aurora_cluster_id),
                region=a,
                engine="aurora-postgresql",
                engine_version="15.4",
                status="available",
                storage_encrypted=True,
                instances=1,
            )
        eks[a] = ObservedEks(
            cluster=r.eks.cluster_name,
            region=a,
            status="ACTIVE",
            deployments=(
                ObservedDeployment(
                    name=r.eks.query_server_deployment, found=True, replicas=2, ready_replicas=2
                ),
                ObservedDeployment(
                    name=r.eks.persistence_deployment, found=True, replicas=1, ready_replicas=1
                ),
            ),
        )
    return ObservedState(
        route53=ObservedRoute53(zone_id=t.route53.zone_id, zone_name="example.com.", albs=albs),
        dynamodb=ObservedDynamoDb(tables=tables),
        msk=ObservedMsk(clusters=clusters),
        aurora=ObservedAurora(clusters=dbs),
        eks=ObservedEksClusters(clusters=eks),
    )


def _health_check(t: Topology, region: str) -> ObservedHealthCheck:
    return ObservedHealthCheck(
        id=f"hc-{region}",
        caller_reference=f"chalkdr-prod-{region}-{HASH_HTTPS_10}",
        version=1,
        type="HTTPS",
        fqdn=t.region(region).query_hostname,  # Route 53 sends it as Host and SNI
        port=443,
        resource_path="/healthz",
        request_interval=10,
        failure_threshold=3,
        regions=("us-west-2", "us-east-1", "eu-west-1"),  # AWS's order is not ours
        tags={**OURS, "Name": f"chalkdr-prod-{region}"},
    )


def _alias(region: str) -> AliasTarget:
    return AliasTarget(dns_name=alb_dns(region) + ".", hosted_zone_id=alb_zone(region))


def _failover_records(t: Topology) -> list[ObservedRecord]:
    name = "chalk-failover.example.com."
    out = []
    if t.routing.value == "failover":
        pairs = [(t.primary.aws_region, "PRIMARY"), (t.secondaries[0].aws_region, "SECONDARY")]
        for region, role in pairs:
            out.append(
                ObservedRecord(
                    name=name,
                    set_identifier=f"prod-{region}",
                    failover=role,
                    alias=_alias(region),
                    health_check_id=f"hc-{region}",
                )
            )
        return out
    for r in t.regions:
        routing: dict[str, Any] = (
            {"weight": r.weight} if t.routing.value == "weighted" else {"latency_region": r.aws_region}
        )
        out.append(
            ObservedRecord(
                name=name,
                set_identifier=f"prod-{r.aws_region}",
                alias=_alias(r.aws_region),
                health_check_id=f"hc-{r.aws_region}",
                **routing,
            )
        )
    return out


def _alarm(
    name: str, region: str, namespace: str, metric: str, dims: dict[str, str], threshold: float
) -> ObservedAlarm:
    return ObservedAlarm(
        name=f"chalkdr-prod-{name}",
        region=region,
        alarm_actions=(f"arn:aws:sns:{region}:{ACCOUNT}:chalk-dr-alarms",),
        namespace=namespace,
        metric_name=metric,
        dimensions=dims,
        statistic="Maximum",
        period=60,
        evaluation_periods=3,
        datapoints_to_alarm=3,
        threshold=threshold,
        comparison_operator="GreaterThanThreshold",
        treat_missing_data="notBreaching",
        tags=OURS,
    )


def converged(t: Topology) -> ObservedState:
    base = facts(t)
    regions = [r.aws_region for r in t.regions]
    secondaries = [r.aws_region for r in t.secondaries]
    several = len(secondaries) > 1
    rep_names = {s: "chalk-prod-east-to-west" + (f"-{s}" if several else "") for s in secondaries}
    tables = {
        a: (
            ObservedTable(
                table="chalk-online-store",
                region=a,
                status="ACTIVE",
                arn=f"arn:aws:dynamodb:{a}:{ACCOUNT}:table/chalk-online-store",
                replica_regions=tuple(x for x in regions if x != a),
                replica_status={x: "ACTIVE" for x in regions if x != a},
                global_table_version="2019.11.21",
                kms_key_arn=f"arn:aws:kms:{a}:{ACCOUNT}:key/online-store",
                kms_customer_managed=True,
                billing_mode="PAY_PER_REQUEST",
            ),
        )
        for a in regions
    }
    replicators: dict[str, tuple[ObservedReplicator, ...]] = {a: () for a in regions}
    for a, rep in rep_names.items():
        replicators[a] = (
            ObservedReplicator(
                name=rep,
                arn=f"arn:aws:kafka:{a}:{ACCOUNT}:replicator/{rep}/x",
                region=a,
                state="RUNNING",
                current_version="V1",
                source_cluster_arn=t.primary.msk_cluster_arn,
                target_cluster_arn=t.region(a).msk_cluster_arn,
                topics=("chalk-persistence", "chalk-online-writes"),
                consumer_groups=(".*",),
                sync_consumer_group_offsets=True,
                service_execution_role_arn=f"arn:aws:iam::{ACCOUNT}:role/chalk-msk-replicator",
                tags=OURS,
            ),
        )
    dbs = {
        r.aws_region: ObservedDbCluster(
            id=r.aurora_cluster_id,
            arn=_cluster_arn(r.aws_region, r.aurora_cluster_id),
            region=r.aws_region,
            engine="aurora-postgresql",
            engine_version="15.4",
            status="available",
            global_cluster_id="chalk-meta",
            storage_encrypted=True,
            instances=1,
        )
        for r in t.regions
    }
    gc = ObservedGlobalCluster(
        id="chalk-meta",
        arn=f"arn:aws:rds::{ACCOUNT}:global-cluster:chalk-meta",
        engine="aurora-postgresql",
        engine_version="15.4",
        status="available",
        members={dbs[r.aws_region].arn: r is t.primary for r in t.regions},
    )
    alarms: dict[str, list[ObservedAlarm]] = {a: [] for a in regions}
    for src in regions:
        for dst in (x for x in regions if x != src):
            alarms[src].append(
                _alarm(
                    f"dynamodb-chalk-online-store-{src}-to-{dst}-replication-latency",
                    src,
                    "AWS/DynamoDB",
                    "ReplicationLatency",
                    {"ReceivingRegion": dst, "TableName": "chalk-online-store"},
                    5000.0,
                )
            )
    for a, rep in rep_names.items():
        alarms[a].append(
            _alarm(
                f"msk-{rep}-replication-latency",
                a,
                "AWS/Kafka",
                "ReplicationLatency",
                {"ReplicatorName": rep},
                10000.0,
            )
        )
        alarms[a].append(
            _alarm(f"msk-{rep}-message-lag", a, "AWS/Kafka", "MessageLag", {"ReplicatorName": rep}, 10000.0)
        )
    for r in t.secondaries:
        alarms[r.aws_region].append(
            _alarm(
                f"aurora-{r.aurora_cluster_id}-replication-lag",
                r.aws_region,
                "AWS/RDS",
                "AuroraGlobalDBReplicationLag",
                {"DBClusterIdentifier": r.aurora_cluster_id, "SourceRegion": t.primary.aws_region},
                5000.0,
            )
        )
    checks = tuple(_health_check(t, r.aws_region) for r in t.regions)  # one per ALB, routed or not
    regional = [ObservedRecord(name=f"{r.query_hostname}.", alias=_alias(r.aws_region)) for r in t.regions]
    # Each name's ownership TXT record, as external-dns's TXT registry writes one (prefixed name,
    # quoted `heritage=...,<heritage>/owner=...` value).
    names = ["chalk-failover.example.com", *(r.query_hostname for r in t.regions)]
    owners = [
        ObservedRecord(
            name=f"_chalk-dr-a.{n}.",
            type="TXT",
            ttl=300,
            values=('"heritage=chalk-dr,chalk-dr/owner=prod"',),
        )
        for n in names
    ]
    return ObservedState(
        route53=base.route53.model_copy(
            update={"health_checks": checks, "records": (*_failover_records(t), *regional, *owners)}
        ),
        dynamodb=ObservedDynamoDb(tables=tables),
        msk=base.msk.model_copy(update={"replicators": replicators}),
        aurora=ObservedAurora(clusters=dbs, global_cluster=gc),
        alarms=ObservedAlarms(alarms={a: tuple(v) for a, v in alarms.items()}),
        eks=base.eks,
    )


def of_kind(plan: Plan, kind: ResourceKind) -> list[Change]:
    return [c for c in plan.changes if c.kind is kind]


def diff(change: Change) -> dict[str, tuple[Any, Any]]:
    return {d.field: (d.old, d.new) for d in change.diffs}


def updated(obs: ObservedState, system: str, **fields: Any) -> ObservedState:
    """`obs` with some fields of one system's slot replaced."""
    slot = getattr(obs, system)
    return obs.model_copy(update={system: slot.model_copy(update=fields)})


def changed(
    obs: ObservedState, system: str, slot: str, key: str | None = None, **fields: Any
) -> ObservedState:
    """`obs` with resources of one system's mapping changed: the entry `key` (msk.clusters["us-west-2"]),
    or without a key every resource in it (each region's msk.replicators)."""

    def change(value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(x.model_copy(update=fields) for x in value)
        return value.model_copy(update=fields)

    entries = getattr(getattr(obs, system), slot)
    return updated(
        obs, system, **{slot: {k: change(v) if key in (None, k) else v for k, v in entries.items()}}
    )


class Worlds:
    """The helpers above, as one fixture (tests cannot import conftest under importlib mode)."""

    topology = staticmethod(topology)
    facts = staticmethod(facts)
    converged = staticmethod(converged)
    of_kind = staticmethod(of_kind)
    diff = staticmethod(diff)
    updated = staticmethod(updated)
    changed = staticmethod(changed)
    three_regions = staticmethod(three_regions)
    weighted = staticmethod(weighted)
    latency = staticmethod(latency)
    alb_dns = staticmethod(alb_dns)
    ACCOUNT = ACCOUNT
    OURS = OURS
    REPLICATOR_POLICY = REPLICATOR_POLICY
    HASH_HTTPS_10 = HASH_HTTPS_10
    HASH_HTTPS_30 = HASH_HTTPS_30


@pytest.fixture
def w() -> type[Worlds]:
    return Worlds
