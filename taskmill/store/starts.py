"""Where a claim starts reading: the front of each queue, or past what it just claimed.

A claimed job leaves its READY entry in the claim index (migration 0011; on MySQL,
0013) until vacuum removes it, and vacuum may not while an open transaction could still
see the old row (on MySQL, InnoDB's purge of the delete-marked entry waits for every
older read view on the server). A claim reads its queue from the front of that index,
so while one transaction stays open for minutes (an analytics query, a request idle in
its transaction), every claim, and every idle worker's look, steps over the entries of
all the jobs claimed since it began: at 1,000 jobs/s, pickup p50 went from 1.2 ms to
16 ms in three minutes (``bench/pinned.py``), and at 2,000 jobs/s the backlog never
drained; on MariaDB at 500 jobs/s, a read view held ten minutes took the worker from
503 to 209 jobs done a second.

So while a transaction has held back the job tables' cleanup for ``HELD_FOR`` seconds,
a worker's claims start each queue where its last claim from it ended (``LAG`` earlier
by due time, for enqueues that committed out of order), and read from the front only
now and then: every ``FRONT_EVERY`` seconds, less often if reading the front takes
longer than ``FRONT_SHARE`` of that time.

The hazard, and why this is not how every claim reads: a job that sorts before a
queue's start (a higher priority than the jobs being claimed, an earlier fairness turn,
due more than ``LAG`` earlier, put back in line) waits for the next read from the
front, about a second. Outside such a window every claim reads from the front, and the
claim order is exact. PostgreSQL and MySQL say when a transaction holds the cleanup
back (:meth:`horizon_held_for`: on MySQL, the oldest read view on the server, which
needs the PROCESS privilege); on SQLite, and without that privilege, claims always read
from the front. The window ends with the transaction, or, where the database says how
much cleanup it has still to do (MySQL), once that is back to what it was when the
window opened: InnoDB's purge of minutes of jobs takes a while after the read view.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

from .connection import StoreConnection
from .rows import ClaimedJob

logger = logging.getLogger("taskmill.store")

#: A transaction open this long (seconds) on the job tables' horizon switches claims
#: to starting where the last one ended.
HELD_FOR = 10.0
#: How often (seconds) a claiming connection asks whether one is.
LOOK_EVERY = 5.0
#: How long before the last claimed job's due time a queue's start is (seconds): jobs
#: enqueued by a transaction that began earlier than another's, and committed later.
LAG = 1.0
#: Cleanup still to do past the window's start (InnoDB: transactions of history) that
#: counts as caught up once the transaction has ended. A claim or a completion is one
#: transaction for a batch of jobs: at 500 jobs/s about 30 a second, so this is half a
#: minute of history (bench/pinned.py: the window closed 31 s after a ten-minute hold, at
#: about 1,500 of the 16,000 left when it ended).
CAUGHT_UP_WITHIN = 1000
#: Reads from the front come at least this far apart (seconds)...
FRONT_EVERY = 1.0
#: ...and, when one takes longer, far enough apart to take no more than this share.
FRONT_SHARE = 0.05

#: The priorities a range may span (the column is a smallint).
HIGHEST, LOWEST = 32767, -32768
#: "From the first fairness turn and due time": the front of a priority.
FIRST_TURN = -(2 ** 63)
EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Start:
    """A point in claim order: at ``priority``, from fairness turn ``turn`` and due
    time ``due`` on."""

    priority: int
    turn: int
    due: dt.datetime

    @classmethod
    def after(cls, job: ClaimedJob, due: dt.datetime) -> Start:
        """Shortly before ``job`` (due at ``due``, with a time zone) in claim order."""
        return cls(job.priority, job.fair_rank, due - dt.timedelta(seconds=LAG))

    def order(self) -> tuple[int, int, dt.datetime]:
        """The sort key of claim order (priority first, highest first)."""
        return -self.priority, self.turn, self.due


@dataclass(frozen=True, slots=True)
class ClaimRange:
    """A range of a queue's claim index a claim reads: priorities ``top`` down to
    ``bottom``, from fairness turn ``turn`` and due time ``due`` on (the front of each
    priority: ``FIRST_TURN`` and ``EARLIEST``)."""

    queue: str
    top: int
    bottom: int
    turn: int
    due: dt.datetime

    @property
    def from_front(self) -> bool:
        """Whether the range starts at the front of its priorities."""
        return self.turn == FIRST_TURN and self.due == EARLIEST


class ClaimStarts(StoreConnection):
    """One connection's starts, per queue (a worker's claims run on one connection)."""

    #: When this connection last asked whether the cleanup is held back (monotonic).
    _horizon_looked_at = -math.inf
    #: Whether claims start past the claimed, as of that look: the cleanup held back
    #: for HELD_FOR seconds or more, or not yet caught up since (``_catching_up``).
    _horizon_held = False
    _catching_up = False
    #: The cleanup left to do when the window opened (:meth:`cleanup_backlog`).
    _backlog_at_open: int | None = None
    #: When the claim last read from the front, and how long that took (monotonic).
    _front_read_at = -math.inf
    _front_took = 0.0
    #: Whether the jobs claims step over are read now (see :meth:`blocked_read_due`).
    _blocked_read_due = True

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        super().__init__(connection)
        #: Each queue's start while the cleanup is held back: where the last claim
        #: from it ended.
        self._starts: dict[str, Start] = {}

    def horizon_held_for(self) -> float | None:
        """For how long (seconds) the oldest open transaction that holds back the
        cleanup of the job tables has been open (None: none, or not known here)."""
        return None

    def cleanup_backlog(self) -> int | None:
        """How much cleanup the database has yet to do, in its own unit (MySQL: InnoDB's
        history list length; None: not known here, or none kept back once the
        transaction ends, as vacuum's)."""
        return None

    def starts_past_claimed(self) -> bool:
        """Whether claims now start where the last one ended (asks the database every
        LOOK_EVERY seconds); starts are forgotten when the window ends.

        The window stays open after the transaction ends for as long as the cleanup it
        held back is larger than when the window opened (:meth:`cleanup_backlog`):
        InnoDB purges the entries of ten minutes of jobs over a minute or more, and
        until it has, each read from the front still walks them (pickup p99 4 s in the
        minute after a ten-minute hold at 500 jobs/s, bench/RESULTS.md). The hazard: the
        backlog is the whole server's, so other databases' work that purge falls behind
        on keeps the window open too (the claim order is exact only at each read from
        the front, every second or so)."""
        now = time.monotonic()
        if now - self._horizon_looked_at < LOOK_EVERY:
            return self._horizon_held
        self._horizon_looked_at = now
        held = self.horizon_held_for()
        was = self._horizon_held
        holding = held is not None and held >= HELD_FOR
        if holding and not was:
            self._backlog_at_open = self.cleanup_backlog()
            logger.info("A transaction has held back the job tables' cleanup (vacuum, "
                        "InnoDB's purge) for %.0f s: claims start past the jobs claimed "
                        "last.", held)
        backlog = None if holding or not was else self.cleanup_backlog()
        catching_up = (backlog is not None and self._backlog_at_open is not None
                       and backlog > self._backlog_at_open + CAUGHT_UP_WITHIN)
        if catching_up and not self._catching_up:
            logger.info("The transaction that held back the job tables' cleanup has ended; "
                        "claims start past the jobs claimed last until the cleanup has "
                        "caught up (%d to go, %d when it began).",
                        backlog, self._backlog_at_open)
        self._horizon_held, self._catching_up = holding or catching_up, catching_up
        if was and not self._horizon_held:
            logger.info("No transaction holds back the job tables' cleanup any more: "
                        "claims read from the front again.")
        if not self._horizon_held:
            self._starts = {}
        return self._horizon_held

    def front_read_due(self) -> bool:
        """Whether this claim reads every queue from the front: always outside a window,
        and in one when it is time to. A connection that has not read from the front
        lately (a fresh one: the test helpers make one for each look) does not ask."""
        wait = max(FRONT_EVERY, self._front_took / FRONT_SHARE)
        if time.monotonic() - self._front_read_at >= wait:
            return True
        return not self.starts_past_claimed()

    def read_ranges(self, queues: Sequence[str], *,
                    from_front: bool = False) -> list[ClaimRange]:
        """The ranges of the claim index a claim from the starts reads: each queue from
        its start (the rest of the start's priority from there, then the lower ones), or
        from the front (each queue, when ``from_front``)."""
        ranges: list[ClaimRange] = []
        for queue in queues:
            start = None if from_front else self._starts.get(queue)
            if start is None:
                ranges.append(ClaimRange(queue, HIGHEST, LOWEST, FIRST_TURN, EARLIEST))
                continue
            ranges.append(ClaimRange(queue, start.priority, start.priority, start.turn,
                                     start.due))
            if start.priority > LOWEST:
                ranges.append(ClaimRange(queue, start.priority - 1, LOWEST, FIRST_TURN,
                                         EARLIEST))
        return ranges

    def claim_ranges(self, queues: Sequence[str]) -> dict[str, Any]:
        """The parameters of PostgreSQL's ``claim_ranges``: :meth:`read_ranges` as
        parallel arrays."""
        ranges = self.read_ranges(queues)
        return {"range_queues": [r.queue for r in ranges], "top": [r.top for r in ranges],
                "bottom": [r.bottom for r in ranges], "turn": [r.turn for r in ranges],
                "due": [r.due for r in ranges]}

    def claimed_from(self, jobs: Sequence[ClaimedJob], *, from_front: bool,
                     took: float) -> None:
        """Move each queue's start past ``jobs``. After a read from the front, a queue's
        start is past what that read claimed from it, even if that is behind the start
        it had; a queue it claimed nothing from keeps its start (it had nothing to claim
        then, so nothing then waiting is left behind)."""
        if from_front:
            self._front_read_at, self._front_took = time.monotonic(), took
        if not self.starts_past_claimed():
            return
        # A read from the front sets the starts of the queues it claimed from anew.
        latest: dict[str, Start] = {} if from_front else self._starts
        for job in jobs:
            due = job.run_after  # Naive without USE_TZ: in the connection's time zone.
            if due.tzinfo is None:
                due = due.replace(tzinfo=self.connection.timezone)
            start = Start.after(job, due)
            known = latest.get(job.queue_name)
            if known is None or start.order() > known.order():
                latest[job.queue_name] = start
        if from_front:
            self._blocked_read_due = True
            self._starts.update(latest)

    def blocked_read_due(self) -> bool:
        """Whether an idle worker reads now the due jobs its claims stepped over (to park
        them): that read starts at the front too, so in a window only once after each
        claim that read from the front; always outside one."""
        if not self._horizon_held:
            return True
        due, self._blocked_read_due = self._blocked_read_due, False
        return due
