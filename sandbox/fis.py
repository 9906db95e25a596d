"""AWS Fault Injection Service for the sandbox: experiments that actually inject what they name.

moto stores experiment templates and experiments, but its experiments only walk through states
when read and inject nothing. This simulator takes over an experiment once moto has stored it:

- templates are validated at CreateExperimentTemplate/UpdateExperimentTemplate as FIS does
  (unknown action ids, dangling target and startAfter references, a missing or malformed
  `duration`) with a ValidationException naming the action;
- a started experiment goes initiating -> running, runs its actions in startAfter order for
  their ISO-8601 `duration` (scaled by the sandbox clock), and ends `completed`; StopExperiment
  goes stopping -> stopped; every fault is undone on completion, stop and failure alike;
- supported actions: `aws:dynamodb:global-table-pause-replication` (pauses replication to and
  from the targeted replica through DynamoDbSim) and `aws:fis:wait`. The pause is not instant:
  "Tables may continue to be replicated for up to 5 minutes after action begins" (FIS actions
  reference), so it takes effect `pause_delay_aws_s` (AWS seconds, scaled) after the action
  starts, and the `fis.pause_effective` ground-truth event says when. Other documented FIS
  actions are accepted in templates, as on AWS, but an experiment using one fails with a reason
  saying the sandbox cannot inject it, rather than pretending it ran.
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from moto.dynamodb.models import dynamodb_backends
from moto.fis.models import Experiment
from moto.fis.models import fis_backends
from werkzeug.wrappers import Response

from sandbox.aws import ACCOUNT_ID
from sandbox.aws import AwsCall
from sandbox.aws import SandboxAwsApp
from sandbox.aws import rest_json_error
from sandbox.clock import SandboxClock
from sandbox.clock import Ticker
from sandbox.dynamodb import DynamoDbSim
from sandbox.truth import GroundTruth

__all__ = ["KNOWN_ACTION_IDS", "SUPPORTED_ACTION_IDS", "FisSim", "parse_iso_duration"]

PAUSE_REPLICATION = "aws:dynamodb:global-table-pause-replication"
WAIT = "aws:fis:wait"
GLOBAL_TABLE_TYPE = "aws:dynamodb:global-table"
SUPPORTED_ACTION_IDS = frozenset({PAUSE_REPLICATION, WAIT})

# Action ids from the FIS actions reference; a template naming anything else is rejected.
KNOWN_ACTION_IDS = SUPPORTED_ACTION_IDS | frozenset(
    {
        "aws:arc:start-zonal-autoshift",
        "aws:cloudwatch:assert-alarm-state",
        "aws:directconnect:virtual-interface-disconnect",
        "aws:dynamodb:encrypted-global-table-pause-replication",
        "aws:ebs:pause-volume-io",
        "aws:ebs:volume-io-latency",
        "aws:ec2:api-insufficient-instance-capacity-error",
        "aws:ec2:asg-insufficient-instance-capacity-error",
        "aws:ec2:reboot-instances",
        "aws:ec2:send-spot-instance-interruptions",
        "aws:ec2:stop-instances",
        "aws:ec2:terminate-instances",
        "aws:ecs:drain-container-instances",
        "aws:ecs:stop-task",
        "aws:ecs:task-cpu-stress",
        "aws:ecs:task-io-stress",
        "aws:ecs:task-kill-process",
        "aws:ecs:task-network-blackhole-port",
        "aws:ecs:task-network-latency",
        "aws:ecs:task-network-packet-loss",
        "aws:eks:inject-kubernetes-custom-resource",
        "aws:eks:pod-cpu-stress",
        "aws:eks:pod-delete",
        "aws:eks:pod-io-stress",
        "aws:eks:pod-memory-stress",
        "aws:eks:pod-network-blackhole-port",
        "aws:eks:pod-network-latency",
        "aws:eks:pod-network-packet-loss",
        "aws:eks:terminate-nodegroup-instances",
        "aws:elasticache:interrupt-cluster-az-power",
        "aws:elasticache:replicationgroup-interrupt-az-power",
        "aws:fis:inject-api-internal-error",
        "aws:fis:inject-api-throttle-error",
        "aws:fis:inject-api-unavailable-error",
        "aws:lambda:invocation-add-delay",
        "aws:lambda:invocation-error",
        "aws:lambda:invocation-http-integration-response",
        "aws:network:disrupt-connectivity",
        "aws:network:route-table-disrupt-cross-region-connectivity",
        "aws:network:transit-gateway-disrupt-cross-region-connectivity",
        "aws:rds:failover-db-cluster",
        "aws:rds:reboot-db-instances",
        "aws:s3:bucket-pause-replication",
        "aws:ssm:send-command",
        "aws:ssm:start-automation-execution",
    }
)

_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_TERMINAL = frozenset({"completed", "stopped", "failed"})
_EXPERIMENT_PATH = re.compile(r"^/experiments/(?P<id>[^/]+)$")
_TEMPLATE_PATH = re.compile(r"^/experimentTemplates/(?P<id>[^/]+)$")
_SELECTION = re.compile(r"^(ALL|COUNT\((\d+)\)|PERCENT\((\d+)\))$")


def parse_iso_duration(text: str) -> float:
    """Seconds in an ISO-8601 duration as FIS takes them (PT5M, PT30S, PT1H30M, P1D)."""
    match = _DURATION.match(text or "")
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    return (
        parts.get("d", 0.0) * 86400
        + parts.get("h", 0.0) * 3600
        + parts.get("m", 0.0) * 60
        + parts.get("s", 0.0)
    )


def _validate_template(actions: dict[str, Any], targets: dict[str, Any]) -> str | None:
    """The ValidationException message FIS would give for these actions, or None."""
    for name, action in actions.items():
        action_id = action.get("actionId", "")
        if action_id not in KNOWN_ACTION_IDS:
            return f"Action '{name}' has an invalid actionId '{action_id}': no such FIS action"
        for key, target in (action.get("targets") or {}).items():
            if target not in targets:
                return (
                    f"Action '{name}' refers to target '{target}' ({key}), which the template does not define"
                )
        for before in action.get("startAfter") or []:
            if before not in actions:
                return f"Action '{name}' has startAfter '{before}', which the template does not define"
        if action_id not in SUPPORTED_ACTION_IDS:
            continue
        try:
            parse_iso_duration((action.get("parameters") or {}).get("duration", ""))
        except ValueError:
            return f"Action '{name}' ({action_id}) requires parameter 'duration' (ISO 8601, e.g. PT5M)"
        action_targets = action.get("targets") or {}
        if action_id == WAIT and action_targets:
            return f"Action '{name}' ({WAIT}) takes no targets"
        if action_id == PAUSE_REPLICATION:
            if set(action_targets) != {"Tables"}:
                return f"Action '{name}' ({PAUSE_REPLICATION}) requires exactly one target key, 'Tables'"
            resource_type = targets[action_targets["Tables"]].get("resourceType")
            if resource_type != GLOBAL_TABLE_TYPE:
                return (
                    f"Action '{name}' ({PAUSE_REPLICATION}) requires a target of resource type "
                    f"{GLOBAL_TABLE_TYPE}, not {resource_type}"
                )
    return None


@dataclass
class _ActionRun:
    name: str
    action_id: str
    duration_s: float  # real seconds
    target_arns: list[str]
    start_after: list[str]
    status: str = "pending"
    reason: str = "Initial state"
    start_time: float | None = None  # epoch
    end_time: float | None = None
    ends_at: float = 0.0  # monotonic
    undo: list[Callable[[], None]] = field(default_factory=list)
    effective_at: float | None = None  # monotonic: when a pending fault (the pause) takes hold
    inject: list[Callable[[], None]] = field(default_factory=list)  # what happens at effective_at

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": {"status": self.status, "reason": self.reason}}
        if self.start_time is not None:
            out["startTime"] = self.start_time
        if self.end_time is not None:
            out["endTime"] = self.end_time
        return out


@dataclass
class _Run:
    id: str
    experiment: Experiment  # moto's object; its status is driven from here
    actions: dict[str, _ActionRun]
    status: str = "initiating"
    reason: str = "Experiment is initiating."
    stop_requested: bool = False


class FisSim:
    """Drives moto's FIS experiments and performs the actions the sandbox can inject."""

    def __init__(
        self,
        app: SandboxAwsApp,
        *,
        clock: SandboxClock,
        truth: GroundTruth,
        dynamodb: DynamoDbSim,
        tick_s: float = 0.05,
        pause_delay_aws_s: float = 30.0,
    ) -> None:
        self._pause_delay_s = clock.real_seconds(pause_delay_aws_s)
        self._clock = clock
        self._truth = truth
        self._dynamodb = dynamodb
        self._tick = tick_s
        self._lock = threading.RLock()
        self._runs: dict[str, _Run] = {}
        self._ticker: Ticker | None = None
        app.intercept("fis", self._intercept)
        app.observe("fis", self._observe)

    def start(self, endpoint_url: str) -> None:
        self._ticker = Ticker("fis-experiments", self._advance, lambda: self._tick).start()

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        with self._lock:  # leave no fault behind when the sandbox shuts down
            for run in self._runs.values():
                if run.status not in _TERMINAL:
                    self._finish(run, "stopped", "Experiment stopped: the sandbox shut down.")

    # -- template validation ---------------------------------------------------------------------

    def _intercept(self, call: AwsCall) -> Response | None:
        if call.method == "POST" and call.path == "/experimentTemplates":
            body = call.json()
            message = _validate_template(body.get("actions") or {}, body.get("targets") or {})
        elif call.method == "PATCH" and (match := _TEMPLATE_PATH.match(call.path)):
            body = call.json()
            if "actions" not in body and "targets" not in body:
                return None
            template = fis_backends[ACCOUNT_ID][call.region].experiment_templates.get(match["id"])
            if template is None:
                return None  # moto answers ResourceNotFoundException
            actions = body.get("actions", template.actions)
            targets = body.get("targets", template.targets)
            message = _validate_template(actions or {}, targets or {})
        else:
            return None
        return rest_json_error("ValidationException", message) if message else None

    # -- experiment responses --------------------------------------------------------------------

    def _observe(self, call: AwsCall, status: int, body: bytes) -> bytes | None:
        if status != 200 or not (call.path == "/experiments" or _EXPERIMENT_PATH.match(call.path)):
            return None
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        with self._lock:
            if call.method == "POST" and call.path == "/experiments":
                self._adopt(call.region, doc["experiment"]["id"])
            elif call.method == "DELETE":
                self._request_stop(doc.get("experiment", {}).get("id", ""))
            if "experiment" in doc:
                self._render(doc["experiment"], full=True)
            for summary in doc.get("experiments", []):
                self._render(summary, full=False)
        return json.dumps(doc).encode()

    def _request_stop(self, experiment_id: str) -> None:
        """StopExperiment: stopping now, stopped (faults undone) on the next tick."""
        run = self._runs.get(experiment_id)
        if run is not None and run.status not in _TERMINAL:
            run.stop_requested = True
            self._set_status(run, "stopping", "Experiment is stopping.")

    def _render(self, experiment: dict[str, Any], *, full: bool) -> None:
        run = self._runs.get(experiment.get("id", ""))
        if run is None:
            return
        experiment["state"] = {"status": run.status, "reason": run.reason}
        if full:
            for name, action in (experiment.get("actions") or {}).items():
                if name in run.actions:
                    action.pop("startTime", None)
                    action.pop("endTime", None)
                    action.update(run.actions[name].state())

    def _adopt(self, region: str, experiment_id: str) -> None:
        """Take an experiment moto just created (once; a repeated clientToken returns the same)."""
        if experiment_id in self._runs:
            return
        experiment = fis_backends[ACCOUNT_ID][region].experiments[experiment_id]
        experiment._transitions = []  # freeze moto's read-driven state machine; we drive it
        actions = {}
        for name, action in (experiment.actions or {}).items():
            params = action.get("parameters") or {}
            try:
                duration = self._clock.real_seconds(parse_iso_duration(params.get("duration", "")))
            except ValueError:
                duration = 0.0
            arns = [
                arn
                for target in (action.get("targets") or {}).values()
                for arn in self._resolve(region, experiment.targets.get(target) or {})
            ]
            actions[name] = _ActionRun(
                name, action.get("actionId", ""), duration, arns, list(action.get("startAfter") or [])
            )
        run = self._runs[experiment_id] = _Run(experiment_id, experiment, actions)
        self._set_status(run, "initiating", "Experiment is initiating.")

    @staticmethod
    def _resolve(region: str, target: dict[str, Any]) -> list[str]:
        """Resource ARNs a target selects: listed ARNs, or DynamoDB tables matching resourceTags."""
        arns = list(target.get("resourceArns") or [])
        tags = target.get("resourceTags") or {}
        if not arns and tags and target.get("resourceType") == GLOBAL_TABLE_TYPE:
            for table in list(dynamodb_backends[ACCOUNT_ID][region].tables.values()):
                have = {t.get("Key"): t.get("Value") for t in table.tags or []}
                if all(have.get(k) == v for k, v in tags.items()):
                    arns.append(table.table_arn)
        arns.sort()
        match = _SELECTION.match(target.get("selectionMode") or "ALL")
        if match and match.group(2):
            return arns[: int(match.group(2))]
        if match and match.group(3):
            return arns[: math.ceil(len(arns) * int(match.group(3)) / 100)]
        return arns

    # -- the experiment loop ---------------------------------------------------------------------

    def _advance(self) -> None:
        now = time.monotonic()
        with self._lock:
            for run in list(self._runs.values()):
                if run.status in _TERMINAL:
                    continue
                if run.stop_requested:
                    self._finish(run, "stopped", "Experiment stopped.")
                    continue
                if run.status == "initiating":
                    unsupported = [a for a in run.actions.values() if a.action_id not in SUPPORTED_ACTION_IDS]
                    if unsupported:
                        a = unsupported[0]
                        self._finish(
                            run,
                            "failed",
                            f"Action '{a.name}' ({a.action_id}) cannot be injected by the sandbox.",
                        )
                        continue
                    self._set_status(run, "running", "Experiment is running.")
                self._step(run, now)

    def _step(self, run: _Run, now: float) -> None:
        for action in run.actions.values():
            if action.status == "running" and action.inject and now >= (action.effective_at or now):
                while action.inject:
                    action.inject.pop(0)()
                self._truth.record("fis.pause_effective", id=run.id, action=action.name)
            if action.status == "running" and now >= action.ends_at:
                self._undo(action)
                action.status, action.reason, action.end_time = (
                    "completed",
                    "Action was completed.",
                    time.time(),
                )
        for action in run.actions.values():
            ready = all(run.actions[b].status == "completed" for b in action.start_after if b in run.actions)
            if action.status == "pending" and ready:
                failure = self._begin(run, action, now)
                if failure:
                    action.status, action.reason, action.end_time = "failed", failure, time.time()
                    self._finish(run, "failed", f"Action '{action.name}' failed: {failure}")
                    return
        if all(a.status == "completed" for a in run.actions.values()):
            self._finish(run, "completed", "Experiment completed.")

    def _begin(self, run: _Run, action: _ActionRun, now: float) -> str | None:
        """Inject the action's fault (registering its undo first); a failure reason, or None."""
        action.status, action.reason = "running", "Action is running."
        action.start_time, action.ends_at = time.time(), now + action.duration_s
        if action.action_id != PAUSE_REPLICATION:
            return None
        if not action.target_arns:
            return "Target resolution returned no resources."
        holder = f"fis:{run.id}:{action.name}"
        for arn in action.target_arns:
            region, name = self._table_of(arn)
            if region not in self._dynamodb.replica_regions(name):
                return f"{arn} is not a replica of a DynamoDB global table."
            action.undo.append(functools.partial(self._dynamodb.resume, name, region, holder=holder))
            action.inject.append(
                functools.partial(self._dynamodb.pause, name, region, holder=holder, outbound=True)
            )
        action.effective_at = now + self._pause_delay_s
        return None

    @staticmethod
    def _table_of(arn: str) -> tuple[str, str]:
        """(region, table name) from arn:aws:dynamodb:<region>:<account>:table/<name>."""
        parts = arn.split(":", 5)
        if len(parts) != 6 or parts[2] != "dynamodb" or not parts[5].startswith("table/"):
            return "", arn
        return parts[3], parts[5].split("/", 2)[1]

    @staticmethod
    def _undo(action: _ActionRun) -> None:
        while action.undo:
            action.undo.pop()()

    def _finish(self, run: _Run, status: str, reason: str) -> None:
        for action in run.actions.values():
            self._undo(action)
            if action.status == "running":
                action.status, action.reason, action.end_time = "stopped", "Action was stopped.", time.time()
            elif action.status == "pending":
                action.status, action.reason = "cancelled", "Action was cancelled."
        if status == "stopped" and run.status != "stopping":
            self._set_status(run, "stopping", "Experiment is stopping.")
        self._set_status(run, status, reason)

    def _set_status(self, run: _Run, status: str, reason: str) -> None:
        run.status, run.reason = status, reason
        run.experiment.status = status
        self._truth.record("fis.experiment", id=run.id, state=status, reason=reason)
