"""Reporting on a big history: the dashboard, the metrics scrape, ``taskmill status`` and
the admin's job list, with and without a million finished jobs in the table.

    .venv/bin/python bench/scale.py                     # PostgreSQL, 1,000,000 finished jobs
    .venv/bin/python bench/scale.py --rows 200000 --runs 9 --explain
    BENCH_DB=sqlite .venv/bin/python bench/scale.py     # or mysql
    BENCH_DB=mysql .venv/bin/python bench/scale.py --migration 0016   # an older schema
    .venv/bin/python bench/scale.py --reuse    # the last run's tables, again

The job table is also the history. Each report is timed (median of ``--runs``, after
one warm-up) on a table holding only the active jobs (a backlog of ``--backlog`` READY
jobs on queue ``backlog``, a tenth of them deferred, and ``--running`` RUNNING ones),
then again once ``--rows`` finished jobs are added: spread evenly over the past week, as
a site that prunes weekly keeps them (about 6,000 in the last hour at a million), and
counted per minute as a running worker counts them (not with ``--uncounted``). One line
per figure: ``name: <without> ms -> <with> ms (ratio)``, then, in rounds interleaved
with those, the figure as if no minute were counted and the ratio to it; each statement
on the job table follows, timed alone. ``--explain`` prints each statement's plan on the full table.
The database (``taskmill_scale``, or the file ``BENCH_SQLITE_NAME``) is created afresh.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
os.environ.setdefault("BENCH_ADMIN", "1")
os.environ.setdefault("BENCH_PG_NAME", "taskmill_scale")
os.environ.setdefault("BENCH_MYSQL_NAME", "taskmill_scale")
os.environ.setdefault("BENCH_SQLITE_NAME", os.path.join(tempfile.gettempdir(),
                                                        "taskmill-scale.sqlite3"))

from bench.drain import median_ms  # noqa: E402

WEEK = 7 * 24 * 3600

# One statement per database: generating the rows in the server is what makes a million
# of them take seconds rather than minutes. ``%(n)s`` rows, ``%(step)s`` seconds apart.
# Ids are time-ordered UUIDv7 as taskmill's are (older jobs, smaller ids): MySQL keeps
# rows in primary-key order, so jobs that finished together are stored together.
HISTORY = {
    "postgresql": """
INSERT INTO taskmill_job (id, backend, task_path, queue_name, priority, status, args, kwargs,
    enqueued_at, run_after, started_at, last_attempted_at, finished_at, attempts,
    max_attempts, retry_backoff, transactional, worker_ids, cancel_force)
SELECT (lpad(to_hex(%(n)s - g), 12, '0') || '7' || substr(md5(g::text), 1, 3) || '8'
            || substr(md5(g::text), 4, 15))::uuid, 'default',
    'bench.tasks.t' || g %% 20, 'default', 0,
    CASE WHEN g %% 50 = 0 THEN 'FAILED' ELSE 'SUCCESSFUL' END, '[]', '{}', t, t, t, t,
    t + interval '50 milliseconds', 1, 3, 2.0, false, 'bench:1:w', false
FROM generate_series(1, %(n)s) AS g,
     LATERAL (SELECT now() - g * %(step)s * interval '1 second' AS t) AS at""",
    "sqlite": """
INSERT INTO taskmill_job (id, backend, task_path, queue_name, priority, status, args, kwargs,
    enqueued_at, run_after, started_at, last_attempted_at, finished_at, attempts,
    max_attempts, retry_backoff, transactional, worker_ids, cancel_force)
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < %(n)s),
     at(n, t) AS (SELECT n, strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now',
                                      '-' || (n * %(step)s) || ' seconds') FROM g)
SELECT printf('%%012x', %(n)s - n) || '7' || substr(lower(hex(randomblob(9))), 1, 3) || '8'
            || substr(lower(hex(randomblob(9))), 1, 15), 'default',
    'bench.tasks.t' || (n %% 20), 'default', 0,
    CASE WHEN n %% 50 = 0 THEN 'FAILED' ELSE 'SUCCESSFUL' END, '[]', '{}', t, t, t, t, t,
    1, 3, 2.0, 0, 'bench:1:w', 0
FROM at""",
    "mysql": """
