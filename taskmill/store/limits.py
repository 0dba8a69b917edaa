"""``concurrency_limit`` / ``concurrency_key``: at most N RUNNING jobs per key, everywhere.

Two steps, so that jobs without a key (the common case) pay nothing:

1. The claim skips jobs whose key is already full (``ROOM_FOR_KEY`` in its ``WHERE``),
   so a waiting job is not claimed over and over while its key is busy.
2. That filter alone cannot hold the limit: one claim may take several jobs of a key,
   and two workers may claim at the same instant. So when — and only when — a claim
   took keyed jobs, :func:`enforce_limits` takes a lock per key, counts the key's
   RUNNING jobs, and gives the excess back as if never claimed (attempt refunded,
   place in line kept): a job waiting for a slot never burns an attempt.

The per-key lock: a transaction-scoped advisory lock on PostgreSQL; a row lock in
``taskmill_concurrency_lock`` (migration 0004) on MySQL/MariaDB; the database's single
write lock on SQLite. It is held until the claiming transaction commits, so the count
of the next claimer includes this one's jobs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import ClaimedJob, JobStore

#: First key of PostgreSQL advisory locks taken here (the second is the key's hash),
#: so they do not collide with the project's own single-key advisory locks.
ADVISORY_LOCK_CLASS = 0x746D  # "tm"


def enforce_limits(store: JobStore, jobs: list[ClaimedJob], worker_id: str) -> list[ClaimedJob]:
    """Keep the claimed jobs that fit their key's limit; give the others back."""
    keyed = [job for job in jobs if job.concurrency_key is not None]
    if not keyed:
        return jobs
    keys = sorted({job.concurrency_key for job in keyed})
    with _key_locks(store, keys):
        excess = _over_limit(store, keyed, keys)
        if excess:
            _give_back(store, excess, worker_id)
    if not excess:
        return jobs
    dropped = {job.id for job in excess}
    return [job for job in jobs if job.id not in dropped]


@contextmanager
def _key_locks(store: JobStore, keys: Sequence[str]) -> Iterator[None]:
    """Hold a lock on every key (in sorted order: no deadlocks) until the transaction ends."""
    vendor = store.vendor
    if vendor == "sqlite":
        with _sqlite_write_lock(store):
            yield
        return
    with store.atomic(), store.connection.cursor() as cursor:
        for key in keys:
            if vendor == "postgresql":
                cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                               [ADVISORY_LOCK_CLASS, key])
            else:
                cursor.execute(
                    "INSERT INTO taskmill_concurrency_lock (lock_key) VALUES (%s) "
                    "ON DUPLICATE KEY UPDATE lock_key = lock_key",
                    [key],
                )
        yield


@contextmanager
def _sqlite_write_lock(store: JobStore) -> Iterator[None]:
    """SQLite serializes writers: inside the claim's transaction we already hold the lock;
    otherwise ``BEGIN IMMEDIATE`` takes it before we count."""
    connection = store.connection
    if connection.in_atomic_block or not connection.get_autocommit():
        yield
        return
    raw = connection.connection
    raw.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        raw.execute("ROLLBACK")
        raise
    raw.execute("COMMIT")


def _over_limit(store: JobStore, keyed: list[ClaimedJob], keys: Sequence[str]) -> list[ClaimedJob]:
    """The claimed jobs that do not fit, best ones kept (``keyed`` is in claim order)."""
    table = store.table
    ids = [store.id_param(job.id) for job in keyed]
    marks = ", ".join(["%s"] * len(ids))
    with store.connection.cursor() as cursor:
        cursor.execute(f"SELECT id, concurrency_limit FROM {table} WHERE id IN ({marks})", ids)
        limits = {store.id_from_db(job_id): limit for job_id, limit in cursor.fetchall()}
        running: dict[str, int] = {}
        for key in keys:
            cursor.execute(
                f"SELECT COUNT(*) FROM {table} WHERE status = 'RUNNING' AND concurrency_key = %s",
                [key],
            )
            running[key] = cursor.fetchone()[0]
    excess = []
    for key in keys:
        mine = [job for job in keyed if job.concurrency_key == key]
        kept = running[key] - len(mine)  # Other workers' running jobs of this key.
        for job in mine:
            limit = limits.get(job.id) or 1
            if kept < limit:
                kept += 1
            else:
                excess.append(job)
    return excess


def _give_back(store: JobStore, jobs: Sequence[ClaimedJob], worker_id: str) -> None:
    """Undo the claim of ``jobs``: READY again, attempt refunded, place in line kept.

    The ``CASE`` columns come before ``attempts`` because MySQL evaluates ``SET``
    left to right.
    """
    with store.connection.cursor() as cursor:
        for job in jobs:
            cursor.execute(
                f"UPDATE {store.table} SET "
                "started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END, "
                "last_attempted_at = CASE WHEN attempts = 1 THEN NULL ELSE last_attempted_at END, "
                "status = 'READY', lease_owner = NULL, attempts = attempts - 1, worker_ids = %s "
                "WHERE id = %s AND status = 'RUNNING' AND lease_owner = %s AND attempts = %s",
                [",".join(job.worker_ids[:-1]), store.id_param(job.id), worker_id, job.attempts],
            )
