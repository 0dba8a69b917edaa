"""Recovery: the jobs of workers that stopped heartbeating go back in line, and so do
parked jobs whose concurrency key has room again (:mod:`taskmill.store.parking`).

A worker silent for ``LEASE_SECONDS`` (by the database's clock) is declared dead; each of
its RUNNING jobs is re-queued with the lost attempt recorded (``WorkerLost``), or ends
FAILED when that was its last attempt. A supervisor recovers a child it saw die at once,
without waiting for the lease (:mod:`taskmill.worker.supervisor`).
"""

from __future__ import annotations

import logging

from ..store import JobStore

logger = logging.getLogger("taskmill.worker")


def recover_dead_workers(store: JobStore, lease_seconds: float) -> int:
    """Expire silent workers and recover their jobs; returns how many jobs."""
    for worker_id in store.expire_workers(lease_seconds):
        logger.warning("Worker %s stopped heartbeating; recovering its jobs.", worker_id)
    count = store.recover_orphans()
    if count:
        logger.warning("Recovered %d job(s) from dead workers.", count)
    # Parked jobs of a key whose slot opened some other way (a running job deleted by
    # hand, say): the paths that free slots unpark as they go; this is the backstop.
    store.unpark_if_room()
    return count
