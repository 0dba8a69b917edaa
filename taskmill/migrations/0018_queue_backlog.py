"""READY jobs per queue, a deep backlog counted by one worker (``QueueBacklog``).

A report counted each queue's backlog up to 100,001 itself: 37–122 ms on MariaDB beside
a million waiting jobs, in every process's first dashboard poll and every scrape that
counted again. Reports now count up to 10,001 and read a worker's count past that.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("taskmill", "0017_finished_minute"),
    ]

    operations = [
        migrations.CreateModel(
            name="QueueBacklog",
            fields=[
                ("queue_name", models.CharField(max_length=100, primary_key=True, serialize=False)),
                ("counted_at", models.DateTimeField()),
                ("ready", models.PositiveIntegerField()),
                ("due", models.PositiveIntegerField()),
            ],
            options={
                "verbose_name": "queue backlog",
            },
        ),
    ]
