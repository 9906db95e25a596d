"""chalk-apply's pure logic: CLI contract, failure classification, parity, secrets, the report."""

from __future__ import annotations

import pytest

from chalkdr.deploy import ApplyReport
from chalkdr.deploy import LastGood
from chalkdr.deploy import Outcome
from chalkdr.deploy import RegionApply
from chalkdr.deploy import RegionStatus
from chalkdr.deploy import RollbackReport
from chalkdr.deploy import Strategy
from chalkdr.deploy import chalk_apply_command
from chalkdr.deploy import chalk_cli_env
from chalkdr.deploy import classify_cli_failure
from chalkdr.deploy import decide_outcome
from chalkdr.deploy import evaluate_parity
from chalkdr.deploy import parse_deployment_id
from chalkdr.errors import CredentialsError
from chalkdr.secrets import redact
from chalkdr.secrets import redact_url
from chalkdr.secrets import resolve_secret
from chalkdr.topology import SecretRef

SHA = "0123456789abcdef0123456789abcdef01234567"
OLD = "fedcba9876543210fedcba9876543210fedcba98"

# What the stand-in CLI (and, for the line we rely on, the real one) prints.
SUCCESS_OUTPUT = """Deploying to environment demo via http://127.0.0.1:40404
✓ Authenticated
✓ Uploaded feature code
✓ Built deployment
Deployment ID: cabc123def456ghi789jkl012
✓ Deployment cabc123def456ghi789jkl012 is live in environment demo
"""


class TestParseDeploymentId:
    def test_the_cli_line(self) -> None:
        assert parse_deployment_id(SUCCESS_OUTPUT) == "cabc123def456ghi789jkl012"

    def test_colours_and_decorations_are_ignored(self) -> None:
        assert parse_deployment_id("\x1b[32m✓\x1b[0m Deployment ID:  \x1b[1mcxyz\x1b[0m\n") == "cxyz"

    def test_last_id_wins(self) -> None:
        assert parse_deployment_id("Deployment ID: cfirst\nretrying\nDeployment ID: csecond\n") == "csecond"

    def test_json_output(self) -> None:
        assert parse_deployment_id('{"deployment_id": "cjson1", "status": "ok"}') == "cjson1"

    @pytest.mark.parametrize("output", ["", "✓ Built deployment\n", "the deployment id will follow\n"])
    def test_absent(self, output: str) -> None:
        assert parse_deployment_id(output) is None


class TestClassifyCliFailure:
    @pytest.mark.parametrize(
        ("exit_code", "output"),
        [
            (None, "partial output"),  # killed by our timeout
            (-9, ""),  # killed by a signal
            (75, "something odd"),  # EX_TEMPFAIL
            (1, "Error: deployment failed (HTTP 503): upstream connect error: temporarily unavailable"),
            (1, "Error: could not reach the Chalk API server at http://x: [Errno 111] Connection refused"),
            (1, "Error: request timed out"),
            (1, "Error: HTTP 429 Too Many Requests"),
            (1, "Error: 502 Bad Gateway"),
        ],
    )
    def test_transient(self, exit_code: int | None, output: str) -> None:
        assert classify_cli_failure(exit_code, output).transient

    @pytest.mark.parametrize(
        ("exit_code", "output"),
        [
            (
                1,
                "Error: deployment failed (HTTP 400): Validation failed: resolver references unknown feature",
            ),
            (1, "Error: authentication failed for client c (HTTP 401): invalid client credentials"),
            (1, "Error: HTTP 403 Forbidden"),
            (2, "Error: missing environment variable(s): CHALK_CLIENT_SECRET"),
            (127, ""),
            (1, "Traceback ... SyntaxError: invalid syntax"),
            (1, "something broke and nobody said why"),  # unknown: fail fast
            (75, "temporarily unavailable, then: Validation failed"),  # permanent evidence wins
        ],
    )
    def test_permanent(self, exit_code: int, output: str) -> None:
        assert not classify_cli_failure(exit_code, output).transient

    def test_port_numbers_are_not_status_codes(self) -> None:
        # A URL with port 40400 or 50312 must not read as HTTP 404 / 503.
        out = "Deploying to environment demo via http://127.0.0.1:50312\nError: HTTP 429 slow down"
        assert classify_cli_failure(1, out).transient
        out = "Deploying via http://127.0.0.1:40400\nError: HTTP 503 temporarily unavailable"
        assert classify_cli_failure(1, out).transient

    def test_reason_names_the_evidence(self) -> None:
        assert "exit code 1" in classify_cli_failure(1, "HTTP 503").reason


