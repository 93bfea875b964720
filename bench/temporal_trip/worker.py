"""The worker process: runs trip workflows and their activities until SIGTERM.

python -m bench.temporal_trip.worker --address 127.0.0.1:7233 \\
    --database-url postgresql://postgres@127.0.0.1:5432/travel

The travel services reach their table (`travel_bookings`, created by whoever set up the
database) through this process's own engine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from bench.temporal_trip.activities import TripActivities
from bench.temporal_trip.shared import TASK_QUEUE
from bench.temporal_trip.workflow import TripWorkflow
from widget_store.config import Database
from widget_store.simulated.travel import travel_services

# Enough connections for every activity of 32 concurrent trips at once.
POOL_SIZE = 16
POOL_OVERFLOW = 16


async def run_worker(
    address: str,
    database_url: str,
    *,
    sticky_timeout_s: float,
    unsandboxed: bool = False,
    ready_file: Path | None = None,
) -> None:
    """Serve the task queue until SIGTERM or SIGINT, then shut down gracefully."""
    engine = create_async_engine(
        Database.parse(database_url).async_url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW
    )
    client = await Client.connect(address)
    activities = TripActivities(travel_services(engine))
    worker = Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[TripWorkflow],
        activities=activities.all(),
        # How long the server keeps a workflow's next task for this worker (which caches the
        # workflow) before offering it to any worker: part of the recovery time after a crash.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=sticky_timeout_s),
        # The SDK's documented opt-out, for comparison: no sandbox re-importing the workflow's
        # module for each run and checking its calls for non-determinism.
        workflow_runner=UnsandboxedWorkflowRunner() if unsandboxed else SandboxedWorkflowRunner(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with worker:
            if ready_file is not None:
                ready_file.write_text(f"{os.getpid()}\n")
            await stop.wait()
    finally:
        await engine.dispose()


def main() -> None:
    """The command line above."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="the Temporal frontend, host:port")
    parser.add_argument("--database-url", required=True, help="the travel services' database")
    parser.add_argument("--sticky-timeout-s", type=float, default=10.0)
    parser.add_argument("--unsandboxed", action="store_true", help="no workflow sandbox")
    parser.add_argument("--ready-file", type=Path, help="written with this pid once polling")
    args = parser.parse_args()
    asyncio.run(
        run_worker(
            args.address,
            args.database_url,
            sticky_timeout_s=args.sticky_timeout_s,
            unsandboxed=args.unsandboxed,
            ready_file=args.ready_file,
        )
    )


if __name__ == "__main__":
    main()
