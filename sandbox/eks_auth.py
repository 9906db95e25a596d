"""EKS bearer tokens as the cluster's authenticator checks them (aws-iam-authenticator `pkg/token`).

A token is `k8s-aws-v1.` + base64url(a presigned STS GetCallerIdentity URL whose signature covers
the header `x-k8s-aws-id: <cluster name>`). The authenticator checks the URL's form, then sends
the request with the header set to *its own* cluster's name; STS rejects the signature when the
client signed another name. The sandbox makes the same checks, in the same order and with the
same messages, and then verifies the SigV4 signature itself with the sandbox's credentials (moto
does not verify signatures, and its server answers a plain GET of a presigned STS URL as S3).

One relaxation: the URL's scheme and host are the sandbox's STS endpoint (AWS_ENDPOINT_URL, plain
HTTP on loopback) rather than `https://sts.<region>.amazonaws.com`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from urllib.parse import parse_qsl
from urllib.parse import quote
from urllib.parse import urlsplit

__all__ = ["TokenVerifier"]

PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
MAX_TOKEN_BYTES = 4096
PRESIGNED_URL_EXPIRATION_S = 15 * 60
_ALLOWED_PARAMS = frozenset(
    {
        "action",
        "version",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-expires",
        "x-amz-security-token",
        "x-amz-signature",
        "x-amz-signedheaders",
    }
)


def _format_error(message: str) -> str:
    return f"input token was not properly formatted: {message}"


def _sign(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


class TokenVerifier:
    """Verifies tokens for one cluster; `credentials` maps access key id -> secret key."""

    def __init__(self, cluster_name: str, *, sts_hosts: Sequence[str], credentials: dict[str, str]) -> None:
        self.cluster_name = cluster_name
        self._hosts = {h.lower() for h in sts_hosts}
        self._credentials = dict(credentials)

    def verify(self, token: str, *, now: float | None = None) -> str | None:
        """None for a valid token, else why it is not (the authenticator's words)."""
        if len(token) > MAX_TOKEN_BYTES:
            return _format_error("token is too large")
        if not token.startswith(PREFIX):
            return _format_error(f'token is missing expected "{PREFIX}" prefix')
        body = token[len(PREFIX) :]
        try:
            url = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as exc:
            return _format_error(str(exc))
        parts = urlsplit(url)
        if parts.netloc.lower() not in self._hosts:
            return _format_error(f"unexpected hostname {parts.netloc!r} in pre-signed URL")
        if parts.path != "/":
            return _format_error("unexpected path in pre-signed URL")
        params: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            key = name.lower()
            if key in params:
                return _format_error(f"duplicate query parameter found: {name!r}")
            if key not in _ALLOWED_PARAMS:
                return _format_error(f"non-whitelisted query parameter {name!r}")
            params[key] = value
        if params.get("action") != "GetCallerIdentity":
            return _format_error("unexpected action parameter in pre-signed URL")
        if CLUSTER_ID_HEADER not in params.get("x-amz-signedheaders", "").split(";"):
            return _format_error(f"client did not sign the {CLUSTER_ID_HEADER} header in the pre-signed URL")
        try:
            expires = int(params.get("x-amz-expires", ""))
        except ValueError:
            return _format_error("invalid X-Amz-Expires parameter in pre-signed URL")
        if not 0 <= expires <= 900:
            return _format_error(f"invalid X-Amz-Expires parameter in pre-signed URL: {expires}")
        amz_date = params.get("x-amz-date")
        if not amz_date:
            return _format_error("X-Amz-Date parameter must be present in pre-signed URL")
        try:
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        except ValueError as exc:
            return _format_error(f"error parsing X-Amz-Date parameter: {exc}")
        if (time.time() if now is None else now) > signed_at + PRESIGNED_URL_EXPIRATION_S:
            return _format_error(f"X-Amz-Date parameter is expired (15 minute expiration) {amz_date}")
        if not self._signature_ok(parts.netloc, parts.query, params):
            return (
                "sts getCallerIdentity failed: error from AWS (expected 200, got 403): "
                "SignatureDoesNotMatch: the request signature does not match one made with "
                f"{CLUSTER_ID_HEADER}: {self.cluster_name}"
            )
        return None

    def _signature_ok(self, host: str, query: str, params: dict[str, str]) -> bool:
        """SigV4 (query string) recomputed with this cluster's name in x-k8s-aws-id."""
        access_key, _, scope = params.get("x-amz-credential", "").partition("/")
        secret = self._credentials.get(access_key)
        try:
            day, region, service, _terminator = scope.split("/")
        except ValueError:
            return False
        if secret is None:
            return False
        pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "X-Amz-Signature"]
        canonical_query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(pairs)
        )
        signed = params["x-amz-signedheaders"]
        header_values = {"host": host, CLUSTER_ID_HEADER: self.cluster_name}
        if any(h not in header_values for h in signed.split(";")):
            return False
        canonical_headers = "".join(f"{h}:{header_values[h]}\n" for h in signed.split(";"))
        canonical_request = "\n".join(
            ["GET", "/", canonical_query, canonical_headers, signed, hashlib.sha256(b"").hexdigest()]
        )
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                params["x-amz-date"],
                scope,
                hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
            ]
        )
        key = _sign(("AWS4" + secret).encode("utf-8"), day)
        for part in (region, service, "aws4_request"):
            key = _sign(key, part)
        expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, params.get("x-amz-signature", ""))
