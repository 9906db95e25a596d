"""The topology file: the example loads, every kind of mistake is named precisely, AWS untouched."""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from chalkdr.errors import TopologyError
from chalkdr.topology import RoutingMode
from chalkdr.topology import load_topology
from chalkdr.topology import parse_topology
from chalkdr.topology import topology_file_in

EXAMPLE = Path(__file__).resolve().parents[2] / "deployments" / "topology.example.yaml"


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a topology must never touch AWS (or anything else on the network)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("topology loading opened a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


class TestExample:
    def test_example_loads_with_derived_values(self) -> None:
        t = load_topology(EXAMPLE)
        assert t.environment == "prod"
        assert t.routing is RoutingMode.FAILOVER
        assert t.primary.aws_region == "us-east-1"
        assert [r.aws_region for r in t.secondaries] == ["us-west-2"]
        assert t.primary.url == "https://prod-east.query.example.com"
        assert t.route53.url == "https://chalk-failover.example.com"
        assert t.route53.health_check.request_interval == 10
        # One Chalk environment for every region (Chalk's multi-region guide), one credential.
        assert t.chalk.environment_id == "prod"
        assert t.chalk.client_secret.env == "CHALK_DR_PROD_CLIENT_SECRET"
        assert t.deploy is not None and t.deploy.branch == "main"
        assert t.deploy.repository("https://github.com/acme/features.git").transport == "https"
        assert t.primary.metadata_url(t.chalk) == "https://prod-east.api.chalk.example.com"
        assert str(t.chalk.api_server).rstrip("/") == "https://api.chalk.example.com"
        assert t.probe.inputs == {"user.id": 1} and t.probe.outputs == ["user.name"]
        assert t.dns.nameservers == []  # the system's resolvers
        west = t.region("us-west-2")
        assert west.aurora.instance_class == "db.r6g.large" and west.online_store_kms_key

    def test_weighted_variant_is_valid(self) -> None:
        d = example()
        d["routing"] = "weighted"
        d["regions"][0]["weight"] = 100
        d["regions"][1]["weight"] = 100
        d["regions"][0]["primary"] = False
        assert parse_topology(d).active_active


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        node: Any = d
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        last = keys[-1]
        if value is _DELETE:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


_DELETE = object()


def _two_primaries(d: dict[str, Any]) -> None:
    d["regions"][1]["primary"] = True


def _one_region(d: dict[str, Any]) -> None:
    d["regions"] = d["regions"][:1]


def _duplicate_region(d: dict[str, Any]) -> None:
    d["regions"][1]["aws_region"] = "us-east-1"
    for key in ("msk_cluster_arn", "alarm_topic_arn"):
        d["regions"][1][key] = d["regions"][0][key]


def _weighted_without_weights(d: dict[str, Any]) -> None:
    d["routing"] = "weighted"


def _weighted_two_primaries(d: dict[str, Any]) -> None:
    d["routing"] = "weighted"
    for r in d["regions"]:
        r["weight"], r["primary"] = 100, True


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    (
        "missing primary",
        _set("regions.0.primary", False),
        "",
        "exactly one region with primary: true, found 0",
    ),
    ("two primaries", _two_primaries, "", "found 2 (us-east-1, us-west-2)"),
    ("one region", _one_region, "regions", "at least 2 items"),
    (
        "request interval 15",
        _set("route53.health_check.request_interval", 15),
        "route53.health_check.request_interval",
        "10 or 30",
    ),
    (
        "failure threshold 0",
        _set("route53.health_check.failure_threshold", 0),
        "route53.health_check.failure_threshold",
        "greater than or equal to 1",
    ),
    (
        "failure threshold 11",
        _set("route53.health_check.failure_threshold", 11),
        "route53.health_check.failure_threshold",
        "less than or equal to 10",
    ),
    ("unknown field", _set("regions.1.primery", True), "regions[1:us-west-2].primery", "unknown field"),
    (
        "bad region name",
        _set("regions.1.aws_region", "us-wset-2"),
        "regions[1:us-wset-2].aws_region",
        "not an AWS region name",
    ),
    ("duplicate region", _duplicate_region, "", "duplicate aws_region 'us-east-1'"),
    (
        "literal secret",
        _set("chalk.client_secret", "s3cr3t-value"),
        "chalk.client_secret",
        "a literal secret is not allowed",
    ),
    (
        "secret ref both kinds",
        _set("chalk.client_secret", {"env": "A", "prefect_secret": "b"}),
        "chalk.client_secret",
        "exactly one of",
    ),
    (
        "secret env not a var name",
        _set("chalk.client_secret", {"env": "sk-live-123"}),
        "chalk.client_secret",
        "not an environment variable name",
    ),
    (
        "too few checker regions",
        _set("route53.health_check.regions", ["us-east-1", "us-west-2"]),
        "route53.health_check.regions",
        "at least 3",
    ),
    (
        "unknown checker region",
        _set("route53.health_check.regions", ["us-east-1", "us-west-2", "eu-central-1"]),
        "route53.health_check.regions",
        "not Route 53 checker regions: eu-central-1",
    ),
    (
        "health path",
        _set("route53.health_check.path", "healthz"),
        "route53.health_check.path",
        "must start with '/'",
    ),
    (
        "msk arn in wrong region",
        _set("regions.1.msk_cluster_arn", "arn:aws:kafka:us-east-1:123456789012:cluster/x/abc-1"),
        "regions[1:us-west-2]",
        "msk_cluster_arn is in us-east-1",
    ),
    ("bad alb", _set("regions.0.alb", "chalk prod east!"), "regions[0:us-east-1]", "neither an ALB name"),
    (
        "bad role arn",
        _set("regions.0.role_arn", "arn:aws:iam::1234:user/bob"),
        "regions[0:us-east-1].role_arn",
        "not an IAM role ARN",
    ),
    ("missing slo", _set("slo", _DELETE), "slo", "required field is missing"),
    (
        "record ttl pretends",
        _set("route53.record_ttl_seconds", 5),
        "route53",
        "answered with the ELB's own TTL (60 s)",
    ),
    (
        "no alarm topic",
        _set("regions.1.alarm_topic_arn", _DELETE),
        "",
        "alarm_topic_arn missing for us-west-2",
    ),
    (
        "alarm topic elsewhere",
        _set("regions.1.alarm_topic_arn", "arn:aws:sns:us-east-1:123456789012:x"),
        "regions[1:us-west-2]",
        "alarm_topic_arn is in us-east-1",
    ),
    ("probe output not a feature", _set("probe.outputs", ["name"]), "probe.outputs", "not feature names"),
    ("nameserver not an address", _set("dns", {"nameservers": ["ns.example.com"]}), "dns.nameservers", ""),
    ("no chalk environment", _set("chalk", _DELETE), "chalk", "required field is missing"),
    ("weighted without weights", _weighted_without_weights, "", "needs a weight on every region"),
    ("weight in failover mode", _set("regions.0.weight", 10), "", "weight is only meaningful"),
    (
        "secret env outside the prefix",
        _set("chalk.client_secret", {"env": "AWS_SECRET_ACCESS_KEY"}),
        "chalk.client_secret",
        "secret references name CHALK_DR_* variables only",
    ),
    (
        "secret block outside the prefix",
        _set("chalk.client_secret", {"prefect_secret": "aws-credentials"}),
        "chalk.client_secret",
        "chalk-* Secret blocks only",
    ),
    (
        "api server over http to another machine",
        _set("chalk.api_server", "http://203.0.113.7"),
        "chalk.api_server",
        "sends credentials in the clear to 203.0.113.7: use https",
    ),
    (
        "region api server over http to another machine",
        _set("regions.1.api_server", "http://10.1.2.3:8080"),
        "regions[1:us-west-2].api_server",
        "use https",
    ),
    (
        "query url over http to another machine",
        _set("regions.0.query_url", "http://[2001:db8::1]:80"),
        "regions[0:us-east-1].query_url",
        "use https",
    ),
    (
        "failover url over http to another machine",
        _set("route53.failover_url", "http://198.51.100.1"),
        "route53.failover_url",
        "use https",
    ),
    (
        "deploy repository with a token",
        _set("deploy.repositories", ["https://x:ghp_t0ken@github.com/acme/features.git"]),
        "deploy.repositories",
        "credentials",
    ),
    (
        "deploy repository over plain http",
        _set("deploy.repositories", ["http://git.example.com/acme/features.git"]),
        "deploy.repositories",
        "plain http is refused",
    ),
    ("deploy without repositories", _set("deploy.repositories", []), "deploy.repositories", "at least 1"),
    ("deploy bad branch", _set("deploy.branch", "main..evil"), "deploy.branch", "not a git branch name"),
    ("deploy unknown field", _set("deploy.allow_all", True), "deploy.allow_all", "unknown field"),
    ("two primaries, weighted", _weighted_two_primaries, "", "at most one region may have primary: true"),
    (
        "bad hosted zone",
        _set("route53.hosted_zone_id", "example.com"),
        "route53.hosted_zone_id",
        "should match pattern",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "location", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_topology_names_field_and_reason(
    tmp_path: Path, name: str, mutate: Callable[[dict[str, Any]], None], location: str, reason: str
) -> None:
    d = copy.deepcopy(example())
    mutate(d)
    path = tmp_path / "topo.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    lines = str(info.value).splitlines()
    expected_prefix = f"{path}: {location}: " if location else f"{path}: "
    assert any(line.startswith(expected_prefix) and reason in line for line in lines), lines


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    d = example()
    d["route53"]["health_check"]["request_interval"] = 15
    d["chalk"]["client_secret"] = "literal"
    d["regions"][0]["surprise"] = 1
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert len(info.value.problems) == 3
    assert len(str(info.value).splitlines()) == 3


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "topology is empty"),
        ("# only a comment\n", "topology is empty"),
        ("environment: prod\nregions: [\n", "YAML syntax error"),
        ("- just\n- a list\n", "expected a mapping at top level"),
    ],
    ids=["empty file", "comment only", "bad yaml syntax", "not a mapping"],
)
def test_unparseable_files(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError, match=reason) as info:
        load_topology(path)
    assert str(info.value).startswith(str(path))


