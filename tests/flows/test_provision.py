"""The provision flow end to end against a freshly started sandbox world (issue 4's done-when list).

Everything is checked by reading AWS back with plain boto3, never with chalk-dr's own readers.
AWS calls are counted, and faults injected, with botocore event hooks registered on every client
the flow's AwsClients makes (`AwsClients(event_hooks=...)`, passed as the flow's `clients`):
`before-call` sees every API call; a `before-send` handler that returns a response stands in for
the HTTP exchange, so botocore's own retry logic decides what happens next, exactly as with a
real throttle or a real AccessDenied.
"""

from __future__ import annotations

import copy
import io
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.awsrequest import AWSResponse
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter
from prefect.client.schemas.filters import ArtifactFilterKey
from prefect.client.schemas.filters import FlowRunFilter
from prefect.client.schemas.filters import FlowRunFilterState
from prefect.events.filters import EventFilter
from prefect.events.filters import EventNameFilter
from prefect.events.filters import EventRelatedFilter
from prefect.flow_runs import resume_flow_run
from prefect.states import State

from chalkdr.clients import AwsClients
from chalkdr.plan import Action
from chalkdr.plan import ResourceKind
from flows.provision import ProvisionReport
from flows.provision import provision
from sandbox.harness import poll

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_backend"), pytest.mark.timeout(300)]

EAST, WEST = "us-east-1", "us-west-2"
TABLE = "chalk-online-store"
READ_PREFIXES = ("Describe", "List", "Get", "Test")


