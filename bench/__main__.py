"""Benchmark the store, the way the README starts it, and print each figure beside its target.

python -m bench throughput            # 1, 8, 32 and 64 shoppers on PostgreSQL, 20 s each
python -m bench throughput --embedded # the same on the embedded SQLite default
python -m bench recovery              # kill -9 with checkouts in flight
python -m bench waiting               # 10,000 checkouts waiting for payment
python -m bench observability         # purchases with metrics and JSON logs off and on, in turns
python -m bench relay                 # purchases with the outbox relay to NATS off and on
python -m bench versus                # this store against 67e32ed, in turns, with the targets
python -m bench versus --smoke        # seconds of it
python -m bench profile               # py-spy on the app process under load: where the CPU goes
python -m bench smoke                 # seconds; what CI runs so the benchmark never rots
python -m bench trips                 # the trip saga on the store and on Temporal, side by side
python -m bench trips --smoke         # seconds of it
python -m bench client                # what the shoppers' HTTP client costs: httpx vs aiohttp
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench import scenarios
from bench.report import RESULTS


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    throughput = commands.add_parser("throughput", help="purchases/s, latency, CPU, commits")
    throughput.add_argument("--levels", default="1,8,32,64")
    throughput.add_argument("--seconds", type=float, default=20.0)
    throughput.add_argument("--workers", type=int, default=1)
    throughput.add_argument("--embedded", action="store_true", help="SQLite instead of PostgreSQL")
    throughput.add_argument(
        "--poll-ms",
        type=float,
        help="watch orders by polling this often instead of long-polling (for stores without it)",
    )
    throughput.add_argument("--name", help="the results' file name (default from the setup)")
    recovery = commands.add_parser("recovery", help="restart-to-serving and to-all-resumed")
    recovery.add_argument("--in-flight", type=int, default=60)
    waiting = commands.add_parser("waiting", help="many checkouts waiting for payment")
    waiting.add_argument("--waiting", type=int, default=10_000)
    waiting.add_argument("--seconds", type=float, default=20.0)
    floor = commands.add_parser("floor", help="DBOS's own CPU and commits per durable step")
    floor.add_argument("--workflows", type=int, default=30, help="of ten steps each")
    floor.add_argument("--no-commits", action="store_true", help="CPU and wall time only")
    floor.add_argument("--results", type=Path, help="where the JSON goes (default bench/results)")
    profile = commands.add_parser("profile", help="py-spy on a purchase: where the CPU goes")
    profile.add_argument("--shoppers", type=int, default=8)
    profile.add_argument("--seconds", type=float, default=30.0, help="sampled")
    profile.add_argument("--name", default="profile", help="bench/results/<name>.txt")
    profile.add_argument("--env", action="append", default=[], help="NAME=value for the store")
    profile.add_argument(
        "--trips", action="store_true", help="book trips (POST /trips) instead of purchases"
    )
    versus = commands.add_parser("versus", help="this store against an earlier commit, in turns")
    versus.add_argument("--commit", default="67e32ed", help="the earlier commit")
    versus.add_argument("--rounds", type=int, help="rounds of turns (medians; default 3)")
    versus.add_argument("--seconds", type=float, help="each turn (default 15)")
    versus.add_argument("--smoke", action="store_true", help="seconds of it (CI)")
    versus.add_argument("--results", type=Path, help="where the JSON goes (default bench/results)")
    versus.add_argument("--name", help="the results' file name (default versus)")
    versus.add_argument("--only-workers", type=int, help="run only the phase with this many")
    versus.add_argument("--old-env", action="append", default=[], help="NAME=value, old store")
    versus.add_argument("--new-env", action="append", default=[], help="NAME=value, this store")
    cost = commands.add_parser("observability", help="throughput with metrics and JSON logs on/off")
    cost.add_argument("--levels", default="1,8,32")
    cost.add_argument("--seconds", type=float, default=20.0)
    cost.add_argument("--rounds", type=int, default=2)
    cost.add_argument("--workers", type=int, default=1)
    cost.add_argument(
        "--control", action="store_true", help="both stores without them: the noise floor"
    )
    cost.add_argument("--name", default=None, help="the results' file name")
    relay = commands.add_parser("relay", help="throughput with the outbox relay off and on")
    relay.add_argument("--levels", default="1,8,32")
    relay.add_argument("--seconds", type=float, default=20.0)
    relay.add_argument("--rounds", type=int, default=2)
    relay.add_argument("--workers", type=int, default=1)
    smoke = commands.add_parser("smoke", help="a few seconds of each, no targets (CI)")
    smoke.add_argument("--results", type=Path, default=Path(tempfile.gettempdir()) / "bench-smoke")
    trips = commands.add_parser("trips", help="the trip saga: the store against Temporal")
    trips.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    trips.add_argument("--seconds", type=float, default=8.0, help="each load's turn")
    trips.add_argument("--kill-trips", type=int, default=32, help="trips started for the kill")
    trips.add_argument("--only", choices=["store", "temporal"])
    trips.add_argument("--smoke", action="store_true", help="seconds of it, no targets (CI)")
    trips.add_argument(
        "--retry-initial-ms",
        type=float,
        default=10.0,
        help="Temporal's first retry backoff (the store must use the same)",
    )
    trips.add_argument(
        "--temporal-timer-shift-ms",
        type=float,
        default=10.0,
        help="how late the dev server may fire timers; a negative value keeps its 1 s default",
    )
    trips.add_argument(
        "--store-workers", type=int, default=1, help="the store's app processes (one per core: 2)"
    )
    trips.add_argument("--name", default=None, help="the results' file name (default trips)")
    trips.add_argument("--temporal-in-memory", action="store_true", help="no SQLite file")
    trips.add_argument("--temporal-unsandboxed", action="store_true", help="no workflow sandbox")
    trips.add_argument("--results", type=Path, help="where the JSON goes (default bench/results)")
    client = commands.add_parser("client", help="the shoppers' HTTP client: httpx vs aiohttp")
    client.add_argument("--shoppers", type=int, default=32)
    client.add_argument("--seconds", type=float, default=10.0)
    client.add_argument("--rounds", type=int, default=3)
    client.add_argument("--workers", type=int, default=2)
    client.add_argument("--results", type=Path, help="where the JSON goes (default bench/results)")
    args = parser.parse_args()
    if args.command == "throughput":
        levels = [int(level) for level in args.levels.split(",")]
        scenarios.throughput(
            levels,
            args.seconds,
            args.workers,
            embedded=args.embedded,
            name=args.name,
            poll_s=args.poll_ms / 1000 if args.poll_ms else None,
        )
    elif args.command == "recovery":
        scenarios.recovery(args.in_flight)
    elif args.command == "waiting":
        scenarios.waiting(args.waiting, args.seconds)
    elif args.command == "trips":
        sys.exit(scenarios.trips(args))
    elif args.command == "floor":
        scenarios.floor(args.results or RESULTS, args.workflows, count_commits=not args.no_commits)
    elif args.command == "profile":
        from bench import profile as profile_bench

        env = dict(item.split("=", 1) for item in args.env)
        profile_bench.run(args.shoppers, args.seconds, args.name, env, trips=args.trips)
    elif args.command == "versus":
        scenarios.versus(args)
    elif args.command == "observability":
        levels = [int(level) for level in args.levels.split(",")]
        name = args.name or ("observability-control" if args.control else "observability")
        scenarios.observability(
            levels, args.seconds, args.rounds, args.workers, name=name, control=args.control
        )
    elif args.command == "relay":
        levels = [int(level) for level in args.levels.split(",")]
        scenarios.relay(levels, args.seconds, args.rounds, args.workers)
    elif args.command == "client":
        from bench import load_client

        load_client.run(
            args.shoppers, args.seconds, args.rounds, args.workers, args.results or RESULTS
        )
    else:
        scenarios.smoke(args.results)


if __name__ == "__main__":
    main()
