"""Tasks for Amazon MSK: observe each region's cluster and replicators, ensure the MSK Replicator.

A replicator lives in its TARGET cluster's region (AWS creates it there) and copies the
topology's topics from the primary's cluster with consumer-group offsets synchronised, under
identical topic names, so that passive persistence workers in the secondary resume from the
replicated offsets after a failover. With failback readiness, each secondary also has one back
to the primary (in the primary's region; chalkdr.plan.msk explains its settings), and
`read_reverse_replicators` tells the readiness flow whether those are there and RUNNING.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError
from prefect import task
from prefect.cache_policies import NO_CACHE

from chalkdr.classify import aws_call
from chalkdr.clients import AwsClients
from chalkdr.plan import OWNER_TAG_KEY
from chalkdr.plan import Action
from chalkdr.plan import Change
from chalkdr.plan import ChangeResult
from chalkdr.plan import MskEndpoint
from chalkdr.plan import ObservedMskCluster
from chalkdr.plan import ObservedReplicator
from chalkdr.plan import ReplicatorSpec
from chalkdr.plan import WaitPolicy
from chalkdr.plan import reverse_replicator_name
from chalkdr.topology import RegionConfig
from chalkdr.topology import Topology
from tasks.audit import ApplyContext
from tasks.retry import retry_options

__all__ = ["ensure_replicator", "read_msk", "read_reverse_replicators"]


def _not_found(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "NotFoundException"


def _iam(auth: Mapping[str, Any] | None) -> bool:
    return bool((((auth or {}).get("Sasl") or {}).get("Iam") or {}).get("Enabled"))


def _cluster(region: str, info: Mapping[str, Any], policy: str | None) -> ObservedMskCluster:
    """DescribeClusterV2's ClusterInfo: placement, and what MSK Replicator requires of it."""
    subnets: list[str] = []
    groups: list[str] = []
    brokers, iam, vpc_iam = 0, False, False
    provisioned, serverless = info.get("Provisioned"), info.get("Serverless")
    if provisioned:
        node = provisioned.get("BrokerNodeGroupInfo", {})
        subnets, groups = list(node.get("ClientSubnets", [])), list(node.get("SecurityGroups", []))
        brokers = int(provisioned.get("NumberOfBrokerNodes", 0))
        iam = _iam(provisioned.get("ClientAuthentication"))
        vpc = (node.get("ConnectivityInfo") or {}).get("VpcConnectivity") or {}
        vpc_iam = _iam(vpc.get("ClientAuthentication"))
    elif serverless:
        for vpc_config in serverless.get("VpcConfigs", []):
            subnets += vpc_config.get("SubnetIds", [])
            groups += vpc_config.get("SecurityGroupIds", [])
        iam = _iam(serverless.get("ClientAuthentication"))
    return ObservedMskCluster(
        arn=info["ClusterArn"],
        region=region,
        state=info.get("State", "UNKNOWN"),
        subnet_ids=tuple(subnets),
        security_group_ids=tuple(groups),
        serverless=bool(serverless) and not provisioned,
        brokers=brokers,
        iam_enabled=iam,
        vpc_iam_enabled=vpc_iam,
        policy=policy,
    )


def _cluster_policy(clients: AwsClients, region: str, arn: str) -> str | None:
    """GetClusterPolicy's document, or None when the cluster has no policy (NotFoundException)."""
    with aws_call("kafka", "GetClusterPolicy", arn):
        try:
            return str(clients.kafka(region).get_cluster_policy(ClusterArn=arn).get("Policy") or "") or None
        except ClientError as exc:
            if _not_found(exc):
                return None
            raise


def _replicator(region: str, raw: Mapping[str, Any]) -> ObservedReplicator:
    aliases = {
        c.get("KafkaClusterAlias"): (c.get("AmazonMskCluster") or {}).get("MskClusterArn")
        for c in raw.get("KafkaClusters", [])
    }
    info: Mapping[str, Any] = (raw.get("ReplicationInfoList") or [{}])[0]
    topics = (info.get("TopicReplication") or {}).get("TopicsToReplicate", [])
    groups: Mapping[str, Any] = info.get("ConsumerGroupReplication") or {}
    return ObservedReplicator(
        name=raw["ReplicatorName"],
        arn=raw["ReplicatorArn"],
        region=region,
        state=raw.get("ReplicatorState", "UNKNOWN"),
        current_version=raw.get("CurrentVersion", ""),
        source_cluster_arn=aliases.get(info.get("SourceKafkaClusterAlias")),
        target_cluster_arn=aliases.get(info.get("TargetKafkaClusterAlias")),
        topics=tuple(topics),
        consumer_groups=tuple(groups.get("ConsumerGroupsToReplicate", [])),
        sync_consumer_group_offsets=bool(groups.get("SynchroniseConsumerGroupOffsets", False)),
        service_execution_role_arn=raw.get("ServiceExecutionRoleArn"),
        tags=dict(raw.get("Tags") or {}),  # DescribeReplicator answers them: whose it is
    )


