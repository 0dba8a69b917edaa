"""pgqueuer's client side of ``bench/compare.py``: one measurement per process.

Run by compare.py with the python of ``bench/.venvs/pgqueuer``, connecting to ``PGDSN``.
Same commands and JSON output as ``bench/peers/taskmill/tm_driver.py``:

    pgq_driver.py single N              N x Queries.enqueue("noop", None), one at a time
    pgq_driver.py bulk N                one Queries.enqueue of lists of N
    pgq_driver.py fill N                N noop jobs, untimed (before a drain)
    pgq_driver.py latency N GAP WAIT    N stamp jobs GAP s apart; each job's start minus the
                                        clock just before / just after its enqueue, in ms

asyncpg is the driver pgqueuer's own CLI picks first; the event loop is uvloop's when it is
installed, as in ``pgq run``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

try:
    import uvloop

    run: Callable[[Coroutine[Any, Any, Any]], Any] = uvloop.run
except ImportError:
    run = asyncio.run


async def single(queries: Queries, count: int) -> dict[str, float]:
    """One statement, committed on its own, per job."""
    await queries.enqueue("noop", None)  # warm up outside the timing
    start = time.perf_counter()
    for _ in range(count):
        await queries.enqueue("noop", None)
    return {"seconds": time.perf_counter() - start}


def noop_lists(count: int) -> tuple[list[str], list[bytes | None], list[int]]:
    """pgqueuer's batch enqueue takes parallel lists: entrypoints, payloads, priorities."""
    return ["noop"] * count, [None] * count, [0] * count


async def bulk(queries: Queries, count: int) -> dict[str, float]:
    """The whole of one batch enqueue call (its lists built beforehand, like taskmill's items)."""
    entrypoints, payloads, priorities = noop_lists(count)
    start = time.perf_counter()
    await queries.enqueue(entrypoints, payloads, priorities)
    return {"seconds": time.perf_counter() - start}


async def fill(queries: Queries, count: int) -> dict[str, float]:
    """Jobs for a drain, in chunks of 10,000 like taskmill's."""
    for offset in range(0, count, 10_000):
        await queries.enqueue(*noop_lists(min(10_000, count - offset)))
    return {}


async def latency(queries: Queries, count: int, gap: float, wait: float) -> dict[str, list[float]]:
    """Enqueue on a fixed cadence without waiting for the jobs, then read their start times."""
    enqueued: list[tuple[int, float, float]] = []
    origin = time.perf_counter()
    for index in range(count):
        delay = origin + index * gap - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        before = time.time()
        (job_id,) = await queries.enqueue("stamp", None)
        after = time.time()
        enqueued.append((int(job_id), before, after))
    ids = [job_id for job_id, _, _ in enqueued]
    deadline = time.monotonic() + wait
    while True:
        rows = await queries.driver.fetch(
            "SELECT job_id, started FROM bench_stamp WHERE job_id = ANY($1::bigint[])", ids)
        stamps = {row["job_id"]: row["started"] for row in rows}
        if len(stamps) == count:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(stamps)} of {count} stamp jobs started in {wait} s")
        await asyncio.sleep(0.05)
    return {
        "before_ms": [(stamps[job_id] - before) * 1000 for job_id, before, _ in enqueued],
        "after_ms": [(stamps[job_id] - after) * 1000 for job_id, _, after in enqueued],
    }


async def measure(args: argparse.Namespace) -> object:
    """One connection for the whole command, opened and closed outside any timing."""
    connection = await asyncpg.connect(os.environ["PGDSN"])
    try:
        queries = Queries(AsyncpgDriver(connection))
        if args.command == "latency":
            return await latency(queries, args.count, args.gap, args.wait)
        command = {"single": single, "bulk": bulk, "fill": fill}[args.command]
        return await command(queries, args.count)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["single", "bulk", "fill", "latency"])
    parser.add_argument("count", type=int)
    parser.add_argument("gap", type=float, nargs="?", default=0.02)
    parser.add_argument("wait", type=float, nargs="?", default=30.0)
    print(json.dumps(run(measure(parser.parse_args()))))


if __name__ == "__main__":
    main()