class World:
    """A sandbox world in its own process, reached through its env file and topology only."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.topology_path = state_dir / "topology.yaml"
        env_lines = (state_dir / "sandbox.env").read_text().splitlines()
        self.env = dict(line.split("=", 1) for line in env_lines if "=" in line)
        self.topology: dict[str, Any] = yaml.safe_load(self.topology_path.read_text())

    def aws(self, service: str, region: str = EAST) -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    @property
    def env_name(self) -> str:
        return str(self.topology["environment"])

    @property
    def zone_id(self) -> str:
        return str(self.topology["route53"]["hosted_zone_id"])


@contextmanager
def started_world(state_dir: Path) -> Iterator[World]:
    """A sandbox world of our own (not the session's shared one), in its own process."""
    subprocess.run(
        [sys.executable, "-m", "sandbox", "up", "--state-dir", str(state_dir)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield World(state_dir)
    finally:
        subprocess.run(
            [sys.executable, "-m", "sandbox", "down", "--state-dir", str(state_dir)], check=False, timeout=60
        )


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A freshly started world for this test alone: nothing of ours exists in it yet."""
    with started_world(tmp_path / "world") as world:
        for key, value in world.env.items():
            monkeypatch.setenv(key, value)
        yield world


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with started_world(tmp_path_factory.mktemp("provision-world")) as world:
        yield world


@pytest.fixture
def converged(shared_world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    """The module's world, brought to the topology by an apply first: whatever an earlier test
    left behind (drift, another routing policy) is repaired before this one starts."""
    for key, value in shared_world.env.items():
        monkeypatch.setenv(key, value)
    state = provision(
        topology=str(shared_world.topology_path), mode="apply", require_approval=False, return_state=True
    )
    assert state.is_completed(), state.message
    assert report_of(state).verified
    return shared_world


class Calls:
    """Every AWS API call the flow makes, seen by a botocore `before-call` hook."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[str] = []

    def __call__(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls.append(f"{model.service_model.service_name}:{model.name}")

    @property
    def mutating(self) -> list[str]:
        return [c for c in self.calls if not c.split(":", 1)[1].startswith(READ_PREFIXES)]


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = io.BytesIO(body)

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield self._body.read()


def dynamodb_error(code: str, *, times: int) -> tuple[Callable[..., AWSResponse | None], list[str]]:
    """A `before-send` handler answering the next `times` calls with a DynamoDB error, as AWS does."""
    seen: list[str] = []

    def handler(request: Any, **_: Any) -> AWSResponse | None:
        seen.append(request.url)
        if len(seen) > times:
            return None
        body = f'{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"injected {code}"}}'
        return AWSResponse(
            request.url, 400, {"content-type": "application/x-amz-json-1.0"}, _Raw(body.encode())
        )

    return handler, seen


def run(
    world: World,
    *,
    mode: str = "apply",
    topology: Any = None,
    hooks: list[tuple[str, Any]] | None = None,
    require_approval: bool = False,
) -> tuple[State[Any], Calls]:
    calls = Calls()
    clients = AwsClients(event_hooks=[("before-call", calls), *(hooks or [])])
    state = provision(
        topology=topology if topology is not None else str(world.topology_path),
        mode=mode,
        require_approval=require_approval,
        clients=clients,
        return_state=True,
    )
    return state, calls


def report_of(state: State[Any]) -> ProvisionReport:
    report = state.result(raise_on_failure=False)
    assert isinstance(report, ProvisionReport)
    return report


def drop_replica(world: World, region: str = WEST) -> None:
    """Delete a replica out of band and wait until the table no longer lists it."""
    ddb = world.aws("dynamodb", EAST)
    listed = {r["RegionName"] for r in ddb.describe_table(TableName=TABLE)["Table"].get("Replicas", [])}
    if region in listed:
        poll(lambda: ddb.describe_table(TableName=TABLE)["Table"]["TableStatus"] == "ACTIVE", timeout=20)
        ddb.update_table(TableName=TABLE, ReplicaUpdates=[{"Delete": {"RegionName": region}}])
    poll(
        lambda: (
            region
            not in {r["RegionName"] for r in ddb.describe_table(TableName=TABLE)["Table"].get("Replicas", [])}
            and ddb.describe_table(TableName=TABLE)["Table"]["TableStatus"] == "ACTIVE"
        ),
        timeout=20,
        what="the replica to be gone",
    )


def artifact(key: str) -> Any:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=50
        )
    assert found, f"no artifact {key}"
    return max(found, key=lambda a: a.created)


def events(flow_run_id: Any, prefix: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(
                event=EventNameFilter(prefix=[prefix]),
                related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
            ),
            limit=50,
        )
    return list(page.events)


def failover_records(world: World) -> dict[str, dict[str, Any]]:
    sets = world.aws("route53").list_resource_record_sets(HostedZoneId=world.zone_id)["ResourceRecordSets"]
    return {s["SetIdentifier"]: s for s in sets if s["Name"] == "chalk-failover.example.com."}


def health_check(world: World, region: str) -> dict[str, Any]:
    checks = world.aws("route53").list_health_checks()["HealthChecks"]
    prefix = f"chalkdr-{world.env_name}-{region}-"
    (check,) = [c for c in checks if c["CallerReference"].startswith(prefix)]
    return dict(check)


# -- the done-when list, in the order a fresh world goes through it ----------------------------


def test_plan_mode_makes_no_mutating_calls(fresh: World) -> None:
    world = fresh
    state, calls = run(world, mode="plan")
    # A fresh world is all drift: the plan run fails (the hourly check alerts) with the plan as reason.
    assert state.is_failed() and state.message.startswith(f"drift in {world.env_name}: "), state.message
    report = report_of(state)
    assert report.outcome == "drift" and report.applied == []
    assert calls.calls and calls.mutating == []
    # 14 resources, and the ownership TXT record of each of the three names
    assert report.plan.count(Action.CREATE) == 17 and report.plan.errors == ()
    md = artifact(f"provision-plan-{world.env_name}")
    assert "Expected failover time: 10 s x 2 + 60 s TTL = 80 s (RTO SLO 120 s)" in md.data
    assert artifact(f"provision-plan-table-{world.env_name}").type == "table"


def test_access_denied_fails_fast_and_stops_only_what_depends_on_it(fresh: World) -> None:
    world = fresh  # the DynamoDB stage has the secondary's replica to add
    handler, seen = dynamodb_error("AccessDeniedException", times=1)
    state, calls = run(world, hooks=[("before-send.dynamodb.UpdateTable", handler)])
    assert state.is_failed()
    assert f"dynamodb:UpdateTable on {EAST}/{TABLE} +replica {WEST} failed: AccessDeniedException" in str(
        state.message
    )
    assert len(seen) == 1  # permanent: not retried
    assert calls.mutating.count("dynamodb:UpdateTable") == 1
    assert "dynamodb:TagResource" not in calls.mutating
    # The alarms watch the replica's metrics: that stage never starts. Stages that do not depend
    # on DynamoDB (Route 53, MSK, Aurora) run to the end, in their own order.
    assert not [c for c in calls.mutating if c.startswith("cloudwatch:")], calls.mutating
    for call in ("kafka:CreateReplicator", "rds:CreateGlobalCluster", "rds:CreateDBCluster"):
        assert call in calls.mutating
    r53 = [c for c in calls.mutating if c.startswith("route53:")]
    checks = [i for i, c in enumerate(r53) if c == "route53:CreateHealthCheck"]
    writes = [i for i, c in enumerate(r53) if c == "route53:ChangeResourceRecordSets"]
    # the regional names (one batch each) before the checks that probe them, the failover name's
    # batch, whose records carry the checks, after every check
    assert [i for i in writes if i < min(checks)] == writes[:2]
    assert writes[2:] and min(writes[2:]) > max(checks)
    assert calls.mutating.index("rds:CreateDBCluster") > calls.mutating.index("rds:CreateGlobalCluster")
    replicas = world.aws("dynamodb", EAST).describe_table(TableName=TABLE)["Table"].get("Replicas", [])
    assert WEST not in {r["RegionName"] for r in replicas}


def test_apply_creates_everything_and_retries_a_throttle(fresh: World) -> None:
    world = fresh
    handler, seen = dynamodb_error("ThrottlingException", times=1)
    state, calls = run(world, hooks=[("before-send.dynamodb.UpdateTable", handler)])
    assert state.is_completed(), state.message
    report = report_of(state)
    assert report.outcome == "applied" and report.verified
    assert len(seen) == 2  # throttled once, retried by botocore, then through
    # One audit row per change made: a name's records (PRIMARY and SECONDARY) and its ownership
    # TXT record share one atomic batch (one call): 7 rows for 3 calls.
    made = Counter(calls.mutating)
    assert Counter(a.api_call for a in report.audit) == made + Counter(
        {"route53:ChangeResourceRecordSets": 4}
    )
    assert made["route53:ChangeResourceRecordSets"] == 3  # the failover name, two regional names

    # Route 53: one check per region on its regional hostname (sent as Host and SNI, which the
    # ALB's host rules and certificate need), with the topology's settings, tagged
    hc = world.topology["route53"]["health_check"]
    regions = {r["aws_region"]: r for r in world.topology["regions"]}
    for region in (EAST, WEST):
        check = health_check(world, region)
        cfg = check["HealthCheckConfig"]
        assert (cfg["Type"], cfg["Port"], cfg["ResourcePath"]) == (hc["protocol"], hc["port"], hc["path"])
        assert (cfg["RequestInterval"], cfg["FailureThreshold"]) == (
            hc["request_interval"],
            hc["failure_threshold"],
        )
        assert sorted(cfg["Regions"]) == sorted(hc["regions"])
        assert cfg["FullyQualifiedDomainName"] == regions[region]["query_hostname"]
        assert "IPAddress" not in cfg  # Route 53 resolves the name itself, as the clients do
        tags = world.aws("route53").list_tags_for_resource(ResourceType="healthcheck", ResourceId=check["Id"])
        assert {"Key": "chalk-dr:managed", "Value": "true"} in tags["ResourceTagSet"]["Tags"]
        assert {"Key": "chalk-dr:environment", "Value": world.env_name} in tags["ResourceTagSet"]["Tags"]
    # failover alias records, PRIMARY/SECONDARY, unique SetIdentifiers, each with its check
    records = failover_records(world)
    assert {k: v["Failover"] for k, v in records.items()} == {
        f"{world.env_name}-{EAST}": "PRIMARY",
        f"{world.env_name}-{WEST}": "SECONDARY",
    }
    for region in (EAST, WEST):
        rec = records[f"{world.env_name}-{region}"]
        assert rec["HealthCheckId"] == health_check(world, region)["Id"]
        assert rec["AliasTarget"]["EvaluateTargetHealth"] is False
    sets = world.aws("route53").list_resource_record_sets(HostedZoneId=world.zone_id)["ResourceRecordSets"]
    regional = {s["Name"] for s in sets if s["Name"].endswith(".query.example.com.") and "AliasTarget" in s}
    assert regional == {"demo-east.query.example.com.", "demo-west.query.example.com."}
    # ...each name with its ownership TXT record beside it (external-dns's registry format)
    owners = {s["Name"]: s["ResourceRecords"] for s in sets if s["Type"] == "TXT"}
    assert owners == {
        f"_chalk-dr-a.{name}": [{"Value": f'"heritage=chalk-dr,chalk-dr/owner={world.env_name}"'}]
        for name in ("chalk-failover.example.com.", *regional)
    }
    # DynamoDB: the replica exists, ACTIVE, encrypted with its own region's key, and tagged
    west_table = world.aws("dynamodb", WEST).describe_table(TableName=TABLE)["Table"]
    assert west_table["TableStatus"] == "ACTIVE"
    assert west_table["SSEDescription"]["KMSMasterKeyArn"] == regions[WEST]["online_store_kms_key"]
    west_tags = world.aws("dynamodb", WEST).list_tags_of_resource(ResourceArn=west_table["TableArn"])["Tags"]
    assert {"Key": "chalk-dr:environment", "Value": world.env_name} in west_tags
    # MSK Replicator in the target region, RUNNING, with offset sync
    kafka = world.aws("kafka", WEST)
    (summary,) = kafka.list_replicators(ReplicatorNameFilter=world.topology["msk"]["replicator_name"])[
        "Replicators"
    ]
    rep = kafka.describe_replicator(ReplicatorArn=summary["ReplicatorArn"])
    assert rep["ReplicatorState"] == "RUNNING"
    info = rep["ReplicationInfoList"][0]
    assert info["TopicReplication"]["TopicsToReplicate"] == world.topology["msk"]["topics"]
    assert info["ConsumerGroupReplication"]["SynchroniseConsumerGroupOffsets"] is True
    assert rep["Tags"]["chalk-dr:environment"] == world.env_name
    # Aurora: the global cluster, the primary's cluster the writer, the secondary a member
    gid = world.topology["aurora"]["global_cluster_id"]
    (gc,) = world.aws("rds", EAST).describe_global_clusters(GlobalClusterIdentifier=gid)["GlobalClusters"]
    members = {m["DBClusterArn"].rsplit(":", 1)[-1]: m["IsWriter"] for m in gc["GlobalClusterMembers"]}
    assert members == {"chalk-meta-east": True, "chalk-meta-west": False}
    # ...in the secondary's VPC with its region's key, and with an instance, so it can serve
    west_aurora = regions[WEST]["aurora"]
    (secondary,) = world.aws("rds", WEST).describe_db_clusters(DBClusterIdentifier="chalk-meta-west")[
        "DBClusters"
    ]
    assert secondary["DBSubnetGroup"] == west_aurora["subnet_group"]
    assert secondary["KmsKeyId"] == west_aurora["kms_key_id"]
    (member,) = secondary["DBClusterMembers"]
    (instance,) = world.aws("rds", WEST).describe_db_instances(
        DBInstanceIdentifier=member["DBInstanceIdentifier"]
    )["DBInstances"]
    assert instance["DBInstanceClass"] == west_aurora["instance_class"]
    # CloudWatch: five lag alarms with the guards' thresholds, prefixed and tagged
    alarms = {
        a["AlarmName"]: a
        for region in (EAST, WEST)
        for a in world.aws("cloudwatch", region).describe_alarms(
            AlarmNamePrefix=f"chalkdr-{world.env_name}-"
        )["MetricAlarms"]
    }
    assert len(alarms) == 5
    aurora = alarms[f"chalkdr-{world.env_name}-aurora-chalk-meta-west-replication-lag"]
    assert aurora["MetricName"] == "AuroraGlobalDBReplicationLag" and aurora["Threshold"] == 5000
    assert {d["Name"]: d["Value"] for d in aurora["Dimensions"]} == {
        "DBClusterIdentifier": "chalk-meta-west",
        "SourceRegion": EAST,
    }
    # every alarm notifies its own region's SNS topic
    for a in alarms.values():
        region = a["AlarmArn"].split(":")[3]
        assert a["AlarmActions"] == [regions[region]["alarm_topic_arn"]], a["AlarmName"]
    tags = world.aws("cloudwatch", WEST).list_tags_for_resource(ResourceARN=aurora["AlarmArn"])["Tags"]
    assert {"Key": "chalk-dr:managed", "Value": "true"} in tags
    assert {"Key": "chalk-dr:environment", "Value": world.env_name} in tags
    # Evidence: the audit table lists every mutating call
    audit = artifact(f"provision-audit-{world.env_name}")
    assert audit.type == "table" and f"{len(report.audit)} change(s) made" in (audit.description or "")


def test_second_apply_is_a_noop_with_zero_mutating_calls(converged: World) -> None:
    world = converged
    state, calls = run(world)
    assert state.is_completed(), state.message
    report = report_of(state)
    assert report.outcome == "in-sync" and report.plan.empty and report.applied == []
    assert calls.calls and calls.mutating == []
    assert "0 change(s) made" in (artifact(f"provision-audit-{world.env_name}").description or "")
    # ...and the hourly drift check over a converged world is green.
    state, calls = run(world, mode="plan")
    assert state.is_completed(), state.message
    assert report_of(state).outcome == "in-sync" and calls.mutating == []


def test_out_of_band_drift_shows_as_updates_and_is_repaired(converged: World) -> None:
    world = converged
    east_check = health_check(world, EAST)
    world.aws("route53").update_health_check(HealthCheckId=east_check["Id"], FailureThreshold=7)
    drop_replica(world)
    primary = failover_records(world)[f"{world.env_name}-{EAST}"]
    west_alb = failover_records(world)[f"{world.env_name}-{WEST}"]["AliasTarget"]
    primary["AliasTarget"] = west_alb
    world.aws("route53").change_resource_record_sets(
        HostedZoneId=world.zone_id,
        ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": primary}]},
    )

    state, calls = run(world, mode="plan")
    assert state.is_failed() and "drift" in (state.message or "")
    plan = report_of(state).plan
    assert calls.mutating == []
    assert {(c.kind, c.action) for c in plan.pending} == {
        (ResourceKind.HEALTH_CHECK, Action.UPDATE),
        (ResourceKind.GLOBAL_TABLE, Action.UPDATE),
        (ResourceKind.RECORD, Action.UPDATE),
    }
    by_kind = {c.kind: {d.field: (d.old, d.new) for d in c.diffs} for c in plan.pending}
    assert by_kind[ResourceKind.HEALTH_CHECK] == {"failure_threshold": (7, 2)}
    assert by_kind[ResourceKind.GLOBAL_TABLE] == {"replica_regions": ([EAST], [EAST, WEST])}
    assert "alias_target" in by_kind[ResourceKind.RECORD]

    state, calls = run(world)
    assert state.is_completed(), state.message
    assert report_of(state).verified
    assert sorted(calls.mutating) == [
        "dynamodb:TagResource",
        "dynamodb:UpdateTable",
        "route53:ChangeResourceRecordSets",
        "route53:UpdateHealthCheck",
    ]
    assert health_check(world, EAST)["HealthCheckConfig"]["FailureThreshold"] == 2
    assert (
        failover_records(world)[f"{world.env_name}-{EAST}"]["AliasTarget"]["DNSName"] != west_alb["DNSName"]
    )
    replicas = world.aws("dynamodb", EAST).describe_table(TableName=TABLE)["Table"]["Replicas"]
    assert {r["RegionName"]: r["ReplicaStatus"] for r in replicas} == {WEST: "ACTIVE"}


def _paused_run_id(started_after: float) -> Any:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name={"any_": ["Paused"]})), limit=50
        )
    runs = [r for r in runs if r.start_time and r.start_time.timestamp() >= started_after - 1]
    return runs[0].id if runs else None


