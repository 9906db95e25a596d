"""Secrets: where a reference may point, resolving it without leaking, where a credential may go."""

from __future__ import annotations

import pytest

from chalkdr.errors import CredentialsError
from chalkdr.secrets import cleartext_refusal
from chalkdr.secrets import redact
from chalkdr.secrets import redact_url
from chalkdr.secrets import resolve_secret
from chalkdr.topology import SecretRef


class TestResolve:
    def test_env_reference(self) -> None:
        ref = SecretRef(env="CHALK_DR_X_SECRET")
        assert resolve_secret(ref, environ={"CHALK_DR_X_SECRET": "s3cr3t"}) == "s3cr3t"

    @pytest.mark.parametrize("environ", [{}, {"CHALK_DR_X_SECRET": ""}])
    def test_missing_or_empty_env(self, environ: dict[str, str]) -> None:
        with pytest.raises(CredentialsError, match="env:CHALK_DR_X_SECRET"):
            resolve_secret(SecretRef(env="CHALK_DR_X_SECRET"), environ=environ)

    def test_prefect_block_through_injected_lookup(self) -> None:
        seen: list[str] = []

        def lookup(name: str) -> str:
            seen.append(name)
            return "from-block"

        assert resolve_secret(SecretRef(prefect_secret="chalk-west"), prefect_secret=lookup) == "from-block"
        assert seen == ["chalk-west"]

    def test_block_lookup_failure_does_not_leak_the_cause(self) -> None:
        def lookup(name: str) -> str:
            raise ValueError("value was hunter2")

        with pytest.raises(CredentialsError) as info:
            resolve_secret(SecretRef(prefect_secret="chalk-west"), prefect_secret=lookup)
        assert "hunter2" not in str(info.value)
        assert info.value.__cause__ is None and info.value.__suppress_context__

    def test_block_without_lookup(self) -> None:
        with pytest.raises(CredentialsError, match="prefect-secret:chalk-west"):
            resolve_secret(SecretRef(prefect_secret="chalk-west"))

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            ({"env": "AWS_SECRET_ACCESS_KEY"}, "CHALK_DR_\\* variables only"),
            ({"env": "PREFECT_API_KEY"}, "CHALK_DR_\\* variables only"),
            ({"prefect_secret": "aws-root-keys"}, "chalk-\\* Secret blocks only"),
        ],
    )
    def test_a_reference_outside_the_prefix_is_invalid(self, data: dict[str, str], reason: str) -> None:
        with pytest.raises(ValueError, match=reason):
            SecretRef.model_validate(data)

    def test_a_reference_built_around_validation_is_still_refused(self) -> None:
        """Defence in depth: resolve_secret checks the prefix itself, never reading the variable."""
        ref = SecretRef.model_construct(env="AWS_SECRET_ACCESS_KEY", prefect_secret=None)
        with pytest.raises(CredentialsError, match="not a CHALK_DR_\\* variable") as info:
            resolve_secret(ref, environ={"AWS_SECRET_ACCESS_KEY": "aws-key-value"})
        assert "aws-key-value" not in str(info.value)
        block = SecretRef.model_construct(env=None, prefect_secret="prefect-admin")
        with pytest.raises(CredentialsError, match="not a chalk-\\* block"):
            resolve_secret(block, prefect_secret=lambda name: "x")


class TestRedact:
    def test_redact(self) -> None:
        assert redact("token=abc123 and abc123abc", ["abc123", None, ""]) == "token=*** and ***abc"
        assert redact("xx-longsecret-xx", ["long", "longsecret"]) == "xx-***-xx"

    def test_redact_url(self) -> None:
        url = "https://x-access-token:ghs_abc@github.com/acme/features.git"
        assert redact_url(url) == "https://***@github.com/acme/features.git"
        assert redact_url("/srv/repo") == "/srv/repo"


class TestCleartext:
    @pytest.mark.parametrize(
        ("url", "addresses"),
        [
            ("https://api.chalk.example.com", ["203.0.113.7"]),
            ("http://127.0.10.10:8080", ["127.0.10.10"]),
            ("http://prod-east.query.example.com:8080", ["127.0.0.11", "127.0.0.12"]),
            ("http://[::1]:8080", ["::1"]),
        ],
    )
    def test_allowed(self, url: str, addresses: list[str]) -> None:
        assert cleartext_refusal(url, addresses) is None

    @pytest.mark.parametrize(
        ("url", "addresses", "reason"),
        [
            ("http://api.chalk.example.com", ["203.0.113.7"], "203.0.113.7, which is not this machine"),
            ("http://mixed.example.com", ["127.0.0.1", "10.0.0.5"], "10.0.0.5, which is not this machine"),
            ("http://nowhere.invalid", [], "did not resolve"),
            ("ftp://x.example.com", ["127.0.0.1"], "not an http(s) URL"),
        ],
    )
    def test_refused(self, url: str, addresses: list[str], reason: str) -> None:
        refusal = cleartext_refusal(url, addresses)
        assert refusal is not None and reason in refusal
