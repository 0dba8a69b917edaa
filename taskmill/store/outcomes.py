"""Outcomes: what a worker writes to the jobs it holds.

Every write here is guarded by the lease: ``status = 'RUNNING' AND lease_owner = <me>
AND attempts = <my attempt>``. A worker that lost its lease (declared dead while it was
paused, say) cannot overwrite a job that was recovered and perhaps already re-run
elsewhere; its late writes change nothing, and the outcome says so (``recorded``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from .batches import Batches
from .claim import Claiming
from .rows import ClaimedJob, Outcome

CANCELLED = "taskmill.exceptions.Cancelled"


class Outcomes(Batches, Claiming):
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
        if successes:
            self.record_successes(successes, worker_id)
        for outcome in outcomes:
            if not outcome.succeeded:
                self.record_failure(outcome, worker_id)
        freed = {o.job.queue_name for o in outcomes if o.job.concurrency_key and o.recorded}
        if freed:  # A concurrency slot opened: wake workers waiting for it (PostgreSQL).
            self.notify(freed)
        batch_ids = {o.job.batch_id for o in outcomes if o.job.batch_id and o.recorded}
        if batch_ids:
            self.finish_batches(batch_ids)

    def record_successes(self, outcomes: Sequence[Outcome], worker_id: str) -> None:
        """Mark jobs SUCCESSFUL: one guarded UPDATE per job (PostgreSQL: one in all)."""
        with self.cursor() as cursor:
            for o in outcomes:
                o.recorded = self.execute(cursor, "complete_job", {
                    **self.lease_params(o.job, worker_id), "return_value": o.return_json,
                    "finished_at": self.dt_param(o.finished_at)}) == 1

    def record_failure(self, outcome: Outcome, worker_id: str) -> None:
        """Fail one attempt: back to READY at ``retry_at``, or FAILED; keep the error.

        In one transaction, so nobody sees the job FAILED without its error.
        """
        job = outcome.job
        lease = self.lease_params(job, worker_id)
        with self.atomic(), self.cursor() as cursor:
            # A job someone cancelled is not retried (it falls through to FAILED).
            retried = outcome.retry_at is not None and self.execute(
                cursor, "retry_job", {**lease, "run_after": self.dt_param(outcome.retry_at)}) == 1
            outcome.recorded = retried or self.execute(
                cursor, "fail_job", {**lease, "finished_at": self.dt_param(outcome.finished_at)}
            ) == 1
            if outcome.recorded:
                self.insert_error(cursor, job.id, job.attempts, worker_id,
                                  outcome.exception_class_path, outcome.traceback,
                                  outcome.finished_at)

    def insert_error(self, cursor: CursorWrapper, job_id: uuid.UUID, attempt: int,
                     worker_id: str, exception_class_path: str, traceback: str,
                     at: dt.datetime) -> None:
        self.execute(cursor, "insert_error", {
            "job_id": self.id_param(job_id), "attempt": attempt, "worker": worker_id,
            "exception": exception_class_path, "traceback": traceback,
            "created_at": self.dt_param(at)})

    def hand_back(self, jobs: Sequence[ClaimedJob], worker_id: str, *, started: bool) -> int:
        """Return held jobs to READY (shutdown). Unstarted ones get their attempt back."""
        if not jobs:
            return 0
        count = 0
        now = timezone.now()
        with self.atomic(), self.cursor() as cursor:
            for job in jobs:
                if self._fail_cancelled(cursor, job, worker_id, now):
                    continue  # Cancelled while held: it ends here rather than run again.
                if started:
                    count += self.execute(cursor, "hand_back_job",
                                          self.lease_params(job, worker_id))
                else:
                    count += self.refund_claims([job], worker_id)
        self.notify({job.queue_name for job in jobs})
        return count

    def _fail_cancelled(self, cursor: CursorWrapper, job: ClaimedJob, worker_id: str,
                        now: dt.datetime) -> bool:
        """End a held job that someone cancelled (FAILED, ``Cancelled``); False if not cancelled."""
        if self.execute(cursor, "fail_cancelled_job", {
                **self.lease_params(job, worker_id), "finished_at": self.dt_param(now)}) != 1:
            return False
        self.insert_error(cursor, job.id, job.attempts, worker_id, CANCELLED,
                          f"{CANCELLED}: cancelled while its worker held it.\n", now)
        return True

    def update_running(self, job: ClaimedJob, worker_id: str, *, progress: str | None = None,
                       checkpoint: str | None = None) -> bool:
        """Write progress or a checkpoint (JSON text) while holding the lease. False if
        the lease was lost."""
        written = True
        lease: dict[str, Any] = self.lease_params(job, worker_id)
        with self.cursor() as cursor:
            if progress is not None:
                written &= self.execute(cursor, "set_progress", {**lease, "value": progress}) == 1
            if checkpoint is not None:
                written &= self.execute(cursor, "save_checkpoint",
                                        {**lease, "value": checkpoint}) == 1
        return written
