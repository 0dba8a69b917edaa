"""MySQL/MariaDB: one lock row per concurrency key.

MySQL has no transaction-scoped advisory locks, so the claim locks a row of this table
per ``concurrency_key`` (see :mod:`taskmill.store.limits`). PostgreSQL uses
``pg_advisory_xact_lock`` and SQLite its single write lock: nothing to create there.
"""

from django.db import migrations


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "mysql":
        schema_editor.execute(
            "CREATE TABLE taskmill_concurrency_lock (lock_key VARCHAR(255) NOT NULL PRIMARY KEY)"
        )


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "mysql":
        schema_editor.execute("DROP TABLE taskmill_concurrency_lock")


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("taskmill", "0003_job_permissions")]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
