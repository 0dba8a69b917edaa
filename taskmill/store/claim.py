"""Claim: lease the best due jobs to a worker; and when the next one is due.

The claim itself differs by database and lives in the vendor modules and SQL files;
what follows it (claim order, concurrency limits) is the same everywhere.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .deferred import DeferredJobs
from .fairness import FairTurns
from .limits import ConcurrencyLimits
from .parking import PARK_AT_ONCE, ParkedJob, Parking
from .rows import ClaimedJob
from .starts import ClaimStarts

#: How long "no queue is paused" is trusted before pauses are read again (see
#: :meth:`Claiming.unpaused`); while one is, they are read on every claim.
PAUSES_RECHECK = 1.0


class Claiming(ConcurrencyLimits, DeferredJobs, FairTurns, Parking, ClaimStarts):
    #: When pauses were last read and found to pause no queue as a whole.
    _no_queue_paused_at = -math.inf

    def claim(self, queues: Sequence[str], limit: int, worker_id: str) -> list[ClaimedJob]:
        """Take up to ``limit`` due READY jobs of ``queues``, best first, for ``worker_id``
        (first putting back in line the deferred jobs come due, when it is time to look:
        :mod:`.deferred`). Each queue is read from the front, or from where the last
        claim ended while an open transaction holds back vacuum (:mod:`.starts`)."""
        queues = self.unpaused(queues)
        if not queues:
            return []
        self.unpark_due_if_time(queues)
        # Whether a window is open is asked here, at most every LOOK_EVERY seconds: not
        # inside the claim's transaction, whose row locks (MySQL's) it would hold longer.
        self.starts_past_claimed()
        from_front = self.front_read_due()
        with self.claim_transaction():
            claimed_at = time.monotonic()
            rows = self.claim_rows(queues, limit, worker_id, from_front=from_front)
            jobs = [self.row_to_claimed(row) for row in rows]
            self.claimed_from(jobs, from_front=from_front, took=time.monotonic() - claimed_at)
            jobs.sort(key=lambda j: (-j.priority, j.fair_rank, j.run_after, j.id))
            kept = self.enforce_limits(jobs, worker_id, claimed_at)
            self.advance_queue_turns(kept)
            return kept

    @contextmanager
    def claim_transaction(self) -> Iterator[None]:
        """What a claim runs in: one statement needs nothing (autocommit saves two round
        trips); MySQL's three statements need a transaction (see :mod:`.mysql`)."""
        yield

    def claim_rows(self, queues: Sequence[str], limit: int, worker_id: str, *,
                   from_front: bool = True) -> list[Sequence[Any]]:
        """The claimed rows, ``${claim_columns}`` each: one claim statement."""
        name, params = self.claim_call(queues, limit, worker_id, from_front=from_front)
        with self.cursor() as cursor:
            self.execute(cursor, name, params)
            return list(cursor.fetchall())

    def claim_call(self, queues: Sequence[str], limit: int, worker_id: str, *,
                   from_front: bool = True) -> tuple[str, dict[str, Any]]:
        """The claim statement's name and parameters (PostgreSQL's claim can start
        elsewhere than the front: :mod:`.starts`)."""
        return "claim", {"worker": worker_id, "limit": limit, "queues": self.list_param(queues)}

    def park_blocked(self, queues: Sequence[str]) -> int:
        """Park the due jobs of ``queues`` whose concurrency key is full, whose task is
        paused or whose rate key is full (:mod:`.parking`), and those due later
        (:mod:`.deferred`); how many.

        Called by an idle worker, after a claim came back short. Reads the queues'
        unparked due jobs that may not start (what that claim stepped over), once. A
        queue paused as a whole is left alone: claims do not read it at all.
        """
        queues = self.unpaused(queues)
        if not queues:
            return 0
        parked_for_time = self.park_deferred(queues)
        if not self.blocked_read_due():
            return parked_for_time
        found = [ParkedJob(self.id_from_db(job_id), key, limit, rate_key, bool(for_rate))
                 for job_id, key, limit, rate_key, for_rate in self.fetchall(
                     "blocked_jobs", {"queues": self.list_param(queues),
                                      "limit": PARK_AT_ONCE})]
        if not found:
            return parked_for_time
        for_key = [job.id for job in found if not job.for_rate]
        for_rate = [job.id for job in found if job.for_rate]
        rate_keys = sorted({job.rate_key for job in found if job.for_rate and job.rate_key})
        with self.atomic():
            parked = self.run("park_jobs", {"ids": self.ids_param(for_key)}) if for_key else 0
            if for_rate:
                parked += self.run("park_jobs_for_rate", {"ids": self.ids_param(for_rate)})
            if rate_keys:  # Job rows, then the keys' rows: the order a claim locks them in.
                self.run("flag_rate_keys", {"keys": self.list_param(rate_keys)})
        self.recheck_parked(found)
        return parked + parked_for_time

    def next_wake(self, queues: Sequence[str]) -> float | None:
        """In how many seconds an idle worker of ``queues`` should look for jobs again
        (None: no job asks for a time; the worker polls, or is woken; 0 or less: now).

        Also the last look of a ``--burst`` worker, and of the test helpers' drain.
        Read without walking every waiting job: the due ones in claim order up to the
        first that may start, the parked ones left out, and the deferred ones in due order
        through their own index. Hazard: due jobs that may not start and are not parked
        yet are still stepped over, as the claim steps over them.
        """
        queues = self.unpaused(queues)
        if not queues:
            return None
        row = self.next_wake_row(queues)
        if row is None or row[0] is None:
            return None
        seconds = float(row[0])
        self.look_again_in(seconds)
        return seconds

    def next_wake_row(self, queues: Sequence[str]) -> Sequence[Any] | None:
        """:meth:`next_wake`'s one row (PostgreSQL has one statement for it all)."""
        sql, params = self.next_wake_query(queues)
        with self.cursor() as cursor:
            cursor.execute(sql, params)
            row: Sequence[Any] | None = cursor.fetchone()
            return row

    def next_wake_query(self, queues: Sequence[str]) -> tuple[str, dict[str, Any]]:
        """``next_wake_in_queue`` for each queue and ``next_rate_room``, united."""
        parts, params = self.per_queue("next_wake_in_queue", queues)
        parts.append(self.sql["next_rate_room"])
        return f"SELECT MIN(due.seconds) FROM ({' UNION ALL '.join(parts)}) due", params

    def per_queue(self, name: str, queues: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
        """A copy of the statement ``name`` for each queue, each with a parameter of its
        own for ``%(queue)s``, to unite: each copy reads its queue's part of an index,
        where one statement for them all would walk the index past other queues' jobs."""
        parts, params = [], {}
        for index, queue in enumerate(queues):
            params[f"queue_{index}"] = queue
            parts.append(self.sql[name].replace("%(queue)s", f"%(queue_{index})s"))
        return parts, params

    def waiting(self, queues: Sequence[str]) -> tuple[int, float | None]:
        """How many jobs of ``queues`` wait (due or not), and in how many seconds the
        first is due."""
        row = self.fetchone("waiting_jobs", {"queues": self.list_param(queues)})
        if row is None:
            return 0, None
        return int(row[0]), None if row[1] is None else float(row[1])

    def ready_queues(self) -> list[str]:
        """The queues that have READY jobs, in name order (the reports' first look)."""
        return [name for (name,) in self.fetchall("ready_queues")]

    def top_priority(self, queue: str) -> int | None:
        """The highest priority among ``queue``'s due jobs (None: none is due)."""
        row = self.fetchone("top_ready_priority", {"queue": queue})
        return None if row is None else int(row[0])

    def age_waiting(self, queue: str, top: int, aging: float) -> int:
        """One step of priority aging for ``queue`` (see :mod:`taskmill.services.aging`)."""
        return self.run("age_waiting_jobs", {"queue": queue, "top": top, "aging": aging})

    def unpaused(self, queues: Sequence[str]) -> list[str]:
        """``queues`` without those paused as a whole (a pause of everything: none).

        The claim's own filter is exact (``may_start``); this only keeps a paused queue's
        backlog from being walked by every claim and every idle wait (on MySQL and SQLite
        the filter is per row). "Nothing paused" is trusted for ``PAUSES_RECHECK``
        seconds: a new pause may cost a walk or two, never a start. While something is
        paused, pauses are read on every call, so a resume takes effect at once.
        """
        if time.monotonic() - self._no_queue_paused_at < PAUSES_RECHECK:
            return list(queues)
        paused = {name for (name,) in self.fetchall("queue_pauses")}
        if not paused:
            self._no_queue_paused_at = time.monotonic()
            return list(queues)
        return [] if "" in paused else [q for q in queues if q not in paused]