def _describe_replicator(clients: AwsClients, region: str, arn: str) -> ObservedReplicator | None:
    with aws_call("kafka", "DescribeReplicator", arn):
        try:
            return _replicator(region, clients.kafka(region).describe_replicator(ReplicatorArn=arn))
        except ClientError as exc:
            if _not_found(exc):
                return None
            raise


@task(task_run_name="read-msk-{region.aws_region}", cache_policy=NO_CACHE, **retry_options())
def read_msk(
    clients: AwsClients, region: RegionConfig, replicator_prefix: str
) -> tuple[ObservedMskCluster | None, list[ObservedReplicator]]:
    """The region's cluster, and the replicators here whose names start with `replicator_prefix`."""
    kafka = clients.kafka(region.aws_region)
    with aws_call("kafka", "DescribeClusterV2", region.msk_cluster_arn):
        try:
            info = kafka.describe_cluster_v2(ClusterArn=region.msk_cluster_arn)["ClusterInfo"]
        except ClientError as exc:
            if not _not_found(exc):
                raise
            info = None
    cluster = None
    if info is not None:
        policy = _cluster_policy(clients, region.aws_region, region.msk_cluster_arn)
        cluster = _cluster(region.aws_region, info, policy)
    return cluster, _replicators(clients, region.aws_region, replicator_prefix)


def _replicators(clients: AwsClients, region: str, replicator_prefix: str) -> list[ObservedReplicator]:
    """The replicators living in `region` whose names start with `replicator_prefix`."""
    kafka = clients.kafka(region)
    replicators: list[ObservedReplicator] = []
    params: dict[str, Any] = {"ReplicatorNameFilter": replicator_prefix}
    while True:
        with aws_call("kafka", "ListReplicators", f"{region}/{replicator_prefix}*"):
            page = kafka.list_replicators(**params)
        for summary in page.get("Replicators", []):
            if summary.get("IsReplicatorReference") or not summary["ReplicatorName"].startswith(
                replicator_prefix
            ):
                continue  # a reference is the source-region view of a replicator living elsewhere
            found = _describe_replicator(clients, region, summary["ReplicatorArn"])
            if found is not None:
                replicators.append(found)
        if not page.get("NextToken"):
            return replicators
        params["NextToken"] = page["NextToken"]


def _wait(clients: AwsClients, spec: ReplicatorSpec, arn: str, waits: WaitPolicy, *, gone: bool) -> None:
    def read() -> ObservedReplicator | None:
        seen = _describe_replicator(clients, spec.region, arn)
        if not gone and seen is None:
            raise FileNotFoundError(f"MSK replicator {spec.name} ({arn}) vanished while being created")
        if not gone and seen is not None and seen.state == "FAILED":
            raise RuntimeError(f"MSK replicator {spec.name} ({arn}) FAILED")
        return seen

    def done(seen: ObservedReplicator | None) -> bool:
        return seen is None if gone else seen is not None and seen.state == "RUNNING"

    waits.poll(read, done, lambda seen: f"MSK replicator {spec.name} still {seen.state if seen else 'gone'}")


def _topic_replication(spec: ReplicatorSpec) -> dict[str, Any]:
    return {
        "TopicsToReplicate": list(spec.topics),
        "TopicsToExclude": [],
        "CopyTopicConfigurations": True,
        "CopyAccessControlListsForTopics": True,
        "DetectAndCopyNewTopics": True,
    }


def _group_replication(spec: ReplicatorSpec) -> dict[str, Any]:
    return {
        "ConsumerGroupsToReplicate": list(spec.consumer_groups),
        "ConsumerGroupsToExclude": [],
        "SynchroniseConsumerGroupOffsets": spec.sync_consumer_group_offsets,
        "DetectAndCopyNewConsumerGroups": True,
    }


