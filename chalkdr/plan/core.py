"""The generic part of the provision plan: specs, changes, the plan, its stage graph, waits, rendering.

Every system module (arc, route53, dynamodb, msk, aurora, alarms, eks) has the same shape:
desired specs from the topology (and the few observed facts the topology cannot know), its own
observed model, and `changes(desired, observed) -> list[Change]`. This module holds what they
share so that none of them repeats it: the `Spec` base (whose `kind` names its resource kind and
registers it for JSON round trips), `Change.of` (a change built from its spec), the one field
comparison rule (`compare`), the findings (errors and warnings) a plan collects, the stage graph
the apply runs, the wait policy for AWS's asynchronous work, and the plan's rendering.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from enum import StrEnum
from typing import Annotated
from typing import Any
from typing import ClassVar
from typing import Protocol
from typing import TypeVar

from pydantic import BaseModel
from pydantic import BeforeValidator
from pydantic import ConfigDict
from pydantic import Field
from pydantic import SerializeAsAny

from chalkdr.audit import AuditRecord
from chalkdr.errors import ChalkDrError
from chalkdr.failover import FailoverEstimate
from chalkdr.topology import RoutingMode

__all__ = [
    "MANAGED_TAGS",
    "MANAGED_TAG_KEY",
    "OWNER_TAG_KEY",
    "RECOVERY_TAG",
    "Action",
    "Change",
    "ChangeResult",
    "Check",
    "FieldDiff",
    "Findings",
    "Plan",
    "PlanError",
    "PlanHeader",
    "PlanModel",
    "ResourceKind",
    "Spec",
    "Stage",
    "StageDef",
    "WaitPolicy",
    "claim",
    "compare",
    "critical_path_s",
    "normalize_dns",
    "ownership_tags",
    "plan_table_rows",
    "render_plan_markdown",
    "resource_ref",
    "stages_for",
    "tag_list",
    "unwanted",
]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_T = TypeVar("_T")
_S = TypeVar("_S", bound="Spec")
_N = TypeVar("_N", bound=_Named)

MANAGED_TAG_KEY = "chalk-dr:managed"
MANAGED_TAGS: dict[str, str] = {MANAGED_TAG_KEY: "true"}
# Whose a resource is: the environment whose provision made (or adopted) it. `chalk-dr:managed`
# alone says only that some chalk-dr made it; provision changes what names its own environment.
OWNER_TAG_KEY = "chalk-dr:environment"
# On a health check a failover inverted (tasks/recovery.py): the inversion is an incident's
# decision, not drift and not a drill's leftover; provision and the sweep leave it to failback.
RECOVERY_TAG = "chalk-dr:recovery-id"


def ownership_tags(environment: str) -> dict[str, str]:
    """The tags everything chalk-dr creates for `environment` carries."""
    return {**MANAGED_TAGS, OWNER_TAG_KEY: environment}


class PlanError(ChalkDrError):
    """The plan has errors (a prerequisite is missing or AWS cannot do what the topology asks)."""

    def __init__(self, environment: str, errors: Sequence[str]) -> None:
        self.environment = environment
        self.errors = list(errors)
        super().__init__(
            f"provision plan for {environment} has {len(self.errors)} error(s); nothing was changed:\n"
            + "\n".join(f"- {e}" for e in self.errors)
        )


class PlanModel(BaseModel):
    """Plan data is immutable and strict: a misspelt field is a bug, not a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ResourceKind(StrEnum):
    HEALTH_CHECK = "route53-health-check"
    ROUTING_CONTROL_HEALTH_CHECK = "route53-routing-control-health-check"
    CALCULATED_HEALTH_CHECK = "route53-calculated-health-check"
    RECORD = "route53-record"
    GLOBAL_TABLE = "dynamodb-global-table"
    REPLICATOR = "msk-replicator"
    GLOBAL_CLUSTER = "aurora-global-cluster"
    SECONDARY_CLUSTER = "aurora-secondary-cluster"
    ALARM = "cloudwatch-alarm"
    ARC_CLUSTER = "arc-cluster"
    ARC_CONTROL_PANEL = "arc-control-panel"
    ARC_ROUTING_CONTROL = "arc-routing-control"
    ARC_ROUTING_CONTROL_STATES = "arc-routing-control-states"
    ARC_SAFETY_RULE = "arc-safety-rule"


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    NOOP = "no-op"


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """Tags as the AWS APIs take them: [{"Key": ..., "Value": ...}]."""
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def normalize_dns(name: str) -> str:
    """Route 53 answers names lower-case with a trailing dot; ALB alias targets may carry `dualstack.`."""
    return name.strip().lower().rstrip(".").removeprefix("dualstack.")


