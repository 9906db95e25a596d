"""Amazon Application Recovery Controller (ARC) routing controls: the configuration API.

moto 5.2.5 has no ARC at all, so this simulator serves `route53-recovery-control-config`
(restJson, botocore's 2020-11-02 model) itself; the cluster data plane that reads and sets
routing-control states is `sandbox/arc_cluster.py`, on the same store. As AWS documents them:

- One endpoint, in us-west-2: "you must specify the US West (Oregon) Region" (Recovery Control
  Configuration API Reference, "What is recovery control configuration"); botocore's endpoint
  rules resolve every commercial region to route53-recovery-control-config.us-west-2.amazonaws.com
  signed for us-west-2. There is no other regional endpoint to be unreachable, so a request the
  sandbox sees signed for another region is what that single endpoint would see: a credential
  scoped to the wrong region, refused with 403 `InvalidSignatureException` ("Credential should
  be scoped to a valid region", the signature check every AWS endpoint makes).
- ARNs `arn:aws:route53-recovery-control::<account>:cluster/<uuid>`, `controlpanel/<32 hex>`,
  `controlpanel/<id>/routingcontrol/<16 hex>`, `controlpanel/<id>/safetyrule/<id>`
  (the CLI examples in the ARC Developer Guide, "Set up routing control components").
- Every resource is PENDING, then DEPLOYED; a delete makes it PENDING_DELETION, then it is gone
  (the `Status` enum: PENDING, DEPLOYED, PENDING_DELETION; "When you first create a ARC resource,
  it has a status of PENDING while the cluster is created"). AWS gives no durations: the sandbox
  takes `cluster_deploy_aws_s` for a cluster and `deploy_aws_s` for the rest, in AWS seconds
  scaled by the sandbox clock (sandbox/clock.py), like FIS durations.
- A cluster has five regional endpoints (`Cluster`: "A set of five redundant Regional
  endpoints"); real ones are `https://<id>.route53-recovery-cluster.<region>.amazonaws.com/v1`
  in us-east-1, us-west-2, eu-west-1, ap-northeast-1 and ap-southeast-2. In the sandbox each is
  the sandbox endpoint plus `/arc/<cluster id>/<region>/v1` (botocore appends a JSON-protocol
  call's `/` to the endpoint URL's own path), listed once the cluster is DEPLOYED.
- CreateCluster also creates the cluster's default control panel (`DefaultControlPanel`:
  "When you create a cluster, ... creates a control panel, and sets this flag"); it goes with its
  cluster and cannot be deleted on its own. A control panel or routing control needs a DEPLOYED
  cluster (and panel) and a safety rule a DEPLOYED panel: ConflictException otherwise. A cluster
  that still has control panels other than its default one, or routing controls, and a panel that
  still has routing controls or safety rules, refuse DeleteX with ConflictException. A routing
  control asserted or gated by a safety rule cannot be deleted either (the rule would refer to
  nothing). Routing-control names are unique within a control panel ("routing control names must
  be unique within each control panel", "Creating a routing control"): ConflictException.
- A new routing control is Off, so its RECOVERY_CONTROL health check is unhealthy until someone
  turns it On. The model documents the two states ("A routing control has one of two states: ON
  and OFF") but the documentation consulted names no initial one: Off, no traffic until an
  operator decides, is the sandbox's choice and the conservative one.
- Names are 1-64 non-whitespace characters, tag values up to 256 (the model's patterns, which
  botocore does not check): ValidationException. `ClientToken` makes a create idempotent:
  the same token and request answer the same resource; the same token with another request is a
  ConflictException. Unknown ARNs are ResourceNotFoundException (404). Tags apply to clusters,
  control panels and safety rules (the taggable resources of CreateCluster, CreateControlPanel
  and CreateSafetyRule; CreateRoutingControl takes none).
- Safety rules: assertion and gating rules (CreateSafetyRule, Describe, Update name/wait period,
  Delete, List); the data plane enforces them (sandbox/arc_cluster.py). WaitPeriodMs is stored
  and reported, not enforced.
- GetResourcePolicy (cross-account sharing through RAM) is not simulated: 501 `NotImplemented`.

Ground truth: `arc.resource` events (arn, resource kind, status) for every status change and
`arc.routing_control` events for state changes (recorded by the data plane).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from werkzeug.wrappers import Response

from sandbox.aws import ACCOUNT_ID
from sandbox.aws import AwsCall
from sandbox.aws import SandboxAwsApp
from sandbox.aws import json_reply
from sandbox.aws import rest_json_error
from sandbox.clock import SandboxClock
from sandbox.clock import Ticker
from sandbox.truth import GroundTruth

__all__ = [
    "ARC_CONTROL_REGION",
    "CLUSTER_ENDPOINT_REGIONS",
    "ArcSim",
    "ArcStore",
    "Cluster",
    "ControlPanel",
    "RoutingControl",
    "SafetyRule",
    "rule_holds",
]

ARC_CONTROL_REGION = "us-west-2"
CLUSTER_ENDPOINT_REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1", "ap-southeast-2")
ARN_PREFIX = f"arn:aws:route53-recovery-control::{ACCOUNT_ID}:"
DEFAULT_PANEL_NAME = "DefaultControlPanel"
DEFAULT_WAIT_PERIOD_MS = 5000
PENDING, DEPLOYED, PENDING_DELETION = "PENDING", "DEPLOYED", "PENDING_DELETION"
_NAME = re.compile(r"^\S+$")
_TAG_VALUE = re.compile(r"^\S*$")
_MAX_NAME = 64
_RULE_TYPES = frozenset({"ATLEAST", "AND", "OR"})

# Given a routing control ARN: the Route 53 health checks (ids) of type RECOVERY_CONTROL on it.
AssociatedChecks = Callable[[str], list[str]]


@dataclass
class _Resource:
    arn: str
    name: str
    status: str = PENDING
    due: float = 0.0  # monotonic: when PENDING -> DEPLOYED, or PENDING_DELETION -> gone
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Cluster(_Resource):
    network_type: str = "IPV4"
    endpoints: list[dict[str, str]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.arn.rsplit("/", 1)[1]

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ClusterArn": self.arn,
            "Name": self.name,
            "Status": self.status,
            "Owner": ACCOUNT_ID,
            "NetworkType": self.network_type,
        }
        if self.status == DEPLOYED:
            out["ClusterEndpoints"] = [dict(e) for e in self.endpoints]
        return out


@dataclass
class ControlPanel(_Resource):
    cluster_arn: str = ""
    default: bool = False

    def render(self, routing_controls: int) -> dict[str, Any]:
        return {
            "ClusterArn": self.cluster_arn,
            "ControlPanelArn": self.arn,
            "DefaultControlPanel": self.default,
            "Name": self.name,
            "RoutingControlCount": routing_controls,
            "Status": self.status,
            "Owner": ACCOUNT_ID,
        }


@dataclass
class RoutingControl(_Resource):
    panel_arn: str = ""
    cluster_arn: str = ""
    state: str = "Off"

    def render(self) -> dict[str, Any]:
        return {
            "ControlPanelArn": self.panel_arn,
            "Name": self.name,
            "RoutingControlArn": self.arn,
            "Status": self.status,
            "Owner": ACCOUNT_ID,
        }


@dataclass
class SafetyRule(_Resource):
    kind: str = "ASSERTION"  # ASSERTION | GATING
    panel_arn: str = ""
    rule_type: str = "ATLEAST"
    threshold: int = 1
    inverted: bool = False
    wait_period_ms: int = DEFAULT_WAIT_PERIOD_MS
    asserted: list[str] = field(default_factory=list)  # assertion rules
    gating: list[str] = field(default_factory=list)  # gating rules
    targets: list[str] = field(default_factory=list)

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ControlPanelArn": self.panel_arn,
            "Name": self.name,
            "RuleConfig": {"Inverted": self.inverted, "Threshold": self.threshold, "Type": self.rule_type},
            "SafetyRuleArn": self.arn,
            "Status": self.status,
            "WaitPeriodMs": self.wait_period_ms,
            "Owner": ACCOUNT_ID,
        }
        if self.kind == "ASSERTION":
            out["AssertedControls"] = list(self.asserted)
        else:
            out["GatingControls"] = list(self.gating)
            out["TargetControls"] = list(self.targets)
        return out

    def controls(self) -> set[str]:
        return {*self.asserted, *self.gating, *self.targets}


def rule_holds(rule_type: str, threshold: int, inverted: bool, states: list[bool]) -> bool:
    """A safety rule's RuleConfig over the On/Off states of its controls.

    ATLEAST: at least Threshold are On; AND: all are On; OR: at least one is On (CreateSafetyRule,
    RuleConfig.Type); Inverted negates the result ("Inverted: Logical negation of the rule")."""
    if rule_type == "ATLEAST":
        result = sum(states) >= threshold
    elif rule_type == "AND":
        result = all(states)
    else:  # OR
        result = any(states)
    return not result if inverted else result


class ArcStore:
    """ARC's resources: what the configuration API creates and the data plane reads and sets.

    One lock guards everything; statuses advance on a ticker and before every read, so an answer
    never shows a resource PENDING after its due time."""

    def __init__(self, truth: GroundTruth) -> None:
        self.lock = threading.RLock()
        self.truth = truth
        self.clusters: dict[str, Cluster] = {}
        self.panels: dict[str, ControlPanel] = {}
        self.controls: dict[str, RoutingControl] = {}
        self.rules: dict[str, SafetyRule] = {}
        self.tokens: dict[tuple[str, str], tuple[Any, str]] = {}  # (operation, token) -> (request, arn)

    def tables(self) -> tuple[dict[str, Any], ...]:
        return (self.clusters, self.panels, self.controls, self.rules)

    def find(self, arn: str) -> _Resource | None:
        for table in self.tables():
            if arn in table:
                found: _Resource = table[arn]
                return found
        return None

    def advance(self, now: float) -> None:
        """PENDING -> DEPLOYED and PENDING_DELETION -> gone for everything that is due."""
        with self.lock:
            for table in self.tables():
                for arn, res in list(table.items()):
                    if res.status == PENDING and now >= res.due:
                        res.status = DEPLOYED
                        self.record(res)
                    elif res.status == PENDING_DELETION and now >= res.due:
                        del table[arn]
                        self.truth.record("arc.resource", arn=arn, resource=_kind(res), status="DELETED")

    def record(self, res: _Resource) -> None:
        self.truth.record("arc.resource", arn=res.arn, resource=_kind(res), status=res.status, name=res.name)

    def panel_controls(self, panel_arn: str) -> list[RoutingControl]:
        return [c for c in self.controls.values() if c.panel_arn == panel_arn]

    def cluster_of_endpoint(self, cluster_id: str) -> Cluster | None:
        return self.clusters.get(f"{ARN_PREFIX}cluster/{cluster_id}")

    def state_of(self, arn: str) -> str | None:
        """A routing control's state (On/Off), None for an unknown or not yet deployed one."""
        with self.lock:
            control = self.controls.get(arn)
            if control is None or control.status == PENDING:
                return None
            return control.state


