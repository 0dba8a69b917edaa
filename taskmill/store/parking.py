"""Parked jobs: due jobs that may not start, set aside from the claims.

A job whose concurrency key is full, or whose task is paused, stays READY, and it
stays in the claim index in claim order, so every claim stepped over it and all its
like: 140 ms a claim with 100,000 of them waiting (``bench/hotpath.py``). So an idle
worker *parks* the due jobs of full keys and paused tasks it finds (``Job.parked``;
the claim index reads the unparked ones only, migration 0011), and they are put back:

- a key's best parked jobs, as many as slots opened: by a completion, in the
  transaction that records it; by a job handed back or recovered from a dead worker;
  and by the recovery service, for any key found with room (a slot freed some other
  way: a running job deleted by hand);
- every parked job that may start, when a pause is lifted (every lift goes through the
  store: the API, the CLI and the admin);
- a full rate key's best parked jobs, as many as its window has room for, once its room
  comes back: by the first worker to look after that moment (an idle worker wakes for
  it; every worker looks twice a second). The key's row carries a flag, set by the
  park and by every claim of the key while more of it is parked, and taken by the
  unpark, so each reopening is unparked once, and a key a claim left with room (the
  window's room comes back a slice at a time) is unparked at the next look; the
  recovery service flags any key left with room and parked jobs.

A job is parked for one key, the one that holds it back: its concurrency key (or its
task's pause) if that is full, else its rate key (``Job.parked_for_rate``, migration
0014). Each key's unpark reads only the jobs parked for it, through an index of their
own: one that walked past the other key's jobs would be O(backlog) when both keys are
full, and a slot handed to a job its rate key holds back would go unused. A job put
back while its other key is full is stepped over, and parked again for that key by
the next idle look: at most a key's limit (or slots) of such churn per reopening.

Parking is an optimisation only. The claim still checks each job's key, and the limit
is still enforced after the claim under the key's lock (:mod:`.limits`), so a job
parked or unparked a moment too early or late never runs over the limit.

Hazard: a park can cross a completion of the same key or a resume of the same task
(which find nothing parked yet, then the park lands): the park therefore looks again
at what it parked and puts back what may start by then. A park of a rate key that
crosses its reopening leaves the key flagged with room: the next look unparks it.

MySQL and MariaDB have no partial indexes: two of their indexes carry ``parked``
(migration 0013) and a full one finds the jobs parked for a rate key (0015); the
statements that would lock job rows from an UPDATE's subquery there read first
instead (:mod:`.mysql`).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .connection import StoreConnection
from .rates import rate_window

#: Most jobs parked by one idle worker's look; a deeper backlog takes several looks.
PARK_AT_ONCE = 10_000
#: Most jobs of one rate key put back in line at its reopening; the rest wait for the
#: next (a key reopens as each slice of its window expires, see :mod:`.rates`).
RATE_UNPARK_AT_ONCE = 1_000


class ParkedJob(NamedTuple):
    """A job a park found held back: by its concurrency key (its ``limit``) or a pause,
    or (``for_rate``) by its rate key alone."""

    id: uuid.UUID
    key: str | None
    limit: int | None
    rate_key: str | None
    for_rate: bool


class Parking(StoreConnection):
    def unpark_startable(self) -> int:
        """Put every parked job that may start now back in line (after a resume)."""
        return self.run("unpark_startable")

    def unpark_freed(self, keys: Iterable[str | None]) -> None:
        """Each key given freed one slot (a key given twice, two): unpark its best jobs."""
        for key, slots in Counter(key for key in keys if key is not None).items():
            self.run("unpark_jobs", {"key": key, "count": slots})

    def unpark_if_room(self) -> int:
        """Unpark the best jobs of every key with parked jobs and free slots, as many as
        it has, and flag every rate key with room and parked jobs for the next look (the
        backstop); returns how many concurrency keys had room."""
        self.flag_parked_rate_keys()
        rows = self.fetchall("parked_keys_with_room")
        for key, room in rows:
            self.run("unpark_jobs", {"key": key, "count": int(room)})
        return len(rows)

    def unpark_reopened_rates(self) -> int:
        """Unpark the best parked jobs of every flagged rate key whose room came back, as
        many as its window has room for (at most RATE_UNPARK_AT_ONCE); returns how many
        jobs.

        Taking the flag is a statement of its own, and so is the unpark: a transaction
        holding the key's row while it waits for job rows could deadlock with a park or
        a claim, which lock job rows first. A park in flight either flags the key after
        the take (the next look unparks its jobs) or before it (the take waits for it,
        and the unpark's fresh read sees its jobs). The flag stays off until the key
        fills up again (the claim that fills it flags it if more of it is parked):
        unparking more before then would only put more jobs in the claims' way. A look
        that dies between the take and the unpark leaves the key to the recovery
        service, which flags it again.
        """
        unparked = 0
        for (key,) in self.fetchall("reopened_rate_keys"):
            if not self.run("take_rate_key_unpark", {"key": key}):
                continue  # Another worker took it, or it filled up again.
            best = self.fetchone("parked_rate_limit", {"key": key})
            if best is None:
                continue  # Nothing of it is parked any more: the flag stays off.
            room = self.rate_room(key, int(best[0] or 1), float(best[1] or 1.0))
            if not room:
                continue  # Filled again meanwhile: the claim that filled it flagged it.
            queues = self.unpark_rate_jobs(key, min(room, RATE_UNPARK_AT_ONCE))
            # Idle workers that looked a moment before this committed sleep until their
            # next poll otherwise (every idle worker wakes at the reopening; one unparks).
            self.notify(set(queues))
            unparked += len(queues)
        return unparked

    def rate_room(self, key: str, limit: int, period: float) -> int:
        """How many more jobs of rate key ``key`` its window takes now: ``limit`` less the
        starts it counts, read without the key's lock (an estimate: the claims count
        under it). A window's room comes back a slice at a time as its starts leave it,
        so putting back the whole limit at each reopening put back jobs that the claims
        then stepped over and the next idle look parked again: 7.0 row updates a job
        instead of 4.7 (a backlog drained at 300/s by 2 processes x 4 threads)."""
        now = self.database_now().timestamp()
        row = self.fetchone("rate_window", rate_window(key, period, now))
        return max(0, limit - int(row[0] if row else 0))

    def unpark_rate_jobs(self, key: str, count: int) -> list[str]:
        """Put the best ``count`` jobs parked for rate key ``key`` back in line, passing
        over those another statement holds; the queue of each."""
        return [queue for (queue,) in self.fetchall("unpark_rate_jobs",
                                                    {"key": key, "count": count})]

    def flag_parked_rate_keys(self) -> None:
        """Flag every rate key with room and parked jobs, for the next look to unpark."""
        self.run("flag_parked_rate_keys")

    def recheck_parked(self, found: Sequence[ParkedJob]) -> None:
        """After parking ``found``: put back what may start by now, as a slot opened, a
        pause was lifted or a rate key's room came back while the park was on its way
        (see the module's docstring). A key's room is its limit less its running jobs,
        one probe of the RUNNING index each, not a count of what is parked."""
        limits: dict[str, int] = {}
        each = []  # Jobs looked at one by one: keyless ones, and those parked for rate.
        for job in found:
            if job.key is None or job.for_rate:
                each.append(job.id)
            else:
                limits[job.key] = min(limits.get(job.key, job.limit or 1), job.limit or 1)
        for key, limit in sorted(limits.items()):
            (running,) = self.fetchone("running_for_key", {"key": key}) or (0,)
            if running < limit:
                self.run("unpark_jobs", {"key": key, "count": limit - running})
        if each:
            self.run("unpark_startable_of", {"ids": self.ids_param(each)})
