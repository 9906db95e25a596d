"""chalk-dr's exception types.

    ChalkDrError
    ├── TopologyError            a topology file is unreadable or invalid (every problem listed)
    ├── AwsCallError             an AWS API call failed; names the call and the resource
    │   ├── TransientAwsError    throttling, 5xx, connection trouble: safe to retry
    │   └── PermanentAwsError    validation, permission, not-found: retrying cannot help
    ├── KubeCallError            a Kubernetes API call failed (same split as AWS)
    │   ├── TransientKubeError
    │   └── PermanentKubeError
    ├── EksEndpointError         describe_cluster gave an endpoint/CA we cannot use
    ├── CredentialsError         a credential reference could not be resolved
    ├── ChalkCliError            the `chalk` binary failed (`transient` tells whether to retry)
    ├── PreflightFailed          steady state not met: a drill must not inject
    ├── DrillAborted             kill switch, secondary failure, or operator abort
    │   (defined beside the data they carry:)
    ├── PlanError                chalkdr.plan: the plan cannot be applied; nothing was changed
    ├── ConvergenceError         flows.provision: verification after apply still shows changes
    ├── ChalkQueryError          chalkdr.deploy: a region's own hostname did not answer a query
    ├── DeploymentNotServed      chalkdr.deploy: the applied deployment never became the served one
    ├── DeployFailed             chalkdr.deploy: a dual-region apply ended out of parity (has the report)
    └── CheckoutFailed           tasks.chalk: the code for a sha could not be checked out

Only the leaves are raised; callers catch the branch that matches their decision (retry or not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AwsCallError",
    "ChalkCliError",
    "ChalkDrError",
    "CredentialsError",
    "DrillAborted",
    "EksEndpointError",
    "KubeCallError",
    "PermanentAwsError",
    "PermanentKubeError",
    "PreflightFailed",
    "TopologyError",
    "TopologyProblem",
    "TransientAwsError",
    "TransientKubeError",
]


class ChalkDrError(Exception):
    """Base of every error chalk-dr raises on purpose."""


@dataclass(frozen=True)
class TopologyProblem:
    """One reason a topology is invalid: where (dotted field path) and why."""

    location: str
    reason: str


class TopologyError(ChalkDrError):
    """A topology file is invalid; the message has one line per problem: `file: field: reason`."""

    def __init__(self, source: str, problems: Sequence[TopologyProblem]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = [
            f"{source}: {p.location}: {p.reason}" if p.location else f"{source}: {p.reason}" for p in problems
        ]
        super().__init__("\n".join(lines))


class AwsCallError(ChalkDrError):
    """An AWS call failed. `operation` and `resource` make the message actionable."""

    def __init__(self, *, service: str, operation: str, resource: str, code: str, message: str) -> None:
        self.service, self.operation, self.resource, self.code = service, operation, resource, code
        super().__init__(f"{service}:{operation} on {resource} failed: {code}: {message}")


class TransientAwsError(AwsCallError):
    """Throttling, 5xx or a connection problem: the same call may succeed later."""


class PermanentAwsError(AwsCallError):
    """Validation, permission or not-found: fail fast, later changes must not be attempted."""


class KubeCallError(ChalkDrError):
    def __init__(self, *, operation: str, resource: str, status: int | None, message: str) -> None:
        self.operation, self.resource, self.status = operation, resource, status
        super().__init__(f"kubernetes {operation} on {resource} failed ({status}): {message}")


class TransientKubeError(KubeCallError):
    pass


class PermanentKubeError(KubeCallError):
    pass


class EksEndpointError(ChalkDrError):
    pass


class CredentialsError(ChalkDrError):
    pass


class ChalkCliError(ChalkDrError):
    def __init__(self, message: str, *, region: str, transient: bool, exit_code: int | None) -> None:
        self.region, self.transient, self.exit_code = region, transient, exit_code
        super().__init__(message)


class PreflightFailed(ChalkDrError):
    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("pre-flight failed: " + "; ".join(reasons))


class DrillAborted(ChalkDrError):
    pass
