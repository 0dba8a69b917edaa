"""An index of the deferred jobs (due later than they were enqueued: delayed, retrying,
snoozed), by queue and due time, for an idle worker's "when is the next one due?"
(``next_wake``). Jobs due at once are not in it, so the common enqueue and claim do not
maintain it.

Without it that question read every waiting job of the queue, blocked ones included
(200 ms to 0.7 s with 20,000 jobs behind a saturated concurrency key), on every idle
wait. MySQL has no partial indexes: there the question reads the claim index (see
docs/scaling.md). Not atomic: PostgreSQL builds the index CONCURRENTLY.
"""

from django.db import migrations

from ._vendor_sql import run

FORWARD = {
    "postgresql": [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_deferred ON taskmill_job "
        "(queue_name, run_after) WHERE status = 'READY' AND run_after > enqueued_at",
    ],
    "sqlite": [
        "CREATE INDEX taskmill_job_deferred ON taskmill_job "
        "(queue_name, run_after) WHERE status = 'READY' AND run_after > enqueued_at",
    ],
}
BACKWARD = {
    "postgresql": ["DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_deferred"],
    "sqlite": ["DROP INDEX taskmill_job_deferred"],
}


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("taskmill", "0009_claim_index_fair_rank")]

    operations = [migrations.RunPython(run(FORWARD), run(BACKWARD), elidable=False)]
