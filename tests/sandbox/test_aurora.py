"""Aurora global databases in the sandbox, seen only through boto3 and the control API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sandbox.aurora import AuroraSim
from sandbox.aws import SandboxAwsApp
from sandbox.clock import SandboxClock
from sandbox.harness import AwsSandbox
from sandbox.harness import poll
from sandbox.metrics import recent_datapoints
from sandbox.truth import GroundTruth

PRIMARY, SECONDARY = "us-east-1", "us-west-2"
SWITCH_AFTER = 0.6


@dataclass
class GlobalDb:
    world: AwsSandbox
    global_id: str
    primary_id: str
    primary_arn: str
    secondary_id: str
    secondary_arn: str

    def describe(self, region: str = SECONDARY) -> dict[str, Any]:
        rds = self.world.client("rds", region)
        found: dict[str, Any] = rds.describe_global_clusters(GlobalClusterIdentifier=self.global_id)[
            "GlobalClusters"
        ][0]
        return found

    def writer(self) -> str | None:
        gc = self.describe()
        if gc["Status"] != "available":
            return None
        return str(next(m["DBClusterArn"] for m in gc["GlobalClusterMembers"] if m["IsWriter"]))


@pytest.fixture(scope="module")
def world() -> Iterator[AwsSandbox]:
    def simulators(app: SandboxAwsApp, truth: GroundTruth) -> list[AuroraSim]:
        return [
            AuroraSim(
                app, clock=SandboxClock(), truth=truth, switch_after=SWITCH_AFTER, metric_period=0.2, seed=3
            )
        ]

    with AwsSandbox(simulators) as sandbox:
        yield sandbox


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def create_member(world: AwsSandbox, region: str, ident: str, global_id: str, *, primary: bool) -> str:
    """A member cluster with one DB instance (a headless secondary cannot take over)."""
    # A secondary names no master user: "Cannot specify user name ... for cross region replication cluster".
    extra = {"MasterUsername": "chalk", "MasterUserPassword": "correct-horse-battery"} if primary else {}
    rds = world.client("rds", region)
    cluster = rds.create_db_cluster(
        DBClusterIdentifier=ident,
        Engine="aurora-postgresql",
        EngineVersion="15.4",
        GlobalClusterIdentifier=global_id,
        **extra,
    )["DBCluster"]
    add_instance(world, region, ident)
    return str(cluster["DBClusterArn"])


def delete_cluster(world: AwsSandbox, region: str, cluster_id: str) -> None:
    """Instances first: a cluster with DB instances cannot be deleted."""
    rds = world.client("rds", region)
    rds.delete_db_instance(DBInstanceIdentifier=f"{cluster_id}-1", SkipFinalSnapshot=True)
    rds.delete_db_cluster(DBClusterIdentifier=cluster_id, SkipFinalSnapshot=True)


def add_instance(world: AwsSandbox, region: str, cluster_id: str) -> None:
    world.client("rds", region).create_db_instance(
        DBInstanceIdentifier=f"{cluster_id}-1",
        DBClusterIdentifier=cluster_id,
        DBInstanceClass="db.r6g.large",
        Engine="aurora-postgresql",
    )


@pytest.fixture
def gdb(world: AwsSandbox) -> GlobalDb:
    """A global database: writer in us-east-1, one secondary in us-west-2 (unique names per test)."""
    suffix = uuid.uuid4().hex[:8]
    global_id, primary_id, secondary_id = f"chalk-meta-{suffix}", f"meta-east-{suffix}", f"meta-west-{suffix}"
    world.client("rds", PRIMARY).create_global_cluster(
        GlobalClusterIdentifier=global_id, Engine="aurora-postgresql", EngineVersion="15.4"
    )
    primary_arn = create_member(world, PRIMARY, primary_id, global_id, primary=True)
    secondary_arn = create_member(world, SECONDARY, secondary_id, global_id, primary=False)
    return GlobalDb(world, global_id, primary_id, primary_arn, secondary_id, secondary_arn)


class TestTopology:
    def test_writer_and_secondary_are_described_from_every_region(self, gdb: GlobalDb) -> None:
        for region in (PRIMARY, SECONDARY):
            gc = gdb.describe(region)
            assert gc["GlobalClusterIdentifier"] == gdb.global_id
            assert gc["Status"] == "available"
            assert "FailoverState" not in gc
            members = {m["DBClusterArn"]: m for m in gc["GlobalClusterMembers"]}
            assert members[gdb.primary_arn]["IsWriter"] is True
            assert members[gdb.primary_arn]["Readers"] == [gdb.secondary_arn]
            assert members[gdb.secondary_arn]["IsWriter"] is False
            assert members[gdb.secondary_arn]["Readers"] == []

    def test_unknown_global_cluster(self, world: AwsSandbox) -> None:
        with pytest.raises(ClientError) as exc:
            world.client("rds", SECONDARY).describe_global_clusters(GlobalClusterIdentifier="no-such-global")
        assert error_code(exc) == "GlobalClusterNotFoundFault"

    def test_region_filter(self, world: AwsSandbox, gdb: GlobalDb) -> None:
        rds = world.client("rds", PRIMARY)
        west = rds.describe_global_clusters(Filters=[{"Name": "region", "Values": [SECONDARY]}])
        assert gdb.global_id in {g["GlobalClusterIdentifier"] for g in west["GlobalClusters"]}
        elsewhere = rds.describe_global_clusters(Filters=[{"Name": "region", "Values": ["eu-west-1"]}])
        assert gdb.global_id not in {g["GlobalClusterIdentifier"] for g in elsewhere["GlobalClusters"]}

    def test_global_cluster_from_existing_cluster_keeps_it_writer(self, world: AwsSandbox) -> None:
        suffix = uuid.uuid4().hex[:8]
        rds = world.client("rds", PRIMARY)
        arn = rds.create_db_cluster(
            DBClusterIdentifier=f"standalone-{suffix}",
            Engine="aurora-postgresql",
            EngineVersion="15.4",
            MasterUsername="chalk",
            MasterUserPassword="correct-horse-battery",
        )["DBCluster"]["DBClusterArn"]
        created = rds.create_global_cluster(
            GlobalClusterIdentifier=f"g-{suffix}", SourceDBClusterIdentifier=arn
        )
        (member,) = created["GlobalCluster"]["GlobalClusterMembers"]
        assert (member["DBClusterArn"], member["IsWriter"]) == (arn, True)


class TestSwitchover:
    def test_switchover_moves_the_writer_after_a_visible_transition(
        self, world: AwsSandbox, gdb: GlobalDb
    ) -> None:
        resp = world.client("rds", SECONDARY).switchover_global_cluster(
            GlobalClusterIdentifier=gdb.global_id, TargetDbClusterIdentifier=gdb.secondary_arn
        )["GlobalCluster"]
        assert resp["Status"] == "switching-over"
        assert resp["FailoverState"] == {
            "Status": "pending",
            "FromDbClusterArn": gdb.primary_arn,
            "ToDbClusterArn": gdb.secondary_arn,
            "IsDataLossAllowed": False,
        }
        during = gdb.describe()
        assert during["Status"] == "switching-over"
        assert during["FailoverState"]["ToDbClusterArn"] == gdb.secondary_arn

        assert poll(gdb.writer) == gdb.secondary_arn
        after = gdb.describe(PRIMARY)
        assert "FailoverState" not in after
        members = {m["DBClusterArn"]: m for m in after["GlobalClusterMembers"]}
        assert members[gdb.secondary_arn]["Readers"] == [gdb.primary_arn]
        assert members[gdb.primary_arn]["IsWriter"] is False
        (flip,) = [e for e in world.truth.events("aurora.writer") if e["global_cluster"] == gdb.global_id]
        assert (flip["writer_arn"], flip["operation"]) == (gdb.secondary_arn, "switchover")

    def test_failover_without_allow_data_loss_is_a_switchover(self, gdb: GlobalDb, world: AwsSandbox) -> None:
        """API reference: "If you don't specify AllowDataLoss, the operation defaults to a switchover"."""
        resp = world.client("rds", SECONDARY).failover_global_cluster(
            GlobalClusterIdentifier=gdb.global_id, TargetDbClusterIdentifier=gdb.secondary_arn
        )["GlobalCluster"]
        assert resp["Status"] == "switching-over"
        assert resp["FailoverState"]["IsDataLossAllowed"] is False
        assert poll(gdb.writer) == gdb.secondary_arn


class TestFailover:
    def test_failover_with_data_loss_moves_the_writer(self, world: AwsSandbox, gdb: GlobalDb) -> None:
        resp = world.client("rds", SECONDARY).failover_global_cluster(
            GlobalClusterIdentifier=gdb.global_id,
            TargetDbClusterIdentifier=gdb.secondary_arn,
            AllowDataLoss=True,
        )["GlobalCluster"]
        assert resp["Status"] == "failing-over"
        assert resp["FailoverState"]["IsDataLossAllowed"] is True
        assert resp["FailoverState"]["FromDbClusterArn"] == gdb.primary_arn

        def seen_failing_over() -> bool:
            state = gdb.describe().get("FailoverState") or {}
            return state.get("Status") == "failing-over" or gdb.writer() == gdb.secondary_arn

        poll(seen_failing_over)
        assert poll(gdb.writer) == gdb.secondary_arn
        flips = [e for e in world.truth.events("aurora.writer") if e["global_cluster"] == gdb.global_id]
        assert [(e["writer_arn"], e["operation"]) for e in flips] == [(gdb.secondary_arn, "failover")]

        # ... and back: fail back with a planned switchover to the original region.
        world.client("rds", PRIMARY).switchover_global_cluster(
            GlobalClusterIdentifier=gdb.global_id, TargetDbClusterIdentifier=gdb.primary_arn
        )
        assert poll(gdb.writer) == gdb.primary_arn

    def test_allow_data_loss_and_switchover_together_are_rejected(
        self, world: AwsSandbox, gdb: GlobalDb
    ) -> None:
        with pytest.raises(ClientError) as exc:
            world.client("rds", SECONDARY).failover_global_cluster(
                GlobalClusterIdentifier=gdb.global_id,
                TargetDbClusterIdentifier=gdb.secondary_arn,
                AllowDataLoss=True,
                Switchover=True,
            )
        assert error_code(exc) == "InvalidParameterCombination"
        assert gdb.writer() == gdb.primary_arn


class TestErrors:
    def test_unknown_global_cluster(self, world: AwsSandbox, gdb: GlobalDb) -> None:
        rds = world.client("rds", SECONDARY)
        with pytest.raises(ClientError) as exc:
            rds.failover_global_cluster(
                GlobalClusterIdentifier="no-such-global",
                TargetDbClusterIdentifier=gdb.secondary_arn,
                AllowDataLoss=True,
            )
        assert error_code(exc) == "GlobalClusterNotFoundFault"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    def test_target_not_a_member(self, world: AwsSandbox, gdb: GlobalDb) -> None:
        rds = world.client("rds", SECONDARY)
        missing = f"arn:aws:rds:{SECONDARY}:123456789012:cluster:no-such-cluster"
        with pytest.raises(ClientError) as exc:
            rds.switchover_global_cluster(
                GlobalClusterIdentifier=gdb.global_id, TargetDbClusterIdentifier=missing
            )
        assert error_code(exc) == "DBClusterNotFoundFault"
        outsider = rds.create_db_cluster(
            DBClusterIdentifier=f"outsider-{uuid.uuid4().hex[:8]}",
            Engine="aurora-postgresql",
            MasterUsername="chalk",
            MasterUserPassword="correct-horse-battery",
        )["DBCluster"]["DBClusterArn"]
        with pytest.raises(ClientError) as exc:
            rds.switchover_global_cluster(
                GlobalClusterIdentifier=gdb.global_id, TargetDbClusterIdentifier=outsider
            )
        assert error_code(exc) == "DBClusterNotFoundFault"

    def test_target_already_writer(self, world: AwsSandbox, gdb: GlobalDb) -> None:
        with pytest.raises(ClientError) as exc:
            world.client("rds", PRIMARY).switchover_global_cluster(
                GlobalClusterIdentifier=gdb.global_id, TargetDbClusterIdentifier=gdb.primary_arn
            )
        assert error_code(exc) == "InvalidParameterValue"

    def test_second_operation_while_one_is_in_flight(self, world: AwsSandbox, gdb: GlobalDb) -> None:
        rds = world.client("rds", SECONDARY)
        rds.switchover_global_cluster(
            GlobalClusterIdentifier=gdb.global_id, TargetDbClusterIdentifier=gdb.secondary_arn
        )
        with pytest.raises(ClientError) as exc:
            rds.failover_global_cluster(
                GlobalClusterIdentifier=gdb.global_id,
                TargetDbClusterIdentifier=gdb.secondary_arn,
                AllowDataLoss=True,
            )
        assert error_code(exc) == "InvalidGlobalClusterStateFault"
        assert poll(gdb.writer) == gdb.secondary_arn


class TestTeardown:
    def test_primary_outlives_its_secondaries(self, world: AwsSandbox, gdb: GlobalDb) -> None:
        east, west = world.client("rds", PRIMARY), world.client("rds", SECONDARY)
        with pytest.raises(ClientError) as exc:
            east.delete_db_cluster(DBClusterIdentifier=gdb.primary_id, SkipFinalSnapshot=True)
        assert error_code(exc) == "InvalidGlobalClusterStateFault"

        removed = west.remove_from_global_cluster(
            GlobalClusterIdentifier=gdb.global_id, DbClusterIdentifier=gdb.secondary_arn
        )["GlobalCluster"]
        assert [m["DBClusterArn"] for m in removed["GlobalClusterMembers"]] == [gdb.primary_arn]
        delete_cluster(world, SECONDARY, gdb.secondary_id)
        delete_cluster(world, PRIMARY, gdb.primary_id)
        assert gdb.describe()["GlobalClusterMembers"] == []
        east.delete_global_cluster(GlobalClusterIdentifier=gdb.global_id)

    def test_deleted_secondary_leaves_the_global_cluster(self, world: AwsSandbox, gdb: GlobalDb) -> None:
        delete_cluster(world, SECONDARY, gdb.secondary_id)
        members = gdb.describe(PRIMARY)["GlobalClusterMembers"]
        assert [(m["DBClusterArn"], m["IsWriter"], m["Readers"]) for m in members] == [
            (gdb.primary_arn, True, [])
        ]


def pin_lag(world: AwsSandbox, cluster_id: str, lag_ms: float) -> Any:
    """The operator's route: the cluster's published replication lag pinned to `lag_ms`."""
    return world.control(
        "POST", "/_sandbox/aurora/lag", json={"db_cluster_identifier": cluster_id, "lag_ms": lag_ms}
    )


class TestReplicationLag:
    @staticmethod
    def maximum(
        world: AwsSandbox, region: str, cluster_id: str, source: str = PRIMARY
    ) -> tuple[float, str] | None:
        points = recent_datapoints(
            world.client("cloudwatch", region),
            "AWS/RDS",
            "AuroraGlobalDBReplicationLag",
            {"DBClusterIdentifier": cluster_id, "SourceRegion": source},
        )
        if not points:
            return None
        return max(p["Maximum"] for p in points), points[0]["Unit"]

    def test_secondary_publishes_lag_in_its_region_and_it_is_controllable(
        self, world: AwsSandbox, gdb: GlobalDb
    ) -> None:
        value, unit = poll(lambda: self.maximum(world, SECONDARY, gdb.secondary_id))
        assert unit == "Milliseconds" and 0 < value < 1000
        assert self.maximum(world, PRIMARY, gdb.secondary_id) is None
        assert self.maximum(world, PRIMARY, gdb.primary_id) is None  # the writer has no lag

        resp = pin_lag(world, gdb.secondary_id, 4000)
        assert resp.status_code == 200
        poll(lambda: (self.maximum(world, SECONDARY, gdb.secondary_id) or (0.0, ""))[0] == 4000)

    def test_after_switchover_the_old_writer_reports_lag(self, world: AwsSandbox, gdb: GlobalDb) -> None:
        world.client("rds", SECONDARY).switchover_global_cluster(
            GlobalClusterIdentifier=gdb.global_id, TargetDbClusterIdentifier=gdb.secondary_arn
        )
        poll(gdb.writer)
        poll(lambda: self.maximum(world, PRIMARY, gdb.primary_id, source=SECONDARY))

    def test_lag_is_published_by_cluster_and_source_region(self, world: AwsSandbox, gdb: GlobalDb) -> None:
        """Aurora global database labs (CloudWatch): "select RDS, and then select the metrics group
        named DBClusterIdentifier, SourceRegion ... the metric named AuroraGlobalDBReplicationLag":
        the secondary's series carries both dimensions, in the secondary's region."""
        cloudwatch = world.client("cloudwatch", SECONDARY)

        def dimension_sets() -> list[dict[str, str]]:
            metrics = cloudwatch.list_metrics(Namespace="AWS/RDS", MetricName="AuroraGlobalDBReplicationLag")
            sets = [{d["Name"]: d["Value"] for d in m["Dimensions"]} for m in metrics["Metrics"]]
            return [d for d in sets if d.get("DBClusterIdentifier") == gdb.secondary_id]

        assert poll(dimension_sets) == [{"DBClusterIdentifier": gdb.secondary_id, "SourceRegion": PRIMARY}]

    def test_control_route_rejects_unknown_cluster(self, world: AwsSandbox) -> None:
        resp = pin_lag(world, "nope", 1)
        assert resp.status_code == 404


def encrypted_global(world: AwsSandbox) -> tuple[str, str]:
    """An encrypted global database with its writer in us-east-1: (global id, secondary KMS key)."""
    suffix = uuid.uuid4().hex[:8]
    global_id = f"chalk-meta-{suffix}"
    east_key = world.client("kms", PRIMARY).create_key(Description="meta")["KeyMetadata"]["Arn"]
    world.client("rds", PRIMARY).create_global_cluster(
        GlobalClusterIdentifier=global_id,
        Engine="aurora-postgresql",
        EngineVersion="15.4",
        StorageEncrypted=True,
    )
    world.client("rds", PRIMARY).create_db_cluster(
        DBClusterIdentifier=f"meta-east-{suffix}",
        Engine="aurora-postgresql",
        EngineVersion="15.4",
        GlobalClusterIdentifier=global_id,
        MasterUsername="chalk",
        MasterUserPassword="correct-horse-battery",
        StorageEncrypted=True,
        KmsKeyId=east_key,
    )
    west_key = world.client("kms", SECONDARY).create_key(Description="meta")["KeyMetadata"]["Arn"]
    return global_id, west_key


def secondary_error(world: AwsSandbox, global_id: str, **settings: Any) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as exc:
        world.client("rds", SECONDARY).create_db_cluster(
            DBClusterIdentifier=f"meta-west-{uuid.uuid4().hex[:8]}",
            Engine="aurora-postgresql",
            EngineVersion="15.4",
            GlobalClusterIdentifier=global_id,
            **settings,
        )
    error = exc.value.response["Error"]
    return (
        str(error["Code"]),
        str(error["Message"]),
        int(exc.value.response["ResponseMetadata"]["HTTPStatusCode"]),
    )


class TestSecondaryCluster:
    """CreateDBCluster with GlobalClusterIdentifier in another region (API reference, KmsKeyId: "If you
    create a read replica of an encrypted DB cluster in another Amazon Web Services Region, make sure to
    set KmsKeyId to a KMS key identifier that is valid in the destination Amazon Web Services Region";
    DBSubnetGroupName: "Must match the name of an existing DB subnet group"; the error texts are AWS's
    as observed: "For encrypted cross-region replica, kmsKeyId should be explicitly specified",
    "Cannot specify <database name|user name|password> for cross region replication cluster")."""

    def test_an_encrypted_global_database_needs_a_key_in_the_secondary_region(
        self, world: AwsSandbox
    ) -> None:
        global_id, west_key = encrypted_global(world)
        assert secondary_error(world, global_id) == (
            "InvalidParameterCombination",
            "For encrypted cross-region replica, kmsKeyId should be explicitly specified",
            400,
        )
        created = world.client("rds", SECONDARY).create_db_cluster(
            DBClusterIdentifier=f"meta-west-{uuid.uuid4().hex[:8]}",
            Engine="aurora-postgresql",
            EngineVersion="15.4",
            GlobalClusterIdentifier=global_id,
            KmsKeyId=west_key,
        )["DBCluster"]
        assert created["GlobalClusterIdentifier"] == global_id

    @pytest.mark.parametrize(
        ("setting", "what"),
        [
            ({"DatabaseName": "chalk"}, "database name"),
            ({"MasterUsername": "chalk"}, "user name"),
            ({"MasterUserPassword": "correct-horse-battery"}, "password"),
        ],
    )
    def test_a_secondary_names_no_database_user_or_password(
        self, world: AwsSandbox, setting: dict[str, str], what: str
    ) -> None:
        global_id, west_key = encrypted_global(world)
        assert secondary_error(world, global_id, KmsKeyId=west_key, **setting) == (
            "InvalidParameterCombination",
            f"Cannot specify {what} for cross region replication cluster",
            400,
        )

    def test_an_unknown_subnet_group_is_not_found(self, world: AwsSandbox) -> None:
        global_id, west_key = encrypted_global(world)
        code, _message, status = secondary_error(
            world, global_id, KmsKeyId=west_key, DBSubnetGroupName="no-such-subnet-group"
        )
        assert (code, status) == ("DBSubnetGroupNotFoundFault", 404)


class TestHeadlessSecondary:
    """A headless secondary ("an Aurora DB cluster without a DB instance", aurora-global-database-attach
    .console.headless) keeps its storage in sync but has no instance to promote: FailoverGlobalCluster
    "promotes a DB instance on the chosen secondary DB cluster to be the primary writer DB instance"."""

    def test_switchover_and_failover_to_a_cluster_without_instances_are_refused(
        self, world: AwsSandbox
    ) -> None:
        suffix = uuid.uuid4().hex[:8]
        global_id, secondary_id = f"chalk-meta-{suffix}", f"meta-west-{suffix}"
        world.client("rds", PRIMARY).create_global_cluster(
            GlobalClusterIdentifier=global_id, Engine="aurora-postgresql", EngineVersion="15.4"
        )
        create_member(world, PRIMARY, f"meta-east-{suffix}", global_id, primary=True)
        headless = world.client("rds", SECONDARY).create_db_cluster(
            DBClusterIdentifier=secondary_id,
            Engine="aurora-postgresql",
            EngineVersion="15.4",
            GlobalClusterIdentifier=global_id,
        )["DBCluster"]["DBClusterArn"]
        rds = world.client("rds", SECONDARY)
        attempts = [
            lambda: rds.switchover_global_cluster(
                GlobalClusterIdentifier=global_id, TargetDbClusterIdentifier=headless
            ),
            lambda: rds.failover_global_cluster(
                GlobalClusterIdentifier=global_id, TargetDbClusterIdentifier=headless, AllowDataLoss=True
            ),
        ]
        for attempt in attempts:
            with pytest.raises(ClientError) as exc:
                attempt()
            assert error_code(exc) == "InvalidDBClusterStateFault"
        assert not [e for e in world.truth.events("aurora.operation") if e["global_cluster"] == global_id]

        add_instance(world, SECONDARY, secondary_id)  # an instance makes it a candidate
        rds.switchover_global_cluster(GlobalClusterIdentifier=global_id, TargetDbClusterIdentifier=headless)
        gdb = GlobalDb(world, global_id, "", "", secondary_id, headless)
        assert poll(gdb.writer) == headless
