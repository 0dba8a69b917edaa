"""Enqueue: new jobs, unique jobs, and the ticks of periodic tasks.

Unique jobs (``unique`` / ``unique_key``) are enforced by the database:
``active_unique_key`` is a stored generated column equal to ``unique_key`` while the job
is READY or RUNNING and NULL otherwise, under a unique index. An enqueue inserts with
"do nothing on conflict" and, when it lost, reads back the job that holds the key. No
check-then-insert race: any number of processes enqueueing the same key at once get
one job between them. The conflict never raises, so a caller's transaction stays
usable. Hazard: while that transaction is open, other enqueues of the same key wait
for it (the database must know whether the first insert commits).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence

from django.db.backends.utils import CursorWrapper

from .connection import Params
from .fairness import FairTurns
from .rows import NewJob

#: Attempts of a unique insert when the holder of the key keeps finishing between our
#: insert and our read (each round means the key was free an instant earlier).
UNIQUE_ROUNDS = 20


class Enqueueing(FairTurns):
    def insert(self, jobs: Sequence[NewJob],
               while_sending: Callable[[], None] | None = None) -> None:
        """Insert jobs in as few round trips as the database allows.

        ``while_sending`` is called once the rows are on their way, before waiting for
        the database to take them: client work done there overlaps the server's.
        """
        if not jobs:
            return
        if any(job.fairness_key is not None for job in jobs):
            with self.atomic():  # The turns are taken only if the jobs are stored.
                self.give_turns(jobs)
                self.insert_rows(jobs, while_sending)
            return
        self.insert_rows(jobs, while_sending)

    def insert_rows(self, jobs: Sequence[NewJob],
                    while_sending: Callable[[], None] | None = None) -> None:
        """:meth:`insert`, the rows as they are (their turns, if any, already taken)."""
        if while_sending is not None:
            while_sending()
        with self.cursor() as cursor:
            if len(jobs) == 1:
                self.execute(cursor, "insert_job", self.insert_params(jobs[0]))
            else:
                with self.atomic():
                    cursor.executemany(self.sql["insert_job"],
                                       [self.insert_params(job) for job in jobs])

    def insert_unique(self, job: NewJob) -> uuid.UUID | None:
        """Insert ``job`` unless an active job has its key: None if inserted, else that
        job's id."""
        key = job.unique_key
        if key is None:
            raise ValueError("insert_unique needs a job with a unique_key.")
        if job.fairness_key is not None:
            with self.atomic():
                self.give_turns([job])
                return self._insert_unique(job)
        return self._insert_unique(job)

    def _insert_unique(self, job: NewJob) -> uuid.UUID | None:
        key = job.unique_key
        if job.unique_period is not None:
            recent = self.fetchone("unique_key_recent", {"key": key, "period": job.unique_period})
            if recent is not None:
                return self.id_from_db(recent[0])
        params = self.insert_params(job)
        for _ in range(UNIQUE_ROUNDS):
            with self.cursor() as cursor:
                if self._insert_if_key_free(cursor, params):
                    return None
                self.execute(cursor, "unique_key_holder", {"key": key})
                row = cursor.fetchone()
            if row is None:
                continue  # The holder finished (or rolled back) in between: try again.
            holder = self.id_from_db(row[0])
            return None if holder == job.id else holder
        raise RuntimeError(
            f"Could not enqueue unique job {job.task_path} (key {key!r}): the job holding the "
            f"key kept finishing during {UNIQUE_ROUNDS} attempts."
        )

    def _insert_if_key_free(self, cursor: CursorWrapper, params: Params) -> bool:
        """True when inserted, from RETURNING; MySQL says False and reads back instead."""
        self.execute(cursor, "insert_unique_job", params)
        return cursor.fetchone() is not None

    def enqueue_tick(self, name: str, tick: dt.datetime, job: NewJob) -> bool:
        """Enqueue ``job`` for ``tick`` of the periodic task ``name`` unless a worker did.

        The guarded move of ``last_tick`` and the enqueue commit together, so of all the
        workers that try, exactly one enqueues. A new entry only records its first tick.
        Returns whether this call enqueued.
        """
        tick_param = self.dt_param(tick)
        state = {"name": name, "tick": tick_param, "job_id": self.id_param(job.id)}
        with self.atomic(), self.cursor() as cursor:
            if self.execute(cursor, "advance_schedule", state) != 1:
                self.execute(cursor, "insert_schedule_state", state)
                return False
            if job.unique_key is not None:
                holder = self.insert_unique(job)
                if holder is not None:
                    self.execute(cursor, "set_schedule_job",
                                 {"name": name, "job_id": self.id_param(holder)})
                    return False
            else:
                self.insert([job])
        return True
