"""The reports' hour: closed minutes read once, then only the minutes since.

A poll grouped every job finished in the hour; with a busy hour (60,000 jobs) that was
most of the poll. Minutes that ended ``CLOSED_AFTER`` ago are kept once read, and a
worker counts each into ``FinishedMinute`` for every process's first read (and each
``taskmill status``); what a report reads is found in the statements it ran on the job
table.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from taskmill import minutes
from taskmill.models import FinishedMinute, Job, JobStatus
from taskmill.reporting import dashboard_snapshot, status_report
from tests.jobrows import job_row, make_jobs
from tests.maintenance import run_service

pytestmark = pytest.mark.django_db

_TIME = re.compile(r"(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?)")


@pytest.fixture(autouse=True)
def fresh_minutes():
    minutes.forget()
    yield
    minutes.forget()


@pytest.fixture
def keeping(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept however few jobs the window holds."""
    monkeypatch.setattr(minutes, "KEEP_ABOVE", 0)


def poll(report=lambda: dashboard_snapshot("default", lease_seconds=30)
         ) -> tuple[dict, list[dt.datetime]]:
    """A dashboard poll (or ``report``), and the earliest time each of its window
    statements on the job table read from."""
    with CaptureQueriesContext(connection) as captured:
        data = report()
    starts = []
    for query in captured.captured_queries:
        sql = query["sql"]
        if "taskmill_job" in sql and "finished_at" in sql and "GROUP BY" in sql:
            found = [dt.datetime.fromisoformat(t).replace(tzinfo=dt.UTC)
                     for t in _TIME.findall(sql)]
            starts.append(min(found))
    return data, starts


def late_row(minutes_ago: float, task: str) -> None:
    """A job recorded as finished ``minutes_ago`` by hand (an import), not by a worker."""
    Job.objects.bulk_create([job_row(JobStatus.SUCCESSFUL, ago=minutes_ago * 60, ran=0.1,
                                     task_path=task)])


def test_a_poll_after_the_first_reads_only_the_minutes_not_yet_closed(keeping):
    make_jobs(3, JobStatus.SUCCESSFUL, ago=10 * 60)
    make_jobs(2, JobStatus.FAILED, ago=30 * 60, task_path="app.tasks.broken")
    first, first_starts = poll()
    assert first["totals"]["succeeded"] == 3 and first["totals"]["failed"] == 2
    assert min(first_starts) < timezone.now() - dt.timedelta(minutes=55)

    make_jobs(4, JobStatus.SUCCESSFUL, ago=1)
    second, second_starts = poll()

    assert second["totals"]["succeeded"] == 7 and second["totals"]["failed"] == 2
    assert sum(p["succeeded"] for p in second["throughput"]) == 7
    assert sum(p["failed"] for p in second["throughput"]) == 2
    closed_by = timezone.now() - dt.timedelta(seconds=minutes.CLOSED_AFTER + 60)
    assert second_starts and min(second_starts) >= closed_by.replace(second=0, microsecond=0)


def test_a_row_written_into_a_kept_minute_is_counted_once_that_minute_is_read_again(
        keeping, monkeypatch):
    make_jobs(3, JobStatus.SUCCESSFUL, ago=10 * 60)
    assert poll()[0]["totals"]["succeeded"] == 3
    late_row(10, "app.tasks.imported")
    assert poll()[0]["totals"]["succeeded"] == 3  # Kept as read.

    monkeypatch.setattr(minutes, "REFRESH", 0.0)  # Each poll reads one kept minute again.
    counts = []
    while len(counts) < 60 and 4 not in counts:
        data, starts = poll()
        assert len(starts) == 2  # The open minutes, and one kept minute again.
        counts.append(data["totals"]["succeeded"])
    assert counts[-1] == 4, "the late row was never counted"
    assert counts[0] == 3  # The stalest minute first: not the one the late row is in.


def test_below_the_threshold_every_poll_reads_the_whole_window():
    make_jobs(3, JobStatus.SUCCESSFUL, ago=10 * 60)
    assert poll()[0]["totals"]["succeeded"] == 3
    late_row(10, "app.tasks.imported")
    data, starts = poll()
    assert data["totals"]["succeeded"] == 4
    assert min(starts) < timezone.now() - dt.timedelta(minutes=55)