def _kind(res: _Resource) -> str:
    return {Cluster: "cluster", ControlPanel: "controlpanel", RoutingControl: "routingcontrol"}.get(
        type(res), "safetyrule"
    )


class _ApiError(Exception):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status

    def response(self) -> Response:
        return rest_json_error(self.code, self.message, self.status)


def _validation(message: str) -> _ApiError:
    return _ApiError("ValidationException", message, 400)


def _conflict(message: str) -> _ApiError:
    return _ApiError("ConflictException", message, 409)


def _not_found(arn: str, what: str) -> _ApiError:
    return _ApiError("ResourceNotFoundException", f"{what} {arn} was not found.", 404)


def _reply(payload: dict[str, Any]) -> Response:
    return json_reply(payload, content_type="application/json")


def _name(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= _MAX_NAME or not _NAME.match(value):
        raise _validation(
            f"1 validation error detected: Value at '{field_name}' failed to satisfy constraint: "
            f"Member must have length between 1 and {_MAX_NAME} and match pattern ^\\S+$"
        )
    return value


def _tags(value: Any) -> dict[str, str]:
    tags = dict(value or {})
    for key, val in tags.items():
        if not isinstance(val, str) or len(val) > 256 or not _TAG_VALUE.match(val):
            raise _validation(
                f"Value at 'tags.{key}' failed to satisfy constraint: Member must have length less than "
                "or equal to 256 and match pattern ^\\S+$"
            )
    return tags


_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/cluster$"), "ListClusters"),
    ("POST", re.compile(r"^/cluster$"), "CreateCluster"),
    ("PUT", re.compile(r"^/cluster$"), "UpdateCluster"),
    ("GET", re.compile(r"^/cluster/(?P<arn>.+)$"), "DescribeCluster"),
    ("DELETE", re.compile(r"^/cluster/(?P<arn>.+)$"), "DeleteCluster"),
    ("GET", re.compile(r"^/controlpanels$"), "ListControlPanels"),
    ("POST", re.compile(r"^/controlpanel$"), "CreateControlPanel"),
    ("PUT", re.compile(r"^/controlpanel$"), "UpdateControlPanel"),
    ("GET", re.compile(r"^/controlpanel/(?P<arn>.+)/routingcontrols$"), "ListRoutingControls"),
    ("GET", re.compile(r"^/controlpanel/(?P<arn>.+)/safetyrules$"), "ListSafetyRules"),
    ("GET", re.compile(r"^/controlpanel/(?P<arn>.+)$"), "DescribeControlPanel"),
    ("DELETE", re.compile(r"^/controlpanel/(?P<arn>.+)$"), "DeleteControlPanel"),
    ("POST", re.compile(r"^/routingcontrol$"), "CreateRoutingControl"),
    ("PUT", re.compile(r"^/routingcontrol$"), "UpdateRoutingControl"),
    (
        "GET",
        re.compile(r"^/routingcontrol/(?P<arn>.+)/associatedRoute53HealthChecks$"),
        "ListAssociatedRoute53HealthChecks",
    ),
    ("GET", re.compile(r"^/routingcontrol/(?P<arn>.+)$"), "DescribeRoutingControl"),
    ("DELETE", re.compile(r"^/routingcontrol/(?P<arn>.+)$"), "DeleteRoutingControl"),
    ("POST", re.compile(r"^/safetyrule$"), "CreateSafetyRule"),
    ("PUT", re.compile(r"^/safetyrule$"), "UpdateSafetyRule"),
    ("GET", re.compile(r"^/safetyrule/(?P<arn>.+)$"), "DescribeSafetyRule"),
    ("DELETE", re.compile(r"^/safetyrule/(?P<arn>.+)$"), "DeleteSafetyRule"),
    ("GET", re.compile(r"^/tags/(?P<arn>.+)$"), "ListTagsForResource"),
    ("POST", re.compile(r"^/tags/(?P<arn>.+)$"), "TagResource"),
    ("DELETE", re.compile(r"^/tags/(?P<arn>.+)$"), "UntagResource"),
    ("GET", re.compile(r"^/resourcePolicy/(?P<arn>.+)$"), "GetResourcePolicy"),
]