INSERT INTO taskmill_job (id, backend, task_path, queue_name, priority, status, args, kwargs,
    enqueued_at, run_after, started_at, last_attempted_at, finished_at, attempts,
    max_attempts, retry_backoff, transactional, worker_ids, cancel_force)
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < %(n)s)
SELECT CONCAT(LOWER(LPAD(HEX(%(n)s - n), 12, '0')), '7', SUBSTR(MD5(n), 1, 3), '8',
                  SUBSTR(MD5(n), 4, 15)), 'default',
    CONCAT('bench.tasks.t', n %% 20), 'default', 0,
    IF(n %% 50 = 0, 'FAILED', 'SUCCESSFUL'), '[]', '{}', t, t, t, t, t, 1, 3, 2.0, 0,
    'bench:1:w', 0
FROM (SELECT n, UTC_TIMESTAMP(6) - INTERVAL n * %(step)s SECOND AS t FROM g) AS at""",
}


def recreate_postgresql_database(name: str) -> None:
    """Drop the PostgreSQL database ``name`` if it exists, and create it empty."""
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}"')
        c.execute(f'CREATE DATABASE "{name}"')


def setup_database(migration: str = "") -> None:
    import django

    vendor = os.environ.get("BENCH_DB", "postgresql")
    if vendor == "postgresql":
        recreate_postgresql_database(os.environ["BENCH_PG_NAME"])
    elif vendor == "mysql":
        import MySQLdb

        c = MySQLdb.connect(host="127.0.0.1", user="root")
        name = os.environ["BENCH_MYSQL_NAME"]
        c.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        c.cursor().execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        c.close()
    else:
        Path(os.environ["BENCH_SQLITE_NAME"]).unlink(missing_ok=True)
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if migration:
        call_command("migrate", "taskmill", migration, verbosity=0)


def reuse_database() -> None:
    """The last run's tables, migrated to this checkout's schema. Its history ends when
    it was built: the reports' hour holds that much less of it, said first."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db.models import Max

    from taskmill.models import Job

    call_command("migrate", verbosity=0)
    newest = Job.objects.filter(status="SUCCESSFUL").aggregate(at=Max("finished_at"))["at"]
    if newest is not None:
        from django.utils import timezone

        ago = (timezone.now() - newest).total_seconds() / 60
        print(f"# reusing the tables built before; their newest job finished {ago:.0f} "
              "minutes ago", flush=True)


def execute(sql: str, params: Any = None) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if cursor.description:  # SQLite steps through a result only as it is fetched
            cursor.fetchall()


def analyze() -> None:
    """What autovacuum would have done by the time anyone looks at the dashboard."""
    from django.db import connection

    execute({"postgresql": "VACUUM ANALYZE taskmill_job", "sqlite": "ANALYZE",
             "mysql": "ANALYZE TABLE taskmill_job"}[connection.vendor])


def build_active(backlog: int, running: int) -> None:
    """The jobs every report counts: READY on ``backlog`` (a tenth deferred), RUNNING."""
    import datetime as dt

    from django.db import connection
    from django.utils import timezone

    from taskmill.ids import new_job_id
    from taskmill.models import Job, JobStatus, Worker

    for model in (Job, Worker):
        name = model._meta.db_table
        execute(f"DELETE FROM {name}" if connection.vendor == "sqlite" else f"TRUNCATE TABLE {name}")
    now = timezone.now()
    jobs = []
    for i in range(backlog):
        enqueued = now - dt.timedelta(seconds=backlog - i)
        due = enqueued + dt.timedelta(hours=1) if i % 10 == 0 else enqueued
        jobs.append(Job(id=new_job_id(), task_path="bench.tasks.t1", queue_name="backlog",
                        enqueued_at=enqueued, run_after=due))
    for _ in range(running):
        jobs.append(Job(id=new_job_id(), task_path="bench.tasks.t2", status=JobStatus.RUNNING,
                        enqueued_at=now, run_after=now, started_at=now, last_attempted_at=now,
                        attempts=1, lease_owner="bench:1:w", worker_ids="bench:1:w"))
    Job.objects.bulk_create(jobs, batch_size=2000)
    Worker.objects.create(id="bench:1:w", hostname="bench", pid=1, queues=["default"],
                          threads=running, started_at=now, last_heartbeat=now)


def build_history(rows: int) -> float:
    from django.db import connection, transaction

    started = time.perf_counter()
    with transaction.atomic():
        if connection.vendor == "mysql":
            execute("SET SESSION cte_max_recursion_depth = %s" % (rows + 1)
                    if "MariaDB" not in connection.mysql_server_info
                    else "SET SESSION max_recursive_iterations = %s" % (rows + 1))
        execute(HISTORY[connection.vendor] % {"n": rows, "step": WEEK / rows})
    return time.perf_counter() - started


