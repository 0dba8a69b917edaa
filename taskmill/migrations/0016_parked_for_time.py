"""Jobs due later are parked until shortly before they are due (``Job.parked_for_time``,
:mod:`taskmill.store.deferred`).

A job due in an hour (delayed, retrying, snoozed) stayed in the claim index, behind the
due jobs of its priority: a claim that came back short, and an idle wait's first look,
stepped over every one of them. Beside 100,000 jobs due in an hour, nothing due: a
claim took 252 ms on MariaDB, 22 ms on SQLite and 11 ms on PostgreSQL, against 0.1 to
1 ms on an empty table (``bench/backlog.py``). Now an idle worker parks them, and they
come back in line a second before they are due, through an index of their own, by
queue and due time. The deferred index of 0010 now holds only the jobs in line, so the
park reads only what is left to park. MySQL has no partial indexes: a full one, led by
the flag, so a claim or a completion (which change only the status) never touch it.
Not atomic: PostgreSQL builds the indexes CONCURRENTLY.
"""

from django.db import migrations, models

from ._vendor_sql import add_not_null_column, run

IN_LINE = ("ON taskmill_job (queue_name, run_after) "
           "WHERE status = 'READY' AND run_after > enqueued_at AND parked = FALSE")
FOR_TIME = ("ON taskmill_job (queue_name, run_after) "
            "WHERE status = 'READY' AND parked_for_time = TRUE")
OLD_DEFERRED = ("ON taskmill_job (queue_name, run_after) "
                "WHERE status = 'READY' AND run_after > enqueued_at")
# Back in line: with the column gone, nothing would ever unpark them.
UNPARK_ALL = ("UPDATE taskmill_job SET parked = FALSE, parked_for_time = FALSE "
              "WHERE parked_for_time = TRUE")

FORWARD = {
    "postgresql": [
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_deferred_in_line {IN_LINE}",
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_parked_for_time {FOR_TIME}",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_deferred",
    ],
    "sqlite": [
        f"CREATE INDEX taskmill_job_deferred_in_line {IN_LINE}",
        f"CREATE INDEX taskmill_job_parked_for_time {FOR_TIME}",
        "DROP INDEX taskmill_job_deferred",
    ],
    "mysql": [
        "CREATE INDEX taskmill_job_parked_time_my ON taskmill_job "
        "(parked_for_time, queue_name, run_after)",
    ],
}
BACKWARD = {
    "postgresql": [
        UNPARK_ALL,
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_deferred {OLD_DEFERRED}",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_deferred_in_line",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_parked_for_time",
    ],
    "sqlite": [
        UNPARK_ALL,
        f"CREATE INDEX taskmill_job_deferred {OLD_DEFERRED}",
        "DROP INDEX taskmill_job_deferred_in_line",
        "DROP INDEX taskmill_job_parked_for_time",
    ],
    "mysql": [
        UNPARK_ALL,
        "DROP INDEX taskmill_job_parked_time_my ON taskmill_job",
    ],
}


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("taskmill", "0015_mysql_parked_rate_jobs")]

    operations = [
        add_not_null_column("parked_for_time",
                            lambda: models.BooleanField(db_default=False, default=False),
                            "bool NOT NULL DEFAULT 0"),
        migrations.RunPython(run(FORWARD), run(BACKWARD), elidable=False),
    ]
