"""MSK in the plan: one MSK Replicator per secondary, copying the primary's topics with offsets synced.

(With failback readiness, one more per secondary in the other direction: see the end of this docstring.)

A replicator lives in its target cluster's region. Its clusters and service role are immutable
(a change replaces it); its topics and consumer-group settings are updated in place.

Ownership: the replicator the plan keeps is the one with the topology's name in the target
region that carries the tag `chalk-dr:environment=<env>`. Replicator names are unique per region,
so one of that name without the tag (another environment's, or nobody's) is an error naming it,
unless the topology's `adopt.replicators` lists it; adopting adds the tags (TagResource).

Where a new replicator starts reading: a first one from EARLIEST, the initial copy of what the
source retains, and the plan says so. A replacement (its predecessor already copied that)
starts from LATEST and the plan warns about the gap: records produced between the deletion and
the new replicator RUNNING are not copied. EARLIEST would instead replay every record the
source retains, and that count is not something the MSK API reports (ListTopics,
DescribeTopic and DescribeTopicPartitions give partitions, not offsets; only Kafka's ListOffsets
does), so the plan never chooses it for a replacement.

Failback readiness (`recovery.failback_readiness`): one more replicator per secondary, copying the
secondary's topics back to the primary, created in the primary's region (the target's, as AWS
requires) under `reverse_replicator_name`, owned and tagged like the forward one. It keeps the
topics' names (TopicNameConfiguration IDENTICAL, as the forward one): MSK Replicator "uses Kafka
headers to automatically avoid replicating data back to the topic it originated from"
(msk-replicator-topic-naming), so the pair does not loop, and consumers fail back without
renaming topics. It starts from LATEST: when it is made, the secondary's topics hold what the
forward replicator copied from the primary, which the primary already has (and MSK Replicator
would filter those records out anyway, charging for reading them: msk-replicator-failback); what
clients write in the secondary from then on (during a failover) is what it copies back. AWS's
failback procedure creates this replicator only after the failover, from EARLIEST; creating it
beforehand, from LATEST, is what lets a failback start without waiting for that copy. Its source
is the secondary, so the prerequisites the forward direction checks on the primary (IAM,
multi-VPC connectivity with IAM, a cluster policy for kafka.amazonaws.com) apply to the secondary.
"""

from __future__ import annotations

import fnmatch
import json
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal

from pydantic import Field

from chalkdr.plan.core import OWNER_TAG_KEY
from chalkdr.plan.core import Action
from chalkdr.plan.core import Change
from chalkdr.plan.core import FieldDiff
from chalkdr.plan.core import Findings
from chalkdr.plan.core import PlanModel
from chalkdr.plan.core import ResourceKind
from chalkdr.plan.core import Spec
from chalkdr.plan.core import StageDef
from chalkdr.plan.core import compare
from chalkdr.plan.core import ownership_tags
from chalkdr.plan.core import unwanted
from chalkdr.topology import RegionConfig
from chalkdr.topology import Topology

if TYPE_CHECKING:
    from chalkdr.plan.systems import DesiredState
    from chalkdr.plan.systems import ObservedState

__all__ = [
    "STAGES",
    "MskEndpoint",
    "ObservedMsk",
    "ObservedMskCluster",
    "ObservedReplicator",
    "ReplicatorSpec",
    "changes",
    "desired",
    "policy_missing_actions",
    "replicator_name",
    "replicator_names",
    "reverse_replicator_name",
    "reverse_replicator_names",
]

_IMMUTABLE = ("source_cluster_arn", "target_cluster_arn", "service_execution_role_arn")
REPLICATOR_POLICY_ACTIONS = (
    "kafka:CreateVpcConnection",
    "kafka:GetBootstrapBrokers",
    "kafka:DescribeClusterV2",
)
_MIN_BROKERS = 3


