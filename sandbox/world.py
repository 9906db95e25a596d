"""The whole sandbox world in one process: AWS, DNS, EKS API servers, Chalk, the edge.

`World.start()` wires the simulators onto one AWS endpoint, gives every region's load balancer
and API server loopback addresses of their own (all on one port), starts the name server that
answers the zone and the load balancers' names, seeds what Chalk's team would have provisioned
(EKS clusters, ALBs, a public hosted zone, the online-store table, MSK clusters ready for MSK
Replicator, the encrypted primary Aurora cluster with its instance, SNS topics, KMS keys) and
writes a topology plus an env file pointing at it all. Product code reaches the world only
through those two files: AWS through AWS_ENDPOINT_URL, every name through `dns.nameservers`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import boto3
import dns.rcode
import dns.resolver
import httpx
import yaml
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError
from werkzeug.wrappers import Response

from sandbox.api_server import ApiServer
from sandbox.arc import ArcSim
from sandbox.aurora import AuroraSim
from sandbox.aurora import create_primary_cluster
from sandbox.aws import ACCOUNT_ID
from sandbox.aws import AwsCall
from sandbox.aws import AwsServer
from sandbox.aws import SandboxAwsApp
from sandbox.chalk import ChalkEnvironment
from sandbox.chalk import ChalkRegion
from sandbox.chalk import plain
from sandbox.chalk import served_hosts
from sandbox.clock import SandboxClock
from sandbox.clock import Ticker
from sandbox.dns import DnsAnswer
from sandbox.dns import DnsServer
from sandbox.dynamodb import DynamoDbSim
from sandbox.edge import FailoverEdge
from sandbox.edge import _dns_lookup
from sandbox.eks import EksSim
from sandbox.eks_auth import TokenVerifier
from sandbox.fis import FisSim
from sandbox.kafka_log import KafkaLog
from sandbox.kube import RegionalKube
from sandbox.msk import MskSim
from sandbox.msk import prepare_for_replicator
from sandbox.net import region_address
from sandbox.net import require_addresses
from sandbox.net import sockets_on_one_port
from sandbox.persistence import PERSISTENCE_TOPIC
from sandbox.persistence import PersistenceWorkers
from sandbox.persistence import RegionStore
from sandbox.query_server import QueryServer
from sandbox.route53 import DnsResolutionFailed
from sandbox.route53 import Route53Sim
from sandbox.truth import GroundTruth

__all__ = ["RegionSpec", "World", "WorldSpec"]

NAMESPACE = "chalk"
QUERY_DEPLOYMENT = "chalk-query-server"
PERSISTENCE_DEPLOYMENT = "chalk-persistence-worker"
ONLINE_TABLE = "chalk-online-store"
ZONE_NAME = "example.com"
FAILOVER_RECORD = f"chalk-failover.{ZONE_NAME}"
API_NAME = f"api.chalk.{ZONE_NAME}"  # the API server name applications use
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
ALB_HOSTS = (1, 2)  # each ALB answers on two addresses, as an ALB in two AZs does
API_HOST = 10
TRAFFIC_PERIOD_S = 1.0  # the application's background uploads (real seconds)


@dataclass(frozen=True)
class RegionSpec:
    aws_region: str
    short: str  # east / west

    @property
    def resource_group(self) -> str:
        return f"demo-{self.short}"

    @property
    def query_hostname(self) -> str:
        return f"{self.resource_group}.query.{ZONE_NAME}"

    @property
    def api_hostname(self) -> str:
        return f"{self.resource_group}.api.chalk.{ZONE_NAME}"


@dataclass(frozen=True)
class WorldSpec:
    environment: str = "demo"
    regions: tuple[RegionSpec, ...] = (RegionSpec("us-east-1", "east"), RegionSpec("us-west-2", "west"))
    time_scale: float = 10.0
    request_interval: int = 10
    failure_threshold: int = 2
    replication_lag_s: float = 0.3
    query_replicas: int = 2
    ready_delay_s: float = 0.5
    routing: str = "failover"
    traffic: bool = True  # an application uploading features in the background (metrics need writes)
    arc: bool = False  # the topology asks for ARC routing controls (provision creates them)
    failback_readiness: bool = False  # the topology asks for reverse replication (provision creates it)


@dataclass
class _Region:
    index: int
    spec: RegionSpec
    kube: RegionalKube
    alb_addresses: tuple[str, ...]
    api_address: str
    chalk: ChalkRegion | None = None
    query: QueryServer | None = None
    api: ApiServer | None = None
    alb_dns: str = ""
    alb_arn: str = ""
    msk_arn: str = ""
    aurora_cluster: str = ""
    kms_key: str = ""
    topic_arn: str = ""
    aurora_extra: dict[str, Any] = field(default_factory=dict)


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
        self.app = SandboxAwsApp(self.truth)
        self.log = KafkaLog()
        self.environment = ChalkEnvironment(
            environment_id=self.spec.environment,
            client_id=f"client-{self.spec.environment}",
            client_secret=f"sandbox-secret-{self.spec.environment}",
        )
        self._stoppers: list[Any] = []
        self._sockets: dict[str, Any] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> World:
        spec, clock, truth, app = self.spec, self.clock, self.truth, self.app
        for i, r in enumerate(spec.regions):
            kube = RegionalKube(
                cluster_name=f"chalk-{spec.environment}-{r.short}",
                namespace=NAMESPACE,
                # the primary's persistence workers are active, the others passive (Chalk's guide)
                deployments={
                    QUERY_DEPLOYMENT: spec.query_replicas,
                    PERSISTENCE_DEPLOYMENT: 1 if i == 0 else 0,
                },
                ready_delay=spec.ready_delay_s,
                truth=truth,
                verify_token=self._token_check(f"chalk-{spec.environment}-{r.short}"),
            ).start()
            self._stoppers.append(kube)
            self.regions[r.aws_region] = _Region(
                index=i,
                spec=r,
                kube=kube,
                alb_addresses=tuple(region_address(i, h) for h in ALB_HOSTS),
                api_address=region_address(i, API_HOST),
            )
        self._bind()

        self.dns = DnsServer(self._dns_answer).start()
        self._stoppers.insert(0, self.dns)
        self.route53 = Route53Sim(
            app, clock=clock, truth=truth, resolve=self._checker_target, alias_addresses=self._alb_addresses
        )
        self.dynamodb = DynamoDbSim(app, clock=clock, truth=truth, replication_lag_s=spec.replication_lag_s)
        self.fis = FisSim(app, clock=clock, truth=truth, dynamodb=self.dynamodb)
        self.msk = MskSim(app, clock=clock, truth=truth, log=self.log)
        self.aurora = AuroraSim(app, clock=clock, truth=truth)
        # ARC's configuration API and cluster data plane; the world creates no ARC resources
        self.arc = ArcSim(app, clock=clock, truth=truth, route53=self.route53)
        self.eks = EksSim(
            app,
            clock=clock,
            truth=truth,
            endpoints={(a, reg.kube.cluster_name): reg.kube.url for a, reg in self.regions.items()},
        )
        app.control("GET", "/_sandbox/truth", self._truth_route)
        app.control("GET", "/_sandbox/world", self._world_route)
        app.control("POST", "/_sandbox/chalk/query-errors", self._query_errors_route)
        self.server = AwsServer(app).start()
        self._stoppers.insert(0, self.server)
        for sim in (self.route53, self.dynamodb, self.fis, self.msk, self.aurora, self.eks, self.arc):
            sim.start(self.server.endpoint_url)
            self._stoppers.insert(0, sim)

        self._seed()
        self._start_chalk()
        self.edge = FailoverEdge(
            name=FAILOVER_RECORD,
            upstream_port=self.port,
            nameserver=self.dns.nameserver,
            truth=truth,
            busy=True,
        ).start()
        self._stoppers.insert(0, self.edge)
        if spec.traffic:
            traffic = Ticker("app-traffic", self._upload_traffic, lambda: TRAFFIC_PERIOD_S).start()
            self._stoppers.insert(0, traffic)
        self._write_files()
        return self

    def stop(self) -> None:
        for s in self._stoppers:
            try:
                s.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                print(f"sandbox: stopping {type(s).__name__} failed: {exc}", file=sys.stderr)
        self._stoppers.clear()

    # -- the network ---------------------------------------------------------------------------

    def _bind(self) -> None:
        """Listening sockets for every ALB and API address, all on one port."""
        hosts = [h for reg in self.regions.values() for h in (*reg.alb_addresses, reg.api_address)]
        require_addresses(hosts)
        for sock in sockets_on_one_port(hosts):
            self._sockets[sock.getsockname()[0]] = sock
        self.port = int(next(iter(self._sockets.values())).getsockname()[1])

    def _token_check(self, cluster_name: str) -> Any:
        """The cluster's authenticator: tokens must be presigned for this cluster by the sandbox's STS."""

        def check(token: str) -> str | None:
            verifier = TokenVerifier(
                cluster_name,
                sts_hosts=[self.server.endpoint_url.removeprefix("http://")],
                credentials={CREDS["aws_access_key_id"]: CREDS["aws_secret_access_key"]},
            )
            return verifier.verify(token)

        return check

    def _alb_addresses(self, name: str) -> tuple[str, ...] | None:
        """A load balancer's DNS name -> its addresses (what the ELB's own name server answers)."""
        wanted = name.lower().rstrip(".").removeprefix("dualstack.")
        for reg in self.regions.values():
            if reg.alb_dns and wanted == reg.alb_dns.lower():
                return reg.alb_addresses
        return None

    def _dns_answer(self, name: str, kind: str) -> DnsAnswer:
        """The sandbox's name server: the load balancers' names, then Route 53's public zones."""
        addresses = self._alb_addresses(name)
        if addresses is not None:
            if kind != "A":
                return DnsAnswer(dns.rcode.NOERROR)
            return DnsAnswer(dns.rcode.NOERROR, addresses, max(1, round(self.clock.real_seconds(60))))
        if name.endswith(".elb.amazonaws.com"):
            return DnsAnswer(dns.rcode.NXDOMAIN)
        return self.route53.resolve(name, kind)

    def _checker_target(self, host: str, port: int, kind: str) -> str | None:
        """What a Route 53 health checker connects to: the FQDN resolved through the sandbox DNS
        (Route 53 resolves FullyQualifiedDomainName itself when no IPAddress is given); a name
        without an A record fails the check with "DNS resolution failed", as on AWS."""
        if _is_ip(host):
            return f"http://{host}:{port}"
        try:
            addresses, _ttl = _dns_lookup(self.dns.nameserver, host)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as exc:
            raise DnsResolutionFailed(host) from exc
        except Exception:  # noqa: BLE001 - the name server did not answer: the endpoint is unreachable
            return None
        return f"http://{addresses[0]}:{port}" if addresses else None

    # -- wiring ------------------------------------------------------------------------------

    def client(self, service: str, region: str) -> Any:
        return boto3.client(service, region_name=region, endpoint_url=self.server.endpoint_url, **CREDS)

    def url(self, hostname: str) -> str:
        return f"http://{hostname}:{self.port}"

    def set_unreachable(self, region: str, unreachable: bool = True) -> None:
        """Fault: every AWS API signed for `region` stops answering (sandbox/aws.py); DNS, health
        checkers, Kubernetes and Chalk are not affected. Also `POST /_sandbox/aws/unreachable`."""
        self.app.set_unreachable(region, unreachable)

    def _truth_route(self, call: AwsCall) -> Response:
        since = float(call.query["since"]) if "since" in call.query else None
        events = self.truth.events(call.query.get("kind"), since)
        return Response(json.dumps(events, default=str), content_type="application/json")

    def _query_errors_route(self, call: AwsCall) -> Response:
        """Operator fault: `{"region": ..., "status": 500}` makes that region's queries fail with
        the status while its /healthz passes; `"status": null` ends it."""
        try:
            req = call.json()
            region, status = str(req["region"]), req.get("status")
            reg = self.regions[region]
        except (ValueError, KeyError, TypeError):
            return Response(
                json.dumps({"error": 'expected {"region": <known region>, "status": int|null}'}), 400
            )
        if reg.chalk is None:
            return Response(json.dumps({"error": f"{region} has no Chalk"}), 409)
        reg.chalk.query_error_status = int(status) if status is not None else None
        self.truth.record("chalk.query_errors", region=region, status=reg.chalk.query_error_status)
        return Response(json.dumps({"region": region, "status": reg.chalk.query_error_status}), 200)

    def _world_route(self, call: AwsCall) -> Response:
        body = {
            "time_scale": self.spec.time_scale,
            "edge": self.edge.url,
            "port": self.port,
            "nameserver": self.dns.nameserver,
            "regions": {
                a: {
                    "query_url": self.url(reg.spec.query_hostname),
                    "alb_dns": reg.alb_dns,
                    "alb_addresses": list(reg.alb_addresses),
                    "api_address": reg.api_address,
                    "kube": reg.kube.url,
                    "query_ready_replicas": reg.kube.ready_replicas(QUERY_DEPLOYMENT),
                    "deployment_id": reg.chalk.served() if reg.chalk else None,
                }
                for a, reg in self.regions.items()
            },
        }
        return Response(json.dumps(body), content_type="application/json")

    # -- seeding -----------------------------------------------------------------------------

    def _seed(self) -> None:
        env = self.spec.environment
        r53 = self.client("route53", "us-east-1")
        self.zone_id = r53.create_hosted_zone(Name=ZONE_NAME, CallerReference=f"sandbox-{uuid.uuid4()}")[
            "HostedZone"
        ]["Id"].removeprefix("/hostedzone/")
        primary = next(iter(self.regions.values()))
        api_records = [(API_NAME, primary.api_address)] + [
            (reg.spec.api_hostname, reg.api_address) for reg in self.regions.values()
        ]
        r53.change_resource_record_sets(
            HostedZoneId=self.zone_id,
            ChangeBatch={
                "Changes": [
                    {
                        "Action": "CREATE",
                        "ResourceRecordSet": {
                            "Name": name,
                            "Type": "A",
                            "TTL": 60,
                            "ResourceRecords": [{"Value": address}],
                        },
                    }
                    for name, address in api_records
                ]
            },
        )
        for a, reg in self.regions.items():
            self._seed_region(env, a, reg, primary=reg is primary)
        self._wait_msk_active()
        for reg in self.regions.values():
            self._prepare_for_replicator(reg)

    def _seed_region(self, env: str, a: str, reg: _Region, *, primary: bool) -> None:
        short = reg.spec.short
        ec2 = self.client("ec2", a)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{a}{z}")["Subnet"][
                "SubnetId"
            ]
            for i, z in enumerate("abc")
        ]
        group = ec2.create_security_group(GroupName=f"chalk-{short}", Description="chalk", VpcId=vpc)[
            "GroupId"
        ]
        lb = self.client("elbv2", a).create_load_balancer(
            Name=f"chalk-{env}-{short}", Subnets=subnets[:2], Type="application", Scheme="internet-facing"
        )["LoadBalancers"][0]
        reg.alb_dns, reg.alb_arn = lb["DNSName"], lb["LoadBalancerArn"]
        self.client("eks", a).create_cluster(
            name=reg.kube.cluster_name,
            roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/eks-cluster",
            resourcesVpcConfig={"subnetIds": subnets},
        )
        reg.kms_key = self.client("kms", a).create_key(Description=f"chalk {env} {short}")["KeyMetadata"][
            "Arn"
        ]
        reg.topic_arn = self.client("sns", a).create_topic(Name=f"chalk-dr-{env}-alarms")["TopicArn"]
        reg.msk_arn = self.client("kafka", a).create_cluster(
            ClusterName=f"chalk-{env}-{short}",
            KafkaVersion="3.6.0",
            NumberOfBrokerNodes=3,  # MSK Replicator needs at least three brokers
            BrokerNodeGroupInfo={"InstanceType": "kafka.m5.large", "ClientSubnets": subnets},
            ClientAuthentication={"Sasl": {"Iam": {"Enabled": True}}},
        )["ClusterArn"]
        reg.aurora_cluster = f"chalk-meta-{short}"
        rds = self.client("rds", a)
        if primary:
            self._seed_primary_data(a, rds, reg)
        else:
            rds.create_db_subnet_group(
                DBSubnetGroupName=f"chalk-meta-{short}", DBSubnetGroupDescription="chalk", SubnetIds=subnets
            )
            reg.aurora_extra = {
                "subnet_group": f"chalk-meta-{short}",
                "security_group_ids": [group],
                "kms_key_id": reg.kms_key,
                "instance_class": "db.r6g.large",
            }

    def _seed_primary_data(self, a: str, rds: Any, reg: _Region) -> None:
        ddb = self.client("dynamodb", a)
        ddb.create_table(
            TableName=ONLINE_TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            # Encrypted with the region's customer managed key, as a production online store is:
            # every replica then needs a key of its own region (sandbox/dynamodb.py).
            SSESpecification={"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": reg.kms_key},
        )
        ddb.put_item(
            TableName=ONLINE_TABLE,
            Item={"pk": {"S": "user.1"}, "user.id": {"N": "1"}, "user.name": {"S": "Ada"}},
        )
        create_primary_cluster(rds, reg.aurora_cluster, reg.kms_key)

    def _wait_msk_active(self) -> None:
        deadline = time.monotonic() + 30
        for a, reg in self.regions.items():
            kafka = self.client("kafka", a)
            while kafka.describe_cluster_v2(ClusterArn=reg.msk_arn)["ClusterInfo"]["State"] != "ACTIVE":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"MSK cluster {reg.msk_arn} did not become ACTIVE")
                time.sleep(0.05)

    def _prepare_for_replicator(self, reg: _Region) -> None:
        """What Chalk's team does for MSK Replicator (msk-replicator-prepare-cluster)."""
        prepare_for_replicator(self.client("kafka", reg.msk_arn.split(":")[3]), reg.msk_arn)

    # -- Chalk ----------------------------------------------------------------------------------

    def _start_chalk(self) -> None:
        stores = []
        for a, reg in self.regions.items():
            ddb = self.client("dynamodb", a)
            kube = reg.kube

            def read_item(pk: str, ddb: Any = ddb) -> dict[str, Any] | Exception:
                return _read_item(ddb, pk)

            def publish(rows: list[dict[str, Any]], arn: str = reg.msk_arn) -> None:
                for row in rows:
                    self.log.produce(arn, PERSISTENCE_TOPIC, row)

            reg.chalk = ChalkRegion(
                region=a,
                resource_group=reg.spec.resource_group,
                is_serving=lambda kube=kube: kube.ready_replicas(QUERY_DEPLOYMENT) > 0,  # type: ignore[misc]
                read_item=read_item,
                publish=publish,
                truth=self.truth,
            )
            reg.query = QueryServer(
                region=reg.chalk,
                environment=self.environment,
                hosts=served_hosts(reg.spec.query_hostname, FAILOVER_RECORD),
                sockets=[self._sockets[h] for h in reg.alb_addresses],
            ).start()
            reg.api = ApiServer(
                region=reg.chalk,
                environment=self.environment,
                # by address too: the chalk CLI resolves with the operating system, which does not
                # know the sandbox's zone, so the topology gives it the API server's address
                hosts=served_hosts(reg.spec.api_hostname, API_NAME, reg.api_address),
                engine_url=self.url(reg.spec.query_hostname),
                sockets=[self._sockets[reg.api_address]],
            ).start()
            reg.api.public_url = self.url(reg.spec.api_hostname)
            self._stoppers[:0] = [reg.query, reg.api]
            stores.append(
                RegionStore(
                    region=a,
                    cluster_arn=reg.msk_arn,
                    running=lambda kube=kube: kube.ready_replicas(PERSISTENCE_DEPLOYMENT) > 0,  # type: ignore[misc]
                    dynamodb=ddb,
                    table=ONLINE_TABLE,
                )
            )
        self.persistence = PersistenceWorkers(self.log, stores, truth=self.truth)
        self.persistence.start(self.server.endpoint_url)
        self._stoppers.insert(0, self.persistence)
        self._traffic_token: str | None = None
        self._traffic_count = 0
        self._traffic_lock = threading.Lock()

    def _upload_traffic(self) -> None:
        """An application writing features through the environment's API name (its own traffic
        keeps the replication metrics flowing: AWS publishes lag only while there are writes)."""
        primary = next(iter(self.regions.values()))
        api = f"http://{primary.api_address}:{self.port}"
        headers = {"Host": API_NAME, "X-Chalk-Env-Id": self.environment.environment_id}
        with httpx.Client(timeout=5, trust_env=False) as http:
            if self._traffic_token is None:
                resp = http.post(
                    f"{api}/v1/oauth/token",
                    headers={"Host": API_NAME},
                    json={
                        "client_id": self.environment.client_id,
                        "client_secret": self.environment.client_secret,
                        "grant_type": "client_credentials",
                    },
                )
                self._traffic_token = str(resp.json()["access_token"])
            with self._traffic_lock:
                self._traffic_count += 1
                n = self._traffic_count
            http.post(
                f"{api}/v1/upload_features",
                headers={**headers, "Authorization": f"Bearer {self._traffic_token}"},
                json={"input": {"app_event.id": [n % 50], "app_event.seen_at": [time.time()]}},
            )

    @property
    def secret_env(self) -> str:
        return f"CHALK_DR_{self.spec.environment.upper().replace('-', '_')}_CLIENT_SECRET"

    # -- outputs -----------------------------------------------------------------------------

    def topology(self) -> dict[str, Any]:
        spec = self.spec
        regions = []
        for i, (a, reg) in enumerate(self.regions.items()):
            entry: dict[str, Any] = {
                "aws_region": a,
                "resource_group": reg.spec.resource_group,
                "query_hostname": reg.spec.query_hostname,
                "query_url": self.url(reg.spec.query_hostname),
                "api_server": f"http://{reg.api_address}:{self.port}",
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
                "alarm_topic_arn": reg.topic_arn,
            }
            if reg.aurora_extra:
                entry["aurora"] = reg.aurora_extra
                entry["online_store_kms_key"] = reg.kms_key  # the replica's own key in its region
            if spec.routing == "failover":
                entry["primary"] = i == 0
            elif spec.routing == "weighted":
                entry["weight"] = 100
            regions.append(entry)
        return {
            "environment": spec.environment,
            "routing": spec.routing,
            "time_scale": spec.time_scale,
            "chalk": {
                "environment_id": spec.environment,
                "api_server": self.url(API_NAME),
                "client_id": self.environment.client_id,
                "client_secret": {"env": self.secret_env},
            },
            "probe": {"inputs": {"user.id": 1}, "outputs": ["user.name"]},
            "dns": {"nameservers": [self.dns.nameserver]},
            "regions": regions,
            "route53": {
                "hosted_zone_id": self.zone_id,
                "failover_record": FAILOVER_RECORD,
                "failover_url": self.url(FAILOVER_RECORD),
                "health_check": {
                    "protocol": "HTTP",
                    "port": self.port,
                    "path": "/healthz",
                    "request_interval": spec.request_interval,
                    "failure_threshold": spec.failure_threshold,
                    "regions": ["us-east-1", "us-west-2", "eu-west-1"],
                },
            },
            "aurora": {"global_cluster_id": f"chalk-meta-{spec.environment}"},
            "msk": {
                "replicator_name": f"chalk-{spec.environment}-replicator",
                "topics": [PERSISTENCE_TOPIC],
                "service_execution_role_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/msk-replicator",
            },
            "recovery": self._recovery(),
            "slo": {"rto_seconds": 120, "rpo_seconds": 5},
            "fis_role_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/chalk-dr-fis",
            "guards": {
                "max_dynamodb_replication_lag_ms": 5000,
                "max_msk_replication_lag_ms": 10000,
                "max_msk_message_lag": 10000,
                "max_aurora_replication_lag_ms": 5000,
            },
        }

    def _recovery(self) -> dict[str, Any]:
        """The topology's `recovery` section (chalkdr.topology.RecoveryConfig)."""
        env = self.spec.environment
        out: dict[str, Any] = {"failback_readiness": self.spec.failback_readiness}
        if self.spec.arc:
            out["arc"] = {"cluster_name": f"{env}-arc", "control_panel_name": f"{env}-panel"}
        return out

    def env(self) -> dict[str, str]:
        chalk_bin = shutil.which("chalk", path=str(Path(sys.executable).parent)) or "chalk"
        return {
            "AWS_ENDPOINT_URL": self.server.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.spec.regions[0].aws_region,
            self.secret_env: self.environment.client_secret,
            "CHALK_DR_CHALK_BIN": chalk_bin,
            "SANDBOX_CONTROL_URL": self.server.endpoint_url,
            "SANDBOX_NAMESERVER": self.dns.nameserver,
            "SANDBOX_FAILOVER_EDGE": self.edge.url,
            "CHALKDR_TOPOLOGY": str(self.state_dir / "topology.yaml"),
        }

    def _write_files(self) -> None:
        (self.state_dir / "topology.yaml").write_text(
            "# Written by `python -m sandbox up`: the sandbox world as a chalk-dr topology.\n"
            + yaml.safe_dump(self.topology(), sort_keys=False)
        )
        (self.state_dir / "sandbox.env").write_text("".join(f"{k}={v}\n" for k, v in self.env().items()))
        (self.state_dir / "pid").write_text(str(os.getpid()))


def _is_ip(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def _read_item(ddb: Any, pk: str) -> dict[str, Any] | Exception:
    """The online store's item for `pk` (ConsistentRead), values as JSON values, or the error."""
    try:
        raw = ddb.get_item(TableName=ONLINE_TABLE, Key={"pk": {"S": pk}}, ConsistentRead=True)
    except (ClientError, BotoCoreError) as exc:
        return exc
    deserializer = TypeDeserializer()
    return {k: plain(deserializer.deserialize(v)) for k, v in raw.get("Item", {}).items()}
