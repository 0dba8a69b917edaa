"""The job tables seen through one connection: transactions, statements, conversions.

Every part of the store (:mod:`.enqueue`, :mod:`.claim`, :mod:`.outcomes`, ...) builds on
:class:`StoreConnection`. It runs the named statements of :mod:`.sql` on one Django
connection (a ``DatabaseWrapper``), converts values the way Django does for that
database, and opens transactions on *that* connection, which is not always the thread's
default one: the worker's bookkeeping and progress writes use private connections.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from ..models import Job
from .rows import ClaimedJob, NewJob
from .sql import statements

Params = Mapping[str, Any]


class StoreConnection:
    """One connection's view of the job tables. Not thread-safe: one per thread."""

    #: The database vendor this class speaks to ("postgresql", "mysql", "sqlite").
    vendor = "base"

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.connection = connection
        self.alias: str = connection.alias
        self.sql = statements(self.vendor)
        self._pk_field = Job._meta.pk

    # -- statements ---------------------------------------------------------------------

    @contextmanager
    def cursor(self) -> Iterator[CursorWrapper]:
        with self.connection.cursor() as cursor:
            yield cursor

    def execute(self, cursor: CursorWrapper, name: str, params: Params | None = None) -> int:
        """Run the statement ``name``; returns the number of rows it changed."""
        cursor.execute(self.sql[name], params or {})
        return int(cursor.rowcount)

    def update_or_add(self, cursor: CursorWrapper, update: str, add: str,
                      params: Params) -> None:
        """Run ``update``; if it found no row, run ``add`` (an insert that lets a racing
        insert win) and ``update`` again: an upsert in words every database speaks."""
        if self.execute(cursor, update, params) == 0:
            self.execute(cursor, add, params)
            self.execute(cursor, update, params)

    def run(self, name: str, params: Params | None = None) -> int:
        """:meth:`execute` on a cursor of its own."""
        with self.connection.cursor() as cursor:
            return self.execute(cursor, name, params)

    def notify(self, queues: Iterable[str]) -> None:
        """Wake idle workers of these queues, for jobs made READY by an update (PostgreSQL
        only; others poll). Inserts need no call: PostgreSQL's insert trigger sends it."""

    def fetchall(self, name: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        with self.connection.cursor() as cursor:
            self.execute(cursor, name, params)
            return list(cursor.fetchall())

    def fetchone(self, name: str, params: Params | None = None) -> tuple[Any, ...] | None:
        with self.connection.cursor() as cursor:
            self.execute(cursor, name, params)
            row = cursor.fetchone()
        return None if row is None else tuple(row)

    # -- transactions -------------------------------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction on this store's own connection.

        ``transaction.atomic(using=alias)`` works on the thread's default connection for
        the alias, which is not this one when the store was built on a private
        connection (the worker's bookkeeping, progress writes). Inside a transaction
        already open on this connection, it adds nothing.
        """
        connection = self.connection
        if connection is connections[self.alias]:
            with self.begin_writing(), transaction.atomic(using=self.alias, savepoint=False):
                yield
            return
        if connection.in_atomic_block or not connection.get_autocommit():
            yield
            return
        with self.begin_writing():
            connection.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
        try:
            yield
        except BaseException:
            try:
                connection.rollback()
            except Exception:
                connection.close()
            raise
        else:
            connection.commit()
        finally:
            if connection.connection is not None:
                try:
                    connection.set_autocommit(True)
                except Exception:
                    connection.close()

    @contextmanager
    def as_thread_default(self) -> Iterator[None]:
        """Run this thread's ORM queries on ``alias`` on this store's connection while
        inside: a worker thread's ORM work (the per-minute counts) on the connection it
        already holds, not on a second one of Django's that nothing would close and that
        a pool would lend. Other threads are untouched: Django's connections are per
        thread."""
        previous = connections[self.alias]
        connections[self.alias] = self.connection
        try:
            yield
        finally:
            connections[self.alias] = previous

    @contextmanager
    def begin_writing(self) -> Iterator[None]:
        """Make the next transaction one that writes from its start (SQLite's ``BEGIN
        IMMEDIATE``, see :mod:`.sqlite`); other databases need nothing."""
        yield

    # -- values -------------------------------------------------------------------------

    def id_param(self, job_id: uuid.UUID) -> Any:
        return self._pk_field.get_db_prep_value(job_id, self.connection)

    def optional_id_param(self, job_id: uuid.UUID | None) -> Any:
        return None if job_id is None else self.id_param(job_id)

    def id_from_db(self, value: Any) -> uuid.UUID:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))

    def list_param(self, values: Sequence[Any]) -> Any:
        """A list for ``${in:...}``: PostgreSQL takes an array; others see the vendor."""
        return list(values)

    def ids_param(self, job_ids: Sequence[uuid.UUID]) -> Any:
        return self.list_param([self.id_param(job_id) for job_id in job_ids])

    def dt_param(self, value: dt.datetime | None) -> Any:
        return self.connection.ops.adapt_datetimefield_value(value)

    def dt_from_db(self, value: Any) -> dt.datetime | None:
        if value is None:
            return None
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        assert isinstance(moment, dt.datetime)
        if timezone.is_naive(moment) and self.connection.settings_dict.get("USE_TZ", True):
            moment = moment.replace(tzinfo=dt.UTC)
        return moment

    @staticmethod
    def json_from_db(value: Any) -> Any:
        if value is None or not isinstance(value, (str, bytes, bytearray)):
            return value
        return json.loads(value)

    def row_to_claimed(self, row: Sequence[Any]) -> ClaimedJob:
        """A row of ``${claim_columns}``."""
        (job_id, backend, task_path, queue_name, priority, args, kwargs, enqueued_at,
         run_after, started_at, attempts, max_attempts, retry_backoff, timeout,
         transactional, worker_ids, checkpoint, batch_id, concurrency_key, rate_key,
         rate_limit, rate_period, fairness_key, fair_rank) = row
        enqueued = self.dt_from_db(enqueued_at)
        due = self.dt_from_db(run_after)
        assert enqueued is not None and due is not None  # NOT NULL columns
        return ClaimedJob(
            id=self.id_from_db(job_id),
            backend=backend,
            task_path=task_path,
            queue_name=queue_name,
            priority=priority,
            args=self.json_from_db(args),
            kwargs=self.json_from_db(kwargs),
            enqueued_at=enqueued,
            run_after=due,
            started_at=self.dt_from_db(started_at),
            attempts=attempts,
            max_attempts=max_attempts,
            retry_backoff=retry_backoff,
            timeout=timeout,
            transactional=bool(transactional),
            worker_ids=[w for w in worker_ids.split(",") if w],
            checkpoint=self.json_from_db(checkpoint),
            batch_id=self.id_from_db(batch_id) if batch_id is not None else None,
            concurrency_key=concurrency_key,
            rate_key=rate_key,
            rate_limit=rate_limit,
            rate_period=rate_period,
            fairness_key=fairness_key,
            fair_rank=int(fair_rank),
        )

    def insert_params(self, job: NewJob) -> dict[str, Any]:
        """The parameters of ``insert_job`` (and of ``insert_unique_job``)."""
        return {
            "id": self.id_param(job.id), "backend": job.backend, "task_path": job.task_path,
            "queue_name": job.queue_name, "priority": job.priority, "args": job.args_json,
            "kwargs": job.kwargs_json, "run_after": self.dt_param(job.run_after),
            "max_attempts": job.max_attempts,
            "retry_backoff": job.retry_backoff, "timeout": job.timeout,
            "transactional": job.transactional, "unique_key": job.unique_key,
            "concurrency_key": job.concurrency_key, "concurrency_limit": job.concurrency_limit,
            "batch_id": self.optional_id_param(job.batch_id),
            "rate_key": job.rate_key, "rate_limit": job.rate_limit,
            "rate_period": job.rate_period, "fairness_key": job.fairness_key,
            "fair_rank": job.fair_rank, "unique_until_start": job.unique_until_start,
        }

    def lease_params(self, job: ClaimedJob, worker_id: str) -> dict[str, Any]:
        """The guard of every write to a held job: its id, lease owner and attempt."""
        return {"id": self.id_param(job.id), "worker": worker_id, "attempt": job.attempts}

    def database_now(self) -> dt.datetime:
        """The database's clock: the one every time the store writes or compares is on."""
        row = self.fetchone("database_now")
        now = self.dt_from_db(row[0] if row else None)
        assert now is not None
        return now
