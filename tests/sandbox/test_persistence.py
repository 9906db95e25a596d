"""Uploads on Chalk's persistence path in the sandbox world: API server -> the region's MSK topic ->
its persistence workers -> the online store (DynamoDB) -> Global Tables -> the other region."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from sandbox.harness import poll
from sandbox.world import ONLINE_TABLE
from sandbox.world import PERSISTENCE_DEPLOYMENT

LiveWorld = Any  # tests/sandbox/conftest.py's LiveWorld (conftest modules are not importable)


def add_replica(world: LiveWorld, receiving: str) -> None:
    """What the provision flow does for the online store: a Global Tables replica in the other
    region, with that region's own KMS key (the table is under a customer managed key)."""
    source = world.regions[0]
    key = world.region(receiving).kms_key
    world.client("dynamodb", source).update_table(
        TableName=ONLINE_TABLE, ReplicaUpdates=[{"Create": {"RegionName": receiving, "KMSMasterKeyId": key}}]
    )
    replica = world.client("dynamodb", receiving)
    poll(
        lambda: replica.describe_table(TableName=ONLINE_TABLE)["Table"]["TableStatus"] == "ACTIVE",
        what="the replica to be ACTIVE",
    )


def uploaded(world: LiveWorld, region: str, user_id: int, name: str) -> None:
    resp = world.upload(region, {"user.id": [user_id], "user.name": [name]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["errors"] == [] and body["trace_id"]


def absent_for(world: LiveWorld, region: str, user_id: int, seconds: float) -> None:
    """The row stays unserved in `region` for `seconds` (checked throughout, not once)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert world.value(region, "user.name", {"user.id": user_id}) is None
        time.sleep(0.1)


class TestUploadPath:
    """chalkpy `upload_features` posts UploadFeaturesRequest `{"input": {fqn: [value]}}` to the API
    server and gets `{"errors": [...], "trace_id": ...}`. Chalk's multi-region guide: writes reach
    the online store through the region's persistence workers (fed by MSK), and the secondary's
    online store is fed by DynamoDB Global Tables, which replicate asynchronously (DynamoDB
    Developer Guide, "Global tables: how it works"; ReplicationLatency is "the elapsed time between
    when an item is written to a replica table, and when that item appears in another replica");
    while replication is paused (FIS aws:dynamodb:global-table-pause-replication, or the operator)
    nothing reaches the secondary."""

    def test_an_upload_is_served_in_the_secondary_only_after_replication(self, live_world: LiveWorld) -> None:
        east, west = live_world.regions
        before = live_world.query(west, ["user.name"], {"user.id": 1}).json()
        assert before["errors"][0]["code"] == "UPSTREAM_FAILED"  # no replica there yet: nothing to read
        add_replica(live_world, west)

        user = 10_000 + uuid.uuid4().int % 10_000
        uploaded(live_world, east, user, "Ada")
        poll(
            lambda: live_world.value(east, "user.name", {"user.id": user}) == "Ada",
            what="the primary to serve it",
        )
        poll(
            lambda: live_world.value(west, "user.name", {"user.id": user}) == "Ada",
            what="replication to the west",
        )
        truth = live_world.world.truth
        (persisted,) = [e for e in truth.events("chalk.persisted") if e["key"] == f"user.{user}"]
        assert persisted["region"] == east  # written by the primary's workers, from its topic
        assert [
            e["target"]
            for e in truth.events("dynamodb.replicated")
            if e["key"] == {"pk": {"S": f"user.{user}"}}
        ] == [west]

        with httpx.Client(timeout=10, trust_env=False) as http:
            paused = http.post(
                f"{live_world.world.server.endpoint_url}/_sandbox/dynamodb/pause",
                json={"table": ONLINE_TABLE, "region": west},
            )
            assert paused.status_code == 200
            held = user + 1
            uploaded(live_world, east, held, "Grace")
            poll(
                lambda: live_world.value(east, "user.name", {"user.id": held}) == "Grace", what="the primary"
            )
            absent_for(live_world, west, held, live_world.world.spec.replication_lag_s * 5)
            http.post(
                f"{live_world.world.server.endpoint_url}/_sandbox/dynamodb/resume",
                json={"table": ONLINE_TABLE, "region": west},
            ).raise_for_status()
        poll(
            lambda: live_world.value(west, "user.name", {"user.id": held}) == "Grace",
            what="the drained backlog",
        )

    def test_uploads_wait_in_the_topic_for_the_persistence_workers(self, live_world: LiveWorld) -> None:
        """The API server acknowledges an upload before it is served: with the primary's persistence
        workers scaled to zero it sits in the MSK topic, and is served once they are back."""
        east = live_world.regions[0]
        live_world.scale(east, PERSISTENCE_DEPLOYMENT, 0)
        poll(
            lambda: live_world.region(east).kube.ready_replicas(PERSISTENCE_DEPLOYMENT) == 0,
            what="no workers",
        )
        user = 20_000 + uuid.uuid4().int % 10_000
        uploaded(live_world, east, user, "Hopper")
        absent_for(live_world, east, user, 1.0)
        live_world.scale(east, PERSISTENCE_DEPLOYMENT, 1)
        poll(
            lambda: live_world.value(east, "user.name", {"user.id": user}) == "Hopper",
            what="the workers to catch up",
        )
