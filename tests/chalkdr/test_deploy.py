"""chalk-apply's pure logic: CLI contract, failure classification, where code may come from, the
order of pushes, parity and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalkdr.deploy import ApplyReport
from chalkdr.deploy import LastGood
from chalkdr.deploy import Outcome
from chalkdr.deploy import RegionApply
from chalkdr.deploy import RegionStatus
from chalkdr.deploy import RollbackReport
from chalkdr.deploy import ShaOrder
from chalkdr.deploy import Strategy
from chalkdr.deploy import allowed_repositories
from chalkdr.deploy import chalk_apply_command
from chalkdr.deploy import chalk_cli_env
from chalkdr.deploy import classify_cli_failure
from chalkdr.deploy import decide_outcome
from chalkdr.deploy import evaluate_parity
from chalkdr.deploy import git_env
from chalkdr.deploy import order_skip_reason
from chalkdr.deploy import parse_deployment_id
from chalkdr.deploy import parse_repository

SHA = "0123456789abcdef0123456789abcdef01234567"
OLD = "fedcba9876543210fedcba9876543210fedcba98"
# What a worker's environment holds that its children (the Chalk CLI, git) may inherit: where
# programs and home are, the locale, proxies (either case)...
WORKER_ENV = {
    "PATH": "/usr/bin",
    "HOME": "/home/w",
    "LANG": "C.UTF-8",
    "HTTPS_PROXY": "http://proxy:3128",
    "https_proxy": "http://proxy:3128",
}
# ...and what it holds that none of them may get.
WORKER_SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws",
    "PREFECT_API_KEY": "pnu_x",
    "CHALK_DR_PROD_CLIENT_SECRET": "chalk",
    "OTHER_SECRET": "x",
}

# What `chalk apply --json` prints on stdout (progress goes to stderr).
SUCCESS_OUTPUT = (
    '{"deployment_id": "cabc123def456ghi789jkl012", "deployment_url": "https://chalk.ai/x", '
    '"status": "success", "response": {"id": "cabc123def456ghi789jkl012", "isPreview": false}}\n'
)


class TestParseDeploymentId:
    """`chalk apply --json` prints {deployment_id, deployment_url, status, response} (the shape
    chalk-ai/deploy-action reads); the id is never scraped from the human-readable lines."""

    def test_json_line(self) -> None:
        assert parse_deployment_id(SUCCESS_OUTPUT) == "cabc123def456ghi789jkl012"

    def test_indented_json(self) -> None:
        doc = {"deployment_id": "cpretty", "status": "success", "response": {"id": "cpretty"}}
        assert parse_deployment_id("building...\n" + json.dumps(doc, indent=2) + "\n") == "cpretty"

    def test_last_document_wins(self) -> None:
        out = '{"deployment_id": "cfirst"}\nretrying\n{"deployment_id": "csecond"}\n'
        assert parse_deployment_id(out) == "csecond"

    @pytest.mark.parametrize(
        "output",
        [
            "",
            "✓ Built deployment\n",
            "Deployment ID: cabc123\n",  # the text line the old parser scraped
            '{"status": "success"}',
            '{"deployment_id": ""}',
            "{not json",
        ],
    )
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
            "--json",
        ]
        assert chalk_apply_command("chalk", no_promote=True, branch="feat x") == [
            "chalk",
            "apply",
            "--force",
            "--await",
            "--no-spinners",
            "--json",
            "--branch",
            "feat x",  # one argument, whatever it contains: no shell
            "--no-promote",
        ]

    def test_child_env_has_one_target_and_no_other_secrets(self) -> None:
        base = {
            **WORKER_ENV,
            **WORKER_SECRETS,
            "CHALK_ACTIVE_ENVIRONMENT": "stale",
            "CHALK_DEMO_WEST_CLIENT_SECRET": "west-secret",
        }
        env = chalk_cli_env(
            base,
            environment_id="prod",
            api_server="https://prod-east.api.example.com/",
            client_id="cid",
            client_secret="east-secret",
        )
        # What the real CLI reads (CHALK_ACTIVE_ENVIRONMENT, not CHALK_ENVIRONMENT, which it ignores)
        # and an allow-list of the worker's environment; no other secret reaches the child.
        assert env == {
            **WORKER_ENV,
            "CHALK_ACTIVE_ENVIRONMENT": "prod",
            "CHALK_API_SERVER": "https://prod-east.api.example.com",
            "CHALK_CLIENT_ID": "cid",
            "CHALK_CLIENT_SECRET": "east-secret",
        }
        assert base["CHALK_ACTIVE_ENVIRONMENT"] == "stale"  # the worker's own environment is untouched


class TestRepositories:
    @pytest.mark.parametrize(
        ("url", "key"),
        [
            ("https://github.com/Acme/Features.git", ("https", "github.com", "acme/features")),
            ("https://GITHUB.com/acme/features/", ("https", "github.com", "acme/features")),
            ("git@github.com:acme/features.git", ("ssh", "github.com", "acme/features")),
            ("ssh://git@github.com/acme/features", ("ssh", "github.com", "acme/features")),
            ("https://git.example.com:8443/Team/Repo.git", ("https", "git.example.com:8443", "Team/Repo")),
            ("file:///srv/git/features", ("file", "", "/srv/git/features")),
        ],
    )
    def test_normalised_for_comparison(self, url: str, key: tuple[str, str, str]) -> None:
        assert parse_repository(url).key == key

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("https://x-access-token:ghs_abc@github.com/acme/features.git", "credentials"),
            ("https://ghs_abc@github.com/acme/features.git", "credentials"),
            ("ssh://git:pw@github.com/acme/features.git", "credentials"),
            ("http://github.com/acme/features.git", "plain http"),
            ("git://github.com/acme/features.git", "transport 'git'"),
            ("ext::ssh -o ProxyCommand=evil host", "whitespace"),
            ("ext::evil", "transport 'ext'"),
            ("fd::17", "transport 'fd'"),
            ("https://github.com/acme/../evil/features.git", "not a plain owner/name path"),
            ("https://github.com/acme/features.git?ref=x", "no query"),
            ("relative/path", "transport"),
            ("", "empty"),
        ],
    )
    def test_refused(self, url: str, reason: str) -> None:
        with pytest.raises(ValueError, match=reason) as info:
            parse_repository(url)
        assert "ghs_abc" not in str(info.value) and "pw" not in str(info.value).split()

    def test_owner_name_is_that_github_repository_over_https_or_ssh(self) -> None:
        allowed = {r.key for r in allowed_repositories("acme/features")}
        assert parse_repository("https://github.com/acme/features.git").key in allowed
        assert parse_repository("git@github.com:ACME/features.git").key in allowed
        assert parse_repository("https://github.com/acme/features-fork.git").key not in allowed
        assert parse_repository("https://gitlab.com/acme/features.git").key not in allowed

    def test_a_local_repository_by_its_real_path(self, tmp_path: Path) -> None:
        real = tmp_path / "repo"
        real.mkdir()
        link = tmp_path / "link"
        link.symlink_to(real)
        assert parse_repository(str(link)).key == parse_repository(str(real)).key == ("file", "", str(real))


class TestGitEnvironment:
    def test_one_transport_no_prompts_no_worker_secrets(self) -> None:
        base = {
            **WORKER_ENV,
            "SSH_AUTH_SOCK": "/run/agent",
            **WORKER_SECRETS,
            "GIT_ALLOW_PROTOCOL": "ext:file:https",  # a worker's own setting does not widen it
        }
        env = git_env(base, transport="https")
        assert env == {
            **WORKER_ENV,
            "SSH_AUTH_SOCK": "/run/agent",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
            "GIT_ALLOW_PROTOCOL": "https",
            "GIT_TERMINAL_PROMPT": "0",
            "GCM_INTERACTIVE": "never",
        }

    def test_the_workers_ssh_command_is_kept(self) -> None:
        env = git_env({"GIT_SSH_COMMAND": "ssh -i /keys/deploy -o BatchMode=yes"}, transport="ssh")
        assert env["GIT_SSH_COMMAND"] == "ssh -i /keys/deploy -o BatchMode=yes"


class TestPushOrder:
    @pytest.mark.parametrize(
        ("order", "skipped"),
        [
            (ShaOrder.FIRST, False),
            (ShaOrder.NEWER, False),
            (ShaOrder.UNKNOWN, False),  # nothing to order against: applied, and the report says so
            (ShaOrder.SAME, True),
            (ShaOrder.OLDER, True),
            (ShaOrder.DIVERGED, True),
        ],
    )
    def test_only_a_newer_sha_moves_the_environment(self, order: ShaOrder, skipped: bool) -> None:
        reason = order_skip_reason(SHA, OLD, order)
        assert (reason is not None) is skipped
        if reason:
            assert SHA[:12] in reason


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

    def test_refused_and_skipped_runs_say_why_and_nothing_ran(self) -> None:
        refused = _report(
            refused="repository https://github.com/evil/x.git is not one this environment deploys from"
        )
        refused.outcome = decide_outcome(refused)
        assert refused.outcome is Outcome.REFUSED
        assert "refused, nothing run: repository https://github.com/evil/x.git" in refused.summary
        assert "**Refused:** repository" in refused.render_markdown()
        skipped = _report(skipped="0123456789ab is older than the deployed fedcba987654", previous_sha=OLD)
        skipped.order = ShaOrder.OLDER
        skipped.outcome = decide_outcome(skipped)
        md = skipped.render_markdown()
        assert skipped.outcome is Outcome.SKIPPED and "skipped, nothing run" in skipped.summary
        assert f"| deployed before | `{OLD}` |" in md and "| order | older |" in md
