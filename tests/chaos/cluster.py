"""A private PostgreSQL cluster for chaos runs, so restarting it disturbs nobody else.

Built with the server binaries already on the machine (`initdb`, `pg_ctl`), in a
temporary folder, on a free port, with trust authentication on loopback. As root, the
commands run as the `postgres` user, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from tests.server import free_port


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise RuntimeError("chaos runs need PostgreSQL's server binaries (initdb, pg_ctl)")
    return Path(pg_ctl).parent


class PrivateCluster:
    """`durable=False` trades crash safety of the *operating system* for speed (fsync off),
    which chaos runs can afford: they kill processes, not machines. Benchmarks keep
    PostgreSQL's defaults, and `statements=True` loads pg_stat_statements."""

    def __init__(
        self, *, durable: bool = False, statements: bool = False, max_connections: int = 300
    ) -> None:
        self.durable = durable
        self.max_connections = max_connections
        self.statements = statements
        self.bin = _binaries()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="widget-store-chaos-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/chaos"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def create(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()
        self.new_database("chaos")
        if self.statements:
            engine = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://"))
            with engine.begin() as conn:
                conn.execute(sa.text("CREATE EXTENSION pg_stat_statements"))
            engine.dispose()

    def new_database(self, name: str) -> str:
        """Another empty database on this server; its URL."""
        admin = sa.create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            f"-c max_connections={self.max_connections}"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off"
        if self.statements:
            options += " -c shared_preload_libraries=pg_stat_statements"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self, down_for_s: float) -> None:
        """Stop the server (fast: every session is cut), stay down, start it again."""
        self.stop()
        time.sleep(down_for_s)
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
