"""MySQL and MariaDB park jobs for their rate key too (:mod:`taskmill.store.parking`).

Without it a claim stepped over every due job of a full rate key, probing the key for
each: 150 ms a claim and 121 ms an idle wait beside 100,000 of them (bench/backlog.py).
PostgreSQL and SQLite find a rate key's parked jobs through a partial index (0012,
0014); MySQL has none, so this is a full index. It leaves ``status`` out, so a claim or
a completion, which change only the status, never touch it; an enqueue writes one entry
more (a bulk enqueue 0.95-1.00x as fast on MariaDB: bench/mysql_index.py). A parked
job is always READY (a claim takes unparked jobs only, and a cancel ends a READY job's
parking with it), so the unparks filter the status per row without walking history.
Other databases: nothing to do. Not atomic: MySQL cannot run DDL in a transaction.
"""

from django.db import migrations

from ._vendor_sql import run

FORWARD = {
    "mysql": [
        "CREATE INDEX taskmill_job_parked_rate_my ON taskmill_job "
        "(rate_key, parked, parked_for_rate, priority DESC, fair_rank, run_after, id)",
    ],
}
BACKWARD = {
    "mysql": [
        # Parked for a rate key: the old unparks would never put them back.
        "UPDATE taskmill_job SET parked = FALSE WHERE parked AND parked_for_rate",
        "DROP INDEX taskmill_job_parked_rate_my ON taskmill_job",
    ],
}


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("taskmill", "0014_parked_for_rate")]

    operations = [migrations.RunPython(run(FORWARD), run(BACKWARD), elidable=False)]
