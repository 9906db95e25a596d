"""Least privilege in Kubernetes: every request a recorded flow run made to a region's Kubernetes API is
allowed by the Role deployments/k8s/rbac.yaml binds to that flow's group, and every rule the file
grants is used by a recorded run or explained in deployments/k8s/README.md.

The requests are the sandbox's `kube.request` ground truth (the attributes Kubernetes' authorizer
decides on: verb, API group, resource, subresource, namespace, name), attributed to a run by the
recording windows of tests/security/conftest.py. The evaluator below follows RBAC's matching as
Kubernetes documents it ("Using RBAC Authorization"): a Role's rules apply in its namespace only; a
rule matches when its apiGroups, resources (`resource/subresource` for a subresource) and verbs
contain the request's, and, when it names resourceNames, the request names one of them (so a
list or create, which names no object, never matches such a rule). Nothing is wildcarded here:
the file must not use `*`.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytestmark = pytest.mark.timeout(1200)  # the session's recorded runs count against the first test

K8S_DIR = Path(__file__).resolve().parents[2] / "deployments" / "k8s"
RBAC_API = "rbac.authorization.k8s.io/v1"
STANDARD_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
# Which group each recorded run's identity is mapped to (the EKS access entry of its IAM role).
GROUP_OF = {
    ("provision", "plan"): "chalk-dr-provision-plan",
    ("provision", "plan-converged"): "chalk-dr-provision-plan",
    ("provision", "apply"): "chalk-dr-provision",
    ("provision", "apply-converged"): "chalk-dr-provision",
    ("drill", "*"): "chalk-dr-drill",
    ("sweep", "*"): "chalk-dr-sweep",
    ("recovery", "*"): "chalk-dr-recovery",
    ("readiness", "*"): "chalk-dr-readiness",
}


@dataclass(frozen=True)
class Request:
    """One Kubernetes API request, as the authorizer sees it."""

    cluster: str
    verb: str
    api_group: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        what = f"{self.api_group or 'core'}/{self.full_resource}"
        return f"{self.verb} {what} {where}{self.name or ''} on {self.cluster}"


@dataclass(frozen=True)
class Rule:
    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str]

    def allows(self, req: Request) -> bool:
        if req.api_group not in self.api_groups or req.full_resource not in self.resources:
            return False
        if req.verb not in self.verbs:
            return False
        return not self.resource_names or (req.name is not None and req.name in self.resource_names)


@dataclass(frozen=True)
class Rbac:
    roles: dict[str, tuple[str, list[Rule]]]  # name -> (namespace, rules)
    bindings: dict[str, set[str]]  # group -> the Roles bound to it

    def allows(self, group: str, req: Request) -> bool:
        for role in self.bindings.get(group, set()):
            namespace, rules = self.roles[role]
            if req.namespace == namespace and any(rule.allows(req) for rule in rules):
                return True
        return False


def _strings(doc: Mapping[str, Any], key: str, where: str) -> frozenset[str]:
    value = doc.get(key, [])
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"{where}: {key} is not a list"
    return frozenset(value)


def load_rbac(text: str, values: Mapping[str, str]) -> Rbac:
    """The file's Roles and RoleBindings with its envsubst variables filled in (a variable
    without a value is an error, as the test must know every value the file needs)."""
    filled = string.Template(text).substitute(values)
    roles: dict[str, tuple[str, list[Rule]]] = {}
    bound: list[tuple[str, str, str]] = []  # (binding, group, role)
    for i, doc in enumerate(d for d in yaml.safe_load_all(filled) if d is not None):
        kind, meta = doc.get("kind"), doc.get("metadata") or {}
        where = f"rbac.yaml document {i + 1} ({kind} {meta.get('name')})"
        assert doc.get("apiVersion") == RBAC_API, f"{where}: apiVersion {doc.get('apiVersion')!r}"
        assert kind in ("Role", "RoleBinding"), f"{where}: only namespaced Roles and RoleBindings"
        assert meta.get("namespace") == values["CHALK_NAMESPACE"], f"{where}: not in Chalk's namespace"
        assert (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") == "chalk-dr", (
            f"{where}: without the ownership label"
        )
        if kind == "Role":
            rules = []
            for j, raw in enumerate(doc.get("rules") or []):
                at = f"{where} rule {j + 1}"
                assert set(raw) <= {"apiGroups", "resources", "verbs", "resourceNames"}, (
                    f"{at}: {sorted(raw)}"
                )
                rule = Rule(
                    api_groups=_strings(raw, "apiGroups", at),
                    resources=_strings(raw, "resources", at),
                    verbs=_strings(raw, "verbs", at),
                    resource_names=_strings(raw, "resourceNames", at),
                )
                everything = rule.api_groups | rule.resources | rule.verbs | rule.resource_names
                assert not any("*" in v for v in everything), f"{at}: a wildcard"
                assert rule.verbs <= STANDARD_VERBS, f"{at}: verbs {sorted(rule.verbs - STANDARD_VERBS)}"
                assert not {"secrets", "roles", "rolebindings"} & rule.resources, (
                    f"{at}: {sorted(rule.resources)}"
                )
                rules.append(rule)
            assert rules, f"{where}: no rules"
            roles[meta["name"]] = (meta["namespace"], rules)
        else:
            ref = doc.get("roleRef") or {}
            assert ref.get("kind") == "Role", f"{where}: roleRef {ref}"
            for subject in doc.get("subjects") or []:
                assert subject.get("kind") == "Group", f"{where}: subject {subject}"
                bound.append((meta["name"], subject["name"], ref["name"]))
    bindings: dict[str, set[str]] = {}
    for binding, group, role in bound:
        assert role in roles, f"RoleBinding {binding} refers to Role {role}, which the file does not define"
        bindings.setdefault(group, set()).add(role)
    return Rbac(roles=roles, bindings=bindings)


def group_of(flow: str, run: str) -> str:
    return GROUP_OF.get((flow, run)) or GROUP_OF[(flow, "*")]


def values_by_cluster(topology: Any) -> dict[str, dict[str, str]]:
    """Each region's cluster and the values its copy of the file is filled with."""
    return {
        r.eks.cluster_name: {
            "CHALK_NAMESPACE": r.eks.namespace,
            "QUERY_SERVER_DEPLOYMENT": r.eks.query_server_deployment,
            "PERSISTENCE_DEPLOYMENT": r.eks.persistence_deployment,
        }
        for r in topology.regions
    }


