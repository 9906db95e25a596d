"""Reads for recovery readiness: what a failover would depend on, read without changing anything.

Each read returns what it saw or records why it could not see it; the verdicts are drawn by
chalkdr.readiness. Reused from the failover's assessment: `read_region` (a region's serving,
capacity and Aurora cluster) and `read_lags` (the Aurora lag of each secondary).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

from chalkdr.clients import AwsClients
from chalkdr.errors import AwsCallError
from chalkdr.errors import DrillAborted
from chalkdr.topology import Topology
from tasks.arc_routing import read_arc_directory
from tasks.arc_routing import read_routing_control_states
from tasks.arc_routing import region_states
from tasks.arc_routing import remember_arc_directory
from tasks.dynamodb import _describe

__all__ = ["ArcProbe", "probe_arc", "read_dynamodb_replicas"]


def read_dynamodb_replicas(
    clients: AwsClients, topology: Topology, notes: list[str]
) -> dict[str, dict[str, str | None]]:
    """Per online-store table of the primary, each region's replica status.

    DescribeTable (API reference, TableDescription.Replicas) lists a global table's replicas
    with their ReplicaStatus; the table in the region asked is described by TableStatus, so it
    counts by that. The table is read from the first region whose DynamoDB API answers (a
    global table is described alike from each of its regions), so an unreachable primary does
    not hide the others.
    """
    regions = [topology.primary.aws_region, *(r.aws_region for r in topology.secondaries)]
    out: dict[str, dict[str, str | None]] = {}
    for table in topology.primary.online_store_tables:
        statuses: dict[str, str | None] = {}
        errors: list[str] = []
        for region in regions:
            try:
                desc = _describe(clients, region, table)
            except AwsCallError as exc:
                errors.append(f"{region}: {exc}")
                continue
            if desc is None:  # not in this region: its status stays "missing"; ask the next one
                errors.append(f"{region}: table {table} not found")
                continue
            statuses[region] = str(desc.get("TableStatus")) if desc.get("TableStatus") else None
            for replica in desc.get("Replicas", []):
                name = replica.get("RegionName")
                if name and name != region:
                    statuses[name] = replica.get("ReplicaStatus")
            break
        if errors:
            notes.append(f"dynamodb {table}: " + "; ".join(errors))
        out[table] = statuses
    return out


@dataclass
class ArcProbe:
    """What ARC answered: each cluster endpoint (by region) and whether it answered, each
    region's routing-control state as an endpoint reported it (None: no such control)."""

    endpoints: dict[str, bool] = field(default_factory=dict)
    states: dict[str, str | None] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def probe_arc(clients: AwsClients, topology: Topology) -> ArcProbe:
    """Ask every endpoint of the topology's ARC cluster for each region's routing-control state.

    The directory (endpoints, control ARNs) comes from ARC's configuration API (us-west-2) and is
    saved for a failover that cannot reach it (tasks/arc_routing.py). Each endpoint is asked on
    its own, not in turn: readiness wants to know how many would answer; a failover needs one.
    """
    out = ArcProbe()
    if topology.recovery.arc is None:
        return out
    try:
        directory = read_arc_directory(clients, topology)
    except (AwsCallError, DrillAborted) as exc:
        out.errors.append(f"ARC directory unreadable: {exc}")
        return out
    remember_arc_directory(topology.environment, directory)
    read = read_routing_control_states(clients, directory, every_endpoint=True)
    out.endpoints = dict(read.answered)
    out.errors.extend(read.errors)
    if read.endpoint is not None:
        out.states = region_states(directory, read)
    return out
