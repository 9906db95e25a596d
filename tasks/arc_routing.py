"""ARC routing controls at incident time: where they are, what they say, and setting them.

ARC's configuration API (clusters, control panels, routing controls) is served from us-west-2
only, while routing-control states are read and set on the cluster's own data-plane endpoints
in several regions. AWS's guidance for a failover is to depend on the data plane alone: keep
the cluster endpoints and routing-control ARNs at hand beforehand ("bookmark" them), and "try
each endpoint in turn", since any one regional endpoint may be down in the incident you answer.

So the directory (cluster endpoints, control panel, one routing control per region) is read from
the configuration API whenever it answers and remembered in the Prefect Variable
`chalkdr-arc-<env>`; a failover whose configuration API does not answer uses that copy.
Setting states goes through each endpoint in turn, endpoints in the regions being failed away
from last, and all of an update's controls in one UpdateRoutingControlStates call, so the
states change together (the call is all-or-nothing).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from prefect.variables import Variable
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field

from chalkdr.classify import aws_call
from chalkdr.clients import AwsClients
from chalkdr.errors import AwsCallError
from chalkdr.errors import DrillAborted
from chalkdr.plan.arc import ClusterEndpoint
from chalkdr.topology import Topology
from tasks.arc import RoutingControlStates
from tasks.arc import State
from tasks.arc import _pages
from tasks.arc import read_routing_controls
from tasks.arc import set_routing_controls

__all__ = [
    "ArcDirectory",
    "State",
    "arc_directory",
    "arc_variable_name",
    "read_arc_directory",
    "read_routing_control_states",
    "region_states",
    "remember_arc_directory",
    "set_routing_control_states",
]


class ArcDirectory(BaseModel):
    """Everything a failover needs to reach the environment's routing controls."""

    model_config = ConfigDict(extra="forbid")

    cluster_arn: str
    control_panel_arn: str
    endpoints: list[ClusterEndpoint]
    controls: dict[str, str]  # region -> routing control ARN
    read_at: float = Field(description="Unix time the configuration API was read")
    source: str = "configuration API"  # or: the copy saved in the Variable


def arc_variable_name(environment: str) -> str:
    return f"chalkdr-arc-{environment}"


def _named(items: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((i for i in items if i.get("Name") == name), None)


def read_arc_directory(clients: AwsClients, topology: Topology) -> ArcDirectory:
    """The directory from ARC's configuration API; DrillAborted naming what is missing."""
    arc = topology.recovery.arc
    if arc is None:
        raise DrillAborted("the topology configures no ARC routing controls (recovery.arc)")
    config = clients.arc_config()
    op = "route53-recovery-control-config"
    with aws_call(op, "ListClusters", arc.cluster_name):
        cluster = _named(_pages(config.list_clusters, "Clusters"), arc.cluster_name)
    if cluster is None:
        raise DrillAborted(f"ARC cluster {arc.cluster_name} not found (run provision)")
    with aws_call(op, "ListControlPanels", arc.control_panel_name):
        panel = _named(
            _pages(config.list_control_panels, "ControlPanels", ClusterArn=cluster["ClusterArn"]),
            arc.control_panel_name,
        )
    if panel is None:
        raise DrillAborted(f"ARC control panel {arc.control_panel_name} not found (run provision)")
    with aws_call(op, "ListRoutingControls", arc.control_panel_name):
        listed = _pages(
            config.list_routing_controls, "RoutingControls", ControlPanelArn=panel["ControlPanelArn"]
        )
    controls: dict[str, str] = {}
    for r in topology.regions:
        found = _named(listed, arc.routing_control_name(topology.environment, r.aws_region))
        if found is not None:
            controls[r.aws_region] = str(found["RoutingControlArn"])
    missing = [r.aws_region for r in topology.regions if r.aws_region not in controls]
    if missing:
        raise DrillAborted(f"ARC routing controls missing for {', '.join(missing)} (run provision)")
    endpoints = [
        ClusterEndpoint(region=str(e["Region"]), endpoint=str(e["Endpoint"]))
        for e in cluster.get("ClusterEndpoints", [])
    ]
    if not endpoints:
        raise DrillAborted(f"ARC cluster {arc.cluster_name} lists no endpoints yet ({cluster.get('Status')})")
    return ArcDirectory(
        cluster_arn=str(cluster["ClusterArn"]),
        control_panel_arn=str(panel["ControlPanelArn"]),
        endpoints=endpoints,
        controls=controls,
        read_at=time.time(),
    )


def remember_arc_directory(environment: str, directory: ArcDirectory) -> None:
    Variable.set(arc_variable_name(environment), directory.model_dump(mode="json"), overwrite=True)


def _remembered(environment: str) -> ArcDirectory | None:
    raw = Variable.get(arc_variable_name(environment), default=None)
    if not isinstance(raw, dict):
        return None
    return ArcDirectory.model_validate({**raw, "source": "the copy saved in the Prefect Variable"})


def arc_directory(clients: AwsClients, topology: Topology, notes: list[str]) -> ArcDirectory:
    """From the configuration API when it answers (and remembered), else the remembered copy."""
    try:
        directory = read_arc_directory(clients, topology)
    except AwsCallError as exc:
        saved = _remembered(topology.environment)
        if saved is None:
            raise DrillAborted(
                f"ARC's configuration API does not answer ({exc}) and no copy of the directory was "
                f"saved (Variable {arc_variable_name(topology.environment)}: run provision or readiness)"
            ) from exc
        age = time.time() - saved.read_at
        notes.append(f"ARC configuration API unreachable ({exc}); using the directory saved {age:.0f} s ago")
        return saved
    remember_arc_directory(topology.environment, directory)
    return directory


def set_routing_control_states(
    clients: AwsClients, directory: ArcDirectory, states: Mapping[str, State], *, avoid: Sequence[str] = ()
) -> ClusterEndpoint:
    """Every region's control in `states` set in one UpdateRoutingControlStates call, through each
    endpoint in turn, those in `avoid` last (tasks/arc.py): the endpoint that took it. A refusal
    (a safety rule, a permission) is the same from every endpoint and raises at once."""
    return set_routing_controls(
        clients,
        directory.endpoints,
        {directory.controls[region]: state for region, state in states.items()},
        avoid=avoid,
        rng=random.Random(),
    )


def read_routing_control_states(
    clients: AwsClients, directory: ArcDirectory, *, avoid: Sequence[str] = (), every_endpoint: bool = False
) -> RoutingControlStates:
    """Each routing control's state from the first endpoint that answers (or from every endpoint,
    for readiness), never raising for an endpoint that does not answer."""
    return read_routing_controls(
        clients,
        directory.endpoints,
        control_panel_arn=directory.control_panel_arn,
        every_endpoint=every_endpoint,
        avoid=avoid,
        rng=random.Random(),
    )


def region_states(directory: ArcDirectory, read: RoutingControlStates) -> dict[str, str | None]:
    """The states by region (None: the control was not listed by the endpoint that answered)."""
    return {region: read.states.get(arn) for region, arn in directory.controls.items()}