def test_the_outcomes_and_the_chart_count_the_same_window(keeping):
    make_jobs(2, JobStatus.SUCCESSFUL, ago=59.5 * 60)  # In the chart's first minute, or out.
    make_jobs(5, JobStatus.SUCCESSFUL, ago=20 * 60)
    make_jobs(1, JobStatus.FAILED, ago=3 * 3600)  # Outside the hour.
    for _ in range(2):
        data, _ = poll()
        chart = sum(p["succeeded"] for p in data["throughput"])
        assert data["totals"]["succeeded"] == chart and chart in (5, 7)
        assert data["totals"]["failed"] == 0


def count_every_closed_minute(now: dt.datetime | None = None) -> int:
    """What a worker's ``minutes`` service does over its turns: every minute counted."""
    total = 0
    while counted := minutes.count_closed_minutes("default", now or timezone.now()):
        total += counted
    return total


def counted_jobs() -> dict[str, int]:
    """Jobs in the counts, per outcome."""
    found: dict[str, int] = {}
    for row in FinishedMinute.objects.exclude(status=""):
        found[row.status] = found.get(row.status, 0) + row.jobs
    return found


def test_each_closed_minute_is_counted_once_and_old_counts_are_dropped():
    make_jobs(3, JobStatus.SUCCESSFUL, ago=10 * 60)
    make_jobs(2, JobStatus.FAILED, ago=30 * 60, task_path="app.tasks.broken")
    make_jobs(4, JobStatus.SUCCESSFUL, ago=20)  # A minute not closed yet.
    now = timezone.now()
    FinishedMinute.objects.create(minute=int(now.timestamp()) // 60 - 5 * 60, jobs=7)

    assert count_every_closed_minute(now) == minutes.COUNTED_SPAN
    marks = sorted(FinishedMinute.objects.filter(status="").values_list("minute", flat=True))
    assert len(marks) == minutes.COUNTED_SPAN  # The old count is gone.
    assert marks[-1] * 60 <= now.timestamp() - minutes.CLOSED_AFTER - 60
    assert counted_jobs() == {JobStatus.SUCCESSFUL: 3, JobStatus.FAILED: 2}
    assert sum(FinishedMinute.objects.filter(status="").values_list("jobs", flat=True)) == 5

    assert minutes.count_closed_minutes("default", now) == 0
    # Counted again (as by a second worker at the same time): nothing is counted twice.
    FinishedMinute.objects.filter(minute=marks[-1], status="").delete()
    assert minutes.count_closed_minutes("default", now) == 1
    assert counted_jobs() == {JobStatus.SUCCESSFUL: 3, JobStatus.FAILED: 2}
    # A minute later, one more minute has closed.
    assert minutes.count_closed_minutes("default", now + dt.timedelta(minutes=1)) == 1


@pytest.mark.parametrize("report", ["dashboard", "status"])
def test_a_first_read_takes_the_minutes_a_worker_counted(report):
    """A fresh process's dashboard, and ``taskmill status``, read jobs only from the
    first minute not counted: a late row in a counted minute proves which was read."""
    make_jobs(3, JobStatus.SUCCESSFUL, ago=10 * 60)
    make_jobs(2, JobStatus.FAILED, ago=30 * 60, task_path="app.tasks.broken")
    make_jobs(1, JobStatus.SUCCESSFUL, ago=20)
    count_every_closed_minute()
    late_row(10, "app.tasks.imported")

    if report == "dashboard":
        data, starts = poll()
        totals = (data["totals"]["succeeded"], data["totals"]["failed"])
    else:
        data, starts = poll(lambda: status_report("default"))
        (queue,) = data["queues"]
        totals = (queue["counts"]["SUCCESSFUL"], queue["counts"]["FAILED"])

    assert totals == (4, 2)  # The late row is not in the counts, the newest job is.
    closed_by = timezone.now() - dt.timedelta(seconds=minutes.CLOSED_AFTER + 2 * 60)
    assert starts and min(starts) >= closed_by.replace(second=0, microsecond=0)


def test_without_counts_a_first_read_reads_the_whole_window():
    make_jobs(3, JobStatus.SUCCESSFUL, ago=10 * 60)
    data, starts = poll(lambda: status_report("default"))
    assert data["queues"][0]["counts"]["SUCCESSFUL"] == 3
    assert min(starts) < timezone.now() - dt.timedelta(minutes=55)


@pytest.mark.django_db(transaction=True)
def test_a_workers_maintenance_counts_the_minutes_on_its_own_connection():
    make_jobs(3, JobStatus.SUCCESSFUL, ago=10 * 60)
    run_service("minutes")
    assert FinishedMinute.objects.filter(status="").count() == minutes.COUNT_AT_MOST
