"""Jobs finished per minute, each closed minute read once: the dashboard's last hour.

Why: the dashboard polls every two seconds and shows the hour's outcomes per queue and
task and its throughput per minute. Read afresh, every poll grouped every job finished
in the hour: with ten million kept over a week (60,000 an hour) that was 39 of a poll's
67 ms on PostgreSQL, and it grows with the hour's jobs, not with anything a poll shows
that is new. A minute that ended ``CLOSED_AFTER`` ago no longer changes (a job's finish
is dated by the statement that records it), so it is read once and kept in this
process; a poll reads the minutes since then and, when the stalest kept minute was read
more than ``REFRESH`` seconds ago, that one minute again.

Only where it pays: for a database whose window held fewer than ``KEEP_ABOVE`` finished
jobs at its last read, every poll reads the whole window (exact to the poll, as before).

Hazard: a job recorded with a finish time already ``CLOSED_AFTER`` in the past (rows
imported or made by hand), or deleted from a kept minute (a prune with a retention
shorter than the window), is counted as it was until that minute is read again: each
poll re-reads at most one kept minute, the one read longest ago, once it is older than
``REFRESH``.

A process's first read (a fresh web process, each ``taskmill status``) would still group
the whole hour: with 60,000 jobs that is 25 ms on PostgreSQL and 119 ms on MariaDB. So
one worker at a time counts each closed minute once, into ``FinishedMinute``
(:func:`count_closed_minutes`, the ``minutes`` maintenance service, every ``COUNT_EVERY``
seconds), and a read takes the minutes it finds counted there before it reads jobs. The
counts are read-only to every report, so a read replica serves them too. Without a
worker nothing is counted, and reads fall back to the jobs.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction
from django.db.models import CharField, Count, Max, QuerySet
from django.db.models.functions import Cast, Substr, TruncMinute
from django.utils import timezone

from .models import FinishedMinute, Job, JobStatus

__all__ = ["CLOSED_AFTER", "COUNTED_SPAN", "COUNT_AT_MOST", "COUNT_EVERY", "KEEP_ABOVE",
           "REFRESH", "Outcomes", "count_closed_minutes", "finished_per_minute",
           "finished_since", "forget", "outcome_counts", "throughput"]

#: Seconds after its end from which a minute's finished jobs are taken as settled.
CLOSED_AFTER = 120.0
#: Seconds after which a kept minute is read again (one minute a poll, the stalest).
REFRESH = 300.0
#: Finished jobs in a database's window below which every poll reads the whole window.
KEEP_ABOVE = 10_000
#: Seconds between two turns of the service that counts closed minutes.
COUNT_EVERY = 30.0
#: Closed minutes, back from the last, that stay counted (the reports show 60).
COUNTED_SPAN = 120
#: Most minutes one turn counts: a first turn on a busy history reads this many minutes
#: of jobs, not the whole span, and the next turns go on from there.
COUNT_AT_MOST = 30

MINUTE = dt.timedelta(minutes=1)

#: Jobs of one minute per (queue, task, status).
Outcomes = Counter[tuple[str, str, str]]


@dataclass
class _Kept:
    outcomes: Outcomes
    read_at: float  # time.monotonic()


_lock = threading.Lock()
_kept: dict[str, dict[dt.datetime, _Kept]] = {}
_window_total: dict[str, int] = {}


def finished_per_minute(database: str, start: dt.datetime,
                        now: dt.datetime) -> dict[dt.datetime, Outcomes]:
    """Jobs finished from ``start`` (a minute's start, UTC) to ``now`` (the database's
    clock), per minute (its start, UTC; only minutes that had any), queue, task and
    outcome."""
    closed_end = _closed_end(now)
    with _lock:
        kept = {m: entry for m, entry in _kept.get(database, {}).items() if m >= start}
        # Nothing known of the window yet (a process's first read): as a busy one.
        keeping = _window_total.get(database, KEEP_ABOVE) >= KEEP_ABOVE
    closed = [start + i * MINUTE for i in range(max(0, (closed_end - start) // MINUTE))]
    missing = [m for m in closed if m not in kept] if keeping else closed
    counted = _read_counted(database, missing[0], closed_end) if keeping and missing else {}
    # The jobs are read in one range: from the first minute neither kept nor counted.
    read_from = next((m for m in missing if m not in counted), max(start, closed_end))
    earlier = {m: kept[m].outcomes if m in kept else counted[m] for m in closed if m < read_from}
    minutes = {m: outcomes for m, outcomes in earlier.items() if outcomes}
    fresh = _read(database, read_from)
    minutes.update(fresh)
    read_at = time.monotonic()
    settled = {m: _Kept(fresh.get(m, Counter()), read_at) for m in closed if m >= read_from}
    settled.update((m, _Kept(counted[m], read_at)) for m in counted if m < read_from)
    stale = [m for m in closed
             if m in kept and m < read_from and read_at - kept[m].read_at > REFRESH]
    if stale:
        again = min(stale, key=lambda m: kept[m].read_at)
        outcomes = _read(database, again, again + MINUTE).get(again, Counter())
        settled[again] = _Kept(outcomes, read_at)
        minutes.pop(again, None)
        if outcomes:
            minutes[again] = outcomes
    with _lock:
        mine = {m: entry for m, entry in _kept.get(database, {}).items() if m >= start}
        mine.update(settled)
        _kept[database] = mine
        _window_total[database] = sum(n for counts in minutes.values() for n in counts.values())
    return minutes


def throughput(per_minute: Mapping[dt.datetime, Outcomes], start: dt.datetime,
               minutes: int = 60) -> list[dict[str, Any]]:
    """Jobs finished per minute from ``start`` (:func:`finished_per_minute`'s minutes),
    oldest first, empty minutes included."""
    points = []
    for i in range(minutes):
        minute = start + dt.timedelta(minutes=i)
        counts = {"succeeded": 0, "failed": 0}
        for (_, _, status), n in per_minute.get(minute, {}).items():
            counts["succeeded" if status == JobStatus.SUCCESSFUL else "failed"] += n
        points.append({"minute": minute.isoformat(), **counts})
    return points


def outcome_counts(per_minute: Mapping[dt.datetime, Outcomes]) -> list[Mapping[str, Any]]:
    """:func:`finished_counts`'s rows, summed from :func:`finished_per_minute`'s minutes."""
    total: Outcomes = Counter()
    for counts in per_minute.values():
        total.update(counts)
    return [{"queue_name": queue, "task_path": task, "status": status, "n": n}
            for (queue, task, status), n in total.items()]


def forget(database: str | None = None) -> None:
    """Drop the minutes kept for ``database`` (every database: None)."""
    with _lock:
        for alias in [database] if database is not None else list(_kept):
            _kept.pop(alias, None)
            _window_total.pop(alias, None)


def finished_since(database: str, since: dt.datetime) -> QuerySet[Job]:
    """SUCCESSFUL and FAILED jobs finished since ``since``: a range of the ``finished_at``
    index, however long the history."""
    return (Job.objects.using(database).order_by()
            .filter(status__in=[JobStatus.SUCCESSFUL, JobStatus.FAILED], finished_at__gte=since))


def count_closed_minutes(database: str, now: dt.datetime) -> int:
    """Count the closed minutes of the last ``COUNTED_SPAN`` not yet counted, oldest
    first and at most ``COUNT_AT_MOST``, into ``FinishedMinute``, and drop the counts of
    older minutes; ``now``: the database's clock. Returns how many minutes it counted.

    Minutes are counted in order, so those counted are the span's first ones up to the
    last counted: a turn goes on after it. Two workers counting the same minute at once
    write the same rows; the second's are ignored.
    """
    closed_end = _closed_end(now)
    earliest = closed_end - COUNTED_SPAN * MINUTE
    counts = FinishedMinute.objects.using(database)
    counts.filter(minute__lt=_number(earliest)).delete()
    last = (counts.filter(status="", minute__gte=_number(earliest))
            .aggregate(last=Max("minute"))["last"])
    start = earliest if last is None else max(earliest, _from_number(last) + MINUTE)
    end = min(closed_end, start + COUNT_AT_MOST * MINUTE)
    if start >= end:
        return 0
    found = _read(database, start, end)
    rows = []
    for minute in (start + i * MINUTE for i in range((end - start) // MINUTE)):
        outcomes = found.get(minute, Counter())
        rows += [FinishedMinute(minute=_number(minute), queue_name=queue, task_path=task,
                                status=status, jobs=n)
                 for (queue, task, status), n in outcomes.items()]
        # The mark that the minute is counted: it commits with the minute's rows.
        rows.append(FinishedMinute(minute=_number(minute), jobs=outcomes.total()))
    with transaction.atomic(using=database):
        counts.bulk_create(rows, batch_size=500, ignore_conflicts=True)
    return (end - start) // MINUTE


def _read_counted(database: str, since: dt.datetime,
                  until: dt.datetime) -> dict[dt.datetime, Outcomes]:
    """The minutes from ``since`` to ``until`` that a worker counted, with their counts
    (a range of the table's unique index)."""
    found: dict[int, Outcomes] = {}
    marked = set()
    rows = (FinishedMinute.objects.using(database)
            .filter(minute__gte=_number(since), minute__lt=_number(until))
            .values_list("minute", "queue_name", "task_path", "status", "jobs"))
    for minute, queue, task, status, n in rows:
        if status:
            found.setdefault(minute, Counter())[(queue, task, status)] += n
        else:
            marked.add(minute)
    return {_from_number(minute): found.get(minute, Counter()) for minute in marked}


def _number(minute: dt.datetime) -> int:
    """``FinishedMinute.minute`` of a minute's start."""
    return int(minute.timestamp()) // 60


def _from_number(number: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(number * 60, dt.UTC)


def _closed_end(now: dt.datetime) -> dt.datetime:
    """The end of the last closed minute at ``now``."""
    return _minute_of(now - dt.timedelta(seconds=CLOSED_AFTER))


def _minute_of(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(second=0, microsecond=0)


def _read(database: str, since: dt.datetime,
          until: dt.datetime | None = None) -> dict[dt.datetime, Outcomes]:
    """One pass over the ``finished_at`` index from ``since``, grouped by minute."""
    # SQLite: Django truncates times in a Python function, called for every row of the
    # window (37 ms for 6,000); the column's text ("YYYY-MM-DD HH:MM:SS...", UTC) is cut
    # to the minute in SQL instead.
    sqlite = connections[database].vendor == "sqlite"
    jobs = finished_since(database, since)
    if until is not None:
        jobs = jobs.filter(finished_at__lt=until)
    rows = (jobs.annotate(minute=Substr(Cast("finished_at", CharField()), 1, 16) if sqlite
                          else TruncMinute("finished_at", tzinfo=dt.UTC))
            .values("minute", "queue_name", "task_path", "status").annotate(n=Count("id")))
    found: dict[dt.datetime, Outcomes] = {}
    for row in rows:
        minute = row["minute"]
        if minute is None:
            continue
        if isinstance(minute, str):
            minute = dt.datetime.fromisoformat(minute)
        if timezone.is_naive(minute):
            minute = minute.replace(tzinfo=dt.UTC)
        key = (row["queue_name"], row["task_path"], row["status"])
        found.setdefault(minute.astimezone(dt.UTC), Counter())[key] += row["n"]
    return found