def count_minutes() -> tuple[float, float]:
    """Count the closed minutes as a worker's ``minutes`` service does: seconds for all
    of its turns from nothing, and the median ms of a turn in steady state (one new
    minute: the last one's count dropped, then counted again)."""
    from taskmill import minutes
    from taskmill.models import FinishedMinute
    from taskmill.reporting import database_now

    started = time.perf_counter()
    while minutes.count_closed_minutes("default", database_now("default")):
        pass
    from_nothing = time.perf_counter() - started

    def one_minute() -> None:
        last = FinishedMinute.objects.order_by("-minute").values_list("minute", flat=True)[0]
        FinishedMinute.objects.filter(minute=last).delete()
        minutes.count_closed_minutes("default", database_now("default"))

    return from_nothing, median_ms(one_minute, 5)


def admin_job_list() -> None:
    """The job-table queries of the admin's job list, default page: filter choices, the
    capped count, the page itself (the template's rendering left out)."""
    from django.contrib.admin.sites import site
    from django.contrib.auth.models import User
    from django.test import RequestFactory
    from django.urls import ResolverMatch

    import taskmill.admin  # noqa: F401  (registers JobAdmin)
    from taskmill.models import Job

    request = RequestFactory().get("/admin/taskmill/job/")
    request.user = User(username="bench", is_active=True, is_staff=True, is_superuser=True)
    request.resolver_match = ResolverMatch(admin_job_list, (), {},
                                           url_name="taskmill_job_changelist")
    changelist = site._registry[Job].get_changelist_instance(request)
    for spec in changelist.filter_specs:
        list(spec.choices(changelist))
    list(changelist.result_list)


def count_backlogs() -> float:
    """Count the backlogs as a worker's ``backlogs`` service does (ms of one turn), and
    keep that count fresh through the run: a worker counts again every 10 s, and nothing
    here changes what it counted."""
    from taskmill import backlogs
    from taskmill.reporting import database_now

    backlogs.FRESH_FOR = 1e9  # about 30 years
    return median_ms(lambda: backlogs.count_backlogs("default", database_now("default")), 3)


def counting_as_far_as_a_worker(report: Callable[[], Any]) -> Callable[[], Any]:
    """``report`` as before a worker counted deep backlogs: counting each queue up to
    100,001 itself, the count a worker's would be."""
    from taskmill import backlogs

    def call() -> Any:
        cap = backlogs.REPORT_COUNT_CAP
        backlogs.REPORT_COUNT_CAP = backlogs.BACKLOG_COUNT_CAP
        try:
            return report()
        finally:
            backlogs.REPORT_COUNT_CAP = cap

    return call


def reports() -> dict[str, Callable[[], Any]]:
    from taskmill import minutes
    from taskmill.metrics import TaskmillCollector
    from taskmill.reporting import dashboard_snapshot, status_report

    def first_dashboard_poll() -> Any:
        minutes.forget()  # Nothing kept: as a process's first poll.
        return dashboard_snapshot("default", lease_seconds=30)

    def command_status() -> Any:
        minutes.forget()  # A command is a process of its own: nothing kept.
        return status_report("default")

    def scrape() -> Any:
        return list(TaskmillCollector("default").collect())

    return {
        "dashboard JSON, first poll": first_dashboard_poll,
        "dashboard JSON, first poll, counting as far as a worker":
            counting_as_far_as_a_worker(first_dashboard_poll),
        "dashboard JSON": lambda: dashboard_snapshot("default", lease_seconds=30),
        "metrics scrape": scrape,
        "metrics scrape, counting as far as a worker": counting_as_far_as_a_worker(scrape),
        "taskmill status": command_status,
        "taskmill status, counting as far as a worker": counting_as_far_as_a_worker(
            command_status),
        "admin job list": admin_job_list,
    }


def label(sql: str) -> str:
    """A statement in a few words: quotes, aliases and times left out."""
    text = re.sub(r'"taskmill_job"\.|`taskmill_job`\.|"|`', "", sql)
    text = re.sub(r"'\d{4}-\d\d-\d\d[^']*'(::timestamptz)?", "<time>", text)
    text = re.sub(r" AS \w+|\s+(?=\s)", "", text)
    if " FROM taskmill_job" not in text:
        return text[:150]
    head, tail = text.split(" FROM taskmill_job", 1)
    return f"{head.removeprefix('SELECT ')[:40]} … {tail.strip()}"[:150]


def uncounted(report: Callable[[], Any]) -> Callable[[], Any]:
    """``report`` as if no worker had counted the minutes (their counts unread)."""
    from taskmill import minutes

    def call() -> Any:
        counted = minutes._read_counted
        minutes._read_counted = lambda *args: {}  # type: ignore[assignment]
        try:
            return report()
        finally:
            minutes._read_counted = counted

    return call


