"""Where a purchase's (or a trip's) CPU goes: py-spy samples the store's app process
under load.

The store is served as the benchmarks serve it (one app process, a private PostgreSQL),
shoppers buy (or, with `--trips`, travellers book trips) for a while, and py-spy
(`pip install py-spy`, in the test extras) samples the worker's threads that hold the GIL
(Python running; waits on sockets and locks are left out) at 250 Hz. The summary
attributes every sample three ways: by thread (the event loop, DBOS's executor threads,
DBOS's other threads), by the library the sampled frame was in (self time), and by the
functions on the stack (inclusive time), with the server's CPU per purchase beside it.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.load import LoadResult, shop
from bench.metrics import cpu_seconds
from bench.report import RESULTS
from bench.store import BenchStore, StoreOptions
from bench.trip_load import BOOKED, trip_order

RATE_HZ = 250
# The library a frame belongs to, by the first folder of its file path (py-spy gives
# paths from site-packages or the standard library down).
LIBRARIES = {
    "dbos": "DBOS",
    "sqlalchemy": "SQLAlchemy",
    "psycopg": "psycopg",
    "psycopg_binary": "psycopg",
    "fastapi": "FastAPI",
    "starlette": "Starlette",
    "uvicorn": "uvicorn",
    "h11": "h11",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",
    "prometheus_client": "prometheus-client",
    "opentelemetry": "OpenTelemetry",
    "httpx": "httpx",
    "httpcore": "httpx",
    "anyio": "anyio",
    "widget_store": "widget_store",
    "logging": "logging",
    "asyncio": "asyncio",
    "concurrent": "threads",
    "threading.py": "threads",
    "json": "json",
}
EXECUTOR = "concurrent/futures/thread.py"


def library(frame: str) -> str:
    path = frame.partition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    return LIBRARIES.get(path.split("/", 1)[0], "other (standard library, C)")


def thread_of(stack: list[str]) -> str:
    if any(EXECUTOR in frame for frame in stack):
        return "DBOS's executor threads (asyncio.to_thread, run_in_executor)"
    if any("threading.py" in frame for frame in stack):
        return "other threads (DBOS's listener, queue, sweeps; metrics)"
    return "event loop thread"


def _name(frame: str) -> str:
    return frame.partition(" (")[0]


def _path(frame: str) -> str:
    return frame.partition(" (")[2].rstrip(")").rsplit(":", 1)[0]


def stage_of(stack: list[str]) -> str:
    """What a sample was doing, in the store's terms (outermost frame first in `stack`)."""
    thread = thread_of(stack)
    if EXECUTOR in "".join(stack):
        calls = [f for f in stack if _path(f).startswith("dbos/") and "SystemDatabase." in f]
        what = _name(calls[0]) if calls else _name(stack[-1])
        return f"executor: DBOS system database, {what}"
    if thread.startswith("other"):
        frames = [f for f in stack if not _path(f).startswith(("threading.py", "concurrent/"))]
        return f"other thread: {_name(frames[0]) if frames else _name(stack[-1])}"
    ours = [f for f in stack if _path(f).startswith("widget_store/")]
    for frame in ours:
        path, name = _path(frame), _name(frame)
        if path.startswith("widget_store/api/") and not name.startswith(("signed_body",)):
            if path.endswith(("deps.py", "errors.py")):
                continue
            return f"route {name} ({library(stack[-1])})"
        if path in ("widget_store/steps.py", "widget_store/trip_steps.py"):
            return f"step {name} ({library(stack[-1])})"
        if path == "widget_store/simulated/travel.py":
            return f"simulated travel {name} ({library(stack[-1])})"
    if any(_name(f) in ("checkout_workflow", "book_trip_workflow") for f in ours):
        dbos = [f for f in stack if _path(f).startswith("dbos/")]
        return f"workflow, outside steps ({_name(dbos[-1]) if dbos else library(stack[-1])})"
    if any("run_asgi" in f for f in stack):
        return "HTTP: server, middleware, FastAPI, outside the routes"
    dbos = [f for f in stack if _path(f).startswith("dbos/")]
    if dbos:
        return f"loop: DBOS {_name(dbos[0])}"
    lib = library(stack[-1])
    # SQLAlchemy's async engine runs each statement in a greenlet, whose stack starts
    # at the statement: the route or step that asked for it is not on it.
    if library(stack[0]) in ("SQLAlchemy", "psycopg") or any("greenlet" in f for f in stack):
        return f"loop: the store's async SQL (in a greenlet: caller not seen) ({lib})"
    return f"loop: other ({lib})"


