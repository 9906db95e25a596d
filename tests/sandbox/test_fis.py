"""FIS experiments in the sandbox inject real faults; exercised only through boto3 on the served endpoint."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sandbox.aws import SandboxAwsApp
from sandbox.clock import SandboxClock
from sandbox.dynamodb import DynamoDbSim
from sandbox.fis import FisSim
from sandbox.harness import AwsSandbox
from sandbox.harness import poll
from sandbox.truth import GroundTruth

LAG_S = 0.2
TIME_SCALE = 60.0  # PT1M of FIS duration lasts one real second
PAUSE_DELAY_AWS_S = 60.0  # the pause takes hold one real second after the action starts
EAST, WEST = "us-east-1", "us-west-2"
ROLE = "arn:aws:iam::123456789012:role/fis-drill"


@pytest.fixture(scope="module")
def aws() -> Iterator[AwsSandbox]:
    def simulators(app: SandboxAwsApp, truth: GroundTruth) -> list[Any]:
        clock = SandboxClock(time_scale=TIME_SCALE)
        dynamodb = DynamoDbSim(app, clock=clock, truth=truth, replication_lag_s=LAG_S, replica_create_s=0.1)
        fis = FisSim(app, clock=clock, truth=truth, dynamodb=dynamodb, pause_delay_aws_s=PAUSE_DELAY_AWS_S)
        return [dynamodb, fis]

    with AwsSandbox(simulators) as sandbox:
        yield sandbox


@pytest.fixture
def fis(aws: AwsSandbox) -> Any:
    return aws.client("fis", EAST)


def create_table(ddb: Any, prefix: str) -> str:
    """A regional table keyed by `pk` (S), named `prefix-<random>`."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@pytest.fixture
