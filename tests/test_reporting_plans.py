"""What the dashboard, the metrics scrape and ``taskmill status`` read does not grow with
the history.

The job table is also the history: a busy site keeps millions of finished rows. Every
query those pages poll must read only the active jobs (through the partial claim index
and a RUNNING-only one) and the jobs finished inside their window (the ``finished_at``
index), never the table. Checked against the database's own account of each query
(EXPLAIN) on a history big enough that reading it shows. Plans and timings on 1,000,000
rows: ``docs/scaling.md``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from taskmill.metrics import TaskmillCollector
from taskmill.models import Job, JobStatus
from taskmill.reporting import dashboard_snapshot, status_report
from tests.jobrows import make_jobs
from tests.maintenance import run_service

pytestmark = pytest.mark.django_db(transaction=True)

#: Finished jobs of the history on PostgreSQL: enough that a statement reading them
#: shows, as a sequential scan or as hundreds of pages walked through an index.
HISTORY = 200_000
#: Elsewhere only the plan's shape is read, which a small history shows as well.
SMALL_HISTORY = 300
#: Pages a statement may touch: the active jobs and the window's are a few dozen rows.
#: Walking the history's 200,000 rows, even through an index, touches hundreds or more.
FEW_PAGES = 100
#: What the reports must count exactly: the active jobs and the last half hour.
WAITING, SCHEDULED, RUNNING, SUCCEEDED, FAILED = 40, 5, 7, 30, 4

HISTORY_SQL = """
INSERT INTO taskmill_job (id, backend, task_path, queue_name, priority, status, args, kwargs,
    enqueued_at, run_after, started_at, last_attempted_at, finished_at, attempts,
    max_attempts, retry_backoff, transactional, worker_ids, cancel_force)
SELECT gen_random_uuid(), 'default', 'tests.project.tasks.t' || g %% 20, 'default', 0,
    CASE WHEN g %% 50 = 0 THEN 'FAILED' ELSE 'SUCCESSFUL' END, '[]', '{}', t, t, t, t,
    t + interval '1 second', 1, 3, 2.0, false, 'old:1:w', false
FROM generate_series(1, %s) AS g,
     LATERAL (SELECT now() - interval '2 hours' - g * interval '1 second' AS t) AS at
"""


def build_history(rows: int) -> None:
    """Old finished jobs (before every report's window), then what the reports count."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(HISTORY_SQL, [rows])
    else:
        make_jobs(rows, JobStatus.SUCCESSFUL, ago=7200)
    make_jobs(WAITING, queue_name="backlog", ago=30)
    make_jobs(SCHEDULED, queue_name="backlog", ago=-600)  # run_after ten minutes ahead
    make_jobs(RUNNING, JobStatus.RUNNING, ago=5, lease_owner="web-1:1:w")
    make_jobs(SUCCEEDED, JobStatus.SUCCESSFUL, ago=600)
    make_jobs(FAILED, JobStatus.FAILED, ago=900)
    with connection.cursor() as cursor:
        # The statistics autovacuum would keep: without them the planner guesses.
        cursor.execute("ANALYZE taskmill_job" if connection.vendor != "mysql"
                       else "ANALYZE TABLE taskmill_job")
        if connection.vendor == "mysql":
            cursor.fetchall()


def scrape_metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    collector = TaskmillCollector("default", window=3600)
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in collector.collect() for sample in family.samples}


REPORTS: dict[str, Callable[[], Any]] = {
    "dashboard": lambda: dashboard_snapshot("default", lease_seconds=30),
    "metrics": scrape_metrics,
    "status": lambda: status_report("default"),
}


def job_queries(report: Callable[[], Any]) -> tuple[Any, list[str]]:
    """The report's result, and every statement it ran on the job table."""
    with CaptureQueriesContext(connection) as captured:
        result = report()
    return result, [q["sql"] for q in captured.captured_queries if "taskmill_job" in q["sql"]]


