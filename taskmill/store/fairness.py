"""``fairness_key``: jobs of different keys (tenants, say) take turns in their queue.

Start-time fair queuing, kept O(1) per enqueue and per claim:

- Each key has a counter of turns in ``taskmill_fairnessclock``; an enqueue gives each of
  its jobs the key's next turn (``fair_rank``). A burst of 100,000 jobs of one key takes
  turns n .. n+99,999; one job of another key takes its own next turn.
- The claim orders by ``priority DESC, fair_rank, run_after, id`` (the claim index has
  that order, migration 0009), so the keys' jobs interleave: a lone job waits behind at
  most one job of each other key with the same priority.
- Each queue also has a clock (the row with a blank key): the highest turn its claims
  have taken. A key's turns start no lower than it, so a key that was quiet for a week
  does not get a week of turns ahead of everybody.

Jobs without a key have turn 0: they go before fair-shared jobs of the same priority.
Hazard: an enqueue holds its key's counter row locked until it commits, so two
transactions enqueueing for one key at once wait for each other.
"""

from __future__ import annotations

from collections.abc import Sequence

from .connection import StoreConnection
from .rows import ClaimedJob, NewJob


class FairTurns(StoreConnection):
    def give_turns(self, jobs: Sequence[NewJob]) -> None:
        """Set ``fair_rank`` of each job that has a fairness key (inside the caller's
        transaction: the turns are the caller's once it commits)."""
        groups: dict[tuple[str, str], list[NewJob]] = {}
        for job in jobs:
            if job.fairness_key is not None:
                groups.setdefault((job.queue_name, job.fairness_key), []).append(job)
        if not groups:
            return
        with self.cursor() as cursor:
            for (queue, key), members in sorted(groups.items()):  # sorted: no deadlocks
                self.execute(cursor, "queue_turn", {"queue": queue})
                row = cursor.fetchone()
                floor = int(row[0]) if row else 0
                params = {"queue": queue, "key": key, "floor": floor, "count": len(members)}
                self.execute(cursor, "add_fairness_clock", params)
                self.execute(cursor, "take_turns", params)
                self.execute(cursor, "fairness_turn", params)
                (after,) = cursor.fetchone()
                for turn, job in enumerate(members, int(after) - len(members)):
                    job.fair_rank = turn

    def advance_queue_turns(self, jobs: Sequence[ClaimedJob]) -> None:
        """Move each queue's clock up to the highest turn just claimed in it."""
        reached: dict[str, int] = {}
        for job in jobs:
            if job.fairness_key is not None:
                reached[job.queue_name] = max(reached.get(job.queue_name, 0), job.fair_rank)
        if not reached:
            return
        with self.cursor() as cursor:
            for queue, rank in sorted(reached.items()):
                self.update_or_add(cursor, "advance_queue_turn", "add_fairness_clock",
                                   {"queue": queue, "key": "", "rank": rank})
