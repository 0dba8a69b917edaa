"""A host whose clock is off: ``TASKMILL_TEST_CLOCK_SHIFT=25`` moves this process's wall
clock 25 seconds ahead (negative: behind), as NTP gone wrong would.

Python's wall clock only (``time.time``, ``time.time_ns`` and Django's ``timezone.now``,
which is what taskmill and Django read): monotonic clocks stay true, so sleeps and
timeouts behave. The
database's clock is not this process's: PostgreSQL's and MySQL's servers keep their own,
and SQLite's C library reads the system clock, which the shift does not touch.
"""

from __future__ import annotations

import datetime as dt
import time


def shift_wall_clock(seconds: float) -> None:
    if not seconds:
        return
    real_time, real_time_ns = time.time, time.time_ns
    shift_ns = int(seconds * 1e9)
    time.time = lambda: real_time() + seconds  # type: ignore[assignment]
    time.time_ns = lambda: real_time_ns() + shift_ns  # type: ignore[assignment]
    from django.utils import timezone

    timezone.now = lambda: dt.datetime.fromtimestamp(time.time(), dt.UTC)  # type: ignore[assignment]
