"""MySQL and MariaDB park jobs too (:mod:`taskmill.store.parking`).

Without partial indexes they did not: a claim stepped over every due job of a full
concurrency key or a paused task, 129 ms a claim (and 103 ms an idle wait) beside
100,000 of them, against 0.5 ms on an empty table. Two existing indexes are widened
in place of new ones, so an enqueue writes no more index entries than before:

- the claim index gains ``parked`` after the queue, as PostgreSQL's did in 0011: a
  claim reads the queue's unparked range only, in claim order;
- the index of jobs by concurrency key gains ``parked`` and claim order: it still
  counts a key's RUNNING jobs (its first two columns), and now also finds a key's best
  parked jobs when a slot opens.

Jobs of a full rate key are not parked here: finding them by rate key takes an index
of its own (0015). Other databases: nothing to do. Not atomic:
MySQL cannot run DDL in a transaction.
"""

from django.db import migrations

from ._vendor_sql import run

FORWARD = {
    "mysql": [
        "CREATE INDEX taskmill_job_ready_my ON taskmill_job "
        "(status, queue_name, parked, priority DESC, fair_rank, run_after, id)",
        "DROP INDEX taskmill_job_claim_fair_my ON taskmill_job",
        "CREATE INDEX taskmill_job_key_my ON taskmill_job "
        "(status, concurrency_key, parked, priority DESC, fair_rank, run_after, id)",
        "DROP INDEX taskmill_job_conc_my ON taskmill_job",
    ],
}
BACKWARD = {
    "mysql": [
        "CREATE INDEX taskmill_job_claim_fair_my ON taskmill_job "
        "(status, queue_name, priority DESC, fair_rank, run_after, id)",
        "DROP INDEX taskmill_job_ready_my ON taskmill_job",
        "CREATE INDEX taskmill_job_conc_my ON taskmill_job (status, concurrency_key)",
        "DROP INDEX taskmill_job_key_my ON taskmill_job",
        # Parked jobs would be left out of the old claims for good.
        "UPDATE taskmill_job SET parked = FALSE WHERE parked",
    ],
}


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("taskmill", "0012_parked_rate_keys")]

    operations = [migrations.RunPython(run(FORWARD), run(BACKWARD), elidable=False)]