def recorded_requests(world: Any, flow_runs: Any) -> list[tuple[str, str, Request]]:
    """(flow, run, request) for every Kubernetes request inside a recording window."""
    events = httpx.get(
        f"{world.aws_endpoint}/_sandbox/truth",
        params={"kind": "kube.request", "since": flow_runs.started},
        timeout=30,
        trust_env=False,
    ).json()
    out = []
    for e in events:
        window = next((w for w in flow_runs.windows if w[2] <= e["ts"] <= w[3]), None)
        if window is None:
            continue  # made directly by the test (a dead drill's leftovers), not by a recorded run
        assert "non_resource_url" not in e, f"{window[0]}/{window[1]}: a non-resource request {e}"
        out.append(
            (
                window[0],
                window[1],
                Request(
                    cluster=e["cluster"],
                    verb=e["verb"],
                    api_group=e["api_group"],
                    resource=e["resource"],
                    subresource=e["subresource"],
                    namespace=e["namespace"],
                    name=e["name"],
                ),
            )
        )
    return out


@pytest.fixture(scope="module")
def rbac_text() -> str:
    return (K8S_DIR / "rbac.yaml").read_text(encoding="utf-8")


# -- the evaluator refuses what RBAC refuses ------------------------------------------------------

EXAMPLE = {
    "CHALK_NAMESPACE": "chalk",
    "QUERY_SERVER_DEPLOYMENT": "chalk-query-server",
    "PERSISTENCE_DEPLOYMENT": "chalk-persistence-worker",
}


def _req(verb: str, resource: str, name: str | None, *, group: str = "apps", ns: str = "chalk") -> Request:
    base, _, sub = resource.partition("/")
    return Request("c", verb, group, base, sub or None, ns, name)


