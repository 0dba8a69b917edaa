"""Pruning: finished jobs older than ``RESULT_TTL`` are deleted, a little at a time.

Each run deletes in chunks of :data:`CHUNK` rows, each in a short transaction, and stops
once its time budget is spent: a history of millions of rows is worked off over several
runs, and no run holds locks or a connection for long.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from ..store import JobStore

logger = logging.getLogger("taskmill.worker")

CHUNK = 500


def prune_finished(store: JobStore, result_ttl: float, budget: float) -> int:
    """Delete finished jobs past ``result_ttl`` seconds, for at most about ``budget``
    seconds; returns how many."""
    deadline = time.monotonic() + budget
    cutoff = store.database_now() - dt.timedelta(seconds=result_ttl)
    count = store.prune(cutoff, chunk=CHUNK, deadline=deadline)
    store.prune_concurrency_locks()
    if count:
        logger.info("Pruned %d finished job(s) older than RESULT_TTL.", count)
    return count
