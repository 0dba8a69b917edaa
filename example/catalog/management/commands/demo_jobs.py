"""``manage.py demo_jobs``: start the jobs that show the operations side, for the demo.

``scripts/demo`` runs it once the worker is up, so that the admin and the dashboard have
something to show from the first minute: a job that fails once and succeeds on its retry,
an import that fails for good with its traceback, and a price refresh batch. (The
rebuild, with its progress bar, is the catalog page's own button; the weekly digest is
enqueued by the workers' scheduler.) Every one of them can be started again from the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.management.base import BaseCommand

from catalog.tasks import import_supplier_feed, publish_to_marketplace, refresh_prices


@dataclass(frozen=True)
class DemoJobs:
    publish: Any  # a TaskResult: fails once, then succeeds
    bad_import: Any  # a TaskResult: fails for good
    batch: Any  # a BatchStatus


def enqueue_demo_jobs() -> DemoJobs:
    return DemoJobs(publish=publish_to_marketplace.enqueue(),
                    bad_import=import_supplier_feed.enqueue("borealis"),
                    batch=refresh_prices())


class Command(BaseCommand):
    help = "Enqueue a retried job, a failing job and a batch, for the admin and the dashboard."

    def handle(self, *args: Any, **options: Any) -> None:
        jobs = enqueue_demo_jobs()
        self.stdout.write(f"Enqueued: a marketplace publish (fails once, then succeeds) "
                          f"{jobs.publish.id}, a supplier feed import (fails for good) "
                          f"{jobs.bad_import.id}, a price refresh batch of {jobs.batch.total} "
                          f"jobs {jobs.batch.id}.")