def short(frame: str) -> str:
    """`function (path:line)` -> `function (package/module.py)`."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    for anchor in ("site-packages", "lib"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1 :]
            break
    return f"{name} ({'/'.join(parts[-3:])})"


def summarize_file(path: Path, cpu_ms_per_purchase: float, purchases: int) -> str:
    return summarize(path.read_text(), cpu_ms_per_purchase, purchases)


def summarize(raw: str, cpu_ms_per_purchase: float, purchases: int, unit: str = "purchase") -> str:
    """The collapsed stacks (`frame;frame;... count` per line), summarized."""
    threads: Counter[str] = Counter()
    self_by_library: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        stack = [f for f in stack_text.split(";") if " (" in f]  # frames, not thread names
        if not stack:
            continue
        total += count
        threads[thread_of(stack)] += count
        stages[stage_of(stack)] += count
        self_by_library[library(stack[-1])] += count
        self_time[short(stack[-1])] += count
        for frame in {short(f) for f in stack}:
            inclusive[frame] += count
    if not total:
        return "no samples"

    def share(n: int) -> str:
        return f"{n / total * 100:5.1f} %  {n / total * cpu_ms_per_purchase:6.1f} ms/{unit}"

    lines = [
        f"{total} samples at {RATE_HZ} Hz, {purchases} {unit}s, "
        f"{cpu_ms_per_purchase:.1f} ms of the server's CPU per {unit}",
        "",
        "By thread:",
        *(f"  {share(n)}  {name}" for name, n in threads.most_common()),
        "",
        "By stage (the route, step or DBOS call it was in; the library running, in brackets):",
        *(f"  {share(n)}  {name}" for name, n in stages.most_common(45)),
        "",
        "Self time, by library (the frame that was running):",
        *(f"  {share(n)}  {name}" for name, n in self_by_library.most_common()),
        "",
        "Inclusive time, by function (on the stack), the top 60 below the threads' roots:",
        *(
            f"  {share(n)}  {name}"
            for name, n in [(k, v) for k, v in inclusive.most_common() if v < total * 0.24][:60]
        ),
        "",
        "Self time, by function, the top 30:",
        *(f"  {share(n)}  {name}" for name, n in self_time.most_common(30)),
    ]
    return "\n".join(lines)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("python -m bench profile needs py-spy: pip install -e '.[test]'")
    return found


def run(
    shoppers: int,
    seconds: float,
    name: str,
    env: dict[str, str],
    results: Path = RESULTS,
    *,
    trips: bool = False,
) -> Path:
    load = _book_trips if trips else _buy
    unit = "trip" if trips else "purchase"
    with BenchStore(StoreOptions(workers=1, env=env)) as store:
        asyncio.run(load(store, shoppers, 5.0))  # warm up
        worker = store.server.worker_pid()
        raw_path = store.folder / "profile.txt"
        sampler = subprocess.Popen(
            [
                py_spy(),
                "record",
                "--pid",
                str(worker),
                "--rate",
                str(RATE_HZ),
                "--duration",
                str(int(seconds)),
                "--format",
                "raw",
                "--output",
                str(raw_path),
                "--nonblocking",
                "--gil",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # py-spy attaching
        cpu_before = cpu_seconds(store.pids())
        result = asyncio.run(load(store, shoppers, seconds - 2))
        store.settle()
        cpu_ms = (cpu_seconds(store.pids()) - cpu_before) * 1000 / max(1, result.purchases)
        _, errors = sampler.communicate(timeout=seconds + 60)
        if sampler.returncode != 0:
            raise SystemExit(f"py-spy failed: {errors.decode(errors='replace')[-2000:]}")
        summary = summarize(raw_path.read_text(), cpu_ms, result.purchases, unit)
        results.mkdir(parents=True, exist_ok=True)
        with gzip.open(results / f"{name}.collapsed.gz", "wt") as collapsed:
            collapsed.write(raw_path.read_text())  # for flame graphs, or another summary
    command = " ".join(["python -m bench profile", *sys.argv[2:]])
    settings = ", ".join(f"{k}={v}" for k, v in env.items()) or "the defaults"
    header = (
        f"{command}\n"
        f"one app process, {shoppers} {'travellers' if trips else 'shoppers'}, "
        f"{seconds:g} s sampled, {settings}; "
        + (
            "a trip = POST /trips answered BOOKED (the hotel down once), "
            if trips
            else "a purchase = checkout + signed webhook + order seen paid (long poll), "
        )
        + "0 s dispatch\n"
        f"measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
        f"{os.cpu_count()} shared cores; {result.errors} errors\n\n"
    )
    path = results / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + summary + "\n")
    print(header + summary)
    return path


async def _buy(store: BenchStore, shoppers: int, seconds: float) -> LoadResult:
    return await shop(
        store.base_url,
        shoppers=shoppers,
        seconds=seconds,
        secret=store.secret,
        price_cents=store.price_cents(),
        webhook_names_payment=store.webhook_names_payment,
        watches_status=store.watches_status,
    )


async def _book_trips(store: BenchStore, travellers: int, seconds: float) -> LoadResult:
    """`travellers` clients, each booking one valid trip after another (counted as
    purchases in the result, for the summary's per-unit figures)."""
    result = LoadResult()
    limits = httpx.Limits(max_connections=travellers + 8)
    async with httpx.AsyncClient(base_url=store.base_url, timeout=60, limits=limits) as client:
        stop_at = time.monotonic() + seconds
        started = time.monotonic()

        async def traveller() -> None:
            while time.monotonic() < stop_at:
                order = trip_order("profile")
                response = await client.post(f"/trips/{order.key}", json=order.body())
                if response.status_code == 200 and response.json()["status"] == BOOKED:
                    result.purchases += 1
                else:
                    result.errors += 1

        await asyncio.gather(*(traveller() for _ in range(travellers)))
        result.seconds = time.monotonic() - started
    return result