# -- specs and changes ----------------------------------------------------------------------------

_SPEC_TYPES: dict[str, type[Spec]] = {}


class Spec(PlanModel):
    """One desired resource. Subclasses fix `kind` (a ResourceKind value) and name their resource.

    Subclassing registers the class under its kind, so a Change's spec survives a JSON round
    trip (the plan is published and read back) as the right class.
    """

    ID_FIELD: ClassVar[str] = "name"  # the field that names the resource

    kind: str
    region: str  # the region whose API holds the resource

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        default = cls.model_fields["kind"].default
        if isinstance(default, str):
            _SPEC_TYPES[default] = cls

    @property
    def resource_id(self) -> str:
        """How the plan and the audit name the resource: its `ID_FIELD` (a record, its key)."""
        return str(getattr(self, self.ID_FIELD))

    @property
    def ref(self) -> str:
        """How later stages of the same apply find the id (ARN) this resource has once it exists:
        `<kind>:<resource id>`; a kind with one resource per region may key it by region instead."""
        return resource_ref(self.kind, self.resource_id)


def resource_ref(kind: str, key: str) -> str:
    """The key an apply's resolved ids are kept under (see `Spec.ref`)."""
    return f"{kind}:{key}"


def _spec_of(value: Any) -> Any:
    if isinstance(value, Mapping) and isinstance(value.get("kind"), str):
        spec_type = _SPEC_TYPES.get(value["kind"])
        if spec_type is None:
            raise ValueError(f"unknown resource kind {value['kind']!r}")
        return spec_type.model_validate(value)
    return value


AnySpec = Annotated[SerializeAsAny[Spec], BeforeValidator(_spec_of)]


class FieldDiff(PlanModel):
    field: str
    old: Any = None
    new: Any = None


class Change(PlanModel):
    kind: ResourceKind
    id: str
    region: str
    action: Action
    diffs: tuple[FieldDiff, ...] = ()
    spec: AnySpec
    current_id: str | None = None  # the live resource to update (health check id, replicator ARN)
    current_version: str | None = None  # HealthCheckVersion / replicator CurrentVersion
    stale_ids: tuple[str, ...] = ()  # live resources to delete once nothing points at them
    # The live resource as read (`model_dump` of its observed model) when the change deletes it
    # before creating its successor, e.g. a record whose routing policy changes.
    replaces: dict[str, Any] | None = None

    @classmethod
    def of(cls, spec: Spec, action: Action, diffs: Iterable[FieldDiff] = (), **live: Any) -> Change:
        """The change for `spec`: kind, id and region come from the spec itself."""
        return cls(
            kind=ResourceKind(spec.kind),
            id=spec.resource_id,
            region=spec.region,
            action=action,
            diffs=tuple(diffs),
            spec=spec,
            **live,
        )

    @property
    def adoption(self) -> dict[str, Any]:
        """When this change takes an existing resource over (the topology's `adopt`), the audit
        detail saying whose it was (None: nobody's) and whose it is now; else empty."""
        owner = next((d for d in self.diffs if d.field == "owner"), None)
        return {"adopted_from": owner.old, "owner": owner.new} if owner else {}

    @property
    def only_adopts(self) -> bool:
        """The change takes a resource over and changes nothing else about it."""
        return bool(self.diffs) and all(d.field == "owner" for d in self.diffs)

    def typed_spec(self, spec_type: type[_S]) -> _S:
        """The spec as the type an apply task expects; anything else is a programming error."""
        if not isinstance(self.spec, spec_type):
            raise TypeError(f"{self.kind} change {self.id} carries a {type(self.spec).__name__}")
        return self.spec

    def result(
        self,
        audit: Sequence[AuditRecord],
        *,
        resource_id: str | None = None,
        action: Action | None = None,
    ) -> ChangeResult:
        """The outcome of applying this change: its audit trail and the id it produced."""
        return ChangeResult(
            kind=self.kind,
            id=self.id,
            region=self.region,
            action=action or self.action,
            audit=tuple(audit),
            resource_id=resource_id,
            ref=self.spec.ref,
        )