def _create(clients: AwsClients, spec: ReplicatorSpec) -> str:
    def vpc(side: MskEndpoint) -> dict[str, Any]:
        groups = {"SecurityGroupIds": list(side.security_group_ids)} if side.security_group_ids else {}
        return {"SubnetIds": list(side.subnet_ids), **groups}

    with aws_call("kafka", "CreateReplicator", f"{spec.region}/{spec.name}"):
        created = clients.kafka(spec.region).create_replicator(
            ReplicatorName=spec.name,
            Description=(
                "chalk-dr: primary -> secondary replication for failover"
                if spec.direction == "failover"
                else "chalk-dr: secondary -> primary replication for failback"
            ),
            ServiceExecutionRoleArn=spec.service_execution_role_arn,
            KafkaClusters=[
                {
                    "AmazonMskCluster": {"MskClusterArn": spec.source.arn},
                    "VpcConfig": vpc(spec.source),  # type: ignore[typeddict-item]
                },
                {
                    "AmazonMskCluster": {"MskClusterArn": spec.target.arn},
                    "VpcConfig": vpc(spec.target),  # type: ignore[typeddict-item]
                },
            ],
            ReplicationInfoList=[
                {
                    "SourceKafkaClusterArn": spec.source.arn,
                    "TargetKafkaClusterArn": spec.target.arn,
                    "TargetCompressionType": "NONE",
                    "TopicReplication": {
                        **_topic_replication(spec),  # type: ignore[typeddict-item]
                        # The plan chose it: EARLIEST for a first replicator (the initial
                        # copy), LATEST for a replacement (said in the plan, with its gap).
                        "StartingPosition": {"Type": spec.starting_position},
                        # Same names in both regions: consumers fail over without renaming topics.
                        "TopicNameConfiguration": {"Type": "IDENTICAL"},
                    },
                    "ConsumerGroupReplication": _group_replication(spec),  # type: ignore[typeddict-item]
                }
            ],
            Tags=dict(spec.tags),
        )
    return str(created["ReplicatorArn"])


@task(task_run_name="ensure-replicator-{change.id}", cache_policy=NO_CACHE)
def ensure_replicator(apply: ApplyContext, change: Change) -> ChangeResult:
    """Create, update (topics, offset sync) or replace (clusters, role: immutable) and await RUNNING;
    an adopted replicator is tagged for this environment first (TagResource, audited)."""
    spec = change.typed_spec(ReplicatorSpec)
    trail = apply.trail("msk", replicator=spec.name)

    def audited(action: str, arn: str, api: str, **extra: Any) -> None:
        trail.record(action, arn, spec.region, f"kafka:{api}", **extra)

    arn = change.current_id
    if change.action is Action.UPDATE and arn is not None:
        if change.adoption:
            with aws_call("kafka", "TagResource", arn):
                apply.clients.kafka(spec.region).tag_resource(ResourceArn=arn, Tags=dict(spec.tags))
            audited("adopt-replicator", arn, "TagResource", **change.adoption)
        if not change.only_adopts:
            with aws_call("kafka", "UpdateReplicationInfo", arn):
                apply.clients.kafka(spec.region).update_replication_info(
                    ReplicatorArn=arn,
                    CurrentVersion=change.current_version or "",
                    SourceKafkaClusterArn=spec.source.arn,
                    TargetKafkaClusterArn=spec.target.arn,
                    TopicReplication=_topic_replication(spec),  # type: ignore[arg-type]
                    ConsumerGroupReplication=_group_replication(spec),  # type: ignore[arg-type]
                )
            audited("update-replicator", arn, "UpdateReplicationInfo", topics=list(spec.topics))
            _wait(apply.clients, spec, arn, apply.waits, gone=False)
    else:
        if change.action is Action.REPLACE and arn is not None:
            with aws_call("kafka", "DeleteReplicator", arn):
                apply.clients.kafka(spec.region).delete_replicator(
                    ReplicatorArn=arn, CurrentVersion=change.current_version or ""
                )
            audited("delete-replicator", arn, "DeleteReplicator", reason="immutable settings changed")
            _wait(apply.clients, spec, arn, apply.waits, gone=True)
        arn = _create(apply.clients, spec)
        audited(
            "create-replicator",
            arn,
            "CreateReplicator",
            topics=list(spec.topics),
            starting_position=spec.starting_position,
        )
        _wait(apply.clients, spec, arn, apply.waits, gone=False)
    return change.result(trail.records, resource_id=arn)


def read_reverse_replicators(topology: Topology, clients: AwsClients) -> dict[str, str | None]:
    """source region (each secondary) -> the state of its failback replicator to the primary
    (RUNNING, CREATING, FAILED, ...), None when there is none. Whatever the topology asks for:
    readiness judges a missing one by `recovery.failback_readiness`.

    One ListReplicators (by name) in the primary's region, and one DescribeReplicator per
    replicator found: the states ListReplicators reports are the same, but the tags say whose it
    is, and only this environment's counts."""
    primary = topology.primary
    names = {r.aws_region: reverse_replicator_name(topology, r.aws_region) for r in topology.secondaries}
    found = _replicators(clients, primary.aws_region, topology.msk.replicator_name)
    by_name = {
        r.name: r
        for r in found
        if r.tags.get(OWNER_TAG_KEY) == topology.environment and r.state != "DELETING"
    }
    return {source: (by_name[name].state if name in by_name else None) for source, name in names.items()}
