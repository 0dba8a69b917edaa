"""Now by the database's clock, without asking the database each time.

The store compares times in SQL with the database's own clock. A few decisions are made
in Python instead (which periodic tick is due), and they must agree across hosts whose
clocks disagree: :class:`DatabaseClock` measures how far this host's clock is from the
database's, every so often, and applies the difference.
"""

from __future__ import annotations

import datetime as dt
import time

from django.utils import timezone

from .base import JobStore

#: Seconds between two measurements of the offset (clocks drift slowly; NTP steps rarely).
REFRESH = 60.0


#: Added to a measurement's error: the two clocks' drift until the next one (NTP slews
#: a clock by at most 0.5 ms a second).
DRIFT = dt.timedelta(milliseconds=1)


class DatabaseClock:
    def __init__(self, store: JobStore, refresh: float = REFRESH) -> None:
        self.store = store
        self.refresh = refresh
        self._offset: dt.timedelta | None = None
        self._error = dt.timedelta(0)
        self._measured_at = 0.0

    def now(self) -> dt.datetime:
        """The database's time now (to within half a round trip of when it was measured)."""
        if self._offset is None or time.monotonic() - self._measured_at > self.refresh:
            before = timezone.now()
            database = self.store.database_now()
            after = timezone.now()
            self._offset = database - (before + (after - before) / 2)
            self._error = (after - before) / 2 + DRIFT
            self._measured_at = time.monotonic()
        return timezone.now() + self._offset

    def reached(self) -> dt.datetime:
        """A time the database's clock has certainly reached: :meth:`now` less that
        estimate's error. For what must never happen early on the database's clock (a
        periodic tick); ``now()`` alone may be ahead by up to half a round trip."""
        now = self.now()
        return now - self._error
