"""``manage.py demo_check --url URL``: the demo's flow end to end, for CI.

Loads the site's front page, enqueues a rebuild as the form does, waits for a running
worker to finish it, and checks every product was indexed by several processes.
Exits non-zero with the reason otherwise.
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from catalog.models import IndexEntry, Product
from catalog.tasks import rebuild_index
from taskmill.compat import TaskResultStatus


class Command(BaseCommand):
    help = "Check the demo works: the site answers and a rebuild succeeds."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--url", required=True, help="The running site's address.")
        parser.add_argument("--timeout", type=float, default=120.0)

    def handle(self, *args: Any, **options: Any) -> None:
        with urllib.request.urlopen(options["url"], timeout=10) as response:
            page = response.read().decode()
        if "Rebuild the search index" not in page:
            raise CommandError(f"{options['url']} did not show the rebuild form.")
        self.stdout.write(f"Site answers at {options['url']}.")

        result = rebuild_index.enqueue(slowdown_ms=0)
        deadline = time.monotonic() + options["timeout"]
        last = None
        while result.status not in (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED):
            if time.monotonic() > deadline:
                raise CommandError(f"Rebuild {result.id} still {result.status} after "
                                   f"{options['timeout']:.0f}s: is the worker running?")
            time.sleep(0.2)
            result.refresh()
            if result.progress and result.progress.message != last:
                last = result.progress.message
                self.stdout.write(f"  {last}")
        if result.status != TaskResultStatus.SUCCESSFUL:
            raise CommandError(f"Rebuild failed:\n{result.errors[-1].traceback}")
        summary = result.return_value
        products = Product.objects.count()
        if summary["entries"] != products or IndexEntry.objects.count() != products:
            raise CommandError(f"Indexed {summary['entries']} of {products} products.")
        pids = IndexEntry.objects.values("built_by_pid").distinct().count()
        if summary["processes"] < 2 or pids < 2:
            raise CommandError(f"The rebuild was not split over several processes: {summary}")
        self.stdout.write(self.style.SUCCESS(
            f"Demo OK: {products} products indexed in {summary['seconds']}s, "
            f"{summary['processes']} processes at a time."))
