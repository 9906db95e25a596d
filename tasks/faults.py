"""Tasks that inject a drill's fault, undo it, and sweep leftovers of drills that crashed.

Every fault first leaves a durable marker on the resource it is about to change (a tag or an
annotation carrying the drill id, the flow run id and the original value), then changes it. The
undo restores from that marker and removes it, so the same undo works in-process (finally /
rollback) and from the next runbook's sweep after a hard kill. Undo is idempotent: running it
twice is safe, so it is retried on transient failures (throttling, 5xx, connection trouble) with
backoff; a permanent failure is raised and leaves the marker in place for the next sweep. The
sweep names the flow run each marker belongs to, and marks that run Crashed when it is dead but
still shown live (tasks/locks.py).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Protocol
from typing import TypeVar

from prefect import get_run_logger
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from chalkdr.audit import AuditRecord
from chalkdr.classify import aws_call
from chalkdr.classify import classify_kube_error
from chalkdr.clients import AwsClients
from chalkdr.drill import ALLOWED_FIS_ACTIONS
from chalkdr.drill import Routing
from chalkdr.drill import Scenario
from chalkdr.errors import ChalkDrError
from chalkdr.errors import PermanentAwsError
from chalkdr.errors import TransientAwsError
from chalkdr.errors import TransientKubeError
from chalkdr.plan import OWNER_TAG_KEY
from chalkdr.plan import RECOVERY_TAG
from chalkdr.plan import ownership_tags
from chalkdr.plan.alarms import dynamodb_lag_alarm_name
from chalkdr.settings import DEFAULT_RETRIES
from chalkdr.settings import RetrySettings
from chalkdr.topology import RegionConfig
from chalkdr.topology import Topology
from tasks.audit import emit_audit_event
from tasks.locks import crash_dead_runs

__all__ = [
    "Fault",
    "SweepIncomplete",
    "check_fis_template",
    "make_fault",
    "recoveries_in_effect",
    "sweep_leftovers",
    "undo_with_retries",
]

DRILL_TAG = "chalk-dr:drill-id"
FLOW_RUN_TAG = "chalk-dr:flow-run-id"
FAULT_TAG = "chalk-dr:fault"
MANAGED_TAG = "chalk-dr:managed"
ANNOTATION_DRILL = "chalk-dr/drill-id"
ANNOTATION_FLOW_RUN = "chalk-dr/flow-run-id"
ANNOTATION_REPLICAS = "chalk-dr/original-replicas"
RUNNING_FIS_STATES = {"pending", "initiating", "running"}
_T = TypeVar("_T")


class SweepIncomplete(ChalkDrError):
    """A sweep could not repair everything: what it repaired, and what it could not (each with its
    error). The markers of what it could not repair stay, so the next sweep tries again."""

    def __init__(self, repaired: Sequence[str], failures: Sequence[str]) -> None:
        self.repaired, self.failures = list(repaired), list(failures)
        done = "; ".join(self.repaired) or "nothing"
        super().__init__(
            f"sweep incomplete: could not repair {'; '.join(self.failures)} (markers kept for the next "
            f"sweep); repaired: {done}"
        )


@dataclass(frozen=True)
class Repaired:
    """One thing an undo or a sweep put back, and the flow run whose marker said it was changed."""

    line: str
    flow_run_id: str | None = None


def _owner(drill_id: str | None, flow_run_id: str | None) -> str:
    parts = [f"drill {drill_id}" if drill_id else "", f"flow run {flow_run_id}" if flow_run_id else ""]
    return " (" + ", ".join(p for p in parts if p) + ")" if any(parts) else ""


def undo_with_retries(what: str, undo: Callable[[], _T], *, settings: RetrySettings = DEFAULT_RETRIES) -> _T:
    """`undo()`, retried with the settings' backoff while it fails transiently; the last
    transient error, or the first permanent one, is raised. Only for idempotent undos."""
    delays = list(settings.task_retry_delays_s)[: settings.task_retries]
    attempt = 0
    while True:
        attempt += 1
        try:
            return undo()
        except (TransientAwsError, TransientKubeError) as exc:
            if attempt > len(delays):
                raise
            jitter = 1 + random.uniform(-settings.task_retry_jitter_factor, settings.task_retry_jitter_factor)
            delay = delays[attempt - 1] * jitter
            get_run_logger().warning(
                "%s failed transiently (attempt %d of %d), retrying in %.1f s: %s",
                what,
                attempt,
                len(delays) + 1,
                delay,
                exc,
            )
            time.sleep(delay)


class Fault(Protocol):
    @property
    def scenario(self) -> Scenario: ...

    @property
    def target(self) -> str:
        """The resource the fault touches."""
        ...

    def inject(self) -> None: ...

    def undo(self) -> list[str]: ...


def _audit(system: str, action: str, resource: str, region: str, api_call: str, **detail: Any) -> None:
    emit_audit_event(
        AuditRecord(
            system=system, action=action, resource=resource, region=region, api_call=api_call, detail=detail
        )
    )


@dataclass
class InvertHealthCheck:
    """health-check-inverted: Route 53 then reports the primary unhealthy while it still serves."""

    clients: AwsClients
    health_check_id: str
    region: str
    drill_id: str
    scenario: Scenario = Scenario.HEALTH_CHECK_INVERTED
    flow_run_id: str | None = field(default_factory=flow_run.get_id)  # the run the marker names

    @property
    def target(self) -> str:
        return f"route53:healthcheck/{self.health_check_id}"

    def inject(self) -> None:
        r53 = self.clients.route53()
        with aws_call("route53", "ChangeTagsForResource", self.health_check_id):
            r53.change_tags_for_resource(
                ResourceType="healthcheck",
                ResourceId=self.health_check_id,
                AddTags=[
                    {"Key": DRILL_TAG, "Value": self.drill_id},
                    {"Key": FAULT_TAG, "Value": "inverted"},
                    *([{"Key": FLOW_RUN_TAG, "Value": self.flow_run_id}] if self.flow_run_id else []),
                ],
            )
        _set_inverted(self.clients, self.health_check_id, True)
        _audit(
            "route53",
            "invert-health-check",
            self.target,
            self.region,
            "route53:UpdateHealthCheck",
            inverted=True,
        )

    def undo(self) -> list[str]:
        restored = _restore_health_check(self.clients, self.health_check_id, _owner(self.drill_id, None))
        if restored:
            _audit("route53", "restore-health-check", self.target, self.region, "route53:UpdateHealthCheck")
        return [r.line for r in restored]


def _set_inverted(clients: AwsClients, health_check_id: str, inverted: bool) -> None:
    r53 = clients.route53()
    with aws_call("route53", "UpdateHealthCheck", health_check_id):
        version = r53.get_health_check(HealthCheckId=health_check_id)["HealthCheck"]["HealthCheckVersion"]
        r53.update_health_check(HealthCheckId=health_check_id, HealthCheckVersion=version, Inverted=inverted)


def _restore_health_check(
    clients: AwsClients, health_check_id: str, owner: str = "", flow_run_id: str | None = None
) -> list[Repaired]:
    """Inverted back to false, then the marker removed (a failure in between keeps the marker)."""
    r53 = clients.route53()
    restored = []
    with aws_call("route53", "GetHealthCheck", health_check_id):
        config = r53.get_health_check(HealthCheckId=health_check_id)["HealthCheck"]["HealthCheckConfig"]
    if config.get("Inverted"):
        _set_inverted(clients, health_check_id, False)
        restored.append(
            Repaired(f"route53 health check {health_check_id}: Inverted reset to false{owner}", flow_run_id)
        )
    with aws_call("route53", "ChangeTagsForResource", health_check_id):
        r53.change_tags_for_resource(
            ResourceType="healthcheck",
            ResourceId=health_check_id,
            RemoveTagKeys=[DRILL_TAG, FAULT_TAG, FLOW_RUN_TAG],
        )
    return restored


@dataclass
class ScaleQueryServersDown:
    """query-servers-down: the primary's query-server Deployment to 0; /healthz then fails."""

    clients: AwsClients
    region: RegionConfig
    drill_id: str
    scenario: Scenario = Scenario.QUERY_SERVERS_DOWN
    flow_run_id: str | None = field(default_factory=flow_run.get_id)  # the run the marker names

    @property
    def target(self) -> str:
        e, region = self.region.eks, self.region.aws_region
        return f"eks:{region}/{e.cluster_name}/{e.namespace}/deployment/{e.query_server_deployment}"

    def inject(self) -> None:
        e = self.region.eks
        kube = self.clients.kube(e.cluster_name, self.region.aws_region)
        apps = kube.apps()
        try:
            dep = apps.read_namespaced_deployment(
                e.query_server_deployment, e.namespace, _request_timeout=kube.request_timeout
            )
            replicas = int(dep.spec.replicas or 0)
            annotations = dict(dep.metadata.annotations or {})
            if ANNOTATION_REPLICAS in annotations:  # an earlier drill's marker: keep its original value
                replicas = int(annotations[ANNOTATION_REPLICAS])
            apps.patch_namespaced_deployment(
                e.query_server_deployment,
                e.namespace,
                {
                    "metadata": {
                        "annotations": {
                            ANNOTATION_DRILL: self.drill_id,
                            ANNOTATION_FLOW_RUN: self.flow_run_id,
                            ANNOTATION_REPLICAS: str(replicas),
                        }
                    }
                },
                _request_timeout=kube.request_timeout,
            )
            apps.patch_namespaced_deployment_scale(
                e.query_server_deployment,
                e.namespace,
                {"spec": {"replicas": 0}},
                _request_timeout=kube.request_timeout,
            )
        except Exception as exc:
            raise classify_kube_error(exc, operation="scale", resource=self.target) from exc
        _audit(
            "eks", "scale-deployment", self.target, self.region.aws_region, "apps/v1:patch scale", replicas=0
        )

    def undo(self) -> list[str]:
        restored = _restore_deployment(self.clients, self.region)
        if restored:
            _audit("eks", "restore-deployment", self.target, self.region.aws_region, "apps/v1:patch scale")
        return [r.line for r in restored]