@pytest.mark.parametrize(
    ("group", "req", "allowed"),
    [
        ("chalk-dr-drill", _req("patch", "deployments/scale", "chalk-query-server"), True),
        ("chalk-dr-drill", _req("patch", "deployments/scale", "chalk-persistence-worker"), False),
        ("chalk-dr-drill", _req("get", "deployments", "chalk-query-server", ns="default"), False),
        ("chalk-dr-drill", _req("update", "deployments/scale", "chalk-query-server"), False),
        ("chalk-dr-drill", _req("list", "deployments", None), False),  # resourceNames: never a list
        ("chalk-dr-drill", _req("patch", "horizontalpodautoscalers", "x", group="autoscaling"), False),
        ("chalk-dr-provision-plan", _req("get", "deployments", "chalk-persistence-worker"), True),
        ("chalk-dr-provision-plan", _req("patch", "deployments", "chalk-query-server"), False),
        ("chalk-dr-recovery", _req("list", "horizontalpodautoscalers", None, group="autoscaling"), True),
        ("chalk-dr-recovery", _req("delete", "deployments", "chalk-query-server"), False),
        ("chalk-dr-readiness", _req("patch", "horizontalpodautoscalers", "x", group="autoscaling"), False),
        ("chalk-dr-unknown", _req("get", "deployments", "chalk-query-server"), False),
    ],
)
def test_the_rules_are_evaluated_as_rbac_does(
    rbac_text: str, group: str, req: Request, allowed: bool
) -> None:
    assert load_rbac(rbac_text, EXAMPLE).allows(group, req) is allowed, str(req)


def test_a_variable_the_file_uses_must_have_a_value(rbac_text: str) -> None:
    with pytest.raises(KeyError):
        load_rbac(rbac_text, {k: v for k, v in EXAMPLE.items() if k != "PERSISTENCE_DEPLOYMENT"})


# -- against the recorded runs --------------------------------------------------------------------


def _by_group(records: Iterable[tuple[str, str, Request]]) -> dict[str, list[Request]]:
    out: dict[str, list[Request]] = {}
    for flow, run, req in records:
        out.setdefault(group_of(flow, run), []).append(req)
    return out


@pytest.fixture(scope="module")
def records(security_world: Any, flow_runs: Any) -> list[tuple[str, str, Request]]:
    """The recorded runs' Kubernetes requests, read from the sandbox once for the module."""
    return recorded_requests(security_world, flow_runs)


@pytest.fixture(scope="module")
def rbac_by_cluster(security_world: Any, rbac_text: str) -> dict[str, Rbac]:
    """The file as each region's cluster gets it (filled from that region's `eks` block)."""
    return {c: load_rbac(rbac_text, v) for c, v in values_by_cluster(security_world.topology).items()}


def test_every_recorded_kubernetes_request_is_allowed(
    records: list[tuple[str, str, Request]], rbac_by_cluster: dict[str, Rbac]
) -> None:
    flows = {flow for flow, _, _ in records}
    # the runs that scale or read Deployments reached the API (else the check below proves nothing)
    assert {"provision", "drill", "sweep", "recovery", "readiness"} <= flows, sorted(flows)
    refused = []
    for flow, run, req in records:
        group = group_of(flow, run)
        if not rbac_by_cluster[req.cluster].allows(group, req):
            refused.append(f"{flow}/{run} as {group}: {req}")
    assert not refused, "requests rbac.yaml does not allow:\n" + "\n".join(sorted(set(refused)))


def test_every_granted_rule_is_used_or_explained(
    records: list[tuple[str, str, Request]], rbac_by_cluster: dict[str, Rbac]
) -> None:
    """Per Role, each (verb, resource, name) it grants is used by a request of a group bound to it in
    some region's cluster (every cluster gets the same file: which region a drill or failover acts
    on is the topology's), or README.md says why it is needed without a recorded call
    ("`<role>`: `<verb> <resource>`")."""
    readme = (K8S_DIR / "README.md").read_text(encoding="utf-8")
    unexplained: set[str] | None = None
    for cluster, rbac in rbac_by_cluster.items():
        here: set[str] = set()
        used = _by_group((f, r, q) for f, r, q in records if q.cluster == cluster)
        for role, (_, rules) in rbac.roles.items():
            groups = {g for g, bound in rbac.bindings.items() if role in bound}
            assert groups, f"Role {role} is bound to no group"
            mine = [q for g in groups for q in used.get(g, [])]
            for rule in rules:
                names: list[str | None] = [*sorted(rule.resource_names)] or [None]
                for verb, resource, name in itertools.product(
                    sorted(rule.verbs), sorted(rule.resources), names
                ):
                    hit = any(
                        q.verb == verb
                        and q.full_resource == resource
                        and q.api_group in rule.api_groups
                        and (name is None or q.name == name)
                        for q in mine
                    )
                    what = f"`{role}`: `{verb} {resource}`"
                    if not hit and what not in readme:
                        here.add(f"{what} (name {name or 'any'})")
        unexplained = here if unexplained is None else unexplained & here
    assert not unexplained, "granted, used by no recorded run, not explained in README.md:\n" + "\n".join(
        sorted(unexplained)
    )