def history_reads(sql: str) -> list[str]:
    """How the statement reads taskmill_job beyond the rows it counts (empty: it does not).

    PostgreSQL: a sequential scan, or more pages touched than the active jobs and the
    window's hold (an index walked end to end, say ``status IN (...)`` matched against
    the second column of the task index, is no sequential scan but reads it all).
    SQLite: a ``SCAN`` of the table or of a full index; ``SEARCH`` and a scan of a
    partial index (READY or RUNNING rows only) read what they count.
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
            (plan,) = cursor.fetchone()
            top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
            found, nodes = [], [top]
            while nodes:
                node = nodes.pop()
                nodes.extend(node.get("Plans", []))
                if node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "taskmill_job":
                    found.append(f"{'Parallel ' if node.get('Parallel Aware') else ''}Seq Scan")
            pages = int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])
            if pages > FEW_PAGES:
                found.append(f"{pages} pages touched")
            return found
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                       "AND tbl_name = 'taskmill_job' AND sql LIKE '% WHERE %'")
        partial = {name for (name,) in cursor.fetchall()}
        cursor.execute("EXPLAIN QUERY PLAN " + sql)
        details = [str(row[-1]) for row in cursor.fetchall()]
    return [d for d in details if d.startswith("SCAN taskmill_job")
            and not any(d.endswith(f"INDEX {name}") for name in partial)]


def check_counts(dashboard: dict[str, Any], metrics: dict[Any, float],
                 status: dict[str, Any]) -> None:
    assert dashboard["totals"] == {
        "waiting": WAITING, "scheduled": SCHEDULED, "running": RUNNING,
        "succeeded": SUCCEEDED, "failed": FAILED,
        "failure_rate": FAILED / (SUCCEEDED + FAILED), "capped": False}
    assert sum(p["succeeded"] for p in dashboard["throughput"]) == SUCCEEDED
    assert sum(p["failed"] for p in dashboard["throughput"]) == FAILED
    assert len(dashboard["running"]) == RUNNING

    def jobs(queue: str, state: str) -> float:
        return metrics[("taskmill_queue_jobs", (("queue", queue), ("state", state)))]

    assert (jobs("backlog", "waiting"), jobs("backlog", "scheduled"),
            jobs("default", "running")) == (WAITING, SCHEDULED, RUNNING)
    finished = [("outcome", "successful"), ("queue", "default"),
                ("task", "tests.project.tasks.record")]
    assert metrics[("taskmill_recent_jobs_finished", tuple(finished))] == SUCCEEDED

    queues = {q["queue"]: q["counts"] for q in status["queues"]}
    assert queues == {
        "backlog": {"READY": WAITING + SCHEDULED, "RUNNING": 0, "SUCCESSFUL": 0, "FAILED": 0},
        "default": {"READY": 0, "RUNNING": RUNNING, "SUCCESSFUL": SUCCEEDED, "FAILED": FAILED},
    }
    assert status["finished_window_minutes"] == 60


def test_dashboard_metrics_and_status_read_no_history_and_count_right():
    if connection.vendor == "mysql":
        pytest.skip("MySQL's optimizer picks full scans of small tables whatever the "
                    "indexes; its plans on 1,000,000 rows are measured by bench/scale.py")
    build_history(HISTORY if connection.vendor == "postgresql" else SMALL_HISTORY)
    results, scans = {}, {}
    for name, report in REPORTS.items():
        results[name], statements = job_queries(report)
        assert statements, name
        for sql in statements:
            if found := history_reads(sql):
                scans[f"{name}: {sql[:200]}"] = found
    assert scans == {}
    check_counts(results["dashboard"], results["metrics"], results["status"])
    if connection.vendor == "postgresql":
        assert Job.objects.count() > HISTORY  # The history really is there.
        assert results["status"]["estimated_job_rows"] > HISTORY // 2


def test_the_counts_are_right_on_every_database():
    build_history(SMALL_HISTORY)
    check_counts(*(REPORTS[name]() for name in ("dashboard", "metrics", "status")))


@pytest.fixture
def low_cap(monkeypatch: pytest.MonkeyPatch):
    """Reports count up to 10 (and one) themselves, a worker up to 20."""
    from taskmill import backlogs

    monkeypatch.setattr(backlogs, "REPORT_COUNT_CAP", 10)
    monkeypatch.setattr(backlogs, "BACKLOG_COUNT_CAP", 20)


def counts_up_to(limit: int, statements: list[str]) -> bool:
    """Whether ``statements`` count READY jobs of some queue up to ``limit``."""
    return any(f"LIMIT {limit}" in sql and "READY" in sql for sql in statements)


def depths(report: dict[str, Any]) -> dict[str, tuple[int, bool]]:
    """READY jobs per queue in a dashboard's data, and whether more wait."""
    return {q["queue"]: (q["waiting"] + q["scheduled"], q["capped"]) for q in report["queues"]}