def _restore_deployment(clients: AwsClients, region: RegionConfig) -> list[Repaired]:
    """Replicas back to the marker's original count, then the marker removed."""
    e = region.eks
    kube = clients.kube(e.cluster_name, region.aws_region)
    apps = kube.apps()
    resource = f"{region.aws_region}/{e.namespace}/{e.query_server_deployment}"
    try:
        dep = apps.read_namespaced_deployment(
            e.query_server_deployment, e.namespace, _request_timeout=kube.request_timeout
        )
        annotations = dict(dep.metadata.annotations or {})
        if ANNOTATION_REPLICAS not in annotations:
            return []
        original = int(annotations[ANNOTATION_REPLICAS])
        if int(dep.spec.replicas or 0) != original:
            apps.patch_namespaced_deployment_scale(
                e.query_server_deployment,
                e.namespace,
                {"spec": {"replicas": original}},
                _request_timeout=kube.request_timeout,
            )
        apps.patch_namespaced_deployment(
            e.query_server_deployment,
            e.namespace,
            {
                "metadata": {
                    "annotations": {
                        ANNOTATION_DRILL: None,
                        ANNOTATION_FLOW_RUN: None,
                        ANNOTATION_REPLICAS: None,
                    }
                }
            },
            _request_timeout=kube.request_timeout,
        )
    except Exception as exc:
        raise classify_kube_error(exc, operation="restore", resource=resource) from exc
    owner = _owner(annotations.get(ANNOTATION_DRILL), annotations.get(ANNOTATION_FLOW_RUN))
    return [
        Repaired(
            f"deployment {resource}: replicas restored to {original}{owner}",
            annotations.get(ANNOTATION_FLOW_RUN),
        )
    ]