def _run_paused(world: World, answer: dict[str, Any]) -> tuple[State[Any], Calls]:
    result: dict[str, Any] = {}
    started = time.time()
    thread = threading.Thread(
        target=lambda: result.update(out=run(world, require_approval=True)), daemon=True
    )
    thread.start()
    run_id = poll(lambda: _paused_run_id(started), timeout=60)
    resume_flow_run(run_id, run_input=answer)
    thread.join(120)
    assert not thread.is_alive()
    out: tuple[State[Any], Calls] = result["out"]
    return out


def test_approval_gate_rejects_or_records_the_approver(converged: World) -> None:
    world = converged
    world.aws("route53").update_health_check(
        HealthCheckId=health_check(world, WEST)["Id"], FailureThreshold=9
    )

    state, calls = _run_paused(world, {"approve": False, "approver": "bob", "comment": "not today"})
    report = report_of(state)
    assert report.outcome == "rejected" and calls.mutating == []
    assert health_check(world, WEST)["HealthCheckConfig"]["FailureThreshold"] == 9

    state, calls = _run_paused(world, {"approve": True, "approver": "ada", "comment": "game day prep"})
    report = report_of(state)
    assert report.outcome == "applied" and report.approval is not None and report.approval.approver == "ada"
    assert calls.mutating == ["route53:UpdateHealthCheck"]
    (record,) = report.audit
    assert record.detail["approver"] == "ada" and record.detail["comment"] == "game day prep"
    assert "approved by ada: game day prep" in (
        artifact(f"provision-audit-{world.env_name}").description or ""
    )
    # Evidence: the mutating call is a Prefect event on the resource it touched, tied to the run
    (event,) = poll(lambda: events(state.state_details.flow_run_id, "chalkdr.route53."), timeout=30)
    assert event.event == "chalkdr.route53.update-health-check"
    assert event.resource.id == f"arn:aws:route53:::healthcheck/{health_check(world, WEST)['Id']}"
    assert event.payload["approver"] == "ada" and event.payload["api_call"] == "route53:UpdateHealthCheck"