def test_yaml_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("environment: prod\nregions:\n  - aws_region: [us-east-1\n")
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert "line " in str(info.value) and "column " in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read file"):
        load_topology(tmp_path / "nope.yaml")


def test_http_to_loopback_or_a_name_loads(tmp_path: Path) -> None:
    """Loopback addresses may be http; a name is judged by what it resolves to when it is used."""
    d = example()
    d["chalk"]["api_server"] = "http://127.0.0.1:8080"
    d["regions"][0]["api_server"] = "http://[::1]:8080"
    d["regions"][1]["query_url"] = "http://prod-west.query.example.com:8080"
    t = parse_topology(d)
    assert t.region("us-west-2").url == "http://prod-west.query.example.com:8080"


@pytest.mark.parametrize(
    ("text", "key", "line", "first"),
    [
        ("environment: prod\nenvironment: staging\n", "environment", 2, 1),
        ("regions:\n  - aws_region: us-east-1\n    primary: true\n    primary: false\n", "primary", 4, 3),
        ("chalk:\n  client_secret: {env: CHALK_DR_A, env: AWS_SECRET_ACCESS_KEY}\n", "env", 2, 2),
    ],
    ids=["top level", "in a region", "in a flow mapping"],
)
def test_a_duplicate_key_names_the_key_and_the_line(
    tmp_path: Path, text: str, key: str, line: int, first: int
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    (problem,) = info.value.problems
    assert problem.location.startswith(f"line {line}, column ")
    assert f"duplicate key {key!r} (first at line {first})" in problem.reason


def test_the_example_with_a_duplicate_primary_is_an_error(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("    primary: true\n", "    primary: true\n    primary: false\n")
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError, match="duplicate key 'primary'"):
        load_topology(path)


def test_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    """`<<: *anchor` then the same key is YAML's override, not a duplicate."""
    d = example()
    d["regions"][1]["eks"] = {"cluster_name": "chalk-prod-west", "namespace": "x"}
    text = yaml.safe_dump(d).replace(
        "  eks:\n    cluster_name: chalk-prod-west\n",
        "  eks:\n    <<: {cluster_name: other}\n    cluster_name: chalk-prod-west\n",
    )
    path = tmp_path / "t.yaml"
    path.write_text(text)
    assert "<<:" in text
    assert load_topology(path).region("us-west-2").eks.cluster_name == "chalk-prod-west"


class TestTopologyDirectory:
    def test_a_file_in_the_directory(self, tmp_path: Path) -> None:
        (tmp_path / "prod.yaml").write_text(EXAMPLE.read_text())
        assert topology_file_in(tmp_path, "prod.yaml") == (tmp_path / "prod.yaml").resolve()
        assert topology_file_in(tmp_path, str(tmp_path / "prod.yaml")) == (tmp_path / "prod.yaml").resolve()

    @pytest.mark.parametrize(
        ("name", "reason"),
        [
            ("../outside.yaml", "not a file in the topology directory"),
            ("/etc/passwd", "not a file in the topology directory"),
            ("escape.yaml", "not a file in the topology directory"),  # a symlink out of it
            ("notes.txt", "ends in .yaml or .yml"),
            ("missing.yaml", "no such topology file"),
        ],
    )
    def test_anything_else_is_refused(self, tmp_path: Path, name: str, reason: str) -> None:
        root = tmp_path / "topologies"
        root.mkdir()
        (tmp_path / "outside.yaml").write_text(EXAMPLE.read_text())
        (root / "escape.yaml").symlink_to(tmp_path / "outside.yaml")
        (root / "notes.txt").write_text("x")
        with pytest.raises(TopologyError, match=reason):
            topology_file_in(root, name)
