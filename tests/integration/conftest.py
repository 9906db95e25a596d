"""A real PostgreSQL server for a test, on a Unix socket only (no TCP port at all).

Debian's `postgresql` package puts its server binaries in /usr/lib/postgresql/<major>/bin, off
PATH; `make system-deps` (run by .ci/run) installs it. PostgreSQL refuses to run as root
("initdb: error: cannot be run as root"), so as root the server runs as the package's
`postgres` user, with its data under a directory of its own outside pytest's root-only basetemp.
Locally a machine without the binaries skips the test; under CI (CHALK_DR_CI=1, set by
.ci/run, or CI=true) it fails, so a missing install step cannot pass as a skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "postgres"
DATABASE = "prefect"
COMMANDS = ("initdb", "pg_ctl", "createdb", "psql")


def in_ci() -> bool:
    return os.environ.get("CHALK_DR_CI") == "1" or os.environ.get("CI", "").lower() == "true"


def require(what: str, missing: str) -> NoReturn:
    """Skip locally; fail under CI, where `make system-deps` must have installed `what`."""
    message = f"{missing}: install {what} (`make system-deps`)"
    if in_ci():
        pytest.fail(f"{message}; CI installs it from .ci/run, so this is a broken install step")
    pytest.skip(message)


def postgres_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL's bin directory, else the directory of `initdb` on PATH."""
    versions = [p for p in Path("/").glob(PG_BIN_GLOB.lstrip("/")) if p.parent.name.isdigit()]
    found = sorted(versions, key=lambda p: int(p.parent.name), reverse=True)
    on_path = shutil.which("initdb")
    candidates = [*found, *([Path(on_path).resolve().parent] if on_path else [])]
    return next((d for d in candidates if all((d / c).is_file() for c in COMMANDS)), None)


@dataclass
class LocalPostgres:
    """A running PostgreSQL whose only listener is the socket in `socket_dir`."""

    bin_dir: Path
    root: Path  # data directory, socket and log, owned by the server's user
    run_as: list[str]  # the command prefix that runs a server binary as the server's user

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def sqlalchemy_url(self, database: str = DATABASE) -> str:
        """SQLAlchemy's asyncpg URL for a Unix socket: no host in the authority, the socket's
        directory as the `host` query parameter (SQLAlchemy passes query parameters to
        asyncpg.connect, whose `host` may be a socket directory)."""
        return f"postgresql+asyncpg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def server(self, *args: str, timeout: float = 60) -> None:
        """Run a server binary as the server's user (from its own directory, which that user can
        enter); a failure shows what the binary said."""
        done = subprocess.run(
            [*self.run_as, *args], cwd=self.root, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"{args[0]} exited {done.returncode}: {done.stdout}{done.stderr}"

    def psql(self, sql: str, database: str = DATABASE) -> list[str]:
        """The rows `sql` returns, one unaligned line each (psql -At), read over the socket."""
        connect = ["-h", str(self.socket_dir), "-U", SUPERUSER, "-d", database]
        done = subprocess.run(
            [str(self.bin_dir / "psql"), *connect, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout.splitlines()

    def start(self) -> None:
        self.server(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",  # the socket's directory is mkdtemp's 0700: only its owner and root get in
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        )
        options = f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}'"
        self.server(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
            timeout=90,
        )
        subprocess.run(
            [str(self.bin_dir / "createdb"), "-h", str(self.socket_dir), "-U", SUPERUSER, DATABASE],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self.server(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[LocalPostgres]:
    """A fresh PostgreSQL cluster with an empty database `prefect`, stopped (fast) and removed at
    the end whatever the test did; its log is copied into the test's tmp_path."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        require("Debian's postgresql", f"PostgreSQL's server binaries ({', '.join(COMMANDS)}) not found")
    run_as: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(SUPERUSER)
        except KeyError:
            require("Debian's postgresql", "no `postgres` user to run PostgreSQL as (it refuses root)")
        if shutil.which("runuser") is None:
            require("util-linux's runuser", "runuser not found")
        run_as = ["runuser", "-u", SUPERUSER, "--"]
    # Not under tmp_path: pytest's basetemp is root's alone (0700), which the server's user
    # cannot enter; a short path also keeps the socket's name under the 107-byte limit.
    root = Path(tempfile.mkdtemp(prefix="chalkdr-pg-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = LocalPostgres(bin_dir=bin_dir, root=root, run_as=run_as)
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            if server.log.exists():
                shutil.copy(server.log, tmp_path / "postgres.log")
            shutil.rmtree(root, ignore_errors=True)
