"""``run_pending``: every due job, now, in this thread and inside the test's transaction."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import Any

from django.db import DatabaseError, connections, transaction

from ..context import JobRuntime
from ..store import ClaimedJob, JobStore, get_store
from ..worker.executor import announce_finished, execute
from .queues import queues_by_database, worker_id_for

#: Default bound of :func:`run_pending`: a job that keeps enqueueing jobs stops here.
RUN_PENDING_LIMIT = 1000


class TooManyJobs(RuntimeError):
    """``run_pending`` hit its limit with jobs still due: probably a job re-enqueueing itself."""


def run_pending(queues: Iterable[str] | None = None, *, limit: int = RUN_PENDING_LIMIT) -> int:
    """Run every due job now, in this thread, on this thread's connection; return how many.

    Jobs that those jobs enqueue run too, until nothing is due. A failed attempt whose
    retry is due later (``RETRY_BACKOFF``) is left READY; deferred jobs (``run_after``
    in the future) are not run. ``timeout`` is not enforced here: use :func:`worker`.
    Raises :class:`TooManyJobs` once ``limit`` jobs ran and more are still due.
    """
    targets = queues_by_database(queues)
    worker_id = worker_id_for("run_pending")
    stores = {database: get_store(connections[database]) for database in targets}
    for database, store in stores.items():
        # Registered like any worker, so a real worker's recovery never takes these jobs.
        store.register_worker(worker_id, socket.gethostname(), os.getpid(), targets[database],
                              1)
    ran = 0
    try:
        while True:
            progressed = False
            for database, names in targets.items():
                store = stores[database]
                while True:
                    claimed = store.claim(names, 1, worker_id)
                    if not claimed:
                        break
                    if ran >= limit:
                        store.hand_back(claimed, worker_id, started=False)
                        raise TooManyJobs(
                            f"run_pending ran {ran} jobs and more are still due (next: "
                            f"{claimed[0].task_path}); does a job keep enqueueing jobs? "
                            "Pass limit= to allow more."
                        )
                    _run_claimed(store, claimed[0], worker_id)
                    ran += 1
                    progressed = True
            if not progressed:
                return ran
    finally:
        for store in stores.values():
            store.unregister_worker(worker_id)


def _run_claimed(store: JobStore, job: ClaimedJob, worker_id: str) -> None:
    """Run one claimed job inside a savepoint of the test's transaction, if there is one."""
    connection = store.connection
    savepoint = _savepoint_create(using=store.alias) if connection.in_atomic_block else None
    outcome, result = execute(
        job, JobRuntime(job, worker_id, store), manage_connections=False,
        record=lambda o: store.record_outcomes([o], worker_id),
    )
    if savepoint is not None:
        if outcome.succeeded or _usable(connection):
            # A failed attempt keeps the writes it made before failing, as in production.
            transaction.savepoint_commit(savepoint, using=store.alias)
        else:
            # The task broke the transaction (a failed query on PostgreSQL, say): undo the
            # attempt's writes so the test's transaction, and the failure record, go on.
            connection.needs_rollback = False
            transaction.savepoint_rollback(savepoint, using=store.alias)
    if outcome.needs_recording:
        store.complete([outcome], worker_id)
    announce_finished(result, outcome)


#: ``savepoint()`` was renamed ``savepoint_create()`` in Django 6.1.
_savepoint_create = getattr(transaction, "savepoint_create", None) or transaction.savepoint


def _usable(connection: Any) -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False
