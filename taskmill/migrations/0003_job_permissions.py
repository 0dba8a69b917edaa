"""Permissions that gate the admin's job actions: retry, cancel, purge."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("taskmill", "0002_vendor_specifics"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="job",
            options={
                "ordering": ["-enqueued_at"],
                "permissions": [
                    ("retry_job", "Can retry jobs"),
                    ("cancel_job", "Can cancel jobs"),
                    ("purge_job", "Can purge waiting jobs"),
                ],
                "verbose_name": "job",
            },
        ),
    ]
