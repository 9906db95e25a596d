"""The sandbox's stand-in `chalk` CLI: `chalk apply` against a regional sandbox query server.

Chalk's real CLI is a separate binary, not on PyPI; product code calls it through a configured
path with `chalk apply --force --await --no-spinners [--branch X] [--no-promote]` and the
target in the environment. This stand-in accepts the same invocation and environment, deploys
through the sandbox server's `/_sandbox/apply` route, and prints what the real CLI prints that
callers rely on: a `Deployment ID: <id>` line and a final success line on stdout; on failure,
the server's error on stderr and exit status 1 (the message tells a transient upstream error
from a permanent validation error). A missing environment variable exits 2, like a usage
error. The client secret is sent to the token endpoint and never printed.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated
from typing import Any
from typing import NoReturn

import httpx
import typer

__all__ = ["ENV_VARS", "main"]

VERSION = "0.1.0-sandbox"
ENV_VARS = ("CHALK_ENVIRONMENT", "CHALK_API_SERVER", "CHALK_CLIENT_ID", "CHALK_CLIENT_SECRET")
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


@app.command()
def apply(
    force: Annotated[bool, typer.Option("--force", help="Skip confirmation.")] = False,
    await_: Annotated[bool, typer.Option("--await", help="Wait until the deployment is live.")] = False,
    no_spinners: Annotated[bool, typer.Option("--no-spinners", help="Plain output.")] = False,
    branch: Annotated[str | None, typer.Option("--branch", help="Deploy to a branch.")] = None,
    no_promote: Annotated[bool, typer.Option("--no-promote", help="Build but do not serve it.")] = False,
) -> None:
    """Deploy the feature code in this directory."""
    env = {name: os.environ.get(name, "").strip() for name in ENV_VARS}
    missing = [name for name, value in env.items() if not value]
    if missing:
        _fail(f"missing environment variable(s): {', '.join(missing)}", 2)
    api = env["CHALK_API_SERVER"].rstrip("/")
    environment = env["CHALK_ENVIRONMENT"]
    print(f"Deploying to environment {environment} via {api}")
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
        print("✓ Authenticated")
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
    print("✓ Uploaded feature code")
    print("✓ Built deployment")
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
