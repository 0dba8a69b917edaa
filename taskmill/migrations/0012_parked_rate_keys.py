"""Jobs of a full rate key are parked too (``RateKey.parked``, :mod:`taskmill.store.parking`).

A claim stepped over every due job of a full rate key, probing the key for each: 52 ms
a claim beside 100,000 of them, and as much for every idle wait. An idle worker now
parks them, and a worker that sees the key's room come back puts the best of them back
in line. The parked ones are found by key, in claim order, through a partial index of
their own; the keys to look at, through one on the flagged rate keys.

Only jobs without a concurrency key are parked for their rate key (one with both is
parked for its concurrency key alone). MySQL is not parked (no partial indexes). Not
atomic: PostgreSQL builds the indexes CONCURRENTLY.
"""

from django.db import migrations, models

from ._vendor_sql import run

PARKED_RATE = ("ON taskmill_job (rate_key, priority DESC, fair_rank, run_after, id) "
               "WHERE status = 'READY' AND parked AND rate_key IS NOT NULL "
               "AND concurrency_key IS NULL")
FLAGGED = "ON taskmill_ratekey (full_until) WHERE parked"

FORWARD = {
    "postgresql": [f"CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_job_parked_rate {PARKED_RATE}",
                   f"CREATE INDEX CONCURRENTLY IF NOT EXISTS taskmill_ratekey_parked {FLAGGED}"],
    "sqlite": [f"CREATE INDEX taskmill_job_parked_rate {PARKED_RATE}",
               f"CREATE INDEX taskmill_ratekey_parked {FLAGGED}"],
}
BACKWARD = {
    "postgresql": ["DROP INDEX CONCURRENTLY IF EXISTS taskmill_job_parked_rate",
                   "DROP INDEX CONCURRENTLY IF EXISTS taskmill_ratekey_parked"],
    "sqlite": ["DROP INDEX taskmill_job_parked_rate", "DROP INDEX taskmill_ratekey_parked"],
}


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("taskmill", "0011_parked_jobs")]

    operations = [
        migrations.AddField("ratekey", "parked",
                            models.BooleanField(db_default=False, default=False)),
        migrations.RunPython(run(FORWARD), run(BACKWARD), elidable=False),
    ]
