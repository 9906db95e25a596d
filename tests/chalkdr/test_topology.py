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
        assert t.primary.chalk.client_secret.env == "CHALK_PROD_EAST_CLIENT_SECRET"
        assert t.region("us-west-2").chalk.client_secret.prefect_secret == "chalk-prod-west-client-secret"

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
    d["regions"][1]["msk_cluster_arn"] = d["regions"][0]["msk_cluster_arn"]


def _weighted_without_weights(d: dict[str, Any]) -> None:
    d["routing"] = "weighted"


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
        _set("regions.0.chalk.client_secret", "s3cr3t-value"),
        "regions[0:us-east-1].chalk.client_secret",
        "a literal secret is not allowed",
    ),
    (
        "secret ref both kinds",
        _set("regions.0.chalk.client_secret", {"env": "A", "prefect_secret": "b"}),
        "regions[0:us-east-1].chalk.client_secret",
        "exactly one of",
    ),
    (
        "secret env not a var name",
        _set("regions.0.chalk.client_secret", {"env": "sk-live-123"}),
        "regions[0:us-east-1].chalk.client_secret",
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
    ("weighted without weights", _weighted_without_weights, "", "needs a weight on every region"),
    ("weight in failover mode", _set("regions.0.weight", 10), "", "weight is only meaningful"),
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
    d["regions"][1]["chalk"]["client_secret"] = "literal"
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
