"""What the benchmarks read off the machine: process CPU, memory and threads, and
PostgreSQL's own counters of commits and statements."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """The children of `pid`'s threads; none if it (or a thread) ended while being read:
    PostgreSQL's backends come and go as connections close."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                found.extend(int(child) for child in (task / "children").read_text().split())
            except (FileNotFoundError, ProcessLookupError):
                continue
    except (FileNotFoundError, ProcessLookupError):
        return found
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive now."""
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        if Path(f"/proc/{current}").exists():
            tree.append(current)
            queue.extend(_children(current))
    return tree


def leaf_processes(pid: int) -> list[int]:
    """The processes under `pid` (itself included) that have no children: a supervisor's
    workers, say."""
    return [each for each in process_tree(pid) if not _children(each)]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes, in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):  # it ended since it was listed
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise KeyError(name)


def rss_mb(pid: int) -> float:
    return status_field(pid, "VmRSS") / 1024


def threads(pid: int) -> int:
    return status_field(pid, "Threads")


@dataclass(frozen=True)
class DatabaseCounters:
    commits: int
    statements: int | None


class PostgresCounters:
    """Commits (pg_stat_database) and statements (pg_stat_statements) of one database."""

    def __init__(self, sync_url: str) -> None:
        self._engine = sa.create_engine(sync_url, poolclass=sa.pool.NullPool)

    def read(self) -> DatabaseCounters:
        with self._engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))
            commits = conn.execute(
                sa.text(
                    "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                )
            ).scalar_one()
            try:
                statements = conn.execute(
                    sa.text(
                        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE dbid = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())"
                    )
                ).scalar_one()
            except sa.exc.DBAPIError:
                statements = None
        return DatabaseCounters(int(commits), None if statements is None else int(statements))

    def workflows_by_executor(self, since_epoch_ms: int) -> dict[str, int] | None:
        """Workflows started since then, by the executor (app process) that ran them: how
        evenly the processes shared the load. None where DBOS's tables are not readable.
        A workflow no process has taken yet (enqueued, its executor still NULL) is left
        out: it was run by nobody, and showed as a second "worker" of one."""
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT executor_id, count(*) FROM dbos.workflow_status "
                        "WHERE created_at >= :since AND executor_id IS NOT NULL "
                        "GROUP BY executor_id ORDER BY executor_id"
                    ),
                    {"since": since_epoch_ms},
                ).all()
        except sa.exc.DBAPIError:
            return None
        return {str(executor): int(count) for executor, count in rows}

    def close(self) -> None:
        self._engine.dispose()
