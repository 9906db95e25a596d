"""Tasks that inject a drill's fault, undo it, and sweep leftovers of drills that crashed.

Every fault first leaves a durable marker on the resource it is about to change (a tag or an
annotation carrying the drill id and the original value), then changes it. The undo restores
from that marker and removes it, so the same undo works in-process (finally / rollback) and
from the next drill's sweep after a hard kill. Undo is idempotent: running it twice is safe.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from typing import Protocol

from prefect import get_run_logger
from prefect import task
from prefect.cache_policies import NO_CACHE

from chalkdr.audit import AuditRecord
from chalkdr.classify import aws_call
from chalkdr.classify import classify_kube_error
from chalkdr.clients import AwsClients
from chalkdr.drill import Routing
from chalkdr.drill import Scenario
from chalkdr.errors import PermanentAwsError
from chalkdr.topology import RegionConfig
from chalkdr.topology import Topology
from tasks.audit import emit_audit_event

__all__ = ["Fault", "make_fault", "sweep_leftovers"]

DRILL_TAG = "chalk-dr:drill-id"
FAULT_TAG = "chalk-dr:fault"
MANAGED_TAG = "chalk-dr:managed"
ANNOTATION_DRILL = "chalk-dr/drill-id"
ANNOTATION_REPLICAS = "chalk-dr/original-replicas"
RUNNING_FIS_STATES = {"pending", "initiating", "running"}


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

    @property
    def target(self) -> str:
        return f"route53:healthcheck/{self.health_check_id}"

    def inject(self) -> None:
        r53 = self.clients.route53()
        with aws_call("route53", "ChangeTagsForResource", self.health_check_id):
            r53.change_tags_for_resource(
                ResourceType="healthcheck",
                ResourceId=self.health_check_id,
                AddTags=[{"Key": DRILL_TAG, "Value": self.drill_id}, {"Key": FAULT_TAG, "Value": "inverted"}],
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
        restored = _restore_health_check(self.clients, self.health_check_id)
        if restored:
            _audit("route53", "restore-health-check", self.target, self.region, "route53:UpdateHealthCheck")
        return restored


def _set_inverted(clients: AwsClients, health_check_id: str, inverted: bool) -> None:
    r53 = clients.route53()
    with aws_call("route53", "UpdateHealthCheck", health_check_id):
        version = r53.get_health_check(HealthCheckId=health_check_id)["HealthCheck"]["HealthCheckVersion"]
        r53.update_health_check(HealthCheckId=health_check_id, HealthCheckVersion=version, Inverted=inverted)


def _restore_health_check(clients: AwsClients, health_check_id: str) -> list[str]:
    r53 = clients.route53()
    restored = []
    with aws_call("route53", "GetHealthCheck", health_check_id):
        config = r53.get_health_check(HealthCheckId=health_check_id)["HealthCheck"]["HealthCheckConfig"]
    if config.get("Inverted"):
        _set_inverted(clients, health_check_id, False)
        restored.append(f"route53 health check {health_check_id}: Inverted reset to false")
    with aws_call("route53", "ChangeTagsForResource", health_check_id):
        r53.change_tags_for_resource(
            ResourceType="healthcheck", ResourceId=health_check_id, RemoveTagKeys=[DRILL_TAG, FAULT_TAG]
        )
    return restored


@dataclass
class ScaleQueryServersDown:
    """query-servers-down: the primary's query-server Deployment to 0; /healthz then fails."""

    clients: AwsClients
    region: RegionConfig
    drill_id: str
    scenario: Scenario = Scenario.QUERY_SERVERS_DOWN

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
                        "annotations": {ANNOTATION_DRILL: self.drill_id, ANNOTATION_REPLICAS: str(replicas)}
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
        return restored


def _restore_deployment(clients: AwsClients, region: RegionConfig) -> list[str]:
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
            {"metadata": {"annotations": {ANNOTATION_DRILL: None, ANNOTATION_REPLICAS: None}}},
            _request_timeout=kube.request_timeout,
        )
    except Exception as exc:
        raise classify_kube_error(exc, operation="restore", resource=resource) from exc
    return [
        f"deployment {resource}: replicas restored to {original} (drill {annotations.get(ANNOTATION_DRILL)})"
    ]


