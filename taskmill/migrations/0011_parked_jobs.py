"""Parked jobs: READY jobs set aside while their concurrency key is full
(``Job.parked``, :mod:`taskmill.store.parking`).

Claims stepped over every waiting job of a full key on every wake: 140 ms a claim with
100,000 of them (``bench/hotpath.py``). The claim index gains ``parked`` after the queue,
so a claim reads the unparked range only, still in claim order; it keeps every READY
job, so counting a queue's backlog still reads it alone. A second partial index holds
the parked jobs by key, in claim order, for unparking the best few when a slot opens.

MySQL has no partial indexes and is not parked (its claim index is unchanged; see
docs/scaling.md). Not atomic: PostgreSQL builds the indexes CONCURRENTLY.
"""

from django.db import migrations, models

from ._vendor_sql import add_not_null_column, run

FORWARD = {
    "postgresql": [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_ready ON taskmill_job "
        "(queue_name, parked, priority DESC, fair_rank, run_after, id) WHERE status = 'READY'",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_claim_fair",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_parked ON taskmill_job "
        "(concurrency_key, priority DESC, fair_rank, run_after, id) "
        "WHERE status = 'READY' AND parked",
    ],
    "sqlite": [
        "CREATE INDEX taskmill_job_ready ON taskmill_job "
        "(queue_name, parked, priority DESC, fair_rank, run_after, id) WHERE status = 'READY'",
        "DROP INDEX taskmill_job_claim_fair",
        "CREATE INDEX taskmill_job_parked ON taskmill_job "
        "(concurrency_key, priority DESC, fair_rank, run_after, id) "
        "WHERE status = 'READY' AND parked",
    ],
}
BACKWARD = {
    "postgresql": [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_claim_fair ON taskmill_job "
        "(queue_name, priority DESC, fair_rank, run_after, id) WHERE status = 'READY'",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_ready",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_parked",
    ],
    "sqlite": [
        "CREATE INDEX taskmill_job_claim_fair ON taskmill_job "
        "(queue_name, priority DESC, fair_rank, run_after, id) WHERE status = 'READY'",
        "DROP INDEX taskmill_job_ready",
        "DROP INDEX taskmill_job_parked",
    ],
}


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("taskmill", "0010_deferred_jobs_index")]

    operations = [
        add_not_null_column("parked", lambda: models.BooleanField(db_default=False, default=False),
                            "bool NOT NULL DEFAULT 0"),
        migrations.RunPython(run(FORWARD), run(BACKWARD), elidable=False),
    ]