def global_table(regions: tuple[Any, Any]) -> str:
    east, _ = regions
    name = create_table(east, "online-store")
    east.update_table(TableName=name, ReplicaUpdates=[{"Create": {"RegionName": WEST}}])
    poll(lambda: east.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE")
    return name


def table_arn(name: str, region: str = EAST) -> str:
    return f"arn:aws:dynamodb:{region}:123456789012:table/{name}"


def template(fis: Any, actions: dict[str, Any], targets: dict[str, Any] | None = None) -> str:
    resp = fis.create_experiment_template(
        clientToken=uuid.uuid4().hex,
        description="drill",
        roleArn=ROLE,
        stopConditions=[{"source": "none"}],
        targets=targets or {},
        actions=actions,
    )
    return resp["experimentTemplate"]["id"]  # type: ignore[no-any-return]


def pause_action(duration: str, **more: Any) -> dict[str, Any]:
    """aws:dynamodb:global-table-pause-replication of the tables `table_targets` names."""
    return {
        "actionId": "aws:dynamodb:global-table-pause-replication",
        "parameters": {"duration": duration},
        "targets": {"Tables": "store"},
        **more,
    }


def table_targets(table: str) -> dict[str, Any]:
    return {
        "store": {
            "resourceType": "aws:dynamodb:global-table",
            "resourceArns": [table_arn(table)],
            "selectionMode": "ALL",
        }
    }


def pause_template(fis: Any, table: str, duration: str) -> str:
    return template(fis, actions={"pause": pause_action(duration)}, targets=table_targets(table))


def start(fis: Any, template_id: str) -> str:
    """Start an experiment of the template; its id."""
    return fis.start_experiment(experimentTemplateId=template_id)["experiment"]["id"]  # type: ignore[no-any-return]


def state(fis: Any, experiment_id: str) -> str:
    return fis.get_experiment(id=experiment_id)["experiment"]["state"]["status"]  # type: ignore[no-any-return]


def run_until(fis: Any, experiment_id: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
    poll(lambda: state(fis, experiment_id) == status, timeout=timeout, what=f"experiment {status}")
    return fis.get_experiment(id=experiment_id)["experiment"]  # type: ignore[no-any-return]


def absent_for(ddb: Any, table: str, pk: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": pk}})
        time.sleep(0.05)


def arrives(ddb: Any, table: str, pk: str) -> None:
    poll(lambda: ddb.get_item(TableName=table, Key={"pk": {"S": pk}}).get("Item"))


def pause_in_effect(aws: AwsSandbox, experiment_id: str) -> None:
    """Wait for the moment the pause takes hold (the sandbox's ground truth: on AWS a client can
    only wait out the documented "up to 5 minutes")."""
    poll(
        lambda: any(e["id"] == experiment_id for e in aws.truth.events("fis.pause_effective")),
        what="the pause to take effect",
    )


class TestTemplateValidation:
    def test_unknown_action_id_is_rejected_naming_the_action(self, fis: Any) -> None:
        with pytest.raises(ClientError) as err:
            template(
                fis, {"boom": {"actionId": "aws:dynamodb:melt-table", "parameters": {"duration": "PT1M"}}}
            )
        assert err.value.response["Error"]["Code"] == "ValidationException"
        assert "aws:dynamodb:melt-table" in err.value.response["Error"]["Message"]

    def test_bad_duration_and_dangling_target_are_rejected(self, fis: Any) -> None:
        bad = [
            {"wait": {"actionId": "aws:fis:wait", "parameters": {"duration": "five minutes"}}},
            {
                "pause": {
                    "actionId": "aws:dynamodb:global-table-pause-replication",
                    "parameters": {"duration": "PT1M"},
                    "targets": {"Tables": "missing"},
                }
            },
        ]
        for actions in bad:
            with pytest.raises(ClientError) as err:
                template(fis, actions)
            assert err.value.response["Error"]["Code"] == "ValidationException"

    def test_update_with_unknown_action_is_rejected(self, fis: Any) -> None:
        template_id = template(
            fis, {"wait": {"actionId": "aws:fis:wait", "parameters": {"duration": "PT1M"}}}
        )
        with pytest.raises(ClientError) as err:
            fis.update_experiment_template(id=template_id, actions={"x": {"actionId": "aws:nope:nothing"}})
        assert err.value.response["Error"]["Code"] == "ValidationException"


class TestPauseReplication:
    def test_pause_holds_writes_until_stopped(
        self, aws: AwsSandbox, fis: Any, regions: tuple[Any, Any], global_table: str
    ) -> None:
        east, west = regions
        experiment = fis.start_experiment(experimentTemplateId=pause_template(fis, global_table, "PT10M"))
        experiment_id = experiment["experiment"]["id"]
        assert experiment["experiment"]["state"]["status"] == "initiating"
        running = run_until(fis, experiment_id, "running")
        assert running["actions"]["pause"]["state"]["status"] == "running"
        pause_in_effect(aws, experiment_id)

        east.put_item(TableName=global_table, Item={"pk": {"S": "east-write"}})
        west.put_item(TableName=global_table, Item={"pk": {"S": "west-write"}})
        absent_for(west, global_table, "east-write", LAG_S * 4)  # into the target replica: paused
        absent_for(east, global_table, "west-write", LAG_S)  # out of it: paused too

        assert fis.stop_experiment(id=experiment_id)["experiment"]["state"]["status"] == "stopping"
        stopped = run_until(fis, experiment_id, "stopped")
        assert stopped["actions"]["pause"]["state"]["status"] == "stopped"
        arrives(west, global_table, "east-write")
        arrives(east, global_table, "west-write")

    def test_pause_ends_after_its_duration(
        self, aws: AwsSandbox, fis: Any, regions: tuple[Any, Any], global_table: str
    ) -> None:
        east, west = regions
        experiment_id = start(fis, pause_template(fis, global_table, "PT2M"))
        run_until(fis, experiment_id, "running")
        pause_in_effect(aws, experiment_id)
        east.put_item(TableName=global_table, Item={"pk": {"S": "during"}})
        absent_for(west, global_table, "during", LAG_S * 2)
        done = run_until(fis, experiment_id, "completed")
        action = done["actions"]["pause"]
        assert action["state"]["status"] == "completed"
        lasted = (action["endTime"] - action["startTime"]).total_seconds()
        assert lasted >= 2.0  # PT2M at 60 AWS seconds per real second: not a moment less
        arrives(west, global_table, "during")

    def test_the_pause_takes_hold_only_after_a_delay(
        self, aws: AwsSandbox, fis: Any, regions: tuple[Any, Any], global_table: str
    ) -> None:
        """FIS actions reference, aws:dynamodb:global-table-pause-replication: "Tables may continue to
        be replicated for up to 5 minutes after action begins." A write made right after the action
        starts still replicates; one made once the pause has taken hold waits for the end."""
        east, west = regions
        experiment_id = start(fis, pause_template(fis, global_table, "PT10M"))
        run_until(fis, experiment_id, "running")
        east.put_item(TableName=global_table, Item={"pk": {"S": "early"}})
        arrives(west, global_table, "early")  # LAG_S after the write: before the pause holds
        assert not any(e["id"] == experiment_id for e in aws.truth.events("fis.pause_effective"))

        pause_in_effect(aws, experiment_id)
        effective = next(e for e in aws.truth.events("fis.pause_effective") if e["id"] == experiment_id)
        started = next(
            e
            for e in aws.truth.events("fis.experiment")
            if e["id"] == experiment_id and e["state"] == "running"
        )
        assert effective["ts"] - started["ts"] >= PAUSE_DELAY_AWS_S / TIME_SCALE * 0.9
        east.put_item(TableName=global_table, Item={"pk": {"S": "late"}})
        absent_for(west, global_table, "late", LAG_S * 4)
        fis.stop_experiment(id=experiment_id)
        run_until(fis, experiment_id, "stopped")
        arrives(west, global_table, "late")

    def test_pause_on_a_table_that_is_not_global_fails(self, fis: Any, regions: tuple[Any, Any]) -> None:
        east, _ = regions
        name = create_table(east, "regional")
        experiment_id = start(fis, pause_template(fis, name, "PT1M"))
        failed = run_until(fis, experiment_id, "failed")
        assert "not a replica of a DynamoDB global table" in failed["state"]["reason"]


class TestActionsAndStates:
    def test_wait_then_pause_run_in_start_after_order(self, fis: Any, global_table: str) -> None:
        template_id = template(
            fis,
            actions={
                "settle": {"actionId": "aws:fis:wait", "parameters": {"duration": "PT30S"}},
                "pause": pause_action("PT30S", startAfter=["settle"]),
            },
            targets=table_targets(global_table),
        )
        experiment_id = start(fis, template_id)
        first = run_until(fis, experiment_id, "running")
        assert first["actions"]["settle"]["state"]["status"] == "running"
        assert first["actions"]["pause"]["state"]["status"] == "pending"
        poll(
            lambda: (
                fis.get_experiment(id=experiment_id)["experiment"]["actions"]["pause"]["state"]["status"]
                == "running"
            )
        )
        done = run_until(fis, experiment_id, "completed")
        assert {a["state"]["status"] for a in done["actions"].values()} == {"completed"}
        listed = {e["id"]: e["state"]["status"] for e in fis.list_experiments()["experiments"]}
        assert listed[experiment_id] == "completed"

    def test_documented_but_unsupported_action_fails_the_experiment(self, fis: Any) -> None:
        template_id = template(
            fis,
            actions={"stop": {"actionId": "aws:ec2:stop-instances", "targets": {"Instances": "web"}}},
            targets={
                "web": {
                    "resourceType": "aws:ec2:instance",
                    "resourceArns": ["arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"],
                    "selectionMode": "ALL",
                }
            },
        )
        experiment_id = start(fis, template_id)
        failed = run_until(fis, experiment_id, "failed")
        assert "aws:ec2:stop-instances" in failed["state"]["reason"]
        assert failed["actions"]["stop"]["state"]["status"] == "cancelled"
