"""Deciding, in one function per API family, whether a failed call is worth retrying."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError
from botocore.exceptions import ConnectionClosedError
from botocore.exceptions import ConnectTimeoutError
from botocore.exceptions import EndpointConnectionError
from botocore.exceptions import ReadTimeoutError

from chalkdr.errors import AwsCallError
from chalkdr.errors import PermanentAwsError
from chalkdr.errors import PermanentKubeError
from chalkdr.errors import TransientAwsError
from chalkdr.errors import TransientKubeError

__all__ = ["TRANSIENT_AWS_CODES", "aws_call", "classify_aws_error", "classify_kube_error"]

# Codes AWS documents as retryable (botocore's standard retry mode uses the same families).
TRANSIENT_AWS_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_CONNECTION_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)


def classify_aws_error(exc: BaseException, *, service: str, operation: str, resource: str) -> AwsCallError:
    """Turn a botocore failure into TransientAwsError (retry) or PermanentAwsError (fail fast)."""
    if isinstance(exc, AwsCallError):
        return exc
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "Unknown"))
        message = str(err.get("Message", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        transient = code in TRANSIENT_AWS_CODES or status >= 500 or status == 429
        cls = TransientAwsError if transient else PermanentAwsError
        return cls(service=service, operation=operation, resource=resource, code=code, message=message)
    if isinstance(exc, _CONNECTION_ERRORS):
        return TransientAwsError(
            service=service, operation=operation, resource=resource, code=type(exc).__name__, message=str(exc)
        )
    if isinstance(exc, BotoCoreError):
        return PermanentAwsError(
            service=service, operation=operation, resource=resource, code=type(exc).__name__, message=str(exc)
        )
    return PermanentAwsError(
        service=service, operation=operation, resource=resource, code=type(exc).__name__, message=str(exc)
    )


def classify_kube_error(
    exc: BaseException, *, operation: str, resource: str
) -> TransientKubeError | PermanentKubeError:
    """Kubernetes API failures: 429/5xx and connection problems are transient, the rest are not."""
    status = getattr(exc, "status", None)
    reason = str(getattr(exc, "reason", "") or exc)
    # urllib3 connection errors carry no status: transient.
    transient = status == 429 or status >= 500 if isinstance(status, int) and status > 0 else True
    cls = TransientKubeError if transient else PermanentKubeError
    return cls(
        operation=operation,
        resource=resource,
        status=status if isinstance(status, int) else None,
        message=reason,
    )


@contextmanager
def aws_call(service: str, operation: str, resource: str) -> Iterator[None]:
    """Wrap one AWS call so any failure surfaces classified, naming the call and the resource."""
    try:
        yield
    except AwsCallError:
        raise
    except Exception as exc:
        raise classify_aws_error(exc, service=service, operation=operation, resource=resource) from exc
