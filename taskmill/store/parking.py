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
  store: the API, the CLI and the admin).

Parking is an optimisation only. The claim still checks each job's key, and the limit
is still enforced after the claim under the key's lock (:mod:`.limits`), so a job
parked or unparked a moment too early or late never runs over the limit.

Hazard: a park can cross a completion of the same key or a resume of the same task
(which find nothing parked yet, then the park lands): the park therefore looks again
at what it parked and puts back what may start by then.

MySQL is not parked (no partial index would keep the parked jobs apart): its claims
still step over a full key's jobs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from .connection import StoreConnection

#: Most jobs parked by one idle worker's look; a deeper backlog takes several looks.
PARK_AT_ONCE = 10_000


class Parking(StoreConnection):
    #: Whether this database parks (see the module's docstring).
    parks = True

    def unpaused(self, queues: Sequence[str]) -> list[str]:
        """``queues`` without those paused as a whole (see ``Claiming.unpaused``)."""
        return list(queues)

    def park_blocked(self, queues: Sequence[str]) -> int:
        """Park the due jobs of ``queues`` whose concurrency key is full or whose task is
        paused; how many.

        Called by an idle worker, after a claim came back short. Reads the queues'
        unparked due jobs that may not start (what that claim stepped over), once. A
        queue paused as a whole is left alone: claims do not read it at all.
        """
        queues = self.unpaused(queues)
        if not self.parks or not queues:
            return 0
        found = self.fetchall("blocked_jobs", {"queues": self.list_param(queues),
                                               "limit": PARK_AT_ONCE})
        if not found:
            return 0
        ids = [self.id_from_db(job_id) for job_id, _key in found]
        parked = self.run("park_jobs", {"ids": self.ids_param(ids)})
        # A slot may have opened, or a pause been lifted, between the read and the
        # park: look again (see above). Keyed jobs go back as their keys have room.
        self.unpark_if_room({key for _job_id, key in found if key is not None})
        keyless = [job_id for job_id, (_, key) in zip(ids, found, strict=True) if key is None]
        if keyless:
            self.run("unpark_startable_of", {"ids": self.ids_param(keyless)})
        return parked

    def unpark_startable(self) -> int:
        """Put every parked job that may start now back in line (after a resume)."""
        return self.run("unpark_startable") if self.parks else 0

    def unpark_freed(self, keys: Iterable[str | None]) -> None:
        """Each key given freed one slot (a key given twice, two): unpark its best jobs."""
        if not self.parks:
            return
        for key, slots in Counter(key for key in keys if key is not None).items():
            self.run("unpark_jobs", {"key": key, "count": slots})

    def unpark_if_room(self, keys: Iterable[str] | None = None) -> int:
        """Unpark the best jobs of each key (None: every key with parked jobs) that has
        free slots, as many as it has; returns how many keys had room."""
        if not self.parks:
            return 0
        if keys is None:
            rows = self.fetchall("parked_keys_with_room")
        else:
            rows = self.fetchall("keys_with_room", {"keys": self.list_param(sorted(keys))})
        for key, room in rows:
            self.run("unpark_jobs", {"key": key, "count": int(room)})
        return len(rows)
