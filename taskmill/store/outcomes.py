"""Outcomes: what a worker writes to the jobs it holds.

Every write here is guarded by the lease: ``status = 'RUNNING' AND lease_owner = <me>
AND attempts = <my attempt>``. A worker that lost its lease (declared dead while it was
paused, say) cannot overwrite a job that was recovered and perhaps already re-run
elsewhere; its late writes change nothing, and the outcome says so (``recorded``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from django.db.backends.utils import CursorWrapper

from .batches import Batches
from .claim import Claiming
from .rows import ClaimedJob, Outcome

CANCELLED = "taskmill.exceptions.Cancelled"
SNOOZED_TOO_OFTEN = "taskmill.exceptions.SnoozedTooOften"
INTERRUPTED = "taskmill.exceptions.Interrupted"
_INTERRUPTED_WHY = (INTERRUPTED + ": worker {} stopped (shutdown timeout) while this attempt "
                    "ran; {}.\n")


class Outcomes(Batches, Claiming):
    def complete(self, outcomes: Sequence[Outcome], worker_id: str) -> None:
        """Record finished attempts in one transaction, each guarded by its lease.

        Sets ``outcome.recorded`` to False for every outcome whose job this worker no
        longer holds (its lease was lost and the job recovered).
        """
        if not outcomes:
            return
        with self.atomic():
            self.record_outcomes(outcomes, worker_id)
        for outcome in outcomes:  # Only once the commit went through.
            outcome.needs_recording = False

    def complete_and_claim(self, outcomes: Sequence[Outcome], queues: Sequence[str],
                           limit: int, worker_id: str) -> list[ClaimedJob]:
        """A worker's round: record ``outcomes`` and claim up to ``limit`` more jobs, with
        one commit. Each outcome's ``recorded`` says whether its lease still held."""
        with self.atomic():
            self.record_outcomes(outcomes, worker_id)
            return self.claim(queues, limit, worker_id) if limit else []

    def record_outcomes(self, outcomes: Sequence[Outcome], worker_id: str) -> None:
        """:meth:`complete` inside a transaction the caller holds (``transactional`` tasks)."""
        outcomes = [o for o in outcomes if o.needs_recording]
        successes = [o for o in outcomes if o.succeeded]
        if successes:
            self.record_successes(successes, worker_id)
        for outcome in outcomes:
            if outcome.snooze is not None:
                self.record_snooze(outcome, worker_id)
            elif not outcome.succeeded:
                self.record_failure(outcome, worker_id)
        freed = [o.job for o in outcomes if o.job.concurrency_key and o.recorded]
        if freed:  # Concurrency slots opened: their keys' best parked jobs back in line,
            self.unpark_freed(job.concurrency_key for job in freed)
            self.notify({job.queue_name for job in freed})  # and workers woken (PostgreSQL).
        batch_ids = {o.job.batch_id for o in outcomes if o.job.batch_id and o.recorded}
        if batch_ids:
            self.finish_batches(batch_ids)

    def record_successes(self, outcomes: Sequence[Outcome], worker_id: str) -> None:
        """Mark jobs SUCCESSFUL: one guarded UPDATE per job (PostgreSQL: one in all)."""
        with self.cursor() as cursor:
            for o in outcomes:
                o.recorded = o.ended = self.execute(cursor, "complete_job", {
                    **self.lease_params(o.job, worker_id), "return_value": o.return_json}) == 1

    def record_failure(self, outcome: Outcome, worker_id: str) -> None:
        """Fail one attempt: back to READY in ``retry_delay`` seconds if it has attempts
        left and was not cancelled, else FAILED; keep the error.

        In one transaction, so nobody sees the job FAILED without its error.
        """
        job = outcome.job
        with self.atomic(), self.cursor() as cursor:
            state = self._end_attempt(
                cursor, job, worker_id, outcome.exception_class_path, outcome.traceback,
                retry_delay=outcome.retry_delay)
        outcome.recorded = state is not None
        outcome.ended = state == "FAILED"

    def record_snooze(self, outcome: Outcome, worker_id: str) -> None:
        """Put a snoozed job back in line with its attempt refunded; one over its snooze
        cap (or cancelled meanwhile) ends FAILED instead, the reason kept."""
        job = outcome.job
        assert outcome.snooze is not None
        with self.atomic(), self.cursor() as cursor:
            if self.execute(cursor, "snooze_job", {
                    **self.lease_params(job, worker_id), "delay": outcome.snooze,
                    "max_snoozes": outcome.max_snoozes}) == 1:
                outcome.recorded, outcome.ended = True, False
                return
            why = (f"{SNOOZED_TOO_OFTEN}: the job snoozed {outcome.max_snoozes} times (the "
                   "backend's MAX_SNOOZES) and asked for another; failed instead.\n")
            if self._fail_cancelled(cursor, job, worker_id):
                state: str | None = "FAILED"
            else:
                state = self._end_attempt(cursor, job, worker_id, SNOOZED_TOO_OFTEN, why,
                                          retry_delay=None)
        outcome.recorded = state is not None
        outcome.ended = state == "FAILED"
        if outcome.ended:
            outcome.exception_class_path, outcome.traceback = SNOOZED_TOO_OFTEN, why

    def _end_attempt(self, cursor: CursorWrapper, job: ClaimedJob, worker_id: str,
                     exception: str, traceback: str, *, retry_delay: float | None) -> str | None:
        """A failed attempt: READY again in ``retry_delay`` seconds (None: no retry), or
        FAILED when it has no attempts left; its error kept. Returns the job's new state
        (None: the job is not ours any more)."""
        lease = self.lease_params(job, worker_id)
        if retry_delay is not None and self.execute(
                cursor, "retry_job", {**lease, "delay": max(0.0, retry_delay)}) == 1:
            state = "READY"
        elif self.execute(cursor, "fail_job", lease) == 1:
            state = "FAILED"
        else:
            return None
        self.insert_error(cursor, job.id, job.attempts, worker_id, exception, traceback)
        return state

    def insert_error(self, cursor: CursorWrapper, job_id: uuid.UUID, attempt: int,
                     worker_id: str, exception_class_path: str, traceback: str) -> None:
        self.execute(cursor, "insert_error", {
            "job_id": self.id_param(job_id), "attempt": attempt, "worker": worker_id,
            "exception": exception_class_path, "traceback": traceback})

    def hand_back(self, jobs: Sequence[ClaimedJob], worker_id: str, *, started: bool) -> int:
        """Give back held jobs at shutdown; returns how many are READY again.

        Unstarted ones get their attempt refunded. A started one keeps its attempt and an
        ``Interrupted`` error, and ends FAILED if that was its last; one someone cancelled
        ends FAILED (``Cancelled``) rather than run again.
        """
        if not jobs:
            return 0
        ready = 0
        ended: set[uuid.UUID] = set()
        with self.atomic(), self.cursor() as cursor:
            for job in jobs:
                if self._fail_cancelled(cursor, job, worker_id):
                    if job.batch_id is not None:
                        ended.add(job.batch_id)
                elif not started:
                    ready += self.refund_claims([job], worker_id)
                elif self.execute(cursor, "hand_back_job", self.lease_params(job, worker_id)):
                    ready += 1
                    self.insert_error(cursor, job.id, job.attempts, worker_id, INTERRUPTED,
                                      _INTERRUPTED_WHY.format(worker_id, "handed back"))
                elif self._end_attempt(cursor, job, worker_id, INTERRUPTED,
                                       _INTERRUPTED_WHY.format(worker_id, "its last attempt"),
                                       retry_delay=None) and job.batch_id is not None:
                    ended.add(job.batch_id)
            if ended:  # Every path that ends a child finishes its batch.
                self.finish_batches(ended)
            self.unpark_freed(job.concurrency_key for job in jobs)  # Their slots opened.
        self.notify({job.queue_name for job in jobs})
        return ready

    def _fail_cancelled(self, cursor: CursorWrapper, job: ClaimedJob, worker_id: str) -> bool:
        """End a held job that someone cancelled (FAILED, ``Cancelled``); False if not cancelled."""
        if self.execute(cursor, "fail_cancelled_job", self.lease_params(job, worker_id)) != 1:
            return False
        self.insert_error(cursor, job.id, job.attempts, worker_id, CANCELLED,
                          f"{CANCELLED}: cancelled while its worker held it.\n")
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
