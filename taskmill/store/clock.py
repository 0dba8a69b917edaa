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


class DatabaseClock:
    def __init__(self, store: JobStore, refresh: float = REFRESH) -> None:
        self.store = store
        self.refresh = refresh
        self._offset: dt.timedelta | None = None
        self._measured_at = 0.0

    def now(self) -> dt.datetime:
        """The database's time now (to within a round trip of when it was measured)."""
        if self._offset is None or time.monotonic() - self._measured_at > self.refresh:
            before = timezone.now()
            database = self.store.database_now()
            after = timezone.now()
            self._offset = database - (before + (after - before) / 2)
            self._measured_at = time.monotonic()
        return timezone.now() + self._offset