_EMPTY: tuple[Any, ...] = (None, [], {})


def compare(
    current: Mapping[str, Any] | None,
    wanted: Mapping[str, Any],
    *,
    immutable: Iterable[str] = (),
) -> tuple[Action, list[FieldDiff]]:
    """The one comparison rule: absent → create (every wanted value is new); a changed immutable
    field → replace; any other changed field → update; nothing changed → no-op."""
    if current is None:
        return Action.CREATE, [FieldDiff(field=k, new=v) for k, v in wanted.items() if v not in _EMPTY]
    diffs = [FieldDiff(field=k, old=current.get(k), new=v) for k, v in wanted.items() if current.get(k) != v]
    changed = {d.field for d in diffs}
    if changed & set(immutable):
        return Action.REPLACE, diffs
    return (Action.UPDATE if diffs else Action.NOOP), diffs


def claim(
    findings: Findings,
    *,
    environment: str,
    owner: str | None,
    adopted: bool,
    what: str,
    marker: str,
    adopt_field: str,
) -> list[FieldDiff] | None:
    """Whether the plan may change an existing resource, by its ownership.

    `owner` is the environment its ownership marker (`marker`: a tag or a TXT record) names, or
    None when it has none. This environment's: no diff. Another's or nobody's: an error naming
    the resource (`what`, e.g. "us-west-2: MSK replicator x") and None, unless the topology
    adopts it (`adopt.<adopt_field>`), in which case the diff that takes it over.
    """
    if owner == environment:
        return []
    if adopted:
        return [FieldDiff(field="owner", old=owner, new=environment)]
    has = f"it has no {marker}" if owner is None else f"its {marker} names environment {owner!r}"
    findings.errors.append(
        f"{what} exists and is not chalk-dr's for environment {environment} ({has}): provision changes "
        f"only what it owns; list it under adopt.{adopt_field} in the topology to take it over "
        "(recorded in the audit), or remove or rename it"
    )
    return None


def unwanted(specs: Iterable[Spec], observed: Mapping[str, Iterable[_N]]) -> list[tuple[str, _N]]:
    """The resources read (region -> those found there, by name) that no spec names: what the
    plan leaves alone, and reports."""
    wanted = {(s.region, s.resource_id) for s in specs}
    return [
        (region, x) for region, found in observed.items() for x in found if (region, x.name) not in wanted
    ]


class ChangeResult(PlanModel):
    """What applying one Change did: the audit of its mutating calls, and the id it produced."""

    kind: ResourceKind
    id: str
    region: str
    action: Action
    audit: tuple[AuditRecord, ...] = ()
    resource_id: str | None = None  # e.g. the health check a create made, for the records after it
    ref: str | None = None  # the spec's `ref`: where later stages look `resource_id` up


class Check(PlanModel):
    """A verify-only result (EKS): reported, never changed."""

    kind: str
    id: str
    region: str
    ok: bool
    detail: str


