"""One pgqueuer worker process for ``bench/compare.py``: what ``pgq run pgq_worker:create`` does.

The CLI's ``pgq run`` of pgqueuer 1.6.0 stops at start with the typer that pip installs
with it (0.29: its ``--log-level`` parser hands a ``str`` where a ``LogLevel`` is expected,
even for the default), so this starts the same worker through pgqueuer's own API,
``pgqueuer.run``, which ``pgq run`` calls: same defaults (batch size 10, 30 s dequeue
timeout), same signal handling (SIGTERM shuts down), uvloop when installed.

Two entrypoints mirror bench/tasks.py: ``noop`` does nothing, ``stamp`` records when it
started. pgqueuer keeps no return values, so ``stamp`` writes its start time to the table
``bench_stamp`` (created by compare.py) on a connection of its own; the clock is read
first, so the write does not count in the pickup latency. Connects to ``PGDSN``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pgqueuer
from pgqueuer import Job, QueueManager
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

try:
    import uvloop

    run: Callable[[Coroutine[Any, Any, Any]], Any] = uvloop.run
except ImportError:
    run = asyncio.run


@asynccontextmanager
async def create() -> AsyncIterator[QueueManager]:
    """One queue manager per process, as ``pgq run`` expects of a factory."""
    dsn = os.environ["PGDSN"]
    queue_connection = await asyncpg.connect(dsn)
    stamp_connection = await asyncpg.connect(dsn)
    stamp_lock = asyncio.Lock()  # one asyncpg connection runs one statement at a time
    manager = QueueManager(Queries(AsyncpgDriver(queue_connection)))

    @manager.entrypoint("noop")
    async def noop(job: Job) -> None:
        """Does nothing: what is measured is pgqueuer's own cost per job."""

    @manager.entrypoint("stamp")
    async def stamp(job: Job) -> None:
        """Record when the job started (wall clock), for pickup latency."""
        started = time.time()
        async with stamp_lock:
            await stamp_connection.execute(
                "INSERT INTO bench_stamp (job_id, started) VALUES ($1, $2)", job.id, started)

    try:
        yield manager
    finally:
        await stamp_connection.close()
        await queue_connection.close()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    run(pgqueuer.run(create))


if __name__ == "__main__":
    main()