def _covers(resource: object, cluster_arn: str | None) -> bool:
    """Whether a statement's Resource (a string or a list; `*` and `?` wildcards) names the cluster."""
    if cluster_arn is None:
        return True
    patterns = resource if isinstance(resource, list) else [resource]
    return any(isinstance(p, str) and fnmatch.fnmatchcase(cluster_arn, p) for p in patterns)


def policy_missing_actions(policy: str | None, cluster_arn: str | None = None) -> list[str]:
    """The actions a source cluster's policy does not allow the replicator service
    (kafka.amazonaws.com) to call on `cluster_arn` (when given: a statement naming another
    cluster does not count); all of them when there is no policy or it does not parse."""
    try:
        doc = json.loads(policy) if policy else {}
    except ValueError:
        doc = {}
    allowed: set[str] = set()
    statements = doc.get("Statement") if isinstance(doc, dict) else None
    for st in statements if isinstance(statements, list) else [statements] if statements else []:
        if not isinstance(st, dict) or st.get("Effect") != "Allow":
            continue
        principal = st.get("Principal") or {}
        services = principal.get("Service") if isinstance(principal, dict) else None
        if "kafka.amazonaws.com" not in (services if isinstance(services, list) else [services]):
            continue
        if not _covers(st.get("Resource", "*"), cluster_arn):
            continue
        actions = st.get("Action")
        for action in actions if isinstance(actions, list) else [actions]:
            allowed.add(str(action).lower())
    wildcard = {"kafka:*", "*"} & allowed
    return [a for a in REPLICATOR_POLICY_ACTIONS if not wildcard and a.lower() not in allowed]


def _replicator_problems(cluster: ObservedMskCluster, *, source: bool, cross_region: bool) -> list[str]:
    """What MSK Replicator would fail on for this cluster (CREATING, then FAILED with
    InvalidInput.InvalidKafkaCluster), named before any call."""
    problems = []
    if cluster.state != "ACTIVE":
        problems.append(f"is {cluster.state}; a replicator needs ACTIVE clusters")
    if not cluster.iam_enabled:
        problems.append("has IAM access control off (a replicator authenticates with IAM)")
    if not cluster.serverless and cluster.brokers < _MIN_BROKERS:
        problems.append(f"has {cluster.brokers} brokers; a replicator needs at least {_MIN_BROKERS}")
    if source and cross_region and not cluster.serverless:
        if not cluster.vpc_iam_enabled:
            problems.append(
                "has multi-VPC private connectivity with IAM off (kafka:UpdateConnectivity "
                "VpcConnectivity.ClientAuthentication.Sasl.Iam), which a cross-region replicator uses"
            )
        missing = policy_missing_actions(cluster.policy, cluster.arn)
        if missing:
            problems.append(
                "has no cluster policy allowing kafka.amazonaws.com "
                f"{', '.join(missing)} (kafka:PutClusterPolicy)"
            )
    return problems


def replicator_name(topology: Topology, target_region: str) -> str:
    """The topology's name; suffixed with the target region when there is more than one target."""
    base = topology.msk.replicator_name
    return base if len(topology.secondaries) <= 1 else f"{base}-{target_region}"[:128]


def replicator_names(topology: Topology) -> dict[str, str]:
    """target region -> the replicator that feeds it."""
    return {r.aws_region: replicator_name(topology, r.aws_region) for r in topology.secondaries}


_REVERSE = "-failback"


def reverse_replicator_name(topology: Topology, source_region: str) -> str:
    """The failback replicator from `source_region` (a secondary) to the primary: the topology's
    name + `-failback`, and the source region when there is more than one secondary. The base is
    shortened, never the suffix, so that names stay distinct within MSK's 128 characters."""
    suffix = _REVERSE + (f"-{source_region}" if len(topology.secondaries) > 1 else "")
    return topology.msk.replicator_name[: 128 - len(suffix)] + suffix


def reverse_replicator_names(topology: Topology) -> dict[str, str]:
    """source region -> the failback replicator copying it to the primary; empty unless the
    topology asks for failback readiness."""
    if not topology.recovery.failback_readiness:
        return {}
    return {r.aws_region: reverse_replicator_name(topology, r.aws_region) for r in topology.secondaries}


