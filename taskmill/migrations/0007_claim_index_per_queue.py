"""The claim index leads with the queue.

A claim reads one queue's READY jobs in claim order (priority, due time, id) and stops
after LIMIT rows, so neither the history nor another queue's backlog is read on the way.
The index of migration 0002 had no queue column: a worker of an idle queue walked every
due job of the busy ones on each wake. PostgreSQL's claim runs once per served queue
(see ``claim`` in ``store/sql/postgresql.sql``); MySQL and SQLite use the index as it
is for a worker of one queue.

Not atomic: MySQL cannot run DDL in a transaction, and PostgreSQL builds the index
CONCURRENTLY, so enqueues and claims go on while it reads a large table.
"""

from django.db import migrations

from ._vendor_sql import run

FORWARD = {
    "postgresql": [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_claim_queue ON taskmill_job "
        "(queue_name, priority DESC, run_after, id) WHERE status = 'READY'",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_claim",
    ],
    "sqlite": [
        "CREATE INDEX taskmill_job_claim_queue ON taskmill_job "
        "(queue_name, priority DESC, run_after, id) WHERE status = 'READY'",
        "DROP INDEX taskmill_job_claim",
    ],
    "mysql": [
        "CREATE INDEX taskmill_job_claim_queue_my ON taskmill_job "
        "(status, queue_name, priority DESC, run_after, id)",
        "DROP INDEX taskmill_job_claim_my ON taskmill_job",
    ],
}
BACKWARD = {
    "postgresql": [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_claim ON taskmill_job "
        "(priority DESC, run_after, id) WHERE status = 'READY'",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_claim_queue",
    ],
    "sqlite": [
        "CREATE INDEX taskmill_job_claim ON taskmill_job "
        "(priority DESC, run_after, id) WHERE status = 'READY'",
        "DROP INDEX taskmill_job_claim_queue",
    ],
    "mysql": [
        "CREATE INDEX taskmill_job_claim_my ON taskmill_job "
        "(status, priority DESC, run_after, id)",
        "DROP INDEX taskmill_job_claim_queue_my ON taskmill_job",
    ],
}



class Migration(migrations.Migration):
    atomic = False
    dependencies = [("taskmill", "0006_service_and_database_clock")]

    operations = [migrations.RunPython(run(FORWARD), run(BACKWARD), elidable=False)]