@dataclass
class Findings:
    """What a plan found besides changes: errors block the apply, warnings are shown."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# -- the plan -------------------------------------------------------------------------------------


class PlanHeader(PlanModel):
    """What a desired state and a plan both carry: whose they are, and what was found on the way."""

    environment: str
    routing: RoutingMode
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    failover: FailoverEstimate


class Plan(PlanHeader):
    changes: tuple[Change, ...] = ()
    checks: tuple[Check, ...] = ()

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action is not Action.NOOP]

    @property
    def empty(self) -> bool:
        return not self.pending

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    def summary(self) -> str:
        head = (
            f"{self.environment}: {self.count(Action.CREATE)} to create, {self.count(Action.UPDATE)} to "
            f"update, {self.count(Action.REPLACE)} to replace, {self.count(Action.NOOP)} unchanged"
        )
        parts = [head, f"expected failover {self.failover.formula}"]
        if self.errors:
            parts.append(f"{len(self.errors)} error(s)")
        if self.failover.warning:
            parts.append("SLO WARNING: " + self.failover.warning)
        failing = [c for c in self.checks if not c.ok]
        if failing:
            parts.append(f"{len(failing)} EKS check(s) failing")
        return "; ".join(parts)


# -- the stage graph -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageDef:
    """A system's declaration of one apply stage: which changes, and which stages must finish first.

    `select` picks the stage's changes from the plan's pending ones (default: every change of
    `kind`). `concurrent` says whether its changes may run at the same time (Route 53 changes
    are serial: its API allows 5 requests/s per account). `depends_on` names stages whose
    resources this one needs (records need their health checks); only those orders are enforced.
    """

    name: str
    kind: ResourceKind
    concurrent: bool
    depends_on: tuple[str, ...] = ()
    cleanup: bool = False  # the second half of a replace: delete what was replaced
    select: Callable[[Change], bool] | None = None

    def picks(self, change: Change) -> bool:
        return change.kind is self.kind and (self.select is None or self.select(change))


class Stage(PlanModel):
    """One step of the apply: its changes, and the (non-empty) stages it must wait for."""

    name: str
    kind: ResourceKind
    changes: tuple[Change, ...]
    concurrent: bool
    cleanup: bool = False
    depends_on: tuple[str, ...] = ()


def stages_for(plan: Plan, defs: Sequence[StageDef]) -> list[Stage]:
    """The non-empty stages of `plan`, in declaration order, which must list dependencies first.

    A dependency on a stage that has nothing to do passes through to that stage's own
    dependencies, so an order the systems declared is never lost by an empty step between.
    """
    by_name = {d.name: d for d in defs}
    unknown = {dep for d in defs for dep in d.depends_on} - set(by_name)
    if unknown:
        raise ValueError(f"stages depend on undeclared stages: {', '.join(sorted(unknown))}")
    declared: set[str] = set()
    for d in defs:  # dependencies declared first: the declaration order is a topological order
        if not set(d.depends_on) <= declared:
            raise ValueError(f"stage {d.name} is declared before a stage it depends on")
        declared.add(d.name)
    pending = plan.pending
    chosen = {d.name: tuple(c for c in pending if d.picks(c)) for d in defs}

    def effective(name: str) -> set[str]:
        out: set[str] = set()
        for dep in by_name[name].depends_on:
            out |= {dep} if chosen[dep] else effective(dep)
        return out

    return [
        Stage(
            name=d.name,
            kind=d.kind,
            changes=chosen[d.name],
            concurrent=d.concurrent,
            cleanup=d.cleanup,
            depends_on=tuple(sorted(effective(d.name))),
        )
        for d in defs
        if chosen[d.name]
    ]


def critical_path_s(stages: Sequence[Stage], durations: Mapping[str, float]) -> float:
    """The longest chain of stage durations through the dependency graph (the apply's floor)."""
    finish: dict[str, float] = {}
    for s in stages:  # dependency order
        start = max((finish[d] for d in s.depends_on if d in finish), default=0.0)
        finish[s.name] = start + durations.get(s.name, 0.0)
    return max(finish.values(), default=0.0)


# -- waiting for AWS ------------------------------------------------------------------------------


class WaitPolicy(PlanModel):
    """How long to wait for AWS's asynchronous work (replica ACTIVE, replicator RUNNING, INSYNC).

    Numbers are configured (AWS) seconds; a time-scaled environment waits proportionally less
    real time, so the same policy serves AWS and the sandbox.
    """

    time_scale: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=3600.0, gt=0)
    first_poll_s: float = Field(default=1.0, gt=0)
    poll_s: float = Field(default=10.0, gt=0)

    @property
    def timeout_real_s(self) -> float:
        return self.timeout_s / self.time_scale

    def delay_real_s(self, attempt: int) -> float:
        """Real seconds before poll `attempt + 1`: quick at first (most waits are short), then
        doubling up to `poll_s` so that a long wait does not hammer the control plane."""
        aws_s: float = min(self.poll_s, self.first_poll_s * float(2 ** min(attempt, 16)))
        return max(0.02, aws_s / self.time_scale)

    def poll(self, read: Callable[[], _T], done: Callable[[_T], bool], describe: Callable[[_T], str]) -> _T:
        """Read until `done` (a read may raise to give up); at the deadline raise TimeoutError
        saying what was last seen, e.g. `describe(seen)` = "replicator x still CREATING"."""
        deadline = time.monotonic() + self.timeout_real_s
        attempt = 0
        while True:
            seen = read()
            if done(seen):
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"{describe(seen)} after {self.timeout_s:g} s")
            time.sleep(self.delay_real_s(attempt))
            attempt += 1


