"""Operations on jobs from outside the worker: cancel, retry, purge and prune."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..conf import FINISHED_STATES
from ..models import JobStatus
from .outcomes import CANCELLED, Outcomes

#: Attempts of a cancel when the job keeps changing state under it (claimed as we look).
CANCEL_ROUNDS = 20
#: Where a prune's walk of the finished_at index starts: before any job finished.
BEGINNING = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: Stands in for an empty list of kept queues (MySQL cannot say ``IN ()``): longer than
#: the queue_name column, so no job's queue is this.
NO_QUEUE = "~" * 101


@dataclass(frozen=True, slots=True)
class FinishedScope:
    """The finished jobs one prune pass may delete: in one of ``statuses``, of ``queue``
    (None: any), and not of a queue in ``kept_successful`` / ``kept_failed`` for their
    state (jobs an earlier retention rule decides). The default: every finished job."""

    statuses: tuple[str, ...] = FINISHED_STATES
    queue: str | None = None
    kept_successful: tuple[str, ...] = ()
    kept_failed: tuple[str, ...] = ()


class Operations(Outcomes):
    def cancel(self, job_id: uuid.UUID, force: bool) -> str | None:
        """Cancel a job; returns the status it had when cancelled (None: no such job).

        READY: it becomes FAILED with ``Cancelled`` at once and never runs. RUNNING: the
        request is recorded (``cancel_requested_at``, ``cancel_force``) and the worker's
        heartbeat passes it to the running attempt. Finished jobs are left alone. A job
        that changes state under our feet (claimed as we cancel it) is looked at again.
        """
        key = {"id": self.id_param(job_id), "force": force}
        for _ in range(CANCEL_ROUNDS):
            with self.atomic(), self.cursor() as cursor:
                self.execute(cursor, "job_state", key)
                row = cursor.fetchone()
                if row is None:
                    return None
                status, attempts, batch_id, _queue = row
                if status == JobStatus.READY:
                    if self.execute(cursor, "cancel_waiting_job", key) == 1:
                        self.insert_error(cursor, job_id, attempts, "", CANCELLED,
                                          f"{CANCELLED}: cancelled before it ran.\n")
                        if batch_id is not None:
                            self.finish_batches({self.id_from_db(batch_id)})
                        return str(status)
                elif status == JobStatus.RUNNING:
                    if self.execute(cursor, "request_cancel", key) == 1:
                        return str(status)
                else:
                    return str(status)
        raise RuntimeError(f"Job {job_id} kept changing state; cancel it again.")

    def retry(self, job_id: uuid.UUID, max_attempts: int) -> bool:
        """FAILED → READY, due now, allowed ``max_attempts`` in all; False if not FAILED.

        Attempts and errors so far are kept (``attempts`` counts every attempt ever
        started) and so is the checkpoint, so the re-run resumes where it stopped. For a
        ``unique`` job this raises ``IntegrityError`` when another job with its key is
        already waiting or running.
        """
        key = {"id": self.id_param(job_id)}
        retried = self.run("retry_failed_job", {**key, "max_attempts": max_attempts}) == 1
        if retried:
            row = self.fetchone("job_state", key)
            if row is not None:
                self.notify([row[3]])
        return retried

    def purge(self, queue: str | None, task_path: str | None,
              enqueued_before: dt.datetime | None = None, chunk: int = 1000) -> int:
        """Delete READY jobs (and their errors), a chunk at a time; RUNNING ones go on.

        Only jobs enqueued before ``enqueued_before`` (by default, the moment the call
        started, by the database's clock), so a steady stream of enqueues cannot keep it
        going forever. A purged child counts toward its batch, whose ``then`` still runs.
        Returns how many were deleted.
        """
        if enqueued_before is None:
            enqueued_before = self.database_now()
        return self._delete_in_chunks(
            "purgeable_jobs", "delete_waiting_jobs",
            {"before": self.dt_param(enqueued_before), "queue": queue, "task_path": task_path,
             "chunk": chunk},
            completes_batches=True)

    def prune(self, finished_before: dt.datetime, chunk: int = 1000,
              deadline: float | None = None, scope: FinishedScope | None = None) -> int:
        """Delete finished jobs (and their errors) older than the cutoff (a time by the
        database's clock: see ``database_now``), a chunk at a time, oldest first.

        Without a ``scope``: every finished job, and finished batches older than the
        cutoff too. With one: only its jobs, and no batches (the caller prunes them once,
        :meth:`prune_batches`, at the longest of its cutoffs). With a ``deadline``
        (``time.monotonic()``), it stops after the chunk that passes it; the next prune
        goes on where this one stopped.
        """
        area = scope or FinishedScope()
        if not area.statuses:
            return 0
        params = {
            "before": self.dt_param(finished_before), "after": self.dt_param(BEGINNING),
            "chunk": chunk, "statuses": self.list_param(area.statuses), "queue": area.queue,
            "kept_successful": self.list_param(area.kept_successful or [NO_QUEUE]),
            "kept_failed": self.list_param(area.kept_failed or [NO_QUEUE]),
        }
        deleted = self._delete_in_chunks("prunable_jobs", "delete_finished_jobs", params,
                                         deadline=deadline, resume_after=True)
        if scope is None:
            self.prune_batches(finished_before)
        return deleted

    def prune_batches(self, finished_before: dt.datetime) -> int:
        """Delete finished batches older than the cutoff; returns how many."""
        return self.run("prune_batches", {"before": self.dt_param(finished_before)})

    def prune_concurrency_locks(self) -> int:
        """Forget the lock rows of concurrency keys no job waits for or runs (MySQL keeps
        one per key: :mod:`.limits`); other databases have none."""
        return 0

    def _delete_in_chunks(self, select: str, delete: str, params: dict[str, Any], *,
                          completes_batches: bool = False, deadline: float | None = None,
                          resume_after: bool = False) -> int:
        """Delete the jobs ``select`` finds, and their errors, in short transactions.

        With ``resume_after``, ``select`` returns rows in ``finished_at`` order with it
        as their third column, and each chunk starts (``%(after)s``) at the last one's:
        rows the select passes over (kept by a rule, or deleted but not yet vacuumed
        from the index) are read once per call, not once per chunk.

        ``delete`` re-checks the state itself: a job that changed state since it was
        selected (claimed, say) stays. With ``completes_batches`` (waiting children
        removed), their batches are checked for completion in the same transaction, so
        their ``then`` still runs; finished children never change a batch's outcome.
        """
        deleted = 0
        while True:
            with self.atomic(), self.cursor() as cursor:
                self.execute(cursor, select, params)
                rows = cursor.fetchall()
                if not rows:
                    return deleted
                ids = {"ids": self.list_param([row[0] for row in rows])}
                deleted += self.execute(cursor, delete, ids)
                self.execute(cursor, "delete_errors_of_deleted_jobs", ids)
                batch_ids = {self.id_from_db(row[1]) for row in rows if row[1] is not None}
                if completes_batches and batch_ids:
                    self.finish_batches(batch_ids)
                if resume_after:
                    params = {**params, "after": self._resume_key(rows[-1][2])}
            if deadline is not None and time.monotonic() > deadline:
                return deleted

    def _resume_key(self, finished_at: Any) -> Any:
        """Where the next chunk starts: a millisecond before the last row, since SQLite's
        text keeps milliseconds (``${now}``) or microseconds (Django) and a key written
        back the other way could sort after rows of its own instant. The few rows of
        that millisecond are read again, and stay if they were kept."""
        moment = self.dt_from_db(finished_at)
        assert moment is not None
        return self.dt_param(moment - dt.timedelta(milliseconds=1))
