"""The GitHub Actions workflow: only the protected branch deploys, with a credential scoped to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

WORKFLOW = Path(__file__).resolve().parents[2] / "deployments" / "ci" / "github-actions-chalk-apply.yml"


def _workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the key `on` as True; GitHub reads it as "on".
    data["on"] = data.pop(True, data.get("on"))
    return dict(data)


def _job() -> dict[str, Any]:
    (job,) = _workflow()["jobs"].values()
    return dict(job)


def test_it_runs_only_for_the_protected_branch() -> None:
    triggers = _workflow()["on"]
    assert set(triggers) == {"push", "workflow_dispatch"}  # never pull_request(_target)
    assert triggers["push"]["branches"] == ["main"]
    assert not (triggers["workflow_dispatch"] or {}).get("inputs")  # no sha to pick by hand
    assert _job()["if"] == "github.ref == 'refs/heads/main'"  # a dispatch from another branch stops here


def test_the_prefect_credential_comes_from_a_protected_environment_only() -> None:
    job = _job()
    assert job["environment"] == "chalk-production"
    assert "secrets." not in yaml.safe_dump(job.get("env", {}))  # not exposed to every step
    uses_secrets = [s for s in job["steps"] if "secrets." in yaml.safe_dump(s)]
    assert uses_secrets and all(s["name"].startswith("Route") for s in uses_secrets)
    assert _workflow()["permissions"] == {"contents": "read"}


def test_the_sha_is_checked_to_be_on_the_branch_before_prefect_is_called() -> None:
    steps = _job()["steps"]
    names = [s.get("name", "") for s in steps]
    check = names.index("The sha must be on the protected branch")
    assert 'git merge-base --is-ancestor "$GITHUB_SHA" "origin/$PROTECTED_BRANCH"' in steps[check]["run"]
    assert all(check < i for i, s in enumerate(steps) if "prefect " in s.get("run", ""))
    checkout = next(s for s in steps if str(s.get("uses", "")).startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0 and checkout["with"]["persist-credentials"] is False
