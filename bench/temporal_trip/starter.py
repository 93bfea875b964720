"""The client side: book a trip and wait for its outcome.

python -m bench.temporal_trip.starter --address 127.0.0.1:7233 --hotel invalid-room
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from bench.temporal_trip.shared import TASK_QUEUE, TripInput, TripResult
from bench.temporal_trip.workflow import TripWorkflow


async def start_trip(
    client: Client, key: str, trip: TripInput, task_queue: str = TASK_QUEUE
) -> WorkflowHandle[Any, TripResult]:
    """Start the trip under `key`, or find the trip already started under it.

    As with the store's `POST /trips/{key}`, the same key is the same trip: a running one is
    joined, a finished one is not run again (its result is read back)."""
    try:
        return await client.start_workflow(
            TripWorkflow.run,
            trip,
            id=key,
            task_queue=task_queue,
            task_timeout=timedelta(seconds=trip.policy.task_timeout_s),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle_for(TripWorkflow.run, key)


async def book_trip(
    client: Client, key: str, trip: TripInput, task_queue: str = TASK_QUEUE
) -> TripResult:
    """Book the trip under `key` and wait until it is booked or rolled back."""
    handle = await start_trip(client, key, trip, task_queue)
    return await handle.result()


async def _main(args: argparse.Namespace) -> None:
    client = await Client.connect(args.address)
    trip = TripInput(
        user_id=args.user,
        car_id=args.car,
        hotel_id=args.hotel,
        flight_id=args.flight,
        attempts=args.attempts,
    )
    result = await book_trip(client, args.key or f"trip-{uuid.uuid4().hex}", trip)
    print(json.dumps(dataclasses.asdict(result), indent=2))


def main() -> None:
    """The command line above."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="the Temporal frontend, host:port")
    parser.add_argument("--key", help="the trip's idempotency key (default: a new one)")
    parser.add_argument("--user", default="traveller-1")
    parser.add_argument("--car", default="compact-car")
    parser.add_argument("--hotel", default="harbour-hotel")
    parser.add_argument("--flight", default="LH-400")
    parser.add_argument("--attempts", type=int, default=3)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