@dataclass
class FisExperiment:
    """fis-experiment / replication-paused: run an AWS FIS experiment; undo stops it, and deletes
    the template when the drill created it (replication-paused: one template per drill)."""

    clients: AwsClients
    region: str
    drill_id: str
    environment: str
    template_factory: Callable[[], str]  # returns the experiment template id (may create it)
    scenario: Scenario = Scenario.FIS_EXPERIMENT
    owns_template: bool = False  # the factory creates it: undo deletes it
    experiment_id: str | None = None
    template_id: str | None = None
    flow_run_id: str | None = field(default_factory=flow_run.get_id)  # the run the marker names

    @property
    def target(self) -> str:
        return f"fis:{self.region}/experiment/{self.experiment_id or 'pending'}"

    def inject(self) -> None:
        template_id = self.template_id = self.template_factory()
        fis = self.clients.fis(self.region)
        with aws_call("fis", "StartExperiment", template_id):
            exp = fis.start_experiment(
                experimentTemplateId=template_id,
                clientToken=f"{self.drill_id}-{template_id}"[:64],
                tags={
                    DRILL_TAG: self.drill_id,
                    **ownership_tags(self.environment),
                    **({FLOW_RUN_TAG: self.flow_run_id} if self.flow_run_id else {}),
                },
            )["experiment"]
        self.experiment_id = exp["id"]
        _audit(
            "fis", "start-experiment", self.target, self.region, "fis:StartExperiment", template=template_id
        )

    def undo(self) -> list[str]:
        restored: list[Repaired] = []
        if self.experiment_id is not None:
            restored = _stop_experiment(self.clients, self.region, self.experiment_id)
            if restored:
                _audit("fis", "stop-experiment", self.target, self.region, "fis:StopExperiment")
        if self.owns_template and self.template_id is not None:
            restored += _delete_template(self.clients, self.region, self.template_id)
        return [r.line for r in restored]


