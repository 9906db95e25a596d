"""The sandbox's stand-in `chalk` CLI: `chalk apply` against a region's sandbox API server.

Chalk's real CLI is a separate binary, not on PyPI; product code calls it through a configured
path with `chalk apply --force --await --no-spinners [--branch X] [--no-promote] [--json]`.
This stand-in reads what the real one reads and refuses what it refuses, as far as Chalk's
public clients and actions show it (chalk-go `config/manager.go`, chalkpy `auth_config.py`,
chalk-ai/cli-action, chalk-ai/deploy-action):

- the target and credentials come from CHALK_CLIENT_ID, CHALK_CLIENT_SECRET, CHALK_API_SERVER
  and CHALK_ACTIVE_ENVIRONMENT (CHALK_ENVIRONMENT is not one of them: a CLI given only that
  would deploy to the token's default environment, so the stand-in refuses to guess);
- it runs in a Chalk project: a chalk.yaml or chalk.yml in the working directory or a parent;
- unknown flags are usage errors (exit 2);
- `--json` prints one JSON object on stdout, in the shape Chalk's CLI wrapper (chalk-harness)
  parses: `{deployment_id, deployment_url, status, response: {id, environmentId, status,
  isPreview}}`; progress goes to stderr. Without it, a `Deployment ID: <id>` line on stdout.

On failure the server's error goes to stderr with exit status 1 (the message tells a transient
upstream error from a permanent validation error). The client secret is sent to the token
endpoint and never printed.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated
from typing import Any
from typing import NoReturn

import httpx
import typer

__all__ = ["ENV_VARS", "main"]

VERSION = "0.1.0-sandbox"
ENV_VARS = ("CHALK_ACTIVE_ENVIRONMENT", "CHALK_API_SERVER", "CHALK_CLIENT_ID", "CHALK_CLIENT_SECRET")
PROJECT_FILES = ("chalk.yaml", "chalk.yml")
_TIMEOUT = httpx.Timeout(30.0, connect=5.0)

app = typer.Typer(
    name="chalk",
    help="Stand-in for Chalk's CLI inside the chalk-dr sandbox.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
)


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"Error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _server_error(resp: httpx.Response) -> str:
    try:
        body: Any = resp.json()
    except ValueError:
        return resp.text.strip() or resp.reason_phrase
    if isinstance(body, dict):
        return str(body.get("error") or body.get("error_description") or body)
    return str(body)


def _version(value: bool) -> None:
    if value:
        print(f"chalk version {VERSION} (chalk-dr sandbox stand-in)")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Deploy feature code to a sandbox Chalk environment."""


def _project_dir(start: Path) -> Path | None:
    """The Chalk project this directory belongs to: the nearest one with chalk.yaml/chalk.yml."""
    for directory in (start, *start.parents):
        if any((directory / name).is_file() for name in PROJECT_FILES):
            return directory
    return None


@app.command()
def apply(
    force: Annotated[bool, typer.Option("--force", help="Skip confirmation.")] = False,
    await_: Annotated[bool, typer.Option("--await", help="Wait until the deployment is live.")] = False,
    no_spinners: Annotated[bool, typer.Option("--no-spinners", help="Plain output.")] = False,
    branch: Annotated[str | None, typer.Option("--branch", help="Deploy to a branch.")] = None,
    no_promote: Annotated[bool, typer.Option("--no-promote", help="Build but do not serve it.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Deploy the feature code in this directory."""
    if _project_dir(Path.cwd()) is None:
        _fail(f"no chalk.yaml or chalk.yml in {Path.cwd()} or any parent: not a Chalk project", 1)
    env = {name: os.environ.get(name, "").strip() for name in ENV_VARS}
    missing = [name for name, value in env.items() if not value]
    if missing:
        _fail(f"missing environment variable(s): {', '.join(missing)}", 2)
    api = env["CHALK_API_SERVER"].rstrip("/")
    environment = env["CHALK_ACTIVE_ENVIRONMENT"]
    say = functools.partial(print, file=sys.stderr if as_json else sys.stdout)
    say(f"Deploying to environment {environment} via {api}")
    with httpx.Client(timeout=_TIMEOUT, trust_env=False) as http:
        try:
            token_resp = http.post(
                f"{api}/v1/oauth/token",
                json={
                    "client_id": env["CHALK_CLIENT_ID"],
                    "client_secret": env["CHALK_CLIENT_SECRET"],
                    "grant_type": "client_credentials",
                },
            )
        except httpx.TransportError as exc:
            _fail(f"could not reach the Chalk API server at {api}: {exc}")
        if token_resp.status_code != 200:
            _fail(
                f"authentication failed for client {env['CHALK_CLIENT_ID']} "
                f"(HTTP {token_resp.status_code}): {_server_error(token_resp)}"
            )
        token = token_resp.json()["access_token"]
        say("✓ Authenticated")
        try:
            resp = http.post(
                f"{api}/_sandbox/apply",
                headers={"Authorization": f"Bearer {token}", "X-Chalk-Env-Id": environment},
                json={"branch": branch, "promote": not no_promote},
            )
        except httpx.TransportError as exc:
            _fail(f"could not reach the Chalk API server at {api}: {exc}")
    if resp.status_code != 200:
        _fail(f"deployment failed (HTTP {resp.status_code}): {_server_error(resp)}")
    deployment_id = resp.json()["deployment_id"]
    say("✓ Uploaded feature code")
    say("✓ Built deployment")
    if as_json:
        status = "success"
        print(
            json.dumps(
                {
                    "deployment_id": deployment_id,
                    "deployment_url": f"{api}/deployments/{deployment_id}",
                    "status": status,
                    "response": {
                        "id": deployment_id,
                        "environmentId": environment,
                        "status": status,
                        "isPreview": bool(no_promote or branch),
                    },
                }
            )
        )
        return
    print(f"Deployment ID: {deployment_id}")
    if branch:
        print(f"✓ Deployed branch {branch} ({deployment_id})")
    elif no_promote:
        print(f"✓ Deployment {deployment_id} is ready (not promoted)")
    else:
        print(f"✓ Deployment {deployment_id} is live in environment {environment}")


def main() -> int:
    """Console-script entry point (`chalk = "sandbox.chalk_cli:main"`)."""
    try:
        app()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