# -- rendering ------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def _diff_text(change: Change) -> str:
    return "; ".join(f"{d.field}: {_fmt(d.old)} → {_fmt(d.new)}" for d in change.diffs)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def plan_table_rows(plan: Plan) -> list[dict[str, str]]:
    """One row per resource (unchanged ones included) for a Prefect table artifact."""
    return [
        {
            "action": c.action.value,
            "kind": c.kind.value,
            "resource": c.id,
            "region": c.region,
            "diff": _diff_text(c),
        }
        for c in plan.changes
    ]


def render_plan_markdown(plan: Plan) -> str:
    f = plan.failover
    verdict = "meets" if f.meets_slo else "**cannot meet**"
    lines = [
        f"# Provision plan: {plan.environment} ({plan.routing.value} routing)",
        "",
        f"**{plan.count(Action.CREATE)} to create, {plan.count(Action.UPDATE)} to update, "
        f"{plan.count(Action.REPLACE)} to replace, {plan.count(Action.NOOP)} unchanged.**",
        "",
        f"Expected failover time: {f.formula}: configuration {verdict} the SLO.",
    ]
    if f.time_scale != 1:
        lines.append(f"(Configured AWS seconds; this environment runs time-scaled x{f.time_scale:g}.)")
    if f.warning:
        lines += ["", f"> **SLO warning:** {f.warning}"]
    if plan.errors:
        lines += ["", "## Errors (apply refuses to start until these are fixed)", ""]
        lines += [f"- {e}" for e in plan.errors]
    if plan.warnings:
        lines += ["", "## Warnings", ""]
        lines += [f"- {w}" for w in plan.warnings]
    lines += ["", "## Changes", ""]
    if plan.pending:
        lines += ["| action | kind | resource | region | diff (old → new) |", "|---|---|---|---|---|"]
        lines += [
            f"| {c.action.value} | {c.kind.value} | {_cell(c.id)} | {c.region} | {_cell(_diff_text(c))} |"
            for c in plan.pending
        ]
    else:
        lines.append("None: AWS already matches the topology.")
    unchanged = [c for c in plan.changes if c.action is Action.NOOP]
    if unchanged:
        lines += ["", f"<details><summary>{len(unchanged)} unchanged</summary>", ""]
        lines += [f"- {c.kind.value} `{c.id}` ({c.region})" for c in unchanged]
        lines += ["", "</details>"]
    if plan.checks:
        lines += [
            "",
            "## EKS (verified, never changed)",
            "",
            "| cluster | region | ok | detail |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {c.id} | {c.region} | {'yes' if c.ok else '**no**'} | {_cell(c.detail)} |"
            for c in plan.checks
        ]
    return "\n".join(lines) + "\n"
