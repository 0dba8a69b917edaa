"""``concurrency_limit`` / ``concurrency_key``: at most N RUNNING jobs per key, everywhere;
and where rate limits (:mod:`.rates`) are enforced after a claim, in the same way.

Two steps, so that jobs without a key (the common case) pay nothing:

1. The claim skips jobs whose key is already full (``${room_for_key}`` in its ``WHERE``),
   so a waiting job is not claimed over and over while its key is busy.
2. That filter alone cannot hold the limit: one claim may take several jobs of a key,
   and two workers may claim at the same instant. So when (and only when) a claim took
   keyed jobs, :meth:`ConcurrencyLimits.enforce_limits` takes a lock per key, counts the
   key's RUNNING jobs, and gives the excess back as if never claimed (attempt refunded,
   place in line kept): a job waiting for a slot never burns an attempt.

The per-key lock: a transaction-scoped advisory lock on PostgreSQL; a row lock in
``taskmill_concurrency_lock`` (migration 0004) on MySQL/MariaDB; the database's single
write lock on SQLite. It is held until the claiming transaction commits, so the count
of the next claimer includes this one's jobs.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db.backends.utils import CursorWrapper

from .rates import LOCK_PREFIX, RateLimits
from .rows import ClaimedJob

#: First key of PostgreSQL advisory locks taken here (the second is the key's hash),
#: so they do not collide with the project's own single-key advisory locks.
ADVISORY_LOCK_CLASS = 0x746D  # "tm"


class ConcurrencyLimits(RateLimits):
    def enforce_limits(self, jobs: list[ClaimedJob], worker_id: str,
                       claimed_at: float) -> list[ClaimedJob]:
        """Keep the claimed jobs that fit their concurrency and rate limits; give the
        others back (the concurrency limit first: a job given back starts nothing).
        ``claimed_at``: when the claim statement was sent (``time.monotonic()``)."""
        keyed = [job for job in jobs if job.concurrency_key is not None]
        rated = [job for job in jobs if job.rate_key is not None]
        if not keyed and not rated:
            return jobs
        keys = sorted({job.concurrency_key for job in keyed if job.concurrency_key})
        rate_keys = sorted({LOCK_PREFIX + job.rate_key for job in rated if job.rate_key})
        # Every key locked, in one order for all (no deadlocks), until the transaction ends.
        with self.atomic(), self.cursor() as cursor:
            for key in keys + rate_keys:
                self.lock_key(cursor, key)
            excess = self._over_limit(cursor, keyed, keys) if keyed else []
            given_back = {job.id for job in excess}
            excess += self.over_rate(cursor, [j for j in rated if j.id not in given_back],
                                    worker_id, claimed_at)
            self.refund_claims(excess, worker_id)
        if not excess:
            return jobs
        dropped = {job.id for job in excess}
        return [job for job in jobs if job.id not in dropped]

    def lock_key(self, cursor: CursorWrapper, key: str) -> None:
        """Hold ``key``'s lock until the transaction ends."""
        self.execute(cursor, "lock_concurrency_key",
                     {"key": key, "lock_class": ADVISORY_LOCK_CLASS})

    def _over_limit(self, cursor: CursorWrapper, keyed: list[ClaimedJob],
                    keys: Sequence[str]) -> list[ClaimedJob]:
        """The claimed jobs that do not fit, best ones kept (``keyed`` is in claim order)."""
        self.execute(cursor, "claimed_limits", {"ids": self.ids_param([j.id for j in keyed])})
        limits = {self.id_from_db(job_id): limit for job_id, limit in cursor.fetchall()}
        excess = []
        for key in keys:
            self.execute(cursor, "running_for_key", {"key": key})
            (running,) = cursor.fetchone()
            mine = [job for job in keyed if job.concurrency_key == key]
            kept = running - len(mine)  # Other workers' running jobs of this key.
            for job in mine:
                if kept < (limits.get(job.id) or 1):
                    kept += 1
                else:
                    excess.append(job)
        return excess

    def refund_claims(self, jobs: Sequence[ClaimedJob], worker_id: str) -> int:
        """Undo the claim of jobs that never started: READY again, attempt refunded."""
        refunded = 0
        with self.cursor() as cursor:
            for job in jobs:
                refunded += self.execute(cursor, "refund_claim", {
                    **self.lease_params(job, worker_id),
                    "worker_ids": ",".join(job.worker_ids[:-1]),
                })
        return refunded
