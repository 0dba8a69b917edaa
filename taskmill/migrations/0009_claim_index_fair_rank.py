"""The claim index gains the job's fairness turn (``fair_rank``, migration 0008); unique
keys get an index by enqueue time (``unique_period`` looks for a recent job of the key).

Claim order is priority, turn among fairness keys, due time, id; the index must read in
that order so a claim still stops after LIMIT rows. ``fair_rank`` is 0 for jobs without
a fairness key, so for them the order is what it was.

Not atomic, as 0007: MySQL cannot run DDL in a transaction, and PostgreSQL builds the
index CONCURRENTLY.
"""

from django.db import migrations

from ._vendor_sql import run

FORWARD = {
    "postgresql": [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_claim_fair ON taskmill_job "
        "(queue_name, priority DESC, fair_rank, run_after, id) WHERE status = 'READY'",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_claim_queue",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_unique_recent ON taskmill_job "
        "(unique_key, enqueued_at) WHERE unique_key IS NOT NULL",
    ],
    "sqlite": [
        "CREATE INDEX taskmill_job_claim_fair ON taskmill_job "
        "(queue_name, priority DESC, fair_rank, run_after, id) WHERE status = 'READY'",
        "DROP INDEX taskmill_job_claim_queue",
        "CREATE INDEX taskmill_job_unique_recent ON taskmill_job "
        "(unique_key, enqueued_at) WHERE unique_key IS NOT NULL",
    ],
    "mysql": [
        "CREATE INDEX taskmill_job_claim_fair_my ON taskmill_job "
        "(status, queue_name, priority DESC, fair_rank, run_after, id)",
        "DROP INDEX taskmill_job_claim_queue_my ON taskmill_job",
        "CREATE INDEX taskmill_job_unique_recent_my ON taskmill_job (unique_key, enqueued_at)",
    ],
}
BACKWARD = {
    "postgresql": [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_claim_queue ON taskmill_job "
        "(queue_name, priority DESC, run_after, id) WHERE status = 'READY'",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_claim_fair",
        "DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_unique_recent",
    ],
    "sqlite": [
        "CREATE INDEX taskmill_job_claim_queue ON taskmill_job "
        "(queue_name, priority DESC, run_after, id) WHERE status = 'READY'",
        "DROP INDEX taskmill_job_claim_fair",
        "DROP INDEX taskmill_job_unique_recent",
    ],
    "mysql": [
        "CREATE INDEX taskmill_job_claim_queue_my ON taskmill_job "
        "(status, queue_name, priority DESC, run_after, id)",
        "DROP INDEX taskmill_job_claim_fair_my ON taskmill_job",
        "DROP INDEX taskmill_job_unique_recent_my ON taskmill_job",
    ],
}



class Migration(migrations.Migration):
    atomic = False
    dependencies = [("taskmill", "0008_flow_control")]

    operations = [migrations.RunPython(run(FORWARD), run(BACKWARD), elidable=False)]