class ArcSim:
    """ARC routing control: the configuration API here, the cluster data plane in arc_cluster.py."""

    def __init__(
        self,
        app: SandboxAwsApp,
        *,
        clock: SandboxClock,
        truth: GroundTruth,
        route53: Any = None,  # sandbox.route53.Route53Sim: RECOVERY_CONTROL checks follow the states
        cluster_deploy_aws_s: float = 20.0,
        deploy_aws_s: float = 5.0,
        delete_aws_s: float = 5.0,
        tick_s: float = 0.05,
    ) -> None:
        from sandbox.arc_cluster import ArcDataPlane  # the data plane shares this store

        self.store = ArcStore(truth)
        self._clock = clock
        self._truth = truth
        self._cluster_delay = clock.real_seconds(cluster_deploy_aws_s)
        self._delay = clock.real_seconds(deploy_aws_s)
        self._delete_delay = clock.real_seconds(delete_aws_s)
        self._tick = tick_s
        self._ticker: Ticker | None = None
        self._endpoint_url = ""
        self._route53 = route53
        self.data_plane = ArcDataPlane(self.store, on_change=self._states_changed)
        app.intercept("route53-recovery-control-config", self._intercept)
        app.intercept("route53-recovery-cluster", self.data_plane.intercept)
        if route53 is not None:
            route53.use_routing_controls(self.store.state_of)

    def start(self, endpoint_url: str) -> None:
        self._endpoint_url = endpoint_url.rstrip("/")
        self._ticker = Ticker("arc", lambda: self.store.advance(time.monotonic()), lambda: self._tick).start()

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None

    def routing_control_state(self, arn: str) -> str | None:
        return self.store.state_of(arn)

    def _states_changed(self) -> None:
        """Called by the data plane (outside the store's lock) after routing-control states changed."""
        if self._route53 is not None:
            self._route53.reevaluate()

    def _associated(self, arn: str) -> list[str]:
        if self._route53 is None:
            return []
        ids: list[str] = self._route53.health_checks_for_routing_control(arn)
        return ids

    # -- dispatch ---------------------------------------------------------------------------------

    def _intercept(self, call: AwsCall) -> Response:
        if call.region != ARC_CONTROL_REGION:
            return rest_json_error(
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region, not '{call.region}'. ",
                403,
            )
        for method, pattern, name in _ROUTES:
            match = pattern.match(call.path)
            if call.method == method and match is not None:
                operation = name
                break
        else:
            return rest_json_error("UnknownOperationException", f"{call.method} {call.path}", 404)
        if operation == "GetResourcePolicy":
            return rest_json_error(
                "NotImplemented", "GetResourcePolicy is not implemented in the sandbox.", 501
            )
        if operation == "ListAssociatedRoute53HealthChecks":  # Route 53's lock, not ours
            return self._list_associated(call, match["arn"])
        handler = getattr(self, "_" + re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower())
        try:
            with self.store.lock:
                self.store.advance(time.monotonic())
                result: Response = handler(call, *(match.groups()))
                return result
        except _ApiError as exc:
            return exc.response()

    def _idempotent(self, operation: str, body: dict[str, Any]) -> _Resource | None:
        """The resource an earlier call with this ClientToken created, if the request is the same."""
        token = body.get("ClientToken")
        if not token:
            return None
        request = {k: v for k, v in body.items() if k != "ClientToken"}
        known = self.store.tokens.get((operation, str(token)))
        if known is None:
            return None
        if known[0] != request:
            raise _conflict(f"ClientToken {token} was already used with a different request.")
        found = self.store.find(known[1])
        if found is None:
            raise _conflict(f"ClientToken {token} was already used for a resource that no longer exists.")
        return found

    def _remember(self, operation: str, body: dict[str, Any], arn: str) -> None:
        token = body.get("ClientToken")
        if token:
            request = {k: v for k, v in body.items() if k != "ClientToken"}
            self.store.tokens[(operation, str(token))] = (request, arn)

    def _pending(self, res: _Resource, delay: float) -> None:
        res.status, res.due = PENDING, time.monotonic() + delay
        self.store.record(res)

    def _deleting(self, res: _Resource) -> None:
        if res.status != DEPLOYED:
            raise _conflict(f"{res.arn} is {res.status}; only a DEPLOYED resource can be deleted.")
        res.status, res.due = PENDING_DELETION, time.monotonic() + self._delete_delay
        self.store.record(res)

    @staticmethod
    def _page(call: AwsCall, items: list[Any], key: str) -> Response:
        raw_max, token = call.query.get("MaxResults"), call.query.get("NextToken")
        try:
            size = int(raw_max) if raw_max is not None else 1000
            start = int(token) if token is not None else 0
        except ValueError:
            raise _validation("Invalid MaxResults or NextToken.") from None
        if not 1 <= size <= 1000:
            raise _validation("Value at 'maxResults' failed to satisfy constraint: between 1 and 1000")
        if not 0 <= start <= len(items):
            raise _validation(f"Invalid NextToken: {token}")
        out: dict[str, Any] = {key: items[start : start + size]}
        if start + size < len(items):
            out["NextToken"] = str(start + size)
        return _reply(out)

    # -- clusters ---------------------------------------------------------------------------------

    def _cluster(self, arn: str) -> Cluster:
        cluster = self.store.clusters.get(arn)
        if cluster is None:
            raise _not_found(arn, "Cluster")
        return cluster

    def _create_cluster(self, call: AwsCall) -> Response:
        body = call.json()
        known = self._idempotent("CreateCluster", body)
        if isinstance(known, Cluster):
            return _reply({"Cluster": known.render()})
        name = _name(body.get("ClusterName"), "clusterName")
        network = body.get("NetworkType", "IPV4")
        if network not in ("IPV4", "DUALSTACK"):
            raise _validation(f"Invalid NetworkType {network}: must be IPV4 or DUALSTACK")
        cluster_id = str(uuid.uuid4())
        cluster = Cluster(arn=f"{ARN_PREFIX}cluster/{cluster_id}", name=name, tags=_tags(body.get("Tags")))
        cluster.network_type = network
        cluster.endpoints = [
            {"Endpoint": f"{self._endpoint_url}/arc/{cluster_id}/{region}/v1", "Region": region}
            for region in CLUSTER_ENDPOINT_REGIONS
        ]
        self.store.clusters[cluster.arn] = cluster
        self._pending(cluster, self._cluster_delay)
        panel = ControlPanel(
            arn=f"{ARN_PREFIX}controlpanel/{secrets.token_hex(16)}",
            name=DEFAULT_PANEL_NAME,
            cluster_arn=cluster.arn,
            default=True,
        )
        self.store.panels[panel.arn] = panel
        self._pending(panel, self._cluster_delay)
        self._remember("CreateCluster", body, cluster.arn)
        return _reply({"Cluster": cluster.render()})

    def _describe_cluster(self, call: AwsCall, arn: str) -> Response:
        return _reply({"Cluster": self._cluster(arn).render()})

    def _list_clusters(self, call: AwsCall) -> Response:
        return self._page(call, [c.render() for c in self.store.clusters.values()], "Clusters")

    def _update_cluster(self, call: AwsCall) -> Response:
        body = call.json()
        cluster = self._cluster(str(body.get("ClusterArn")))
        network = body.get("NetworkType")
        if network not in ("IPV4", "DUALSTACK"):
            raise _validation(f"Invalid NetworkType {network}: must be IPV4 or DUALSTACK")
        if cluster.status != DEPLOYED:
            raise _conflict(f"Cluster {cluster.arn} is {cluster.status}.")
        cluster.network_type = network
        return _reply({"Cluster": cluster.render()})

    def _delete_cluster(self, call: AwsCall, arn: str) -> Response:
        cluster = self._cluster(arn)
        panels = [p for p in self.store.panels.values() if p.cluster_arn == arn]
        custom = [p for p in panels if not p.default]
        controls = [c for c in self.store.controls.values() if c.cluster_arn == arn]
        if custom or controls:
            raise _conflict(
                f"Cluster {arn} still has {len(custom)} control panel(s) and {len(controls)} routing "
                "control(s); delete them first."
            )
        self._deleting(cluster)
        for panel in panels:  # the default control panel goes with its cluster
            if panel.status == DEPLOYED:
                self._deleting(panel)
        return _reply({})

    # -- control panels ---------------------------------------------------------------------------

    def _panel(self, arn: str) -> ControlPanel:
        panel = self.store.panels.get(arn)
        if panel is None:
            raise _not_found(arn, "Control panel")
        return panel

    def _render_panel(self, panel: ControlPanel) -> dict[str, Any]:
        return panel.render(len(self.store.panel_controls(panel.arn)))

    def _create_control_panel(self, call: AwsCall) -> Response:
        body = call.json()
        known = self._idempotent("CreateControlPanel", body)
        if isinstance(known, ControlPanel):
            return _reply({"ControlPanel": self._render_panel(known)})
        name = _name(body.get("ControlPanelName"), "controlPanelName")
        cluster = self._cluster(str(body.get("ClusterArn")))
        if cluster.status != DEPLOYED:
            raise _conflict(
                f"Cluster {cluster.arn} is {cluster.status}; a control panel needs a DEPLOYED cluster."
            )
        panel = ControlPanel(
            arn=f"{ARN_PREFIX}controlpanel/{secrets.token_hex(16)}",
            name=name,
            cluster_arn=cluster.arn,
            tags=_tags(body.get("Tags")),
        )
        self.store.panels[panel.arn] = panel
        self._pending(panel, self._delay)
        self._remember("CreateControlPanel", body, panel.arn)
        return _reply({"ControlPanel": self._render_panel(panel)})

    def _describe_control_panel(self, call: AwsCall, arn: str) -> Response:
        return _reply({"ControlPanel": self._render_panel(self._panel(arn))})

    def _list_control_panels(self, call: AwsCall) -> Response:
        cluster_arn = call.query.get("ClusterArn")
        if cluster_arn is not None:
            self._cluster(cluster_arn)
        panels = [
            self._render_panel(p)
            for p in self.store.panels.values()
            if cluster_arn is None or p.cluster_arn == cluster_arn
        ]
        return self._page(call, panels, "ControlPanels")

    def _update_control_panel(self, call: AwsCall) -> Response:
        body = call.json()
        panel = self._panel(str(body.get("ControlPanelArn")))
        panel.name = _name(body.get("ControlPanelName"), "controlPanelName")
        return _reply({"ControlPanel": self._render_panel(panel)})

    def _delete_control_panel(self, call: AwsCall, arn: str) -> Response:
        panel = self._panel(arn)
        if panel.default:
            raise _conflict(f"{arn} is its cluster's default control panel; it is deleted with the cluster.")
        controls = self.store.panel_controls(arn)
        rules = [r for r in self.store.rules.values() if r.panel_arn == arn]
        if controls or rules:
            raise _conflict(
                f"Control panel {arn} still has {len(controls)} routing control(s) and {len(rules)} "
                "safety rule(s); delete them first."
            )
        self._deleting(panel)
        return _reply({})

    # -- routing controls -------------------------------------------------------------------------

    def _control(self, arn: str) -> RoutingControl:
        control = self.store.controls.get(arn)
        if control is None:
            raise _not_found(arn, "Routing control")
        return control

    def _create_routing_control(self, call: AwsCall) -> Response:
        body = call.json()
        known = self._idempotent("CreateRoutingControl", body)
        if isinstance(known, RoutingControl):
            return _reply({"RoutingControl": known.render()})
        name = _name(body.get("RoutingControlName"), "routingControlName")
        cluster = self._cluster(str(body.get("ClusterArn")))
        if cluster.status != DEPLOYED:
            raise _conflict(
                f"Cluster {cluster.arn} is {cluster.status}; a routing control needs a DEPLOYED cluster."
            )
        panel_arn = body.get("ControlPanelArn")
        if panel_arn is None:
            panel = next(p for p in self.store.panels.values() if p.cluster_arn == cluster.arn and p.default)
        else:
            panel = self._panel(str(panel_arn))
            if panel.cluster_arn != cluster.arn:
                raise _validation(f"Control panel {panel.arn} is not in cluster {cluster.arn}.")
        if panel.status != DEPLOYED:
            raise _conflict(f"Control panel {panel.arn} is {panel.status}; it must be DEPLOYED.")
        if any(c.name == name for c in self.store.panel_controls(panel.arn)):
            raise _conflict(f"A routing control named {name} already exists in control panel {panel.arn}.")
        panel_id = panel.arn.rsplit("/", 1)[1]
        control = RoutingControl(
            arn=f"{ARN_PREFIX}controlpanel/{panel_id}/routingcontrol/{secrets.token_hex(8)}",
            name=name,
            panel_arn=panel.arn,
            cluster_arn=cluster.arn,
        )
        self.store.controls[control.arn] = control
        self._pending(control, self._delay)
        self._remember("CreateRoutingControl", body, control.arn)
        return _reply({"RoutingControl": control.render()})

    def _describe_routing_control(self, call: AwsCall, arn: str) -> Response:
        return _reply({"RoutingControl": self._control(arn).render()})

    def _list_routing_controls(self, call: AwsCall, panel_arn: str) -> Response:
        self._panel(panel_arn)
        controls = [c.render() for c in self.store.panel_controls(panel_arn)]
        return self._page(call, controls, "RoutingControls")

    def _update_routing_control(self, call: AwsCall) -> Response:
        body = call.json()
        control = self._control(str(body.get("RoutingControlArn")))
        name = _name(body.get("RoutingControlName"), "routingControlName")
        if any(c.name == name and c is not control for c in self.store.panel_controls(control.panel_arn)):
            raise _conflict(f"A routing control named {name} already exists in its control panel.")
        control.name = name
        return _reply({"RoutingControl": control.render()})

    def _delete_routing_control(self, call: AwsCall, arn: str) -> Response:
        control = self._control(arn)
        using = [r.arn for r in self.store.rules.values() if arn in r.controls()]
        if using:
            raise _conflict(f"Routing control {arn} is used by safety rule(s) {', '.join(using)}.")
        self._deleting(control)
        return _reply({})

    def _list_associated(self, call: AwsCall, arn: str) -> Response:
        with self.store.lock:
            if arn not in self.store.controls:
                return _not_found(arn, "Routing control").response()
        try:
            return self._page(call, self._associated(arn), "HealthCheckIds")
        except _ApiError as exc:
            return exc.response()

    # -- safety rules -----------------------------------------------------------------------------

    def _rule(self, arn: str) -> SafetyRule:
        rule = self.store.rules.get(arn)
        if rule is None:
            raise _not_found(arn, "Safety rule")
        return rule

    @staticmethod
    def _rule_reply(rule: SafetyRule) -> Response:
        key = "AssertionRule" if rule.kind == "ASSERTION" else "GatingRule"
        return _reply({key: rule.render()})

    def _create_safety_rule(self, call: AwsCall) -> Response:
        body = call.json()
        known = self._idempotent("CreateSafetyRule", body)
        if isinstance(known, SafetyRule):
            return self._rule_reply(known)
        assertion, gating = body.get("AssertionRule"), body.get("GatingRule")
        if (assertion is None) == (gating is None):
            raise _validation("Specify exactly one of AssertionRule and GatingRule.")
        spec = dict(assertion or gating)
        name = _name(spec.get("Name"), "name")
        panel = self._panel(str(spec.get("ControlPanelArn")))
        if panel.status != DEPLOYED:
            raise _conflict(f"Control panel {panel.arn} is {panel.status}; it must be DEPLOYED.")
        config = dict(spec.get("RuleConfig") or {})
        rule_type, threshold = config.get("Type"), config.get("Threshold")
        if rule_type not in _RULE_TYPES:
            raise _validation(f"Invalid RuleConfig.Type {rule_type}: must be one of ATLEAST, AND, OR")
        if not isinstance(threshold, int) or threshold < 0:
            raise _validation("RuleConfig.Threshold must be a non-negative integer.")
        wait = spec.get("WaitPeriodMs")
        if not isinstance(wait, int) or wait < 0:
            raise _validation("WaitPeriodMs must be a non-negative integer.")
        keys = ("AssertedControls",) if assertion is not None else ("GatingControls", "TargetControls")
        lists: dict[str, list[str]] = {}
        for key in keys:
            arns = list(spec.get(key) or [])
            if not arns:
                raise _validation(f"{key} must name at least one routing control.")
            for arn in arns:
                control = self.store.controls.get(arn)
                if control is None or control.panel_arn != panel.arn:
                    raise _validation(f"{key}: {arn} is not a routing control of control panel {panel.arn}.")
            lists[key] = arns
        if rule_type == "ATLEAST":
            counted = lists.get("AssertedControls") or lists.get("GatingControls") or []
            if threshold > len(counted):
                raise _validation(
                    f"RuleConfig.Threshold {threshold} exceeds the {len(counted)} controls it counts."
                )
        panel_id = panel.arn.rsplit("/", 1)[1]
        rule = SafetyRule(
            arn=f"{ARN_PREFIX}controlpanel/{panel_id}/safetyrule/{secrets.token_hex(8)}",
            name=name,
            tags=_tags(body.get("Tags")),
            kind="ASSERTION" if assertion is not None else "GATING",
            panel_arn=panel.arn,
            rule_type=str(rule_type),
            threshold=threshold,
            inverted=bool(config.get("Inverted", False)),
            wait_period_ms=wait,
            asserted=lists.get("AssertedControls", []),
            gating=lists.get("GatingControls", []),
            targets=lists.get("TargetControls", []),
        )
        self.store.rules[rule.arn] = rule
        self._pending(rule, self._delay)
        self._remember("CreateSafetyRule", body, rule.arn)
        return self._rule_reply(rule)

    def _describe_safety_rule(self, call: AwsCall, arn: str) -> Response:
        return self._rule_reply(self._rule(arn))

    def _list_safety_rules(self, call: AwsCall, panel_arn: str) -> Response:
        self._panel(panel_arn)
        rules = [{r.kind: r.render()} for r in self.store.rules.values() if r.panel_arn == panel_arn]
        return self._page(call, rules, "SafetyRules")

    def _update_safety_rule(self, call: AwsCall) -> Response:
        body = call.json()
        update = body.get("AssertionRuleUpdate") or body.get("GatingRuleUpdate")
        if update is None or ("AssertionRuleUpdate" in body and "GatingRuleUpdate" in body):
            raise _validation("Specify exactly one of AssertionRuleUpdate and GatingRuleUpdate.")
        rule = self._rule(str(update.get("SafetyRuleArn")))
        kind = "ASSERTION" if "AssertionRuleUpdate" in body else "GATING"
        if rule.kind != kind:
            raise _validation(f"{rule.arn} is not an {kind.lower()} rule.")
        rule.name = _name(update.get("Name"), "name")
        wait = update.get("WaitPeriodMs")
        if not isinstance(wait, int) or wait < 0:
            raise _validation("WaitPeriodMs must be a non-negative integer.")
        rule.wait_period_ms = wait
        return self._rule_reply(rule)

    def _delete_safety_rule(self, call: AwsCall, arn: str) -> Response:
        self._deleting(self._rule(arn))
        return _reply({})

    # -- tags -------------------------------------------------------------------------------------

    def _taggable(self, arn: str) -> _Resource:
        res = self.store.find(arn)
        if res is None:
            raise _not_found(arn, "Resource")
        if isinstance(res, RoutingControl):
            raise _validation(f"{arn} is a routing control; routing controls take no tags.")
        return res

    def _list_tags_for_resource(self, call: AwsCall, arn: str) -> Response:
        return _reply({"Tags": dict(self._taggable(arn).tags)})

    def _tag_resource(self, call: AwsCall, arn: str) -> Response:
        res = self._taggable(arn)
        res.tags.update(_tags(call.json().get("Tags")))
        return _reply({})

    def _untag_resource(self, call: AwsCall, arn: str) -> Response:
        res = self._taggable(arn)
        for key in call.query_lists.get("TagKeys", ()):
            res.tags.pop(key, None)
        return _reply({})
