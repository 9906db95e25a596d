"""The whole sandbox world in one process: AWS, two EKS API servers, query servers, the edge.

`World.start()` wires the simulators onto one AWS endpoint, seeds what Chalk's team would have
provisioned (EKS clusters, ALBs, a hosted zone, the online-store table in the primary, MSK
clusters, the primary Aurora cluster) and writes a topology plus an env file pointing at it
all. Product code reaches the world only through those two files.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import boto3
import yaml
from werkzeug.wrappers import Response

from sandbox.aurora import AuroraSim
from sandbox.aws import ACCOUNT_ID
from sandbox.aws import AwsCall
from sandbox.aws import AwsServer
from sandbox.aws import SandboxAwsApp
from sandbox.clock import SandboxClock
from sandbox.dynamodb import DynamoDbSim
from sandbox.edge import FailoverEdge
from sandbox.eks import EksSim
from sandbox.fis import FisSim
from sandbox.kube import RegionalKube
from sandbox.msk import MskSim
from sandbox.query_server import QueryServer
from sandbox.route53 import Route53Sim
from sandbox.truth import GroundTruth

__all__ = ["RegionSpec", "World", "WorldSpec"]

NAMESPACE = "chalk"
QUERY_DEPLOYMENT = "chalk-query-server"
PERSISTENCE_DEPLOYMENT = "chalk-persistence-worker"
ONLINE_TABLE = "chalk-online-store"
ZONE_NAME = "example.com"
FAILOVER_RECORD = f"chalk-failover.{ZONE_NAME}"
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass(frozen=True)
class RegionSpec:
    aws_region: str
    short: str  # east / west

    @property
    def resource_group(self) -> str:
        return f"demo-{self.short}"


@dataclass(frozen=True)
class WorldSpec:
    environment: str = "demo"
    regions: tuple[RegionSpec, ...] = (RegionSpec("us-east-1", "east"), RegionSpec("us-west-2", "west"))
    time_scale: float = 10.0
    request_interval: int = 10
    failure_threshold: int = 2
    record_ttl_seconds: int = 60
    replication_lag_s: float = 0.3
    query_replicas: int = 2
    ready_delay_s: float = 0.5
    routing: str = "failover"


@dataclass
class _Region:
    spec: RegionSpec
    kube: RegionalKube
    query: QueryServer | None = None
    alb_dns: str = ""
    alb_arn: str = ""
    msk_arn: str = ""
    aurora_cluster: str = ""
    deployment_id: str = ""


@dataclass
class World:
    """Start with `World(spec, state_dir).start()`; `stop()` releases every thread and port."""

    spec: WorldSpec
    state_dir: Path
    clock: SandboxClock = field(init=False)
    truth: GroundTruth = field(init=False)
    regions: dict[str, _Region] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "truth.jsonl").unlink(missing_ok=True)
        self.clock = SandboxClock(self.spec.time_scale)
        self.truth = GroundTruth(self.state_dir / "truth.jsonl")
        self.app = SandboxAwsApp()
        self._stoppers: list[Any] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> World:
        spec, clock, truth, app = self.spec, self.clock, self.truth, self.app
        for r in spec.regions:
            kube = RegionalKube(
                cluster_name=f"chalk-{spec.environment}-{r.short}",
                namespace=NAMESPACE,
                deployments={QUERY_DEPLOYMENT: spec.query_replicas, PERSISTENCE_DEPLOYMENT: 1},
                ready_delay=spec.ready_delay_s,
                truth=truth,
            ).start()
            self._stoppers.append(kube)
            self.regions[r.aws_region] = _Region(spec=r, kube=kube)

        self.route53 = Route53Sim(app, clock=clock, truth=truth, resolve=self._resolve_target)
        self.dynamodb = DynamoDbSim(app, clock=clock, truth=truth, replication_lag_s=spec.replication_lag_s)
        self.fis = FisSim(app, clock=clock, truth=truth, dynamodb=self.dynamodb)
        self.msk = MskSim(app, clock=clock, truth=truth)
        self.aurora = AuroraSim(app, clock=clock, truth=truth)
        self.eks = EksSim(
            app,
            clock=clock,
            truth=truth,
            endpoints={(a, reg.kube.cluster_name): reg.kube.url for a, reg in self.regions.items()},
        )
        app.control("GET", "/_sandbox/truth", self._truth_route)
        app.control("GET", "/_sandbox/world", self._world_route)
        self.server = AwsServer(app).start()
        self._stoppers.insert(0, self.server)
        for sim in (self.route53, self.dynamodb, self.fis, self.msk, self.aurora, self.eks):
            sim.start(self.server.endpoint_url)
            self._stoppers.insert(0, sim)

        self._seed()
        self._start_query_servers()
        self.edge = FailoverEdge(
            resolve=self._dns_answer,
            targets=self._target_url,
            ttl_real_seconds=clock.real_seconds(spec.record_ttl_seconds),
            truth=truth,
            busy=True,  # the failover name has other clients: the cache refreshes at expiry
        ).start()
        self._stoppers.insert(0, self.edge)
        self._write_files()
        return self

    def stop(self) -> None:
        for s in self._stoppers:
            try:
                s.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                print(f"sandbox: stopping {type(s).__name__} failed: {exc}", file=sys.stderr)
        self._stoppers.clear()

    # -- wiring ------------------------------------------------------------------------------

    def client(self, service: str, region: str) -> Any:
        return boto3.client(service, region_name=region, endpoint_url=self.server.endpoint_url, **CREDS)

    def _resolve_target(self, host: str, port: int, kind: str) -> str | None:
        """The sandbox's DNS for health checkers: an ALB name answers with its region's server."""
        return self._target_url(host)

    def _target_url(self, answer: str) -> str | None:
        name = answer.lower().rstrip(".").removeprefix("dualstack.")
        for reg in self.regions.values():
            if reg.query is not None and name == reg.alb_dns.lower():
                return reg.query.url
        return None

    def _dns_answer(self) -> str | None:
        resp = self.client("route53", "us-east-1").test_dns_answer(
            HostedZoneId=self.zone_id, RecordName=FAILOVER_RECORD, RecordType="A"
        )
        data = resp.get("RecordData") or []
        return data[0] if data else None

    def _truth_route(self, call: AwsCall) -> Response:
        since = float(call.query["since"]) if "since" in call.query else None
        events = self.truth.events(call.query.get("kind"), since)
        return Response(json.dumps(events, default=str), content_type="application/json")

    def _world_route(self, call: AwsCall) -> Response:
        body = {
            "time_scale": self.spec.time_scale,
            "edge": self.edge.url,
            "regions": {
                a: {
                    "query_url": reg.query.url if reg.query else None,
                    "alb_dns": reg.alb_dns,
                    "kube": reg.kube.url,
                    "query_ready_replicas": reg.kube.ready_replicas(QUERY_DEPLOYMENT),
                }
                for a, reg in self.regions.items()
            },
        }
        return Response(json.dumps(body), content_type="application/json")

    # -- seeding -----------------------------------------------------------------------------

    def _seed(self) -> None:
        env = self.spec.environment
        primary = self.spec.regions[0].aws_region
        self.zone_id = (
            self.client("route53", "us-east-1")
            .create_hosted_zone(Name=ZONE_NAME, CallerReference=f"sandbox-{uuid.uuid4()}")["HostedZone"]["Id"]
            .removeprefix("/hostedzone/")
        )
        for a, reg in self.regions.items():
            short = reg.spec.short
            ec2 = self.client("ec2", a)
            vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
            subnets = [
                ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{a}{z}")[
                    "Subnet"
                ]["SubnetId"]
                for i, z in enumerate("ab")
            ]
            lb = self.client("elbv2", a).create_load_balancer(
                Name=f"chalk-{env}-{short}", Subnets=subnets, Type="application", Scheme="internet-facing"
            )["LoadBalancers"][0]
            reg.alb_dns, reg.alb_arn = lb["DNSName"], lb["LoadBalancerArn"]
            self.client("eks", a).create_cluster(
                name=reg.kube.cluster_name,
                roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/eks-cluster",
                resourcesVpcConfig={"subnetIds": subnets},
            )
            kafka = self.client("kafka", a)
            reg.msk_arn = kafka.create_cluster(
                ClusterName=f"chalk-{env}-{short}",
                KafkaVersion="3.6.0",
                NumberOfBrokerNodes=2,
                BrokerNodeGroupInfo={"InstanceType": "kafka.m5.large", "ClientSubnets": subnets},
            )["ClusterArn"]
            reg.aurora_cluster = f"chalk-meta-{short}"
            if a == primary:
                self.client("dynamodb", a).create_table(
                    TableName=ONLINE_TABLE,
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                    StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
                )
                self.client("dynamodb", a).put_item(
                    TableName=ONLINE_TABLE,
                    Item={"pk": {"S": "user.1"}, "user.name": {"S": "Ada"}, "user.score": {"N": "42"}},
                )
                self.client("rds", a).create_db_cluster(
                    DBClusterIdentifier=reg.aurora_cluster,
                    Engine="aurora-postgresql",
                    EngineVersion="15.4",
                    MasterUsername="chalk",
                    MasterUserPassword="sandbox-only-password",
                )

    def _start_query_servers(self) -> None:
        deployment_id = "c" + uuid.uuid4().hex[:24]  # one deployment served in both regions
        for a, reg in self.regions.items():
            kube = reg.kube
            reg.query = QueryServer(
                region=a,
                environment_name=reg.spec.resource_group,
                environment_id=self.spec.environment,
                client_id=f"client-{self.spec.environment}",
                client_secret=self.client_secret,
                table_names=[ONLINE_TABLE],
                dynamodb=self.client("dynamodb", a),
                is_serving=lambda kube=kube: kube.ready_replicas(QUERY_DEPLOYMENT) > 0,  # type: ignore[misc]
                deployment_id=deployment_id,
                truth=self.truth,
            ).start()
            reg.deployment_id = deployment_id
            self._stoppers.insert(0, reg.query)

    @property
    def secret_env(self) -> str:
        return f"CHALK_{self.spec.environment.upper().replace('-', '_')}_CLIENT_SECRET"

    @property
    def client_secret(self) -> str:
        return f"sandbox-secret-{self.spec.environment}"

    # -- outputs -----------------------------------------------------------------------------

    def topology(self) -> dict[str, Any]:
        spec = self.spec
        regions = []
        for i, (a, reg) in enumerate(self.regions.items()):
            assert reg.query is not None
            entry: dict[str, Any] = {
                "aws_region": a,
                "resource_group": reg.spec.resource_group,
                "query_hostname": f"{reg.spec.resource_group}.query.{ZONE_NAME}",
                "query_url": reg.query.url,
                "alb": reg.alb_arn,
                "eks": {
                    "cluster_name": reg.kube.cluster_name,
                    "namespace": NAMESPACE,
                    "query_server_deployment": QUERY_DEPLOYMENT,
                    "persistence_deployment": PERSISTENCE_DEPLOYMENT,
                },
                "online_store_tables": [ONLINE_TABLE],
                "msk_cluster_arn": reg.msk_arn,
                "aurora_cluster_id": reg.aurora_cluster,
                "chalk": {
                    "environment_id": spec.environment,
                    "api_server": reg.query.url,
                    "client_id": f"client-{spec.environment}",
                    "client_secret": {"env": self.secret_env},
                },
            }
            if spec.routing == "failover":
                entry["primary"] = i == 0
            elif spec.routing == "weighted":
                entry["weight"] = 100
            regions.append(entry)
        return {
            "environment": spec.environment,
            "routing": spec.routing,
            "time_scale": spec.time_scale,
            "regions": regions,
            "route53": {
                "hosted_zone_id": self.zone_id,
                "failover_record": FAILOVER_RECORD,
                "failover_url": self.edge.url,
                "record_ttl_seconds": spec.record_ttl_seconds,
                "health_check": {
                    "protocol": "HTTP",
                    "port": 80,
                    "path": "/healthz",
                    "request_interval": spec.request_interval,
                    "failure_threshold": spec.failure_threshold,
                    "regions": ["us-east-1", "us-west-2", "eu-west-1"],
                },
            },
            "aurora": {"global_cluster_id": f"chalk-meta-{spec.environment}"},
            "msk": {
                "replicator_name": f"chalk-{spec.environment}-replicator",
                "topics": ["chalk-persistence"],
                "service_execution_role_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/msk-replicator",
            },
            "slo": {"rto_seconds": 120, "rpo_seconds": 5},
            "fis_role_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/chalk-dr-fis",
            "guards": {
                "max_dynamodb_replication_lag_ms": 5000,
                "max_msk_replication_lag_ms": 10000,
                "max_msk_message_lag": 10000,
                "max_aurora_replication_lag_ms": 5000,
            },
        }

    def env(self) -> dict[str, str]:
        chalk_bin = shutil.which("chalk", path=str(Path(sys.executable).parent)) or "chalk"
        return {
            "AWS_ENDPOINT_URL": self.server.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.spec.regions[0].aws_region,
            self.secret_env: self.client_secret,
            "CHALK_DR_CHALK_BIN": chalk_bin,
            "SANDBOX_CONTROL_URL": self.server.endpoint_url,
            "CHALKDR_TOPOLOGY": str(self.state_dir / "topology.yaml"),
        }

    def _write_files(self) -> None:
        (self.state_dir / "topology.yaml").write_text(
            "# Written by `python -m sandbox up`: the sandbox world as a chalk-dr topology.\n"
            + yaml.safe_dump(self.topology(), sort_keys=False)
        )
        (self.state_dir / "sandbox.env").write_text("".join(f"{k}={v}\n" for k, v in self.env().items()))
        (self.state_dir / "pid").write_text(str(os.getpid()))