class MskEndpoint(PlanModel):
    """One side of a replicator: the cluster and the VPC placement the replicator reaches it by."""

    arn: str
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()


class ReplicatorSpec(Spec):
    kind: Literal["msk-replicator"] = "msk-replicator"
    # `region` is the target cluster's region: AWS creates a replicator there.
    name: str
    source: MskEndpoint
    target: MskEndpoint
    topics: tuple[str, ...]
    consumer_groups: tuple[str, ...] = (".*",)
    sync_consumer_group_offsets: bool = True
    service_execution_role_arn: str
    tags: dict[str, str]
    # Where a new replicator starts reading the source topics (CreateReplicator StartingPosition).
    starting_position: Literal["EARLIEST", "LATEST"] = "EARLIEST"
    # failover: primary -> secondary; failback: secondary -> primary (failback readiness)
    direction: Literal["failover", "failback"] = "failover"


class ObservedMskCluster(PlanModel):
    arn: str
    region: str
    state: str
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    # What MSK Replicator needs of a cluster (MSK Developer Guide, msk-replicator-prepare-cluster),
    # read from DescribeClusterV2 and GetClusterPolicy.
    serverless: bool = False
    brokers: int = 0
    iam_enabled: bool = False  # ClientAuthentication.Sasl.Iam
    vpc_iam_enabled: bool = False  # ConnectivityInfo.VpcConnectivity.ClientAuthentication.Sasl.Iam
    policy: str | None = None  # the cluster policy document (None: no policy)

    def endpoint(self) -> MskEndpoint:
        return MskEndpoint(
            arn=self.arn, subnet_ids=self.subnet_ids, security_group_ids=self.security_group_ids
        )


class ObservedReplicator(PlanModel):
    name: str
    arn: str
    region: str
    state: str
    current_version: str
    source_cluster_arn: str | None
    target_cluster_arn: str | None
    topics: tuple[str, ...] = ()
    consumer_groups: tuple[str, ...] = ()
    sync_consumer_group_offsets: bool = False
    service_execution_role_arn: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class ObservedMsk(PlanModel):
    clusters: dict[str, ObservedMskCluster] = Field(default_factory=dict)  # region -> its cluster
    replicators: dict[str, tuple[ObservedReplicator, ...]] = Field(default_factory=dict)  # by region


def _settings(r: ReplicatorSpec | ObservedReplicator) -> dict[str, object]:
    clusters = (
        (r.source.arn, r.target.arn)
        if isinstance(r, ReplicatorSpec)
        else (r.source_cluster_arn, r.target_cluster_arn)
    )
    return {
        "source_cluster_arn": clusters[0],
        "target_cluster_arn": clusters[1],
        "service_execution_role_arn": r.service_execution_role_arn,
        "topics": sorted(r.topics),
        "consumer_groups": sorted(r.consumer_groups),
        "sync_consumer_group_offsets": r.sync_consumer_group_offsets,
    }


def _spec(
    topology: Topology,
    observed: ObservedMsk,
    source_cfg: RegionConfig,
    target_cfg: RegionConfig,
    name: str,
    findings: Findings,
    **settings: Any,
) -> ReplicatorSpec | None:
    """The replicator from `source_cfg`'s cluster to `target_cfg`'s, or None with an error per
    prerequisite it would fail on."""
    source = observed.clusters.get(source_cfg.aws_region)
    target = observed.clusters.get(target_cfg.aws_region)
    problems = []
    cross_region = source_cfg.aws_region != target_cfg.aws_region
    for cfg, cluster, is_source in ((source_cfg, source, True), (target_cfg, target, False)):
        side = "source" if is_source else "target"
        if cluster is None:
            problems.append(f"{side} MSK cluster {cfg.msk_cluster_arn} not found (kafka:DescribeClusterV2)")
            continue
        problems += [
            f"{side} MSK cluster {cfg.msk_cluster_arn} {p}"
            for p in _replicator_problems(cluster, source=is_source, cross_region=cross_region)
        ]
    if problems or source is None or target is None:
        findings.errors.extend(f"{target_cfg.aws_region}: replicator {name}: {p}" for p in problems)
        return None
    return ReplicatorSpec(
        name=name,
        region=target_cfg.aws_region,
        source=source.endpoint(),
        target=target.endpoint(),
        topics=tuple(sorted(topology.msk.topics)),
        service_execution_role_arn=topology.msk.service_execution_role_arn,
        tags=ownership_tags(topology.environment),
        **settings,
    )


