"""Chalk credentials: resolving a topology's secret references, and keeping the values out of text.

A topology names where a secret lives (`SecretRef`), never the value. The Prefect Secret-block
lookup is injected as a callable so this module stays free of Prefect and unit-testable; the
task layer passes `Secret.load(name).get()`. Every piece of text that could have seen a secret
(CLI output, HTTP error bodies, URLs with credentials) goes through `redact` before it reaches
a log, an artifact, an event or an exception message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping

from chalkdr.errors import CredentialsError
from chalkdr.topology import SecretRef

__all__ = ["REDACTED", "SecretLookup", "redact", "redact_url", "resolve_secret"]

REDACTED = "***"

SecretLookup = Callable[[str], str]
"""Given a Prefect Secret block name, return its value (raises if the block does not exist)."""

_URL_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


def resolve_secret(
    ref: SecretRef,
    *,
    environ: Mapping[str, str] | None = None,
    prefect_secret: SecretLookup | None = None,
) -> str:
    """The secret's value; a missing or empty secret is a CredentialsError naming the reference only.

    Empty counts as missing: an unset-but-exported variable would otherwise reach the Chalk API
    as an empty client secret and fail later with a less useful authentication error.
    """
    if ref.env is not None:
        env = os.environ if environ is None else environ
        value = env.get(ref.env)
        if not value:
            raise CredentialsError(
                f"secret {ref.describe()} is not set (environment variable missing or empty)"
            )
        return value
    assert ref.prefect_secret is not None  # SecretRef guarantees exactly one
    if prefect_secret is None:
        raise CredentialsError(f"secret {ref.describe()} needs a Prefect Secret block lookup, none was given")
    try:
        value = prefect_secret(ref.prefect_secret)
    except Exception as exc:  # noqa: BLE001 - any lookup failure means the same thing to the caller
        # The cause is dropped on purpose: a lookup error could echo part of a value.
        raise CredentialsError(
            f"secret {ref.describe()} could not be loaded ({type(exc).__name__})"
        ) from None
    if not isinstance(value, str) or not value:
        raise CredentialsError(f"secret {ref.describe()} is empty or not a string")
    return value


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every occurrence of every secret replaced by `***` (longest first, so overlaps go)."""
    values = sorted({s for s in secrets if s}, key=len, reverse=True)
    for value in values:
        text = text.replace(value, REDACTED)
    return text


def redact_url(url: str) -> str:
    """A URL with any `user:token@` part masked: clone URLs often carry an access token."""
    return _URL_USERINFO_RE.sub(lambda m: f"{m['scheme']}{REDACTED}@", url)
