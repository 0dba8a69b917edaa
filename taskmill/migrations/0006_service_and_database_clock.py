"""Maintenance services, the batch pruning index, and PostgreSQL's clock as the default
enqueue time (a bulk enqueue's COPY cannot call now() per row)."""

from django.db import migrations, models

PG_FORWARD = [
    "ALTER TABLE taskmill_job ALTER COLUMN enqueued_at SET DEFAULT statement_timestamp()",
    "ALTER TABLE taskmill_job ALTER COLUMN run_after SET DEFAULT statement_timestamp()",
]
PG_BACKWARD = [
    "ALTER TABLE taskmill_job ALTER COLUMN enqueued_at DROP DEFAULT",
    "ALTER TABLE taskmill_job ALTER COLUMN run_after DROP DEFAULT",
]


def run_on_postgresql(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for sql in statements:
                schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("taskmill", "0005_batch_then_job")]

    operations = [
        migrations.CreateModel(
            name="Service",
            fields=[
                ("name", models.CharField(max_length=100, primary_key=True, serialize=False)),
                ("holder", models.CharField(blank=True, default="", max_length=100)),
                ("expires_at", models.DateTimeField()),
            ],
            options={"verbose_name": "maintenance service"},
        ),
        migrations.AddIndex(
            model_name="batch",
            index=models.Index(fields=["finished_at"], name="taskmill_batch_finished"),
        ),
        migrations.RunPython(run_on_postgresql(PG_FORWARD), run_on_postgresql(PG_BACKWARD),
                             elidable=False),
    ]
