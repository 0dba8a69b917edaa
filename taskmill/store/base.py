"""Every job-state transition, in one place.

A :class:`JobStore` wraps one Django database connection (a ``DatabaseWrapper``) and
speaks to the job tables through it. The hot path — insert, claim, complete — is hand
written SQL, one statement (or one transaction) per batch of jobs; the rest uses the ORM.

Every transition names the state it expects in its ``WHERE``: a RUNNING job is only
completed, failed or handed back by the worker holding its lease (``lease_owner``) for
the attempt it claimed (``attempts``). A worker that lost its lease — declared dead
while it was paused, say — therefore cannot overwrite a job that was recovered and
perhaps already re-run elsewhere; its late writes change nothing.

Vendor subclasses (:mod:`.postgresql`, :mod:`.mysql`, :mod:`.sqlite`) supply the
claim and the batched completion, the two statements whose best form differs by
database.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from ..models import Job, JobStatus

#: Columns a worker needs to run a claimed job, in this order.
CLAIM_COLUMNS = (
    "id", "backend", "task_path", "queue_name", "priority", "args", "kwargs",
    "enqueued_at", "run_after", "started_at", "attempts", "max_attempts",
    "retry_backoff", "timeout", "transactional", "worker_ids", "checkpoint",
    "batch_id", "concurrency_key",
)

#: Claim filter: a job without a concurrency key, or one whose key has a free slot.
#: Jobs without a key (the common case) pass on the first operand, so the count — one
#: probe of the partial index of RUNNING jobs by key — is only made for keyed jobs.
#: It keeps a saturated key's jobs from being claimed over and over; the limit itself
#: is enforced under a per-key lock after the claim (:mod:`taskmill.store.limits`).
ROOM_FOR_KEY = (
    "(j.concurrency_key IS NULL OR (SELECT COUNT(*) FROM taskmill_job r "
    "WHERE r.status = 'RUNNING' AND r.concurrency_key = j.concurrency_key) "
    "< j.concurrency_limit)"
)

CANCELLED = "taskmill.exceptions.Cancelled"

#: Columns written by an insert, in this order.
INSERT_COLUMNS = (
    "id", "backend", "task_path", "queue_name", "priority", "status", "args", "kwargs",
    "enqueued_at", "run_after", "attempts", "max_attempts", "retry_backoff", "timeout",
    "transactional", "worker_ids", "cancel_force", "unique_key", "concurrency_key",
    "concurrency_limit", "batch_id",
)


@dataclass(slots=True)
class NewJob:
    """A job about to be inserted. Arguments are already JSON text."""

    id: uuid.UUID
    backend: str
    task_path: str
    queue_name: str
    priority: int
    args_json: str
    kwargs_json: str
    enqueued_at: dt.datetime
    run_after: dt.datetime
    max_attempts: int
    retry_backoff: float
    timeout: float | None
    transactional: bool = False
    unique_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    batch_id: uuid.UUID | None = None


@dataclass(slots=True)
class ClaimedJob:
    """A job this worker holds the lease on, for the attempt ``attempts``."""

    id: uuid.UUID
    backend: str
    task_path: str
    queue_name: str
    priority: int
    args: list[Any]
    kwargs: dict[str, Any]
    enqueued_at: dt.datetime
    run_after: dt.datetime
    started_at: dt.datetime | None
    attempts: int
    max_attempts: int
    retry_backoff: float
    timeout: float | None
    transactional: bool
    worker_ids: list[str]
    checkpoint: Any
    batch_id: uuid.UUID | None
    concurrency_key: str | None


@dataclass(slots=True)
class Outcome:
    """How one attempt ended, to be recorded by :meth:`JobStore.complete`."""

    job: ClaimedJob
    finished_at: dt.datetime
    succeeded: bool
    return_json: str = "null"
    #: For failures: the exception and, when the job will be retried, when.
    exception_class_path: str = ""
    traceback: str = ""
    retry_at: dt.datetime | None = None
    #: Filled in by the store: False when the guard rejected the write (lease lost).
    recorded: bool = field(default=True)
    #: False once written (a ``transactional`` job records itself inside its transaction).
    needs_recording: bool = field(default=True)
    #: The exception itself (not stored), so ``task_finished`` can be sent while it is
    #: being handled: error trackers hooked to logging see the real traceback.
    exception: BaseException | None = field(default=None, repr=False)


class JobStore:
    """The job tables seen through one connection. Not thread-safe: one per thread."""

    vendor = "base"
    #: Whether ``claim`` may hand out more jobs than the caller's free slots.
    table = Job._meta.db_table

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.connection = connection
        self.alias = connection.alias
        self._pk_field = Job._meta.pk

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
            with self._immediate(), transaction.atomic(using=self.alias, savepoint=False):
                yield
            return
        if connection.in_atomic_block or not connection.get_autocommit():
            yield
            return
        with self._immediate():
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
    def _immediate(self) -> Iterator[None]:
        """SQLite: make the next BEGIN an ``IMMEDIATE`` one, which takes the write lock up
        front (waiting its turn) — a deferred transaction that reads and then writes
        fails at once with "database is locked" when another process wrote in between."""
        connection = self.connection
        if self.vendor != "sqlite" or connection.in_atomic_block:
            yield
            return
        connection.ensure_connection()
        previous = connection.transaction_mode
        connection.transaction_mode = "IMMEDIATE"
        try:
            yield
        finally:
            connection.transaction_mode = previous

    # -- value conversion ------------------------------------------------------------

    def id_param(self, job_id: uuid.UUID) -> Any:
        return self._pk_field.get_db_prep_value(job_id, self.connection)

    def id_from_db(self, value: Any) -> uuid.UUID:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))

    def dt_param(self, value: dt.datetime | None) -> Any:
        return self.connection.ops.adapt_datetimefield_value(value)

    def dt_from_db(self, value: Any) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if timezone.is_naive(value) and self.connection.settings_dict.get("USE_TZ", True):
            value = value.replace(tzinfo=dt.UTC)
        return value

    @staticmethod
    def json_from_db(value: Any) -> Any:
        if value is None or not isinstance(value, (str, bytes, bytearray)):
            return value
        return json.loads(value)

    def row_to_claimed(self, row: Sequence[Any]) -> ClaimedJob:
        (job_id, backend, task_path, queue_name, priority, args, kwargs, enqueued_at,
         run_after, started_at, attempts, max_attempts, retry_backoff, timeout,
         transactional, worker_ids, checkpoint, batch_id, concurrency_key) = row
        return ClaimedJob(
            id=self.id_from_db(job_id),
            backend=backend,
            task_path=task_path,
            queue_name=queue_name,
            priority=priority,
            args=self.json_from_db(args),
            kwargs=self.json_from_db(kwargs),
            enqueued_at=self.dt_from_db(enqueued_at),
            run_after=self.dt_from_db(run_after),
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
        )

    def insert_params(self, job: NewJob) -> tuple[Any, ...]:
        return (
            self.id_param(job.id), job.backend, job.task_path, job.queue_name, job.priority,
            JobStatus.READY.value, job.args_json, job.kwargs_json, self.dt_param(job.enqueued_at),
            self.dt_param(job.run_after), 0, job.max_attempts, job.retry_backoff, job.timeout,
            job.transactional, "", False, job.unique_key, job.concurrency_key,
            job.concurrency_limit, self.id_param(job.batch_id) if job.batch_id else None,
        )

    # -- enqueue ---------------------------------------------------------------------

    def insert(self, jobs: Sequence[NewJob],
               while_sending: Callable[[], None] | None = None) -> None:
        """Insert jobs in as few round trips as the database allows.

        ``while_sending`` is called once the rows are on their way, before waiting for
        the database to take them: client work done there overlaps the server's.
        """
        if not jobs:
            return
        if while_sending is not None:
            while_sending()
        columns = ", ".join(INSERT_COLUMNS)
        placeholders = ", ".join(["%s"] * len(INSERT_COLUMNS))
        sql = f"INSERT INTO {self.table} ({columns}) VALUES ({placeholders})"
        with self.connection.cursor() as cursor:
            if len(jobs) == 1:
                cursor.execute(sql, self.insert_params(jobs[0]))
            else:
                with self.atomic():
                    cursor.executemany(sql, [self.insert_params(job) for job in jobs])

    def notify(self, queues: Iterable[str]) -> None:
        """Wake idle workers of these queues, for jobs made READY by an update (PostgreSQL
        only; others poll). Inserts need no call: PostgreSQL's insert trigger sends it."""

    # -- the worker's hot path --------------------------------------------------------

    def tune_for_worker(self) -> None:
        """Adjust a worker's own bookkeeping connection (called before each round)."""

    def claim(self, queues: Sequence[str], limit: int, worker_id: str,
              now: dt.datetime) -> list[ClaimedJob]:
        """Take up to ``limit`` due READY jobs of ``queues``, best first, for ``worker_id``."""
        raise NotImplementedError

    def complete(self, outcomes: Sequence[Outcome], worker_id: str) -> None:
        """Record finished attempts in one transaction, each guarded by its lease.

        Sets ``outcome.recorded`` to False for every outcome whose job this worker no
        longer holds (its lease was lost and the job recovered).
        """
        if not outcomes:
            return
        with transaction.atomic(using=self.alias):
            self.record_outcomes(outcomes, worker_id)
        for outcome in outcomes:  # Only once the commit went through.
            outcome.needs_recording = False

    def record_outcomes(self, outcomes: Sequence[Outcome], worker_id: str) -> None:
        """:meth:`complete` inside a transaction the caller holds (``transactional`` tasks)."""
        outcomes = [o for o in outcomes if o.needs_recording]
        successes = [o for o in outcomes if o.succeeded]
        failures = [o for o in outcomes if not o.succeeded]
        if successes:
            self.record_successes(successes, worker_id)
        for outcome in failures:
            self.record_failure(outcome, worker_id)
        freed = {o.job.queue_name for o in outcomes if o.job.concurrency_key and o.recorded}
        if freed:  # A concurrency slot opened: wake workers waiting for it (PostgreSQL).
            self.notify(freed)
        batch_ids = {o.job.batch_id for o in outcomes if o.job.batch_id and o.recorded}
        if batch_ids:
            from .batches import on_children_finished

            on_children_finished(self, batch_ids)

    def record_successes(self, outcomes: Sequence[Outcome], worker_id: str) -> None:
        """Mark jobs SUCCESSFUL. The default is one guarded UPDATE per job."""
        sql = (
            f"UPDATE {self.table} SET status = 'SUCCESSFUL', return_value = %s, "
            "finished_at = %s, lease_owner = NULL "
            "WHERE id = %s AND status = 'RUNNING' AND lease_owner = %s AND attempts = %s"
        )
        with self.connection.cursor() as cursor:
            for o in outcomes:
                cursor.execute(sql, (o.return_json, self.dt_param(o.finished_at),
                                     self.id_param(o.job.id), worker_id, o.job.attempts))
                o.recorded = cursor.rowcount == 1

    def record_failure(self, outcome: Outcome, worker_id: str) -> None:
        """Fail one attempt: back to READY at ``retry_at``, or FAILED; keep the error.

        In one transaction, so nobody sees the job FAILED without its error.
        """
        job = outcome.job
        with self.atomic(), self.connection.cursor() as cursor:
            retried = False
            if outcome.retry_at is not None:
                # A job someone cancelled is not retried (it falls through to FAILED).
                cursor.execute(
                    f"UPDATE {self.table} SET status = 'READY', run_after = %s, lease_owner = NULL "
                    "WHERE id = %s AND status = 'RUNNING' AND lease_owner = %s AND attempts = %s "
                    "AND cancel_requested_at IS NULL",
                    (self.dt_param(outcome.retry_at), self.id_param(job.id), worker_id,
                     job.attempts),
                )
                retried = cursor.rowcount == 1
            if not retried:
                cursor.execute(
                    f"UPDATE {self.table} SET status = 'FAILED', finished_at = %s, "
                    "lease_owner = NULL "
                    "WHERE id = %s AND status = 'RUNNING' AND lease_owner = %s AND attempts = %s",
                    (self.dt_param(outcome.finished_at), self.id_param(job.id), worker_id,
                     job.attempts),
                )
            outcome.recorded = cursor.rowcount == 1
            if outcome.recorded:
                self.insert_error(cursor, job.id, job.attempts, worker_id,
                                  outcome.exception_class_path, outcome.traceback,
                                  outcome.finished_at)

    def insert_error(self, cursor: Any, job_id: uuid.UUID, attempt: int, worker_id: str,
                     exception_class_path: str, traceback: str, at: dt.datetime) -> None:
        cursor.execute(
            "INSERT INTO taskmill_joberror (job_id, attempt, worker_id, exception_class_path, "
            "traceback, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (self.id_param(job_id), attempt, worker_id, exception_class_path, traceback,
             self.dt_param(at)),
        )

    def hand_back(self, jobs: Sequence[ClaimedJob], worker_id: str, *, started: bool) -> int:
        """Return held jobs to READY (shutdown). Unstarted ones get their attempt back."""
        if not jobs:
            return 0
        count = 0
        now = timezone.now()
        with self.atomic(), self.connection.cursor() as cursor:
            for job in jobs:
                if self._fail_cancelled(cursor, job, worker_id, now):
                    continue  # Cancelled while held: it ends here rather than run again.
                if started:
                    cursor.execute(
                        f"UPDATE {self.table} SET status = 'READY', lease_owner = NULL "
                        "WHERE id = %s AND status = 'RUNNING' AND lease_owner = %s "
                        "AND attempts = %s",
                        (self.id_param(job.id), worker_id, job.attempts),
                    )
                else:
                    # started_at first: MySQL evaluates SET left to right.
                    cursor.execute(
                        f"UPDATE {self.table} SET "
                        "started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END, "
                        "status = 'READY', lease_owner = NULL, "
                        "attempts = attempts - 1, worker_ids = %s "
                        "WHERE id = %s AND status = 'RUNNING' AND lease_owner = %s "
                        "AND attempts = %s",
                        (",".join(job.worker_ids[:-1]), self.id_param(job.id), worker_id,
                         job.attempts),
                    )
                count += cursor.rowcount
        self.notify({job.queue_name for job in jobs})
        return count

    def _fail_cancelled(self, cursor: Any, job: ClaimedJob, worker_id: str,
                        now: dt.datetime) -> bool:
        """End a held job that someone cancelled (FAILED, ``Cancelled``); False if not cancelled."""
        cursor.execute(
            f"UPDATE {self.table} SET status = 'FAILED', finished_at = %s, lease_owner = NULL "
            "WHERE id = %s AND status = 'RUNNING' AND lease_owner = %s AND attempts = %s "
            "AND cancel_requested_at IS NOT NULL",
            (self.dt_param(now), self.id_param(job.id), worker_id, job.attempts),
        )
        if cursor.rowcount != 1:
            return False
        self.insert_error(cursor, job.id, job.attempts, worker_id, CANCELLED,
                          f"{CANCELLED}: cancelled while its worker held it.\n", now)
        return True

    def next_due(self, queues: Sequence[str]) -> dt.datetime | None:
        """When the earliest READY job of ``queues`` becomes due (None: nothing waits)."""
        placeholders = ", ".join(["%s"] * len(queues))
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"SELECT MIN(j.run_after) FROM {self.table} j "
                f"WHERE j.status = 'READY' AND j.queue_name IN ({placeholders}) "
                f"AND {ROOM_FOR_KEY}",
                list(queues),
            )
            (value,) = cursor.fetchone()
        return self.dt_from_db(value)

    # -- inside a running job -------------------------------------------------------

    def update_running(self, job: ClaimedJob, worker_id: str, **values: Any) -> bool:
        """Write progress or a checkpoint while holding the lease. False if it was lost."""
        assignments = ", ".join(f"{column} = %s" for column in values)
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {self.table} SET {assignments} "
                "WHERE id = %s AND status = 'RUNNING' AND lease_owner = %s AND attempts = %s",
                [*values.values(), self.id_param(job.id), worker_id, job.attempts],
            )
            return cursor.rowcount == 1

    def leased_jobs(self, worker_id: str, claimed_before: dt.datetime) -> list[ClaimedJob]:
        """RUNNING jobs leased to ``worker_id`` whose attempt started before the cutoff."""
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {', '.join(CLAIM_COLUMNS)} FROM {self.table} WHERE status = 'RUNNING' "
                "AND lease_owner = %s AND last_attempted_at < %s",
                [worker_id, self.dt_param(claimed_before)],
            )
            return [self.row_to_claimed(row) for row in cursor.fetchall()]

    def cancel_requests(self, worker_id: str) -> dict[uuid.UUID, bool]:
        """The running jobs of ``worker_id`` someone asked to cancel, with their force flag."""
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, cancel_force FROM {self.table} WHERE status = 'RUNNING' "
                "AND lease_owner = %s AND cancel_requested_at IS NOT NULL",
                [worker_id],
            )
            return {self.id_from_db(job_id): bool(force) for job_id, force in cursor.fetchall()}

    # -- workers and leases -----------------------------------------------------------

    def register_worker(self, worker_id: str, hostname: str, pid: int, queues: Sequence[str],
                        threads: int, now: dt.datetime) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO taskmill_worker (id, hostname, pid, queues, threads, started_at, "
                "last_heartbeat) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [worker_id, hostname, pid, json.dumps(list(queues)), threads,
                 self.dt_param(now), self.dt_param(now)],
            )

    def heartbeat(self, worker_id: str, now: dt.datetime) -> bool:
        """Renew the lease. False: this worker was declared dead and its jobs recovered."""
        with self.connection.cursor() as cursor:
            cursor.execute(
                "UPDATE taskmill_worker SET last_heartbeat = %s WHERE id = %s",
                [self.dt_param(now), worker_id],
            )
            return cursor.rowcount == 1

    def unregister_worker(self, worker_id: str) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute("DELETE FROM taskmill_worker WHERE id = %s", [worker_id])

    def expire_workers(self, cutoff: dt.datetime) -> list[str]:
        """Delete workers silent since ``cutoff``; their jobs become orphans to recover."""
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT id FROM taskmill_worker WHERE last_heartbeat < %s",
                           [self.dt_param(cutoff)])
            stale = [row[0] for row in cursor.fetchall()]
            expired = []
            for worker_id in stale:
                # Guarded: a heartbeat that landed since the SELECT keeps the worker alive.
                cursor.execute(
                    "DELETE FROM taskmill_worker WHERE id = %s AND last_heartbeat < %s",
                    [worker_id, self.dt_param(cutoff)],
                )
                if cursor.rowcount:
                    expired.append(worker_id)
        return expired

    def recover_orphans(self, now: dt.datetime, worker_id: str | None = None) -> int:
        """Re-queue RUNNING jobs whose worker is gone; each lost attempt is recorded.

        A job that has used all its attempts ends FAILED with ``WorkerLost`` instead.
        ``worker_id`` narrows it to one dead worker (the supervisor knows its child died).
        """
        where = "j.status = 'RUNNING' AND NOT EXISTS (SELECT 1 FROM taskmill_worker w WHERE w.id = j.lease_owner)"
        params: list[Any] = []
        if worker_id is not None:
            where += " AND j.lease_owner = %s"
            params.append(worker_id)
        recovered = 0
        with self.atomic(), self.connection.cursor() as cursor:
            cursor.execute(
                f"SELECT j.id, j.attempts, j.max_attempts, j.lease_owner, j.queue_name, "
                f"j.cancel_requested_at, j.batch_id FROM {self.table} j WHERE {where}",
                params,
            )
            queues = set()
            finished_batches = set()
            for (job_id, attempts, max_attempts, owner, queue_name, cancelled,
                 batch_id) in cursor.fetchall():
                # A job someone cancelled is not run again.
                final = attempts >= max_attempts or cancelled is not None
                cursor.execute(
                    f"UPDATE {self.table} SET status = %s, lease_owner = NULL, "
                    "finished_at = %s WHERE id = %s AND status = 'RUNNING' "
                    "AND lease_owner = %s AND attempts = %s",
                    ["FAILED" if final else "READY", self.dt_param(now) if final else None,
                     job_id, owner, attempts],
                )
                if cursor.rowcount:
                    recovered += 1
                    queues.add(queue_name)
                    if cancelled is not None:
                        self.insert_error(
                            cursor, self.id_from_db(job_id), attempts, owner, CANCELLED,
                            f"{CANCELLED}: cancelled, and worker {owner} stopped heartbeating "
                            "while running it.\n", now)
                    else:
                        self.insert_error(
                            cursor, self.id_from_db(job_id), attempts, owner,
                            "taskmill.exceptions.WorkerLost",
                            f"taskmill.exceptions.WorkerLost: worker {owner} stopped "
                            "heartbeating while running this job (killed, out of memory, or "
                            "hung).\n",
                            now,
                        )
                    if final and batch_id is not None:
                        finished_batches.add(self.id_from_db(batch_id))
            if finished_batches:  # A lost child that ends FAILED counts toward its batch.
                from .batches import on_children_finished

                on_children_finished(self, finished_batches)
        if queues:
            self.notify(queues)
        return recovered

    # -- operations: taskmill.cancel / retry / purge -----------------------------------

    def cancel(self, job_id: uuid.UUID, force: bool, now: dt.datetime) -> str | None:
        """Cancel a job; returns the status it had when cancelled (None: no such job).

        READY: it becomes FAILED with ``Cancelled`` at once and never runs. RUNNING: the
        request is recorded (``cancel_requested_at``, ``cancel_force``) and the worker's
        heartbeat passes it to the running attempt. Finished jobs are left alone. A job
        that changes state under our feet (claimed as we cancel it) is looked at again.
        """
        pk = self.id_param(job_id)
        for _ in range(20):
            with self.atomic(), self.connection.cursor() as cursor:
                cursor.execute(f"SELECT status, attempts, batch_id FROM {self.table} WHERE id = %s",
                               [pk])
                row = cursor.fetchone()
                if row is None:
                    return None
                status, attempts, batch_id = row
                if status == JobStatus.READY:
                    cursor.execute(
                        f"UPDATE {self.table} SET status = 'FAILED', finished_at = %s, "
                        "cancel_requested_at = %s, cancel_force = %s "
                        "WHERE id = %s AND status = 'READY'",
                        [self.dt_param(now), self.dt_param(now), force, pk],
                    )
                    if cursor.rowcount == 1:
                        self.insert_error(cursor, job_id, attempts, "", CANCELLED,
                                          f"{CANCELLED}: cancelled before it ran.\n", now)
                        if batch_id is not None:
                            from .batches import on_children_finished

                            on_children_finished(self, {self.id_from_db(batch_id)})
                        return status
                elif status == JobStatus.RUNNING:
                    force_sql = ", cancel_force = %s" if force else ""
                    cursor.execute(
                        f"UPDATE {self.table} SET cancel_requested_at = "
                        f"COALESCE(cancel_requested_at, %s){force_sql} "
                        "WHERE id = %s AND status = 'RUNNING'",
                        [self.dt_param(now), *([True] if force else []), pk],
                    )
                    if cursor.rowcount == 1:
                        return status
                else:
                    return status
        raise RuntimeError(f"Job {job_id} kept changing state; cancel it again.")

    def retry(self, job_id: uuid.UUID, max_attempts: int, now: dt.datetime) -> bool:
        """FAILED → READY, due now, allowed ``max_attempts`` in all; False if not FAILED.

        Attempts and errors so far are kept (``attempts`` counts every attempt ever
        started) and so is the checkpoint, so the re-run resumes where it stopped. For a
        ``unique`` job this raises ``IntegrityError`` when another job with its key is
        already waiting or running.
        """
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {self.table} SET status = 'READY', run_after = %s, finished_at = NULL, "
                "lease_owner = NULL, cancel_requested_at = NULL, cancel_force = %s, "
                "max_attempts = %s WHERE id = %s AND status = 'FAILED'",
                [self.dt_param(now), False, max_attempts, self.id_param(job_id)],
            )
            retried = cursor.rowcount == 1
        if retried:
            self.notify([Job.objects.using(self.alias).values_list("queue_name", flat=True)
                         .get(id=job_id)])
        return retried

    def purge(self, queue: str | None, task_path: str | None, enqueued_before: dt.datetime,
              chunk: int = 1000) -> int:
        """Delete READY jobs (and their errors), a chunk at a time; RUNNING ones go on.

        Only jobs enqueued before the call started, so a steady stream of enqueues
        cannot keep it going forever. Returns how many were deleted.
        """
        where = "status = 'READY' AND enqueued_at <= %s"
        params: list[Any] = [self.dt_param(enqueued_before)]
        if queue is not None:
            where += " AND queue_name = %s"
            params.append(queue)
        if task_path is not None:
            where += " AND task_path = %s"
            params.append(task_path)
        return self._delete_in_chunks(where, params, "status = 'READY'", chunk,
                                      completes_batches=True)

    # -- retention --------------------------------------------------------------------

    def prune(self, finished_before: dt.datetime, chunk: int = 1000) -> int:
        """Delete finished jobs (and their errors, and finished batches) older than the
        cutoff, a chunk at a time."""
        deleted = self._delete_in_chunks(
            "status IN ('SUCCESSFUL', 'FAILED') AND finished_at < %s",
            [self.dt_param(finished_before)], "status IN ('SUCCESSFUL', 'FAILED')", chunk)
        with self.connection.cursor() as cursor:
            cursor.execute("DELETE FROM taskmill_batch WHERE finished_at < %s",
                           [self.dt_param(finished_before)])
        return deleted

    def _delete_in_chunks(self, where: str, params: list[Any], guard: str, chunk: int, *,
                          completes_batches: bool = False) -> int:
        """Delete matching jobs and their errors in short transactions; returns the count.

        ``guard`` is re-checked by the DELETE itself: a job that changed state since it
        was selected (claimed, say) stays. With ``completes_batches`` (waiting children
        removed), their batches are checked for completion in the same transaction, so
        their ``then`` still runs; finished children never change a batch's outcome.
        """
        deleted = 0
        while True:
            with self.atomic(), self.connection.cursor() as cursor:
                cursor.execute(f"SELECT id, batch_id FROM {self.table} WHERE {where} LIMIT %s",
                               [*params, chunk])
                rows = cursor.fetchall()
                if not rows:
                    return deleted
                ids = [row[0] for row in rows]
                marks = ", ".join(["%s"] * len(ids))
                cursor.execute(f"DELETE FROM {self.table} WHERE id IN ({marks}) AND {guard}", ids)
                deleted += cursor.rowcount
                cursor.execute(
                    f"DELETE FROM taskmill_joberror WHERE job_id IN ({marks}) AND NOT EXISTS "
                    f"(SELECT 1 FROM {self.table} j WHERE j.id = taskmill_joberror.job_id)", ids)
                batch_ids = {self.id_from_db(row[1]) for row in rows if row[1] is not None}
                if completes_batches and batch_ids:
                    from .batches import on_children_finished

                    on_children_finished(self, batch_ids)