class TestCommandAndEnvironment:
    def test_command_is_an_argument_list(self) -> None:
        assert chalk_apply_command("/opt/chalk") == [
            "/opt/chalk",
            "apply",
            "--force",
            "--await",
            "--no-spinners",
        ]
        assert chalk_apply_command("chalk", no_promote=True, branch="feat x") == [
            "chalk",
            "apply",
            "--force",
            "--await",
            "--no-spinners",
            "--branch",
            "feat x",  # one argument, whatever it contains: no shell
            "--no-promote",
        ]

    def test_child_env_has_one_target_and_no_other_secrets(self) -> None:
        base = {
            "PATH": "/usr/bin",
            "HOME": "/root",
            "CHALK_ENVIRONMENT": "stale",
            "CHALK_DEMO_WEST_CLIENT_SECRET": "west-secret",
            "OTHER_SECRET": "x",
        }
        env = chalk_cli_env(
            base,
            environment_id="prod-east",
            api_server="https://api.example.com/",
            client_id="cid",
            client_secret="east-secret",
            strip=["OTHER_SECRET"],
        )
        assert env == {
            "PATH": "/usr/bin",
            "HOME": "/root",
            "CHALK_ENVIRONMENT": "prod-east",
            "CHALK_API_SERVER": "https://api.example.com",
            "CHALK_CLIENT_ID": "cid",
            "CHALK_CLIENT_SECRET": "east-secret",
        }
        assert base["CHALK_ENVIRONMENT"] == "stale"  # the worker's own environment is untouched


class TestSecrets:
    def test_env_reference(self) -> None:
        ref = SecretRef(env="CHALK_X_SECRET")
        assert resolve_secret(ref, environ={"CHALK_X_SECRET": "s3cr3t"}) == "s3cr3t"

    @pytest.mark.parametrize("environ", [{}, {"CHALK_X_SECRET": ""}])
    def test_missing_or_empty_env(self, environ: dict[str, str]) -> None:
        with pytest.raises(CredentialsError, match="env:CHALK_X_SECRET"):
            resolve_secret(SecretRef(env="CHALK_X_SECRET"), environ=environ)

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

    def test_redact(self) -> None:
        assert redact("token=abc123 and abc123abc", ["abc123", None, ""]) == "token=*** and ***abc"
        assert redact("xx-longsecret-xx", ["long", "longsecret"]) == "xx-***-xx"

    def test_redact_url(self) -> None:
        url = "https://x-access-token:ghs_abc@github.com/acme/features.git"
        assert redact_url(url) == "https://***@github.com/acme/features.git"
        assert redact_url("/srv/repo") == "/srv/repo"


def _regions() -> dict[str, str | None]:
    return {"us-east-1": "ceast-new", "us-west-2": "cwest-new"}


class TestParity:
    def test_parity_compares_each_region_with_its_own_apply(self) -> None:
        check = evaluate_parity(SHA, expected=_regions(), served=_regions())
        assert check.in_parity and not check.drifted
        assert check.at_target == ["us-east-1", "us-west-2"]

    def test_one_region_left_behind_is_drift_and_says_what_it_serves(self) -> None:
        check = evaluate_parity(
            SHA,
            expected=_regions(),
            served={"us-east-1": "ceast-new", "us-west-2": "cwest-old"},
            known_shas={"ceast-new": SHA, "cwest-old": OLD},
        )
        assert not check.in_parity and check.drifted
        assert check.at_target == ["us-east-1"]
        west = check.regions[1]
        assert (west.expected, west.served, west.served_sha) == ("cwest-new", "cwest-old", OLD)

    def test_nothing_moved_is_not_drift(self) -> None:
        check = evaluate_parity(SHA, expected={"us-east-1": None, "us-west-2": None}, served=_regions())
        assert not check.in_parity and not check.drifted

    def test_unknown_served_is_not_parity(self) -> None:
        check = evaluate_parity(SHA, expected=_regions(), served={"us-east-1": "ceast-new"})
        assert not check.in_parity and check.drifted

    def test_last_good_maps_ids_to_its_sha(self) -> None:
        lg = LastGood(sha=OLD, deployment_ids={"us-east-1": "ce", "us-west-2": "cw"})
        assert lg.deployment_ids_to_sha() == {"ce": OLD, "cw": OLD}


