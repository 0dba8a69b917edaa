"""Deferred jobs (due later: delayed, retrying, snoozed), kept out of the claims' way.

A job due in an hour stayed in the claim index behind the due jobs of its priority, so
every claim that came back short, and every idle wait's first look, stepped over all
of them: 252 ms a claim on MariaDB beside 100,000 jobs due in an hour and nothing due
(``bench/backlog.py``). So, as with the jobs of full keys (:mod:`.parking`), an idle
worker *parks* the jobs of its queues due more than ``AHEAD`` seconds from now
(``Job.parked_for_time``), and claims put them back in line through an index of their
own, by queue and due time (migration 0016), once they are due within ``AHEAD``
seconds:

- at most every ``UNPARK_EVERY`` seconds per connection, fewer than ``AHEAD``, so a
  busy worker puts a job back before it is due;
- and at once when an idle wait's look said something is due (the worker sleeps until
  that moment, then claims).

Jobs due sooner than ``AHEAD`` stay in line: claims step over at most that many
seconds' worth of them, and none of them waits for a look to come back.

Hazards: only the claims of a job's queue put it back, so a queue no worker serves
keeps its deferred jobs parked (as it keeps its due ones waiting). A job put back
while its concurrency key is full is stepped over, and parked again for that key by
the next idle look. More than ``UNPARK_AT_ONCE`` jobs coming due at once come back in
due order, that many per claim, so for those few claims priority orders each chunk
only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from .connection import StoreConnection
from .parking import PARK_AT_ONCE

#: Jobs due within this many seconds stay in line, and parked ones come back this early.
AHEAD = 1.0
#: How often a connection's claims look for parked jobs come due (less than AHEAD).
UNPARK_EVERY = 0.5
#: Most parked jobs put back in line by one claim.
UNPARK_AT_ONCE = 1_000


class DeferredJobs(StoreConnection):
    #: When this connection's claims next look for parked jobs come due (monotonic).
    _unpark_due_at = -math.inf

    def park_deferred(self, queues: Sequence[str]) -> int:
        """Park the jobs of ``queues`` due more than AHEAD seconds from now that are still
        in line (an idle worker's look); how many."""
        found = self.fetchall("deferred_in_line", {
            "queues": self.list_param(queues), "ahead": AHEAD, "limit": PARK_AT_ONCE})
        if not found:
            return 0
        ids = [self.id_from_db(job_id) for (job_id,) in found]
        return self.run("park_jobs_for_time", {"ids": self.ids_param(ids), "ahead": AHEAD})

    def unpark_due(self, queues: Sequence[str]) -> int:
        """Put the parked jobs of ``queues`` due within AHEAD seconds back in line (at
        most UNPARK_AT_ONCE: if that many, the next claim looks again); how many."""
        found = self.fetchall("due_parked_for_time", {
            "queues": self.list_param(queues), "ahead": AHEAD, "limit": UNPARK_AT_ONCE})
        more = len(found) == UNPARK_AT_ONCE
        self._unpark_due_at = time.monotonic() + (0.0 if more else UNPARK_EVERY)
        if not found:
            return 0
        ids = [self.id_from_db(job_id) for (job_id,) in found]
        return self.run("unpark_jobs_for_time", {"ids": self.ids_param(ids)})

    def unpark_due_if_time(self, queues: Sequence[str]) -> None:
        """:meth:`unpark_due`, if this connection's claims are due to look (a claim's
        first step: one round trip every UNPARK_EVERY seconds at most)."""
        if time.monotonic() >= self._unpark_due_at:
            self.unpark_due(queues)

    def look_again_in(self, seconds: float) -> None:
        """An idle look found something due in ``seconds``: the claim that follows the
        wait looks for parked jobs come due, whatever the last look's time."""
        self._unpark_due_at = min(self._unpark_due_at, time.monotonic() + max(0.0, seconds))