def measure(runs: int, against: dict[str, float] | None = None
            ) -> dict[str, tuple[float, dict[str, float]]]:
    """Each report's median, and the median of each of its job-table statements alone.
    With ``against``, each report's median as if nothing were counted too (rounds
    interleaved with the others), put there by name."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    figures = {}
    for name, report in reports().items():
        if against is None:
            total = median_ms(report, runs)
        else:
            times: dict[bool, list[float]] = {True: [], False: []}
            for call in (report, uncounted(report)):
                call()  # Warm.
            for _ in range(runs):
                for counted, call in ((False, uncounted(report)), (True, report)):
                    started = time.perf_counter()
                    call()
                    times[counted].append((time.perf_counter() - started) * 1000)
            total = statistics.median(times[True])
            against[name] = statistics.median(times[False])
        with CaptureQueriesContext(connection) as captured:
            report()
        statements = {}
        for query in captured.captured_queries:
            if "taskmill_job" in query["sql"]:
                statements[label(query["sql"])] = median_ms(
                    lambda sql=query["sql"]: execute(sql.replace("%", "%%")), runs)
        figures[name] = (total, statements)
    return figures


def explain() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    prefix = {"postgresql": "EXPLAIN (ANALYZE, BUFFERS) ", "sqlite": "EXPLAIN QUERY PLAN ",
              "mysql": "EXPLAIN "}[connection.vendor]
    for name, report in reports().items():
        with CaptureQueriesContext(connection) as captured:
            report()
        for query in captured.captured_queries:
            if "taskmill_job" not in query["sql"]:
                continue
            print(f"\n## {name}: {label(query['sql'])}")
            with connection.cursor() as cursor:
                cursor.execute(prefix + query["sql"].replace("%", "%%"))
                for row in cursor.fetchall():
                    print("   ", " ".join(str(v) for v in row) if len(row) > 1 else row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="finished jobs")
    parser.add_argument("--backlog", type=int, default=10_000, help="READY jobs on 'backlog'")
    parser.add_argument("--running", type=int, default=20, help="RUNNING jobs")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per figure")
    parser.add_argument("--explain", action="store_true", help="print the plans (full table)")
    parser.add_argument("--uncounted", action="store_true",
                        help="no worker has counted the finished jobs per minute")
    parser.add_argument("--migration", default="",
                        help="taskmill's schema as of this migration (e.g. 0016), not the latest")
    parser.add_argument("--reuse", action="store_true",
                        help="the tables the last run built, migrated; no empty-table figures")
    args = parser.parse_args()
    if args.reuse:
        reuse_database()
    else:
        setup_database(args.migration)
    from django.db import connection

    before: dict[str, tuple[float, dict[str, float]]] = {}
    if not args.reuse:
        print(f"# taskmill reporting on {connection.vendor}: {args.backlog:,} READY, "
              f"{args.running} RUNNING; then + {args.rows:,} finished over a week; "
              f"median of {args.runs}", flush=True)
        build_active(args.backlog, args.running)
        analyze()
        print(f"# backlogs counted as a worker does: {count_backlogs():.1f} ms a turn",
              flush=True)
        before = measure(args.runs)
        seconds = build_history(args.rows)
        analyze()
        print(f"# history of {args.rows:,} rows built in {seconds:.1f} s", flush=True)
    not_counted: dict[str, float] | None = None
    if "taskmill_finishedminute" in connection.introspection.table_names() \
            and not args.uncounted:
        counting, turn = count_minutes()
        print(f"# minutes counted as a worker does: {counting:.2f} s from nothing, "
              f"{turn:.1f} ms a turn after", flush=True)
        not_counted = {}
    print(f"# backlogs counted as a worker does: {count_backlogs():.1f} ms a turn", flush=True)
    after = measure(args.runs, not_counted)
    for name, (total, statements) in after.items():
        empty, parts = before.get(name, (0.0, {}))
        line = (f"{name}: {empty:.1f} ms -> {total:.1f} ms ({total / empty:.2f}×)" if empty
                else f"{name}: {total:.1f} ms")
        if not_counted is not None:
            alone = not_counted[name]
            line += f"; nothing counted: {alone:.1f} ms (counted {total / alone:.2f}×)"
        print(line)
        for statement, ms in statements.items():
            was = parts.get(statement)
            shown = "   -   " if was is None else f"{was:.1f} ms"
            ratio = "" if was is None else f" ({ms / was:.2f}×)"
            print(f"    {shown} -> {ms:.1f} ms{ratio}  {statement}")
    if args.explain:
        explain()


if __name__ == "__main__":
    main()
