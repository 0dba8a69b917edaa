"""``unique`` / ``unique_key``: at most one READY or RUNNING job per key.

The database enforces it: ``active_unique_key`` is a stored generated column equal to
``unique_key`` while the job is READY or RUNNING and NULL otherwise, under a unique
constraint. An enqueue inserts with "do nothing on conflict" and, when it lost, reads
back the job that holds the key. No check-then-insert race: any number of processes
enqueueing the same key at once get one job between them.

Works inside the caller's ``transaction.atomic()``: the conflict never raises, so the
transaction stays usable. Hazard: while that transaction is open, other enqueues of
the same key wait for it (the database must know whether the first insert commits).
"""

from __future__ import annotations

import uuid

from .base import INSERT_COLUMNS, JobStore, NewJob

#: Attempts before giving up when the holder of the key keeps finishing between our
#: insert and our read (each round means the key was free an instant earlier).
ROUNDS = 20


def insert_unique(store: JobStore, job: NewJob) -> uuid.UUID | None:
    """Insert ``job`` unless an active job has its key: None if inserted, else that job's id."""
    key = job.unique_key
    if key is None:
        raise ValueError("insert_unique needs a job with a unique_key.")
    sql = _insert_sql(store)
    params = store.insert_params(job)
    for _ in range(ROUNDS):
        with store.connection.cursor() as cursor:
            cursor.execute(sql, params)
            if store.vendor != "mysql" and cursor.fetchone() is not None:
                return None  # RETURNING gave our row: inserted.
            cursor.execute(
                f"SELECT id FROM {store.table} WHERE active_unique_key = %s", [key],
            )
            row = cursor.fetchone()
        if row is None:
            continue  # The holder finished (or rolled back) in between: try again.
        existing = store.id_from_db(row[0])
        if existing == job.id:  # MySQL: no RETURNING, so the read tells.
            return None
        return existing
    raise RuntimeError(
        f"Could not enqueue unique job {job.task_path} (key {key!r}): the job holding the "
        f"key kept finishing during {ROUNDS} attempts."
    )


def _insert_sql(store: JobStore) -> str:
    columns = ", ".join(INSERT_COLUMNS)
    marks = ", ".join(["%s"] * len(INSERT_COLUMNS))
    insert = f"INSERT INTO {store.table} ({columns}) VALUES ({marks})"
    if store.vendor == "mysql":
        # A no-op update rather than INSERT IGNORE, which would also swallow bad data.
        return f"{insert} ON DUPLICATE KEY UPDATE id = id"
    if store.vendor == "postgresql":
        # The unique index is partial (only rows that have a key): name its predicate.
        return (f"{insert} ON CONFLICT (active_unique_key) "
                "WHERE active_unique_key IS NOT NULL DO NOTHING RETURNING id")
    return f"{insert} ON CONFLICT DO NOTHING RETURNING id"