@dataclass
class FisExperiment:
    """fis-experiment / replication-paused: run an AWS FIS experiment; undo stops it."""

    clients: AwsClients
    region: str
    drill_id: str
    template_factory: Callable[[], str]  # returns the experiment template id (may create it)
    scenario: Scenario = Scenario.FIS_EXPERIMENT
    experiment_id: str | None = None

    @property
    def target(self) -> str:
        return f"fis:{self.region}/experiment/{self.experiment_id or 'pending'}"

    def inject(self) -> None:
        template_id = self.template_factory()
        fis = self.clients.fis(self.region)
        with aws_call("fis", "StartExperiment", template_id):
            exp = fis.start_experiment(
                experimentTemplateId=template_id,
                clientToken=f"{self.drill_id}-{template_id}"[:64],
                tags={DRILL_TAG: self.drill_id, MANAGED_TAG: "true"},
            )["experiment"]
        self.experiment_id = exp["id"]
        _audit(
            "fis", "start-experiment", self.target, self.region, "fis:StartExperiment", template=template_id
        )

    def undo(self) -> list[str]:
        if self.experiment_id is None:
            return []
        restored = _stop_experiment(self.clients, self.region, self.experiment_id)
        if restored:
            _audit("fis", "stop-experiment", self.target, self.region, "fis:StopExperiment")
        return restored


def _stop_experiment(clients: AwsClients, region: str, experiment_id: str) -> list[str]:
    fis = clients.fis(region)
    with aws_call("fis", "GetExperiment", experiment_id):
        state = fis.get_experiment(id=experiment_id)["experiment"]["state"]["status"]
    if state not in RUNNING_FIS_STATES:
        return []
    with aws_call("fis", "StopExperiment", experiment_id):
        fis.stop_experiment(id=experiment_id)
    return [f"FIS experiment {experiment_id} in {region}: stopped (was {state})"]


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
    with aws_call("fis", "CreateExperimentTemplate", "replication-paused"):
        tpl = clients.fis(primary.aws_region).create_experiment_template(
            clientToken=f"{drill_id}-pause"[:64],
            description=f"chalk-dr drill {drill_id}: pause global-table replication",
            roleArn=topology.fis_role_arn,
            stopConditions=[{"source": "none"}],
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
            tags={DRILL_TAG: drill_id, MANAGED_TAG: "true"},
        )["experimentTemplate"]
    return str(tpl["id"])


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
            lambda: _pause_replication_template(topology, clients, drill_id, duration_s),
            scenario=Scenario.REPLICATION_PAUSED,
        )
    if not fis_template_id:
        raise ValueError("scenario fis-experiment needs fis_experiment_template_id")
    template = fis_template_id
    return FisExperiment(clients, primary.aws_region, drill_id, lambda: template)


@task(name="inject-fault", cache_policy=NO_CACHE)
def inject_fault(fault: Fault) -> str:
    fault.inject()
    get_run_logger().info("fault %s injected on %s", fault.scenario.value, fault.target)
    return fault.target


@task(name="undo-fault", cache_policy=NO_CACHE)
def undo_fault(fault: Fault) -> list[str]:
    restored = fault.undo()
    get_run_logger().info(
        "fault %s undone: %s", fault.scenario.value, "; ".join(restored) or "nothing to restore"
    )
    return restored


@task(name="sweep-leftovers", cache_policy=NO_CACHE)
def sweep_leftovers(topology: Topology, clients: AwsClients, routing: Routing) -> list[str]:
    """Undo whatever an earlier, crashed drill left behind; returns what was restored."""
    restored: list[str] = []
    r53 = clients.route53()
    ids = [r.health_check_id for r in routing.routes.values() if r.health_check_id]
    for hc_id in ids:
        with aws_call("route53", "ListTagsForResource", hc_id):
            tags = r53.list_tags_for_resource(ResourceType="healthcheck", ResourceId=hc_id)["ResourceTagSet"][
                "Tags"
            ]
        with aws_call("route53", "GetHealthCheck", hc_id):
            inverted = r53.get_health_check(HealthCheckId=hc_id)["HealthCheck"]["HealthCheckConfig"].get(
                "Inverted"
            )
        if any(t["Key"] == DRILL_TAG for t in tags) or inverted:
            restored += _restore_health_check(clients, hc_id)
    for region in topology.regions:
        restored += _restore_deployment(clients, region)
        fis = clients.fis(region.aws_region)
        with aws_call("fis", "ListExperiments", region.aws_region):
            experiments = fis.list_experiments()["experiments"]
        for exp in experiments:
            if DRILL_TAG in (exp.get("tags") or {}) and exp["state"]["status"] in RUNNING_FIS_STATES:
                restored += _stop_experiment(clients, region.aws_region, exp["id"])
    for line in restored:
        get_run_logger().warning("swept: %s", line)
        _audit("drill", "sweep", line.split(":")[0], "-", "sweep", detail=json.dumps(line))
    return restored