def desired(topology: Topology, observed: ObservedState, findings: Findings) -> list[Spec]:
    primary = topology.primary
    specs: list[ReplicatorSpec | None] = [
        _spec(topology, observed.msk, primary, r, replicator_name(topology, r.aws_region), findings)
        for r in topology.secondaries
    ]
    # Failback readiness: each secondary back to the primary, from LATEST (see the docstring).
    specs += [
        _spec(
            topology,
            observed.msk,
            topology.region(source),
            primary,
            name,
            findings,
            starting_position="LATEST",
            direction="failback",
        )
        for source, name in reverse_replicator_names(topology).items()
    ]
    return [s for s in specs if s is not None]


def _replacement(spec: ReplicatorSpec, diffs: list[FieldDiff], findings: Findings) -> ReplicatorSpec:
    """The spec a replacement is created from: LATEST, with the gap that leaves said in the plan."""
    changed = ", ".join(d.field for d in diffs if d.field in _IMMUTABLE)
    findings.warnings.append(
        f"{spec.region}: MSK replicator {spec.name} is replaced ({changed} cannot change in place) and "
        f"the new one starts from LATEST: records produced to {', '.join(spec.topics)} between the old "
        "one's deletion and the new one RUNNING are not copied to the target. Starting from EARLIEST "
        "would replay every record the source retains, a number the MSK API does not report"
    )
    return spec.model_copy(update={"starting_position": "LATEST"})


def _change(
    desired: DesiredState, spec: ReplicatorSpec, observed: ObservedMsk, findings: Findings
) -> Change | None:
    current = next(
        (
            r
            for r in observed.replicators.get(spec.region, ())
            if r.name == spec.name and r.state != "DELETING"
        ),
        None,
    )
    if current is None:
        action, diffs = compare(None, {**_settings(spec), "starting_position": spec.starting_position})
        return Change.of(spec, action, diffs)
    what = f"{spec.region}: MSK replicator {spec.name} ({current.arn})"
    taking = desired.claim_tagged(findings, "replicators", spec.name, current.tags, what)
    if taking is None:
        return None
    if current.state == "FAILED":
        findings.warnings.append(f"{spec.region}: MSK replicator {spec.name} is FAILED; see its StateInfo")
    action, diffs = compare(_settings(current), _settings(spec), immutable=_IMMUTABLE)
    if action is Action.REPLACE:
        spec = _replacement(spec, diffs, findings)
        diffs.append(FieldDiff(field="starting_position", new=spec.starting_position))
    elif taking:
        action = Action.UPDATE
    return Change.of(
        spec,
        action,
        [*diffs, *taking],
        current_id=current.arn,
        current_version=current.current_version,
    )


def changes(desired: DesiredState, observed: ObservedState, findings: Findings) -> list[Change]:
    specs = desired.of(ReplicatorSpec)
    found = [_change(desired, spec, observed.msk, findings) for spec in specs]
    for region, r in unwanted(specs, observed.msk.replicators):
        if r.tags.get(OWNER_TAG_KEY) == desired.environment:
            findings.warnings.append(
                f"{region}: MSK replicator {r.name} is this environment's but no longer in the topology "
                "(left alone)"
            )
    return [c for c in found if c is not None]


STAGES = (StageDef("msk-replicators", ResourceKind.REPLICATOR, concurrent=True),)
