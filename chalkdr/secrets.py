"""Chalk credentials: resolving a topology's secret references, and keeping the values out of text.

A topology names where a secret lives (`SecretRef`), never the value. The Prefect Secret-block
lookup is injected as a callable so this module stays free of Prefect and unit-testable; the
task layer passes `Secret.load(name).get()`. Every piece of text that could have seen a secret
(CLI output, HTTP error bodies, URLs with credentials) goes through `redact` before it reaches
a log, an artifact, an event or an exception message.

Where a secret may come from, and where it may go, is narrow on purpose. A reference names a
`CHALK_DR_*` environment variable or a `chalk-*` Secret block (the topology refuses anything
else, and `resolve_secret` checks again), so a topology cannot have the worker's AWS keys or
Prefect API key sent to Chalk. A credential or token goes over https, or over plain http only
to this machine: `cleartext_refusal` decides from the addresses the URL's host resolves to, at
the moment it is about to be sent, because a host name cannot be judged when a topology loads.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from urllib.parse import urlsplit

from chalkdr.errors import CredentialsError
from chalkdr.topology import SECRET_BLOCK_PREFIX
from chalkdr.topology import SECRET_ENV_PREFIX
from chalkdr.topology import SecretRef

__all__ = [
    "REDACTED",
    "SecretLookup",
    "cleartext_refusal",
    "redact",
    "redact_url",
    "resolve_secret",
]

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
    # SecretRef validates these prefixes; a reference built around validation is refused too.
    if ref.env is not None and not ref.env.startswith(SECRET_ENV_PREFIX):
        raise CredentialsError(f"secret {ref.describe()} is not a {SECRET_ENV_PREFIX}* variable: refused")
    if ref.prefect_secret is not None and not ref.prefect_secret.startswith(SECRET_BLOCK_PREFIX):
        raise CredentialsError(f"secret {ref.describe()} is not a {SECRET_BLOCK_PREFIX}* block: refused")
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


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def cleartext_refusal(url: str, addresses: Sequence[str]) -> str | None:
    """Why a credential or token must not be sent to `url`, or None when it may.

    https may always carry one. Plain http may only when the host is this machine: every
    address it resolves to (`addresses`, from the resolver the connection will use) is
    loopback. A name that did not resolve is refused too: there is nothing to judge it by.
    """
    parts = urlsplit(url)
    if parts.scheme == "https":
        return None
    if parts.scheme != "http":
        return f"{redact_url(url)} is not an http(s) URL"
    if not addresses:
        return f"{redact_url(url)} is plain http and {parts.hostname} did not resolve: use https"
    outside = [a for a in addresses if not _loopback(a)]
    if outside:
        return (
            f"{redact_url(url)} is plain http to {', '.join(outside)}, which is not this machine: "
            "credentials go over https (http only to a loopback address)"
        )
    return None
