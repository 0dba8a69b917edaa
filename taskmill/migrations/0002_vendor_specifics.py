"""What differs by database and the ORM cannot express.

* PostgreSQL: a statement-level trigger sends ``NOTIFY taskmill, '<queue>'`` for
  every insert of READY jobs, delivered when the enqueue commits; idle workers LISTEN.
* The claim, lease and concurrency indexes: partial (only the READY or RUNNING rows,
  which stay few however long the history grows) on PostgreSQL and SQLite; plain
  composite ones on MySQL/MariaDB, which have no partial indexes.
"""

from django.db import migrations

PG_FORWARD = """
CREATE OR REPLACE FUNCTION taskmill_notify_insert() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('taskmill', q.queue_name)
    FROM (SELECT DISTINCT queue_name FROM taskmill_new_jobs WHERE status = 'READY') AS q;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER taskmill_job_notify_insert
    AFTER INSERT ON taskmill_job
    REFERENCING NEW TABLE AS taskmill_new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION taskmill_notify_insert();
"""
PARTIAL_INDEXES = [
    # One READY or RUNNING job per unique key; rows without a key are not indexed at all.
    "CREATE UNIQUE INDEX taskmill_job_unique_active ON taskmill_job (active_unique_key) "
    "WHERE active_unique_key IS NOT NULL",
    # In claim order, so a claim reads LIMIT rows instead of sorting the backlog; the
    # queue is a filter (a worker's few queues hold most of what is READY).
    "CREATE INDEX taskmill_job_claim ON taskmill_job "
    "(priority DESC, run_after, id) WHERE status = 'READY'",
    "CREATE INDEX taskmill_job_lease ON taskmill_job (lease_owner) WHERE status = 'RUNNING'",
    "CREATE INDEX taskmill_job_conc ON taskmill_job (concurrency_key) WHERE status = 'RUNNING'",
    # Pruning and "finished in the last hour" reports.
    "CREATE INDEX taskmill_job_finished ON taskmill_job (finished_at, status) "
    "WHERE finished_at IS NOT NULL",
    "CREATE INDEX taskmill_job_batch ON taskmill_job (batch_id, status) "
    "WHERE batch_id IS NOT NULL",
]
DROP_PARTIAL_INDEXES = [
    "DROP INDEX taskmill_job_unique_active",
    "DROP INDEX taskmill_job_claim",
    "DROP INDEX taskmill_job_lease",
    "DROP INDEX taskmill_job_conc",
    "DROP INDEX taskmill_job_finished",
    "DROP INDEX taskmill_job_batch",
]
PG_BACKWARD = """
DROP TRIGGER IF EXISTS taskmill_job_notify_insert ON taskmill_job;
DROP FUNCTION IF EXISTS taskmill_notify_insert();
"""
MYSQL_FORWARD = [
    "CREATE UNIQUE INDEX taskmill_job_unique_active ON taskmill_job (active_unique_key)",
    "CREATE INDEX taskmill_job_claim_my ON taskmill_job "
    "(status, priority DESC, run_after, id)",
    "CREATE INDEX taskmill_job_lease_my ON taskmill_job (status, lease_owner)",
    "CREATE INDEX taskmill_job_conc_my ON taskmill_job (status, concurrency_key)",
    "CREATE INDEX taskmill_job_finished_my ON taskmill_job (finished_at, status)",
    "CREATE INDEX taskmill_job_batch_my ON taskmill_job (batch_id, status)",
]
MYSQL_BACKWARD = [
    "DROP INDEX taskmill_job_unique_active ON taskmill_job",
    "DROP INDEX taskmill_job_claim_my ON taskmill_job",
    "DROP INDEX taskmill_job_lease_my ON taskmill_job",
    "DROP INDEX taskmill_job_conc_my ON taskmill_job",
    "DROP INDEX taskmill_job_finished_my ON taskmill_job",
    "DROP INDEX taskmill_job_batch_my ON taskmill_job",
]


FORWARD = {
    "postgresql": [*PARTIAL_INDEXES, PG_FORWARD],
    "sqlite": PARTIAL_INDEXES,
    "mysql": MYSQL_FORWARD,
}
BACKWARD = {
    "postgresql": [*DROP_PARTIAL_INDEXES, PG_BACKWARD],
    "sqlite": DROP_PARTIAL_INDEXES,
    "mysql": MYSQL_BACKWARD,
}


def run_for_vendor(plan):
    def run(apps, schema_editor):
        for sql in plan.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    atomic = False  # MySQL cannot run DDL inside a transaction.
    dependencies = [("taskmill", "0001_initial")]

    operations = [
        migrations.RunPython(run_for_vendor(FORWARD), run_for_vendor(BACKWARD), elidable=False),
    ]