def _report(**overrides: object) -> ApplyReport:
    data: dict[str, object] = {
        "environment": "prod",
        "sha": SHA,
        "ref": "refs/heads/main",
        "source": "https://***@github.com/acme/features.git",
        "strategy": Strategy.CANARY,
        "regions": [
            RegionApply(region="us-east-1", resource_group="prod-east", environment_id="pe", primary=True),
            RegionApply(region="us-west-2", resource_group="prod-west", environment_id="pw", primary=False),
        ],
    }
    data.update(overrides)
    return ApplyReport.model_validate(data)


class TestOutcomeAndReport:
    def test_parity(self) -> None:
        report = _report()
        report.parity = evaluate_parity(SHA, expected=_regions(), served=_regions())
        assert decide_outcome(report) is Outcome.PARITY

    def test_drift_then_rolled_back(self) -> None:
        report = _report()
        report.parity = evaluate_parity(
            SHA, expected=_regions(), served={"us-east-1": "ceast-new", "us-west-2": "cwest-old"}
        )
        assert decide_outcome(report) is Outcome.DRIFT
        report.rollback = RollbackReport(sha=OLD)
        assert decide_outcome(report) is Outcome.DRIFT  # a rollback without proven parity is still drift
        report.rollback.parity = evaluate_parity(
            OLD,
            expected={"us-east-1": "ceast-rb", "us-west-2": "cwest-old"},
            served={"us-east-1": "ceast-rb", "us-west-2": "cwest-old"},
        )
        assert decide_outcome(report) is Outcome.ROLLED_BACK

    def test_error_before_any_apply_is_failed(self) -> None:
        report = _report(error="CheckoutFailed: commit not found")
        assert decide_outcome(report) is Outcome.FAILED
        assert "CheckoutFailed" in report.summary

    def test_markdown_has_every_region_and_the_drift(self) -> None:
        report = _report(started_at=1_700_000_000.0, finished_at=1_700_000_012.5)
        east, west = report.regions
        east.status, east.deployment_id, east.attempts = RegionStatus.VERIFIED, "ceast-new", 2
        east.started_at, east.verified_at, east.finished_at = (
            1_700_000_001.0,
            1_700_000_005.0,
            1_700_000_005.5,
        )
        west.status, west.error = (
            RegionStatus.FAILED,
            "us-west-2: chalk apply exited 1 (permanent | HTTP 400)",
        )
        report.parity = evaluate_parity(
            SHA,
            expected={"us-east-1": "ceast-new", "us-west-2": None},
            served={"us-east-1": "ceast-new", "us-west-2": "cwest-old"},
            known_shas={"cwest-old": OLD},
        )
        report.rollback = RollbackReport(skipped_reason="no last good sha recorded for prod")
        report.outcome = decide_outcome(report)
        md = report.render_markdown()
        assert report.outcome is Outcome.DRIFT
        assert "**Outcome: DRIFT**" in md
        assert f"`{SHA}`" in md and "| strategy | canary |" in md
        assert "| us-east-1 | prod-east | primary | verified | ceast-new |" in md
        assert "| 2 |" in md and "4.50 s" in md
        assert "permanent \\| HTTP 400" in md  # pipes in errors cannot break the table
        assert "| us-west-2 | - | cwest-old | fedcba987654 | **no** |" in md
        assert "Not rolled back: no last good sha recorded for prod" in md
        assert "2023-11-14 22:13:20.000Z" in md
        assert "| duration | 12.50 s |" in md
