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
    """A cap of 20 (`taskmill status`'s too), and nothing counted over it before."""
    from taskmill import reporting

    monkeypatch.setattr(reporting, "BACKLOG_COUNT_CAP", 20)
    monkeypatch.setattr(reporting, "STATUS_COUNT_CAP", 20)
    reporting.forget_capped_counts()
    yield
    reporting.forget_capped_counts()


def test_a_backlog_past_the_cap_is_counted_up_to_it_and_said_to_be_more(low_cap):
    """Counting a backlog exactly means reading all of it: a million waiting jobs cost
    every poll a quarter of a second. Past the cap, each report says "more" instead."""
    make_jobs(30, queue_name="flood", ago=30)
    make_jobs(5, queue_name="trickle", ago=30)
    dashboard = dashboard_snapshot("default", lease_seconds=30)
    queues = {q["queue"]: q for q in dashboard["queues"]}
    assert (queues["flood"]["waiting"], queues["flood"]["capped"]) == (21, True)
    assert (queues["trickle"]["waiting"], queues["trickle"]["capped"]) == (5, False)
    assert dashboard["totals"]["capped"] is True
    metrics = scrape_metrics()
    assert metrics[("taskmill_queue_jobs_capped", (("queue", "flood"),))] == 1
    assert metrics[("taskmill_queue_jobs_capped", (("queue", "trickle"),))] == 0
    assert metrics[("taskmill_queue_jobs", (("queue", "flood"), ("state", "waiting")))] == 21
    _, statements = job_queries(lambda: dashboard_snapshot("default", lease_seconds=30))
    assert any("LIMIT 21" in sql for sql in statements)  # Read no further than the cap.
    out = io.StringIO()
    call_command("taskmill", "status", stdout=out)
    assert "21+" in out.getvalue() and "counted up to 21 a queue" in out.getvalue()


def test_status_counts_less_far_than_the_dashboard(low_cap, monkeypatch):
    """A command keeps nothing between runs, so each ``taskmill status`` pays its count:
    it stops at its own, lower cap (100,001 entries took 122 ms on MariaDB)."""
    from taskmill import reporting

    monkeypatch.setattr(reporting, "STATUS_COUNT_CAP", 10)
    make_jobs(30, queue_name="flood", ago=30)
    make_jobs(5, queue_name="trickle", ago=30)
    out = io.StringIO()
    _, statements = job_queries(lambda: call_command("taskmill", "status", "--json", stdout=out))
    assert any("LIMIT 11" in sql for sql in statements)
    assert not any("LIMIT 21" in sql for sql in statements)
    report = json.loads(out.getvalue())
    queues = {q["queue"]: q for q in report["queues"]}
    assert (queues["flood"]["counts"]["READY"], queues["flood"]["capped"]) == (11, True)
    assert (queues["trickle"]["counts"]["READY"], queues["trickle"]["capped"]) == (5, False)
    assert report["ready_counted_up_to"] == 11
    dashboard = {q["queue"]: q for q in dashboard_snapshot("default", lease_seconds=30)["queues"]}
    assert (dashboard["flood"]["waiting"], dashboard["flood"]["capped"]) == (21, True)


def counts(queue: str, statements: list[str]) -> bool:
    """Whether ``statements`` count ``queue``'s READY jobs up to the low cap (20)."""
    return any("LIMIT 21" in sql and f"'{queue}'" in sql for sql in statements)


def test_the_dashboard_counts_a_queue_over_the_cap_again_only_after_a_while(
        low_cap, monkeypatch):
    """The cap's count is most of a poll beside a million waiting jobs (37 ms on MariaDB),
    for figures that say "more than" anyway: the dashboard counts such a queue again
    once RECOUNT_CAPPED_AFTER has passed. Queues under the cap are counted every poll."""
    from taskmill import reporting

    def poll() -> tuple[dict[str, dict], list[str]]:
        data, statements = job_queries(lambda: dashboard_snapshot("default", lease_seconds=30))
        return {q["queue"]: q for q in data["queues"]}, statements

    make_jobs(30, queue_name="flood", ago=30)
    make_jobs(5, queue_name="trickle", ago=30)
    queues, statements = poll()
    assert counts("flood", statements) and queues["flood"]["capped"]
    make_jobs(5, queue_name="trickle", ago=30)
    queues, statements = poll()
    assert not counts("flood", statements) and counts("trickle", statements)
    assert (queues["flood"]["waiting"], queues["flood"]["capped"]) == (21, True)
    assert queues["trickle"]["waiting"] == 10
    monkeypatch.setattr(reporting, "RECOUNT_CAPPED_AFTER", 0.0)
    assert counts("flood", poll()[1])


def test_a_scrape_counts_a_queue_over_the_cap_again_only_after_a_while(low_cap, monkeypatch):
    """As the dashboard, over a longer while (metrics.RECOUNT_CAPPED_AFTER): the count
    was 47 of a scrape's 57 ms on MariaDB beside a million waiting jobs."""
    from taskmill import metrics

    def waiting(values: dict, queue: str) -> float:
        return values[("taskmill_queue_jobs", (("queue", queue), ("state", "waiting")))]

    make_jobs(30, queue_name="flood", ago=30)
    make_jobs(5, queue_name="trickle", ago=30)
    assert counts("flood", job_queries(scrape_metrics)[1])
    make_jobs(5, queue_name="trickle", ago=30)
    values, statements = job_queries(scrape_metrics)
    assert not counts("flood", statements) and counts("trickle", statements)
    assert (waiting(values, "flood"), waiting(values, "trickle")) == (21, 10)
    assert values[("taskmill_queue_jobs_capped", (("queue", "flood"),))] == 1
    monkeypatch.setattr(metrics, "RECOUNT_CAPPED_AFTER", 0.0)
    assert counts("flood", job_queries(scrape_metrics)[1])


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