def test_what_is_not_ours_blocks_the_apply_until_adopted(converged: World) -> None:
    """Provisioning touches only what it owns: an alarm that lost its ownership tag and a name that
    lost its ownership TXT record are plan errors naming them; adopting them is audited."""
    world = converged
    alarm = f"chalkdr-{world.env_name}-aurora-chalk-meta-west-replication-lag"
    cw = world.aws("cloudwatch", WEST)
    (raw,) = cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]
    cw.untag_resource(ResourceARN=raw["AlarmArn"], TagKeys=["chalk-dr:environment"])
    txt_name = "_chalk-dr-a.chalk-failover.example.com."
    r53 = world.aws("route53")
    sets = r53.list_resource_record_sets(HostedZoneId=world.zone_id)["ResourceRecordSets"]
    (txt,) = [x for x in sets if x["Name"] == txt_name and x["Type"] == "TXT"]
    r53.change_resource_record_sets(
        HostedZoneId=world.zone_id, ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": txt}]}
    )

    state, calls = run(world)
    assert state.is_failed() and calls.mutating == []
    message = str(state.message)
    assert f"{WEST}: CloudWatch alarm {alarm} exists and is not chalk-dr's for environment" in message
    assert "route53: DNS name chalk-failover.example.com (record chalk-failover.example.com A " in message

    topology = copy.deepcopy(world.topology)
    topology["adopt"] = {"alarms": [alarm], "records": ["chalk-failover.example.com"]}
    state, calls = run(world, topology=topology)
    assert state.is_completed(), state.message
    assert sorted(calls.mutating) == ["cloudwatch:TagResource", "route53:ChangeResourceRecordSets"]
    report = report_of(state)
    assert sorted((a.action, a.detail["owner"]) for a in report.audit) == [
        ("adopt-alarm", world.env_name),
        ("adopt-records", world.env_name),
    ]
    # ...and from now on they are this environment's without the topology saying so
    state, calls = run(world, mode="plan")
    assert state.is_completed(), state.message
    assert report_of(state).outcome == "in-sync" and calls.mutating == []


def test_active_active_topology_gives_weighted_records(converged: World) -> None:
    world = converged
    topology = copy.deepcopy(world.topology)
    topology["routing"] = "weighted"
    for region, weight in zip(topology["regions"], (60, 40), strict=True):
        region.pop("primary", None)
        region["weight"] = weight
    state, calls = run(world, topology=topology)
    assert state.is_completed(), state.message
    replaced = [c for c in report_of(state).plan.pending if c.kind is ResourceKind.RECORD]
    assert {c.action for c in replaced} == {Action.REPLACE}
    assert calls.mutating == ["route53:ChangeResourceRecordSets"]  # both records, one atomic batch
    records = failover_records(world)
    assert {k: (v.get("Weight"), v.get("Failover")) for k, v in records.items()} == {
        f"{world.env_name}-{EAST}": (60, None),
        f"{world.env_name}-{WEST}": (40, None),
    }
    assert {k: v["HealthCheckId"] for k, v in records.items()} == {
        f"{world.env_name}-{region}": health_check(world, region)["Id"] for region in (EAST, WEST)
    }
