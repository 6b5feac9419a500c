"""A real, throw-away PostgreSQL server for the tests: Debian's binaries, a cluster in a temporary directory, trust
authentication on loopback only, a free port. `make test` installs Debian's `postgresql` when it is missing.

PostgreSQL refuses to run as root, so under root initdb and the server run as the `postgres` user the Debian package
creates, in a directory that user owns. Debian's binaries (rather than PyPI `pgserver`) because they are the
server a production machine runs, kept patched by apt, and they need no extra wheel with its own bundled build."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lsq_pipeline.postgres_storage import pooled_postgres_config

SERVER_USER = "postgres"  # created by Debian's postgresql package; also the cluster's superuser role


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    username: str
    bin_dir: Path

    def create_database(self, name: str) -> str:
        """A new empty database (Debian's `createdb`), so each test's Dagster instance starts from nothing."""
        createdb = [str(self.bin_dir / "createdb"), "-h", self.host, "-p", str(self.port), "-U", self.username, name]
        _run_as_server_user(createdb)
        return name

    def storage_config(self, db_name: str, pooled: bool = True) -> dict[str, object]:
        """The `storage:` section of a dagster.yaml pointing at `db_name` on this server: the project's pooled
        storage (lsq_pipeline.postgres_storage), or with `pooled=False` dagster-postgres' own."""
        db = {"hostname": self.host, "port": self.port, "username": self.username, "db_name": db_name}
        # SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3; dagster-postgres ships psycopg2.
        db["scheme"] = "postgresql+psycopg2"
        return pooled_postgres_config({"postgres_db": db}) if pooled else {"postgres": {"postgres_db": db}}


def bin_dir() -> Path:
    """The newest Debian PostgreSQL binaries (/usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL binaries not found: run `make test` (installs Debian's postgresql)")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_as_server_user(args: list[str], check: bool = True) -> None:
    """Run a PostgreSQL tool, as the `postgres` user under root; a failure names the tool and says why."""
    command = ["runuser", "-u", SERVER_USER, "--", *args] if os.geteuid() == 0 else args
    done = subprocess.run(command, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.strip() or done.stdout.strip()}")


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a cluster, yield its address, and always stop it and delete its files, whatever the tests did."""
    binaries = bin_dir()
    root = Path(tempfile.mkdtemp(prefix="lsq-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, SERVER_USER, SERVER_USER)
    data, log, port = root / "data", root / "server.log", free_port()
    username = SERVER_USER if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    initdb = [str(binaries / "initdb"), "-D", str(data), "-U", username, "--auth=trust", "-E", "UTF8", "--no-sync"]
    # Loopback only, the socket in our directory (not /var/run), no fsync: a test cluster, never kept.
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        _run_as_server_user(initdb)
        _run_as_server_user([*pg_ctl, "-o", options, "-l", str(log), "-w", "-t", "60", "start"])
        started = True
        yield PostgresServer("127.0.0.1", port, username, binaries)
    finally:
        if started:
            _run_as_server_user([*pg_ctl, "-m", "fast", "-w", "-t", "60", "stop"], check=False)
        shutil.rmtree(root, ignore_errors=True)