def _delete_template(clients: AwsClients, region: str, template_id: str) -> list[Repaired]:
    """Delete a template a drill created (idempotent: one already gone is fine)."""
    fis = clients.fis(region)
    try:
        with aws_call("fis", "DeleteExperimentTemplate", template_id):
            fis.delete_experiment_template(id=template_id)
    except PermanentAwsError as exc:
        if exc.code == "ResourceNotFoundException":
            return []
        raise
    _audit("fis", "delete-experiment-template", f"fis:{region}/template/{template_id}", region, "fis:Delete")
    return [Repaired(f"FIS experiment template {template_id} in {region}: deleted (created by a drill)")]


def _stop_experiment(clients: AwsClients, region: str, experiment_id: str) -> list[Repaired]:
    fis = clients.fis(region)
    with aws_call("fis", "GetExperiment", experiment_id):
        exp = fis.get_experiment(id=experiment_id)["experiment"]
    state = exp["state"]["status"]
    if state not in RUNNING_FIS_STATES:
        return []
    with aws_call("fis", "StopExperiment", experiment_id):
        fis.stop_experiment(id=experiment_id)
    tags = exp.get("tags") or {}
    owner = _owner(tags.get(DRILL_TAG), tags.get(FLOW_RUN_TAG))
    return [
        Repaired(
            f"FIS experiment {experiment_id} in {region}: stopped (was {state}){owner}",
            tags.get(FLOW_RUN_TAG),
        )
    ]


