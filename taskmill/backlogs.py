"""READY jobs per queue: a deep backlog counted by one worker, not by every report.

Why: a report (a dashboard poll, a metrics scrape, ``taskmill status``) counts a queue's
READY jobs through the claim index, which means reading every entry it counts: 100,001
took 11–34 ms on PostgreSQL and 37–122 ms on MariaDB, most of a report beside a million
waiting jobs, paid again by every process and every command. So a report counts up to
``REPORT_COUNT_CAP`` itself (exact below it, and cheap) and, for a queue over it, shows
what a worker counted up to ``BACKLOG_COUNT_CAP`` in the last ``FRESH_FOR`` seconds. One
worker at a time counts every queue that has READY jobs every ``COUNT_EVERY`` seconds
into ``QueueBacklog`` (:func:`count_backlogs`, the ``backlogs`` maintenance service),
within ``COUNT_BUDGET`` a turn: with many deep queues, those left go first next turn.

Hazard: a deep backlog's figure is up to ``FRESH_FOR`` seconds old (``COUNT_EVERY`` while
a worker keeps counting). Without a worker counting, a deep queue is shown as "more than
``REPORT_COUNT_CAP``".
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from django.db import connections, transaction
from django.db.models import Count, Min, Q

from .models import Job, JobStatus, QueueBacklog
from .store import get_store

__all__ = ["BACKLOG_COUNT_CAP", "COUNT_BUDGET", "COUNT_EVERY", "FRESH_FOR", "REPORT_COUNT_CAP",
           "ReadyCount", "count_backlogs", "count_ready", "counted_backlogs"]

#: A worker counts a queue's READY jobs up to this many and one.
BACKLOG_COUNT_CAP = 100_000
#: A report counts a queue's READY jobs up to this many and one itself (10,001 entries
#: take 2.5 ms on PostgreSQL and 5 ms on MariaDB; 100,001, 19 and 47 ms).
REPORT_COUNT_CAP = 10_000
#: Seconds between two turns of the service that counts the backlogs.
COUNT_EVERY = 10.0
#: Seconds a worker's count is shown for; an older one is left unread.
FRESH_FOR = 60.0
#: Seconds one turn may spend counting (it counts one queue at least), so that the
#: maintenance thread's other services wait no longer: the queues counted longest ago
#: go first, the rest at the next turns. A deep queue is 10–40 ms.
COUNT_BUDGET = 1.0


@dataclass(frozen=True)
class ReadyCount:
    #: READY jobs counted: up to the cap and one (then more wait).
    ready: int
    #: Of them, due now.
    due: int
    #: The earliest ``run_after`` of the due ones: None when none is, and in a worker's
    #: count (not stored: a report reads its own, which is fresher).
    oldest_due: dt.datetime | None = None


def count_ready(database: str, queue: str, now: dt.datetime, cap: int) -> ReadyCount:
    """``queue``'s READY jobs up to ``cap`` and one, in claim order: a range of the claim
    index, which holds ``run_after`` (an index-only read of at most ``cap + 1`` entries).

    The state is a literal in the statement: a partial index serves only a WHERE that
    implies its own."""
    due = Q(run_after__lte=now)
    first = (Job.objects.using(database).order_by()
             .filter(status=JobStatus.READY, queue_name=queue).values("run_after"))
    counted = first[:cap + 1].aggregate(n=Count("run_after"), due=Count("run_after", filter=due),
                                        oldest=Min("run_after", filter=due))
    return ReadyCount(counted["n"], counted["due"], counted["oldest"])


def count_backlogs(database: str, now: dt.datetime) -> int:
    """Count the queues that have READY jobs up to ``BACKLOG_COUNT_CAP`` into
    ``QueueBacklog``, those never counted or counted longest ago first, for up to
    ``COUNT_BUDGET`` seconds; drop the rows of queues that have none. ``now``: the
    database's clock. Returns how many queues it counted."""
    names = get_store(database).ready_queues()
    backlogs = QueueBacklog.objects.using(database)
    counted_at = dict(backlogs.values_list("queue_name", "counted_at"))
    if not names and not counted_at:
        return 0  # Nothing to write: an idle SQLite database's watchers are not woken.
    started = time.monotonic()
    rows: list[QueueBacklog] = []
    for name in sorted(names, key=lambda name: (name in counted_at, counted_at.get(name, now))):
        if rows and time.monotonic() - started >= COUNT_BUDGET:
            break
        counted = count_ready(database, name, now, BACKLOG_COUNT_CAP)
        rows.append(QueueBacklog(queue_name=name, counted_at=now, ready=counted.ready,
                                 due=counted.due))
    # MySQL's upsert names no conflict target: any unique key's conflict updates.
    target = (["queue_name"] if connections[database].features
              .supports_update_conflicts_with_target else None)
    with transaction.atomic(using=database):
        backlogs.exclude(queue_name__in=names).delete()
        backlogs.bulk_create(rows, update_conflicts=True, unique_fields=target,
                             update_fields=["counted_at", "ready", "due"])
    return len(rows)


def counted_backlogs(database: str, now: dt.datetime) -> dict[str, ReadyCount]:
    """The queues a worker counted in the last ``FRESH_FOR`` seconds, as counted."""
    fresh = (QueueBacklog.objects.using(database)
             .filter(counted_at__gte=now - dt.timedelta(seconds=FRESH_FOR)))
    return {row.queue_name: ReadyCount(row.ready, row.due) for row in fresh}
