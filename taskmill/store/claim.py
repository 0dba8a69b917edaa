"""Claim: lease the best due jobs to a worker; and when the next one is due.

The claim itself differs by database and lives in the vendor modules and SQL files;
what follows it (claim order, concurrency limits) is the same everywhere.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .limits import ConcurrencyLimits
from .rows import ClaimedJob


class Claiming(ConcurrencyLimits):
    def claim(self, queues: Sequence[str], limit: int, worker_id: str,
              now: dt.datetime) -> list[ClaimedJob]:
        """Take up to ``limit`` due READY jobs of ``queues``, best first, for ``worker_id``."""
        with self.claim_transaction():
            rows = self.claim_rows(queues, limit, worker_id, now)
            jobs = [self.row_to_claimed(row) for row in rows]
            jobs.sort(key=lambda j: (-j.priority, j.run_after, j.id))
            return self.enforce_limits(jobs, worker_id)

    @contextmanager
    def claim_transaction(self) -> Iterator[None]:
        """What a claim runs in: one statement needs nothing (autocommit saves two round
        trips); MySQL's three statements need a transaction (see :mod:`.mysql`)."""
        yield

    def claim_rows(self, queues: Sequence[str], limit: int, worker_id: str,
                   now: dt.datetime) -> list[Sequence[Any]]:
        """The claimed rows, ``${claim_columns}`` each: one ``claim`` statement."""
        with self.cursor() as cursor:
            self.execute(cursor, "claim", {"worker": worker_id, "now": self.dt_param(now),
                                           "queues": self.list_param(queues), "limit": limit})
            return list(cursor.fetchall())

    def next_due(self, queues: Sequence[str]) -> dt.datetime | None:
        """When the earliest READY job of ``queues`` becomes due (None: nothing waits)."""
        row = self.fetchone("next_due", {"queues": self.list_param(queues)})
        return self.dt_from_db(row[0]) if row else None
