"""``rate_limit`` / ``rate_key``: at most N starts per period for a key, everywhere.

A sliding window, kept as counts per slice of time (a fiftieth of the period) rather
than a row per start, so its cost does not grow with the rate:

- A claim counts, under the key's lock, the starts in the key's slices that overlap the
  last period, *whole*: the slice the window's edge cuts through counts in full. So the
  promise holds exactly: in every window of one period, at most N jobs of the key
  start. (A token bucket would let up to 2N through across a refill.) The price: room
  comes back up to two slices late, so a key runs at N per 1.02-1.04 periods at most.
- The claimed jobs that fit are counted in the current slice; the rest are given back
  with their attempt refunded, as for concurrency limits (:mod:`.limits`). A start
  counted more than ``REDATE_AFTER`` after its claim statement (which dated it: its
  ``last_attempted_at``) is dated again by the count: the claim may have waited long
  for the key's lock, and the stored times must keep the promise the window kept.
- The claim then records whether the window is full and until when
  (``taskmill_ratekey.full_until``: when its oldest slice leaves it). Claims pass over a
  full key's jobs by probing that one row (``room_for_rate``), so a waiting job is not
  claimed over and over; ``next_wake`` wakes an idle worker at that moment.

Jobs of a key wait in bursts: N start, then none until the oldest slice expires.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Sequence

from django.db.backends.utils import CursorWrapper

from .connection import StoreConnection
from .rows import ClaimedJob

#: Prefix of a rate key's lock, so it never shares a lock with a concurrency key.
LOCK_PREFIX = "rate:"
#: Slices per period: finer is closer to the exact rate, coarser sums fewer rows.
SLICES = 50
#: Seconds between a claim statement and the count of its starts past which the starts
#: are dated again by the count (a row update each: not worth it for less).
REDATE_AFTER = 0.01


def rate_window(key: str, period: float, now: float) -> dict[str, str | int]:
    """The ``rate_window`` parameters of ``key``'s window of ``period`` seconds ending
    ``now`` (epoch seconds): its current slice, and the slice its far edge cuts through
    (counted whole)."""
    current = math.floor(now / (period / SLICES))
    return {"key": key, "first": current - SLICES, "slice": current}


class RateLimits(StoreConnection):
    def over_rate(self, cursor: CursorWrapper, rated: Sequence[ClaimedJob],
                  worker_id: str, claimed_at: float) -> list[ClaimedJob]:
        """Of claimed jobs with a rate key (in claim order, the keys' locks held), count
        the starts that fit each key's window and return the others. ``claimed_at``: when
        the claim statement was sent (``time.monotonic()``)."""
        if not rated:
            return []
        moment = self.database_now()
        late = time.monotonic() - claimed_at > REDATE_AFTER
        now = moment.timestamp()
        admitted: list[ClaimedJob] = []
        excess: list[ClaimedJob] = []
        for key in sorted({job.rate_key for job in rated if job.rate_key}):
            mine = [job for job in rated if job.rate_key == key]
            limit = min(job.rate_limit or 1 for job in mine)
            period = min(job.rate_period or 1.0 for job in mine)
            window = rate_window(key, period, now)
            width, current = period / SLICES, int(window["slice"])
            self.execute(cursor, "rate_window_prune", window)
            self.execute(cursor, "rate_window", window)
            started, oldest = cursor.fetchone()
            room = max(0, limit - int(started))
            granted = len(mine[:room])
            if granted:
                self.execute(cursor, "add_rate_slice", window)
                self.execute(cursor, "count_rate_starts", {**window, "count": granted})
                admitted += mine[:room]
                oldest = current if oldest is None else oldest
            until = None
            if int(started) + granted >= limit and oldest is not None:
                # Room again once the oldest counted slice is out of the window.
                until = self.dt_param(dt.datetime.fromtimestamp(
                    (int(oldest) + SLICES + 1) * width, dt.UTC))
            self.update_or_add(cursor, "set_rate_key_full", "add_rate_key", {
                "key": key, "until": until,
                "has_parked": self.rate_key_has_parked(cursor, key)})
            excess.extend(mine[room:])
        if admitted and late:
            self.execute(cursor, "admit_rate_starts", {
                "ids": self.ids_param([job.id for job in admitted]),
                "now": self.dt_param(moment), "worker": worker_id})
        return excess

    def rate_key_has_parked(self, cursor: CursorWrapper, key: str) -> bool:
        """Whether jobs are parked for ``key``, for a database whose ``set_rate_key_full``
        cannot read it itself (MySQL); the others' statement reads it and ignores this."""
        return False