def test_a_backlog_past_the_cap_is_counted_up_to_it_and_said_to_be_more(low_cap):
    """Counting a backlog exactly means reading all of it: a million waiting jobs cost
    every poll a quarter of a second. Past its cap, a report says "more" instead, and
    reads no further."""
    make_jobs(30, queue_name="flood", ago=30)
    make_jobs(5, queue_name="trickle", ago=30)
    dashboard, statements = job_queries(lambda: dashboard_snapshot("default", lease_seconds=30))
    assert depths(dashboard) == {"flood": (11, True), "trickle": (5, False)}
    assert dashboard["totals"]["capped"] is True
    assert counts_up_to(11, statements) and not counts_up_to(21, statements)
    metrics = scrape_metrics()
    assert metrics[("taskmill_queue_jobs_capped", (("queue", "flood"),))] == 1
    assert metrics[("taskmill_queue_jobs_capped", (("queue", "trickle"),))] == 0
    assert metrics[("taskmill_queue_jobs", (("queue", "flood"), ("state", "waiting")))] == 11
    out = io.StringIO()
    call_command("taskmill", "status", stdout=out)
    assert "11+" in out.getvalue() and "counted up to 11 a queue" in out.getvalue()


def test_past_its_own_cap_a_report_shows_what_a_worker_counted(low_cap):
    """A worker counts every backlog further, every few seconds (the ``backlogs``
    service): every report shows that count, as deep as it went, and still counts no
    further itself."""
    from taskmill.backlogs import count_backlogs
    from taskmill.reporting import database_now

    make_jobs(30, queue_name="flood", ago=30)
    make_jobs(15, queue_name="stream", ago=30)
    make_jobs(5, queue_name="trickle", ago=30)
    assert count_backlogs("default", database_now("default")) == 3
    dashboard, statements = job_queries(lambda: dashboard_snapshot("default", lease_seconds=30))
    assert depths(dashboard) == {"flood": (21, True), "stream": (15, False),
                                 "trickle": (5, False)}
    assert not counts_up_to(21, statements)
    metrics, statements = job_queries(scrape_metrics)
    assert metrics[("taskmill_queue_jobs", (("queue", "stream"), ("state", "waiting")))] == 15
    assert metrics[("taskmill_queue_jobs_capped", (("queue", "stream"),))] == 0
    assert metrics[("taskmill_queue_jobs_capped", (("queue", "flood"),))] == 1
    assert not counts_up_to(21, statements)
    out = io.StringIO()
    call_command("taskmill", "status", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert (report["ready_counted_up_to"], report["ready_counted_by_a_worker_up_to"]) == (11, 21)
    queues = {q["queue"]: q for q in report["queues"]}
    assert (queues["stream"]["counts"]["READY"], queues["stream"]["capped"]) == (15, False)
    assert (queues["flood"]["counts"]["READY"], queues["flood"]["capped"]) == (21, True)


def test_a_workers_count_is_shown_only_while_it_is_recent(low_cap):
    """A count a minute old (no worker counting any more) is left unread: the report
    says "more than its own cap" rather than show a backlog long gone."""
    from taskmill import backlogs
    from taskmill.models import QueueBacklog
    from taskmill.reporting import database_now

    make_jobs(15, queue_name="stream", ago=30)
    backlogs.count_backlogs("default", database_now("default"))
    assert depths(dashboard_snapshot("default", lease_seconds=30))["stream"] == (15, False)
    QueueBacklog.objects.update(counted_at=database_now("default") - dt.timedelta(
        seconds=backlogs.FRESH_FOR + 1))
    assert depths(dashboard_snapshot("default", lease_seconds=30))["stream"] == (11, True)


def test_a_workers_count_drops_the_queues_that_no_longer_wait():
    from taskmill.backlogs import count_backlogs
    from taskmill.models import QueueBacklog
    from taskmill.reporting import database_now

    make_jobs(3, queue_name="gone", ago=30)
    make_jobs(2, queue_name="kept", ago=30)
    count_backlogs("default", database_now("default"))
    Job.objects.filter(queue_name="gone").update(status=JobStatus.SUCCESSFUL)
    count_backlogs("default", database_now("default"))
    assert dict(QueueBacklog.objects.values_list("queue_name", "ready")) == {"kept": 2}


def test_a_turn_out_of_time_leaves_the_queues_counted_longest_ago_for_the_next(monkeypatch):
    """A deep queue is 10–40 ms to count, and the turn holds up the maintenance thread's
    other services: past ``COUNT_BUDGET`` it stops (one queue at least), and the next
    turn goes on with the queues never counted, then those counted longest ago."""
    from taskmill import backlogs
    from taskmill.models import QueueBacklog
    from taskmill.reporting import database_now

    monkeypatch.setattr(backlogs, "COUNT_BUDGET", 0.0)
    for queue in ("alpha", "beta", "gamma"):
        make_jobs(2, queue_name=queue, ago=30)
    turns = []
    for second in range(4):
        now = database_now("default") + dt.timedelta(seconds=second)
        assert backlogs.count_backlogs("default", now) == 1
        turns.append(QueueBacklog.objects.get(counted_at=now).queue_name)
    assert sorted(turns[:3]) == ["alpha", "beta", "gamma"]
    assert turns[3] == turns[0]


def test_a_workers_count_writes_nothing_while_nothing_waits():
    """An idle worker counts every 10 s; on SQLite each write would wake every worker
    that watches the database file."""
    from taskmill.backlogs import count_backlogs
    from taskmill.reporting import database_now

    now = database_now("default")
    with CaptureQueriesContext(connection) as captured:
        assert count_backlogs("default", now) == 0
    writes = [q["sql"] for q in captured.captured_queries
              if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
    assert writes == []


@pytest.mark.django_db(transaction=True)
def test_a_workers_maintenance_counts_the_backlogs_on_its_own_connection():
    from taskmill.models import QueueBacklog

    make_jobs(4, queue_name="elsewhere", ago=30)
    run_service("backlogs")
    assert dict(QueueBacklog.objects.values_list("queue_name", "ready")) == {"elsewhere": 4}


def test_the_queues_with_waiting_jobs_are_found_without_reading_the_backlog():
    """MariaDB ran the recursive statement's correlated step as a walk of every READY job
    of the later queues: 200 ms a report beside a backlog of 1,000,000. It asks one
    index probe per queue found instead."""
    if connection.vendor != "mysql":
        pytest.skip("MySQL's handler counts; PostgreSQL's plan is checked above")
    from taskmill.store import get_store
    from tests.test_claim_plans import handler_reads

    make_jobs(2, queue_name="alpha", ago=30)
    make_jobs(3000, queue_name="zulu", ago=30)
    store = get_store("default")
    with transaction.atomic():
        store.ready_queues()  # Once untimed: a session's first look reads statistics.
        before = handler_reads()
        assert store.ready_queues() == ["alpha", "zulu"]
        assert handler_reads() - before < 50
