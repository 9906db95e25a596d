"""Least privilege: every AWS call a flow made against the sandbox is allowed by that flow's IAM policy
in deployments/iam/, and every action a policy grants is either called by a recorded run or
documented in deployments/iam/README.md as needed without a call of its own.

The calls are recorded by the proxy in tests/security/conftest.py (service and region from the
SigV4 scope, the operation from botocore's service model, the ARNs the request names). The policy
evaluator below is deliberately small: explicit Deny wins, otherwise an Allow statement must match
the action (IAM wildcards, case-insensitive) and, for every ARN the request names, the resource
(wildcards, case-sensitive) after the policies' `${...}` placeholders are filled in from the
sandbox topology. Conditions are not evaluated (they only narrow what an Allow grants).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

# The session fixtures run every flow against the sandbox (four provisions, three drills, a
# sweep, two chalk applies): their set-up counts against the first test that needs them.
pytestmark = pytest.mark.timeout(1200)

POLICY_KEYS = {"Version", "Statement", "Id"}
STATEMENT_KEYS = {"Sid", "Effect", "Action", "Resource", "Condition"}
CONDITION_OPERATORS = re.compile(
    r"^(ForAllValues:|ForAnyValue:)?(StringEquals|StringLike|StringNotEquals|StringNotLike|ArnLike|ArnEquals|"
    r"Bool|NumericEquals|NumericLessThan|NumericGreaterThan|DateGreaterThan|DateLessThan)(IfExists)?$"
)
ACTION_RE = re.compile(r"^(\*|[a-z0-9-]+:[A-Za-z0-9*?]+)$")
RESOURCE_RE = re.compile(
    r"^(\*|arn:aws:[a-z0-9-]*:[a-z0-9-*]*:(\d{12}|\$\{AccountId\}|\*)?:.+|\$\{[A-Za-z]+\})$"
)
# Which policy each recorded run is checked against.
POLICY_OF = {
    ("provision", "plan"): "provision-plan.json",
    ("provision", "apply"): "provision.json",
    ("provision", "apply-converged"): "provision.json",
    ("provision", "plan-converged"): "provision-plan.json",
    ("drill", "*"): "drill.json",
    ("sweep", "*"): "sweep.json",
    ("chalk-apply", "*"): "chalk-apply.json",
    ("recovery", "*"): "recovery.json",
    ("readiness", "*"): "readiness.json",
}
FLOW_POLICIES = (
    "provision.json",
    "provision-plan.json",
    "drill.json",
    "sweep.json",
    "chalk-apply.json",
    "recovery.json",
    "readiness.json",
)


def _list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _glob(pattern: str, value: str, *, case: bool) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def expand(resource: str, variables: dict[str, list[str]]) -> list[str]:
    """A Resource with its `${Name}` placeholders filled in: one ARN per combination of values."""
    names = re.findall(r"\$\{([A-Za-z]+)\}", resource)
    missing = [n for n in names if n not in variables]
    assert not missing, f"{resource}: placeholder(s) {missing} are not defined for the test"
    out = []
    for combo in itertools.product(*(variables[n] for n in names)):
        value = resource
        for name, v in zip(names, combo, strict=True):
            value = value.replace(f"${{{name}}}", v, 1)
        out.append(value)
    return out


def grammar_errors(policy: Any) -> list[str]:
    """What makes `policy` not an IAM identity policy of the grammar this repository uses."""
    errors = []
    if not isinstance(policy, dict) or set(policy) - POLICY_KEYS:
        return [f"top-level keys must be among {sorted(POLICY_KEYS)}"]
    if policy.get("Version") != "2012-10-17":
        errors.append("Version must be 2012-10-17 (the version with policy variables)")
    statements = policy.get("Statement")
    if not isinstance(statements, list) or not statements:
        return [*errors, "Statement must be a non-empty list"]
    sids = [s.get("Sid") for s in statements if isinstance(s, dict)]
    if len(set(sids)) != len(sids):
        errors.append("Sids must be unique")
    for i, s in enumerate(statements):
        where = f"Statement[{i}] ({s.get('Sid') if isinstance(s, dict) else '?'})"
        if (
            not isinstance(s, dict)
            or set(s) - STATEMENT_KEYS
            or not {"Effect", "Action", "Resource"} <= set(s)
        ):
            errors.append(f"{where}: keys must be Effect, Action, Resource and optionally Sid, Condition")
            continue
        if not re.fullmatch(r"[A-Za-z0-9]+", str(s.get("Sid", "x"))):
            errors.append(f"{where}: Sid must be alphanumeric")
        if s["Effect"] not in ("Allow", "Deny"):
            errors.append(f"{where}: Effect must be Allow or Deny")
        for key, pattern in (("Action", ACTION_RE), ("Resource", RESOURCE_RE)):
            values = s[key]
            if not isinstance(values, str | list) or not values:
                errors.append(f"{where}: {key} must be a string or a non-empty list")
                continue
            for v in _list(values):
                if not isinstance(v, str) or not pattern.fullmatch(v):
                    errors.append(f"{where}: {key} {v!r} is malformed")
        for op, block in (s.get("Condition") or {}).items():
            if not CONDITION_OPERATORS.fullmatch(op) or not isinstance(block, dict):
                errors.append(f"{where}: condition operator {op!r} is not one IAM defines")
    return errors


class Policy:
    def __init__(self, path: Path, variables: dict[str, list[str]]) -> None:
        self.name = path.name
        self.document = json.loads(path.read_text())
        self.statements = [
            {
                "effect": s["Effect"],
                "actions": _list(s["Action"]),
                "resources": [r for pattern in _list(s["Resource"]) for r in expand(pattern, variables)],
            }
            for s in self.document["Statement"]
        ]

    def granted(self) -> set[str]:
        return {a for s in self.statements if s["effect"] == "Allow" for a in s["actions"]}

    def _matches(self, s: dict[str, Any], action: str, resource: str | None) -> bool:
        if not any(_glob(p, action, case=False) for p in s["actions"]):
            return False
        return resource is None or any(_glob(p, resource, case=True) for p in s["resources"])

    def denial(self, action: str, resources: Iterable[str]) -> str | None:
        """Why IAM would refuse `action` on `resources` under this policy, or None if it allows it."""
        targets: list[str | None] = list(resources) or [None]
        for resource in targets:
            if any(self._matches(s, action, resource) for s in self.statements if s["effect"] == "Deny"):
                return f"explicitly denied on {resource or '*'}"
            if not any(self._matches(s, action, resource) for s in self.statements if s["effect"] == "Allow"):
                return f"not allowed on {resource}" if resource else "not allowed"
        return None


def policy_for(flow: str, run: str) -> str:
    return POLICY_OF.get((flow, run)) or POLICY_OF[(flow, "*")]


def documented_unused(readme: str, policy: str) -> set[str]:
    """The actions README.md lists for `policy` between `<!-- unused: NAME -->` and `<!-- /unused -->`."""
    m = re.search(rf"<!-- unused: {re.escape(policy)} -->(.*?)<!-- /unused -->", readme, re.S)
    assert m, f"deployments/iam/README.md has no '<!-- unused: {policy} -->' section"
    return set(re.findall(r"`([a-z0-9-]+:[A-Za-z0-9]+)`", m.group(1)))


@pytest.fixture(scope="module")
def policies(iam_dir: Path, flow_runs: Any) -> dict[str, Policy]:
    return {name: Policy(iam_dir / name, flow_runs.variables) for name in FLOW_POLICIES}


def test_one_policy_per_flow_in_iam_grammar(iam_dir: Path) -> None:
    found = sorted(p.name for p in iam_dir.glob("*.json"))
    assert found == sorted(FLOW_POLICIES), found
    problems = {name: grammar_errors(json.loads((iam_dir / name).read_text())) for name in found}
    assert not any(problems.values()), problems


def test_the_recorded_flows_ran_as_they_should(flow_runs: Any) -> None:
    """The recording is only as good as the runs: each must have got as far as it should."""
    outcomes = flow_runs.outcomes
    assert outcomes["provision/plan"].startswith("FAILED: drift in"), outcomes  # a fresh world: drift
    for run in (
        "provision/apply",
        "provision/plan-converged",
        "provision/apply-converged",
        "drill/query-servers-down",
        "drill/health-check-inverted",
        "drill/replication-paused",
        "sweep/leftovers",
        "readiness/evaluate",
        "recovery/failover",
        "recovery/failback",
    ):
        assert outcomes[run].startswith("COMPLETED"), (run, outcomes[run])


def test_every_recorded_call_is_allowed_by_its_flows_policy(
    flow_runs: Any, policies: dict[str, Policy]
) -> None:
    assert flow_runs.calls, "nothing was recorded: is AWS_ENDPOINT_URL reaching the recorder?"
    unknown = sorted({c.operation for c in flow_runs.calls if c.operation.startswith("<")})
    assert not unknown, f"requests the recorder could not name: {unknown}"
    refused: dict[str, set[str]] = {}
    for call in flow_runs.calls:
        policy = policies[policy_for(call.flow, call.run)]
        why = policy.denial(call.action, call.resources)
        if why:
            refused.setdefault(policy.name, set()).add(
                f"{call.flow}/{call.run} {call.region} {call.action}: {why}"
            )
    assert not refused, json.dumps({k: sorted(v) for k, v in refused.items()}, indent=2)


def test_chalk_apply_makes_no_aws_call(chalk_apply_runs: Any, policies: dict[str, Policy]) -> None:
    """chalk-apply's policy grants nothing (a Deny of everything), and it calls nothing: the chalk
    CLI it runs gets an allow-listed environment without the worker's AWS settings."""
    outcomes = chalk_apply_runs.outcomes
    assert all(o.startswith("COMPLETED") for o in outcomes.values()), outcomes
    policy = policies["chalk-apply.json"]
    assert policy.granted() == set()
    for call in chalk_apply_runs.calls:
        assert policy.denial(call.action, call.resources), call
    assert [c.action for c in chalk_apply_runs.calls] == [], "chalk-apply is granted nothing, yet called AWS"


def test_granted_actions_no_run_used_are_documented(
    flow_runs: Any, policies: dict[str, Policy], iam_dir: Path
) -> None:
    readme = (iam_dir / "README.md").read_text()
    used: dict[str, set[str]] = {}
    for call in flow_runs.calls:
        used.setdefault(policy_for(call.flow, call.run), set()).add(call.action)
    report = {}
    undocumented = {}
    for name, policy in policies.items():
        unused = {a for a in policy.granted() if not any(_glob(a, u, case=False) for u in used.get(name, ()))}
        report[name] = {
            "used": len(used.get(name, set())),
            "granted": len(policy.granted()),
            "unused": sorted(unused),
        }
        if unused - documented_unused(readme, name):
            undocumented[name] = sorted(unused - documented_unused(readme, name))
    # The warning list: what each policy grants that no recorded run called (each explained in README).
    print("\nIAM grants vs recorded calls:\n" + json.dumps(report, indent=2), file=sys.stderr)
    if os.environ.get("CHALKDR_IAM_REPORT"):
        Path(os.environ["CHALKDR_IAM_REPORT"]).write_text(json.dumps(report, indent=2))
    assert not undocumented, (
        f"granted, called by no recorded run, and README.md does not say why: {undocumented}"
    )