def _pause_replication_template(
    topology: Topology, clients: AwsClients, drill_id: str, duration_s: float
) -> str:
    """An FIS template pausing global-table replication of the primary's online-store tables."""
    primary = topology.primary
    if topology.fis_role_arn is None:
        raise PermanentAwsError(
            service="fis",
            operation="CreateExperimentTemplate",
            resource="replication-paused",
            code="MissingRole",
            message="topology.fis_role_arn is required for the replication-paused scenario",
        )
    ddb = clients.dynamodb(primary.aws_region)
    arns = []
    for table in primary.online_store_tables:
        with aws_call("dynamodb", "DescribeTable", table):
            arns.append(ddb.describe_table(TableName=table)["Table"]["TableArn"])
    minutes = max(1, int(duration_s // 60) + 1)
    stop_alarms = _pause_stop_alarms(topology, clients)
    with aws_call("fis", "CreateExperimentTemplate", "replication-paused"):
        tpl = clients.fis(primary.aws_region).create_experiment_template(
            clientToken=f"{drill_id}-pause"[:64],
            description=f"chalk-dr drill {drill_id}: pause global-table replication",
            roleArn=topology.fis_role_arn,
            stopConditions=[{"source": "aws:cloudwatch:alarm", "value": arn} for arn in stop_alarms],
            targets={
                "tables": {
                    "resourceType": "aws:dynamodb:global-table",
                    "resourceArns": arns,
                    "selectionMode": "ALL",
                }
            },
            actions={
                "pause": {
                    "actionId": "aws:dynamodb:global-table-pause-replication",
                    "parameters": {"duration": f"PT{minutes}M"},
                    "targets": {"Tables": "tables"},
                }
            },
            tags={DRILL_TAG: drill_id, **ownership_tags(topology.environment)},
        )["experimentTemplate"]
    return str(tpl["id"])


def _pause_stop_alarms(topology: Topology, clients: AwsClients) -> list[str]:
    """The stop conditions of a pause chalk-dr creates: the replication-latency alarms provision
    keeps on the paused direction (primary -> each secondary, at the topology's lag guard). The
    pause may hold writes back only until that guard has been exceeded for the alarm's periods;
    then FIS ends it (an alarm in ALARM stops the experiment: FIS user guide, "Stop conditions").
    Missing or unowned alarms refuse the scenario: run provision first."""
    env, primary = topology.environment, topology.primary.aws_region
    names = [
        dynamodb_lag_alarm_name(env, table, primary, receiver.aws_region)
        for table in topology.primary.online_store_tables
        for receiver in topology.secondaries
    ]
    cw = clients.cloudwatch(primary)
    with aws_call("cloudwatch", "DescribeAlarms", primary):
        found = {a["AlarmName"]: a["AlarmArn"] for a in cw.describe_alarms(AlarmNames=names)["MetricAlarms"]}
    owned: dict[str, str] = {}
    for name, arn in found.items():
        with aws_call("cloudwatch", "ListTagsForResource", name):
            tags = {t["Key"]: t["Value"] for t in cw.list_tags_for_resource(ResourceARN=arn)["Tags"]}
        if tags.get(OWNER_TAG_KEY) == env:
            owned[name] = arn
    missing = [n for n in names if n not in owned]
    if missing:
        raise PermanentAwsError(
            service="fis",
            operation="CreateExperimentTemplate",
            resource="replication-paused",
            code="MissingStopCondition",
            message=(
                f"no replication-latency alarm of {env} to stop the pause on: {', '.join(missing)} "
                "(missing, or not tagged for the environment): run provision first"
            ),
        )
    return [owned[n] for n in names]


def check_fis_template(topology: Topology, clients: AwsClients, template_id: str) -> list[str]:
    """Why an operator's FIS template may not run in a drill of `topology` (empty: it may).

    Accepted only when it is tagged for chalk-dr and this environment (`chalk-dr:managed=true`,
    `chalk-dr:environment=<env>`: someone decided it is a drill of this environment) and every
    action is on ALLOWED_FIS_ACTIONS (faults that end when the experiment is stopped).
    """
    region = topology.primary.aws_region
    fis = clients.fis(region)
    with aws_call("fis", "GetExperimentTemplate", template_id):
        tpl = fis.get_experiment_template(id=template_id)["experimentTemplate"]
    problems = []
    tags = tpl.get("tags") or {}
    if tags.get(MANAGED_TAG) != "true" or tags.get(OWNER_TAG_KEY) != topology.environment:
        problems.append(
            f"FIS template {template_id} in {region} is not tagged for chalk-dr and {topology.environment} "
            f"({MANAGED_TAG}=true, {OWNER_TAG_KEY}={topology.environment}): a drill runs only templates "
            "marked for its environment"
        )
    refused = sorted(
        {a.get("actionId", "?") for a in (tpl.get("actions") or {}).values()} - ALLOWED_FIS_ACTIONS
    )
    if refused:
        problems.append(
            f"FIS template {template_id} in {region} runs actions a drill may not run: {', '.join(refused)} "
            "(allowed: faults that end when the experiment is stopped; chalkdr.drill.ALLOWED_FIS_ACTIONS)"
        )
    return problems


def make_fault(
    scenario: Scenario,
    *,
    topology: Topology,
    clients: AwsClients,
    routing: Routing,
    drill_id: str,
    fis_template_id: str | None,
    duration_s: float,
) -> Fault:
    primary = topology.primary
    if scenario is Scenario.HEALTH_CHECK_INVERTED:
        route = routing.routes.get(primary.aws_region)
        if route is None or route.health_check_id is None:
            raise ValueError(
                f"no health check guards {primary.aws_region}'s failover record: run provision first"
            )
        return InvertHealthCheck(clients, route.health_check_id, primary.aws_region, drill_id)
    if scenario is Scenario.QUERY_SERVERS_DOWN:
        return ScaleQueryServersDown(clients, primary, drill_id)
    if scenario is Scenario.REPLICATION_PAUSED:
        return FisExperiment(
            clients,
            primary.aws_region,
            drill_id,
            topology.environment,
            lambda: _pause_replication_template(topology, clients, drill_id, duration_s),
            scenario=Scenario.REPLICATION_PAUSED,
            owns_template=True,
        )
    if not fis_template_id:
        raise ValueError("scenario fis-experiment needs fis_experiment_template_id")
    template = fis_template_id
    return FisExperiment(clients, primary.aws_region, drill_id, topology.environment, lambda: template)


@task(name="inject-fault", cache_policy=NO_CACHE)
def inject_fault(fault: Fault) -> str:
    fault.inject()
    get_run_logger().info("fault %s injected on %s", fault.scenario.value, fault.target)
    return fault.target


@task(name="undo-fault", cache_policy=NO_CACHE)
def undo_fault(fault: Fault) -> list[str]:
    """Undo the fault, retrying transient failures with backoff (in the task body, not with task
    retries, so a retry never rolls back an enclosing transaction: PREFECT-NOTES.md). A permanent
    failure is raised, and the fault's marker stays for the next sweep."""
    logger = get_run_logger()
    try:
        restored = undo_with_retries(f"undo of {fault.scenario.value} on {fault.target}", fault.undo)
    except Exception:
        logger.exception(
            "undo of %s on %s failed: its marker stays, and the next sweep (the sweep flow runs hourly "
            "and when a drill fails) repairs it",
            fault.scenario.value,
            fault.target,
        )
        raise
    logger.info("fault %s undone: %s", fault.scenario.value, "; ".join(restored) or "nothing to restore")
    return restored


@task(name="sweep-leftovers", cache_policy=NO_CACHE)
def sweep_leftovers(topology: Topology, clients: AwsClients, routing: Routing) -> list[str]:
    """Undo whatever an earlier, crashed runbook left behind, and mark the dead runs Crashed.

    Returns what was restored, then one line per run marked (or found ended already). Every
    repair is retried on transient failures; when one still fails, the others are repaired all
    the same and SweepIncomplete is raised naming it (its marker stays for the next sweep).
    """
    logger = get_run_logger()
    restored: list[Repaired] = []
    failures: list[str] = []

    def attempt(what: str, repair: Callable[[], list[Repaired]]) -> None:
        try:
            restored.extend(undo_with_retries(f"sweep of {what}", repair))
        except Exception as exc:  # noqa: BLE001 - one failed repair must not stop the others; all are reported
            logger.error("sweep of %s failed: %s", what, exc)
            failures.append(f"{what}: {exc}")

    for hc_id in [r.health_check_id for r in routing.routes.values() if r.health_check_id]:
        attempt(f"route53 health check {hc_id}", lambda hc_id=hc_id: _sweep_health_check(clients, hc_id))
    for region in topology.regions:
        e = region.eks
        attempt(
            f"deployment {region.aws_region}/{e.namespace}/{e.query_server_deployment}",
            lambda region=region: _restore_deployment(clients, region),
        )
        attempt(
            f"FIS experiments in {region.aws_region}",
            lambda region=region: _sweep_experiments(clients, region.aws_region, topology.environment),
        )
    for r in restored:
        logger.warning("swept: %s", r.line)
        _audit("drill", "sweep", r.line.split(":")[0], "-", "sweep", detail=json.dumps(r.line))
    by_run: dict[str, list[str]] = {}
    for r in restored:
        if r.flow_run_id:
            by_run.setdefault(r.flow_run_id, []).append(r.line)
    lines = [r.line for r in restored] + crash_dead_runs(topology.environment, by_run)
    if failures:
        raise SweepIncomplete(lines, failures)
    return lines


def _sweep_health_check(clients: AwsClients, hc_id: str) -> list[Repaired]:
    r53 = clients.route53()
    with aws_call("route53", "ListTagsForResource", hc_id):
        tags = {
            t["Key"]: t["Value"]
            for t in r53.list_tags_for_resource(ResourceType="healthcheck", ResourceId=hc_id)[
                "ResourceTagSet"
            ]["Tags"]
        }
    with aws_call("route53", "GetHealthCheck", hc_id):
        inverted = r53.get_health_check(HealthCheckId=hc_id)["HealthCheck"]["HealthCheckConfig"].get(
            "Inverted"
        )
    if DRILL_TAG not in tags and not inverted:
        return []
    if RECOVERY_TAG in tags and DRILL_TAG not in tags:
        # A failover's inversion: the incident's decision, undone by its failback, not by a sweep.
        get_run_logger().info(
            "health check %s is inverted by recovery %s: left to its failback", hc_id, tags[RECOVERY_TAG]
        )
        return []
    owner = _owner(tags.get(DRILL_TAG), tags.get(FLOW_RUN_TAG))
    return _restore_health_check(clients, hc_id, owner, tags.get(FLOW_RUN_TAG))


def _pages(clients: AwsClients, region: str, operation: str, key: str) -> list[dict[str, Any]]:
    """Every item of a paginated FIS list call, through botocore's paginator (nextToken)."""
    paginator = clients.fis(region).get_paginator(
        "list_experiments" if operation == "ListExperiments" else "list_experiment_templates"
    )
    with aws_call("fis", operation, region):
        return [item for page in paginator.paginate(PaginationConfig={"PageSize": 100}) for item in page[key]]


def _ours(tags: dict[str, str] | None, environment: str) -> bool:
    """Started or created by a drill of this environment (other environments' are not ours)."""
    tags = tags or {}
    return DRILL_TAG in tags and tags.get(OWNER_TAG_KEY) == environment


def recoveries_in_effect(clients: AwsClients, routing: Routing) -> list[str]:
    """The health checks a failover inverted and no failback has restored yet, one line each:
    a drill refuses to run while one is in effect (it would rehearse on a layout mid-incident)."""
    r53 = clients.route53()
    found = []
    for region, route in sorted(routing.routes.items()):
        if route.health_check_id is None:
            continue
        with aws_call("route53", "ListTagsForResource", route.health_check_id):
            tags = r53.list_tags_for_resource(ResourceType="healthcheck", ResourceId=route.health_check_id)[
                "ResourceTagSet"
            ]["Tags"]
        recovery = next((t["Value"] for t in tags if t["Key"] == RECOVERY_TAG), None)
        if recovery is not None:
            found.append(
                f"recovery {recovery} is in effect: the health check of {region} "
                f"({route.health_check_id}) is inverted by it; fail back first"
            )
    return found


def _sweep_experiments(clients: AwsClients, region: str, environment: str) -> list[Repaired]:
    """Stop this environment's drill experiments still running, then delete the templates its
    drills created that no running experiment uses. Every page is read."""
    experiments = _pages(clients, region, "ListExperiments", "experiments")
    restored: list[Repaired] = []
    for exp in experiments:
        if _ours(exp.get("tags"), environment) and exp["state"]["status"] in RUNNING_FIS_STATES:
            restored += _stop_experiment(clients, region, exp["id"])
    in_use = {
        e.get("experimentTemplateId")
        for e in _pages(clients, region, "ListExperiments", "experiments")
        if e["state"]["status"] in RUNNING_FIS_STATES
    }
    for tpl in _pages(clients, region, "ListExperimentTemplates", "experimentTemplates"):
        if _ours(tpl.get("tags"), environment) and tpl["id"] not in in_use:
            restored += _delete_template(clients, region, tpl["id"])
    return restored
