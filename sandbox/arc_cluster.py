"""ARC's cluster data plane: reading and setting routing-control states on a cluster's endpoints.

Service `route53-recovery-cluster` (awsJson 1.0, target prefix `ToggleCustomerAPI`, botocore's
2019-12-02 model), served on each of a cluster's five endpoints (sandbox/arc.py lists them in
DescribeCluster as `<sandbox endpoint>/arc/<cluster id>/<region>/v1`). As AWS documents it:

- "You must specify Regional endpoints" and sign for the endpoint's Region (a cluster endpoint is
  a regional host): a request on one endpoint signed for another region is refused with 403
  `InvalidSignatureException`. The endpoint of a cluster that does not exist, or is not yet
  DEPLOYED, has no host to answer: the connection is closed with no answer, as for a hostname
  nobody serves. An endpoint whose region's AWS API is unreachable (sandbox/aws.py) does not
  answer either: ARC's answer to that is "try another cluster endpoint".
- A cluster knows only its own routing controls: an ARN of another cluster's control, or of one
  not yet DEPLOYED, is ResourceNotFoundException (with resourceId and resourceType, as modelled).
- GetRoutingControlState answers RoutingControlArn, RoutingControlState and RoutingControlName;
  ListRoutingControls lists the cluster's controls, or one control panel's, with ControlPanelArn,
  ControlPanelName, RoutingControlState and Owner (MaxResults default 500, NextToken).
- UpdateRoutingControlState and UpdateRoutingControlStates are transactions: every entry applies
  or none does ("A control panel represents a group of routing controls that can be changed
  together in a single transaction"). States are `On` or `Off` (ValidationException otherwise).
- Safety rules of the cluster's control panels are enforced on every transaction unless named in
  SafetyRulesToOverride: an assertion rule whose AssertedControls the transaction touches must
  hold on the states "after a transaction completes" (RuleConfig); a gating rule whose
  TargetControls it touches must hold on its GatingControls as they are before the transaction
  ("TargetControls ... can only be updated if the rule configuration ... evaluates to true for the
  gating routing control"). A violated rule refuses the whole transaction with ConflictException
  naming the rule (the modelled error of the update operations that carries a resourceId; AWS
  documents that the change "is not accepted", not the error code).

Every state change is recorded in ground truth as `arc.routing_control` (arn, name, state,
endpoint region), and Route 53's RECOVERY_CONTROL health checks re-evaluate at once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Response

from sandbox.arc import CLUSTER_ENDPOINT_REGIONS
from sandbox.arc import DEPLOYED
from sandbox.arc import ArcStore
from sandbox.arc import Cluster
from sandbox.arc import RoutingControl
from sandbox.arc import rule_holds
from sandbox.aws import ACCOUNT_ID
from sandbox.aws import AwsCall
from sandbox.aws import NoAnswer
from sandbox.aws import json_reply

__all__ = ["ArcDataPlane"]

_ENDPOINT_PATH = re.compile(r"^/arc/(?P<cluster>[^/]+)/(?P<region>[^/]+)/v1/?$")
_STATES = ("On", "Off")
_DEFAULT_PAGE = 500


class _Refused(Exception):
    def __init__(self, code: str, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.body = {"__type": code, "message": message, **extra}
        self.status = status

    def response(self) -> Response:
        return json_reply(self.body, status=self.status)


def _not_found(arn: str, kind: str) -> _Refused:
    return _Refused(
        "ResourceNotFoundException",
        f"{kind} {arn} was not found in this cluster.",
        404,
        resourceId=arn,
        resourceType=kind,
    )


def _invalid(message: str, field: str) -> _Refused:
    return _Refused(
        "ValidationException",
        message,
        400,
        reason="fieldValidationFailed",
        fields=[{"name": field, "message": message}],
    )


class ArcDataPlane:
    """The data-plane API of every cluster in an ArcStore, one endpoint per (cluster, region)."""

    def __init__(self, store: ArcStore, *, on_change: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._on_change = on_change

    def intercept(self, call: AwsCall) -> Response:
        match = _ENDPOINT_PATH.match(call.path)
        if match is None or match["region"] not in CLUSTER_ENDPOINT_REGIONS:
            return NoAnswer("not an ARC cluster endpoint")
        with self._store.lock:
            self._store.advance(time.monotonic())
            cluster = self._store.cluster_of_endpoint(match["cluster"])
            if cluster is None or cluster.status != DEPLOYED:
                return NoAnswer("no such ARC cluster endpoint")
        if call.region != match["region"]:
            return _Refused(
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region, not '{call.region}'. ",
                403,
            ).response()
        handlers: dict[str, Callable[[AwsCall, Cluster, str], Response]] = {
            "GetRoutingControlState": self._get,
            "ListRoutingControls": self._list,
            "UpdateRoutingControlState": self._update_one,
            "UpdateRoutingControlStates": self._update_many,
        }
        handler = handlers.get(call.target)
        if handler is None:
            return _Refused("UnknownOperationException", f"Unknown operation {call.target!r}").response()
        try:
            return handler(call, cluster, match["region"])
        except _Refused as exc:
            return exc.response()

    # -- reads ------------------------------------------------------------------------------------

    def _control(self, cluster: Cluster, arn: Any) -> RoutingControl:
        if not isinstance(arn, str) or not arn:
            raise _invalid("RoutingControlArn is required.", "RoutingControlArn")
        control = self._store.controls.get(arn)
        if control is None or control.cluster_arn != cluster.arn or control.status != DEPLOYED:
            raise _not_found(arn, "RoutingControl")
        return control

    def _get(self, call: AwsCall, cluster: Cluster, region: str) -> Response:
        with self._store.lock:
            control = self._control(cluster, call.json().get("RoutingControlArn"))
            return json_reply(
                {
                    "RoutingControlArn": control.arn,
                    "RoutingControlState": control.state,
                    "RoutingControlName": control.name,
                }
            )

    def _list(self, call: AwsCall, cluster: Cluster, region: str) -> Response:
        body = call.json()
        panel_arn, token, size = body.get("ControlPanelArn"), body.get("NextToken"), body.get("MaxResults")
        with self._store.lock:
            if panel_arn is not None:
                panel = self._store.panels.get(panel_arn)
                if panel is None or panel.cluster_arn != cluster.arn or panel.status != DEPLOYED:
                    raise _not_found(str(panel_arn), "ControlPanel")
            controls = [
                c
                for c in self._store.controls.values()
                if c.cluster_arn == cluster.arn
                and c.status == DEPLOYED
                and (panel_arn is None or c.panel_arn == panel_arn)
            ]
            try:
                start = int(token) if token is not None else 0
                count = int(size) if size is not None else _DEFAULT_PAGE
            except ValueError:
                raise _invalid(f"Invalid NextToken {token!r}", "NextToken") from None
            if not 0 <= start <= len(controls):
                raise _invalid(f"Invalid NextToken {token!r}", "NextToken")
            if count < 1:
                raise _invalid("MaxResults must be at least 1", "MaxResults")
            page = [
                {
                    "ControlPanelArn": c.panel_arn,
                    "ControlPanelName": self._store.panels[c.panel_arn].name,
                    "RoutingControlArn": c.arn,
                    "RoutingControlName": c.name,
                    "RoutingControlState": c.state,
                    "Owner": ACCOUNT_ID,
                }
                for c in controls[start : start + count]
            ]
        out: dict[str, Any] = {"RoutingControls": page}
        if start + count < len(controls):
            out["NextToken"] = str(start + count)
        return json_reply(out)

    # -- transactions -----------------------------------------------------------------------------

    def _update_one(self, call: AwsCall, cluster: Cluster, region: str) -> Response:
        body = call.json()
        entries = [
            {
                "RoutingControlArn": body.get("RoutingControlArn"),
                "RoutingControlState": body.get("RoutingControlState"),
            }
        ]
        return self._transaction(cluster, region, entries, body.get("SafetyRulesToOverride") or [])

    def _update_many(self, call: AwsCall, cluster: Cluster, region: str) -> Response:
        body = call.json()
        entries = body.get("UpdateRoutingControlStateEntries")
        if not isinstance(entries, list) or not entries:
            raise _invalid(
                "UpdateRoutingControlStateEntries must have at least one entry.",
                "UpdateRoutingControlStateEntries",
            )
        return self._transaction(cluster, region, entries, body.get("SafetyRulesToOverride") or [])

    def _transaction(
        self, cluster: Cluster, region: str, entries: list[dict[str, Any]], overrides: list[str]
    ) -> Response:
        changed: list[RoutingControl] = []
        with self._store.lock:
            wanted: dict[str, str] = {}
            for entry in entries:
                state = entry.get("RoutingControlState")
                if state not in _STATES:
                    raise _invalid(
                        f"Value '{state}' at 'routingControlState' failed to satisfy constraint: Member must "
                        "satisfy enum value set: [On, Off]",
                        "RoutingControlState",
                    )
                control = self._control(cluster, entry.get("RoutingControlArn"))
                if control.arn in wanted:
                    raise _invalid(
                        f"{control.arn} appears more than once.", "UpdateRoutingControlStateEntries"
                    )
                wanted[control.arn] = str(state)
            self._check_rules(cluster, wanted, set(overrides))
            for arn, state in wanted.items():
                control = self._store.controls[arn]
                if control.state != state:
                    control.state = state
                    changed.append(control)
                    self._store.truth.record(
                        "arc.routing_control",
                        arn=arn,
                        name=control.name,
                        state=state,
                        cluster=cluster.arn,
                        endpoint_region=region,
                    )
        if changed:
            self._on_change()
        return json_reply({})

    def _check_rules(self, cluster: Cluster, wanted: dict[str, str], overrides: set[str]) -> None:
        """ConflictException for the first DEPLOYED safety rule of this cluster the transaction breaks."""
        before = {
            c.arn: c.state == "On" for c in self._store.controls.values() if c.cluster_arn == cluster.arn
        }
        after = {**before, **{arn: state == "On" for arn, state in wanted.items()}}
        touched = set(wanted)
        for rule in self._store.rules.values():
            panel = self._store.panels.get(rule.panel_arn)
            if (
                rule.status != DEPLOYED
                or rule.arn in overrides
                or panel is None
                or panel.cluster_arn != cluster.arn
            ):
                continue
            if rule.kind == "ASSERTION" and touched & set(rule.asserted):
                states = [after.get(a, False) for a in rule.asserted]
            elif rule.kind == "GATING" and touched & set(rule.targets):
                states = [before.get(g, False) for g in rule.gating]
            else:
                continue
            if not rule_holds(rule.rule_type, rule.threshold, rule.inverted, states):
                raise _Refused(
                    "ConflictException",
                    f"The request was rejected: it would violate safety rule {rule.name} ({rule.arn}).",
                    409,
                    resourceId=rule.arn,
                    resourceType="SafetyRule",
                )
