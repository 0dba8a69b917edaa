"""A job is parked for its rate key even when it has a concurrency key too
(``Job.parked_for_rate``, :mod:`taskmill.store.parking`).

Only jobs without a concurrency key were parked for their rate key: one with both, its
rate key full and its concurrency key with room, was stepped over by every claim. Each
key's unpark must read only the jobs parked for that key, or it would walk past the
other key's (a slot of the concurrency key handed to a job its rate key still holds
back is lost until the next park): so the parked jobs' two partial indexes split on
the new column. Jobs parked before, without a concurrency key and with a rate key, are
the rate key's, as the old index had them. MySQL does not park for rate keys (0013):
the column is added, nothing else. Not atomic: PostgreSQL builds the indexes
CONCURRENTLY.
"""

from django.db import migrations, models

from ._vendor_sql import add_not_null_column, run

FOR_KEY = ("ON taskmill_job (concurrency_key, priority DESC, fair_rank, run_after, id) "
           "WHERE status = 'READY' AND parked AND NOT parked_for_rate")
FOR_RATE = ("ON taskmill_job (rate_key, priority DESC, fair_rank, run_after, id) "
            "WHERE status = 'READY' AND parked AND parked_for_rate")
OLD_FOR_KEY = ("ON taskmill_job (concurrency_key, priority DESC, fair_rank, run_after, id) "
               "WHERE status = 'READY' AND parked")
OLD_FOR_RATE = ("ON taskmill_job (rate_key, priority DESC, fair_rank, run_after, id) "
                "WHERE status = 'READY' AND parked AND rate_key IS NOT NULL "
                "AND concurrency_key IS NULL")
OLD_RATE_JOBS = ("UPDATE taskmill_job SET parked_for_rate = TRUE WHERE status = 'READY' "
                 "AND parked AND concurrency_key IS NULL AND rate_key IS NOT NULL")

FORWARD = {
    "postgresql": [
        OLD_RATE_JOBS,
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_parked_for_key {FOR_KEY}",
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_parked_for_rate {FOR_RATE}",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_parked",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_parked_rate",
    ],
    "sqlite": [
        OLD_RATE_JOBS,
        f"CREATE INDEX taskmill_job_parked_for_key {FOR_KEY}",
        f"CREATE INDEX taskmill_job_parked_for_rate {FOR_RATE}",
        "DROP INDEX taskmill_job_parked",
        "DROP INDEX taskmill_job_parked_rate",
    ],
}
BACKWARD = {
    "postgresql": [
        # Jobs with both keys parked for the rate one: the old unparks would miss them.
        "UPDATE taskmill_job SET parked = FALSE WHERE status = 'READY' AND parked "
        "AND parked_for_rate AND concurrency_key IS NOT NULL",
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_parked {OLD_FOR_KEY}",
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_parked_rate {OLD_FOR_RATE}",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_parked_for_key",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_parked_for_rate",
    ],
    "sqlite": [
        "UPDATE taskmill_job SET parked = FALSE WHERE status = 'READY' AND parked "
        "AND parked_for_rate AND concurrency_key IS NOT NULL",
        f"CREATE INDEX taskmill_job_parked {OLD_FOR_KEY}",
        f"CREATE INDEX taskmill_job_parked_rate {OLD_FOR_RATE}",
        "DROP INDEX taskmill_job_parked_for_key",
        "DROP INDEX taskmill_job_parked_for_rate",
    ],
}


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("taskmill", "0013_mysql_parked_jobs")]

    operations = [
        add_not_null_column("parked_for_rate",
                            lambda: models.BooleanField(db_default=False, default=False),
                            "bool NOT NULL DEFAULT 0"),
        migrations.RunPython(run(FORWARD), run(BACKWARD), elidable=False),
    ]
