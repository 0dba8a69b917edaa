"""``manage.py demo_check --url URL``: the demo's flow end to end, for CI.

Loads the site's front page, enqueues a rebuild as the form does, waits for a running
worker to finish it, and checks every product was indexed by several processes. Then
the operations side: the demo's other jobs end as they should (a retry that succeeds, an
import that fails with its traceback, a batch and its report), and the admin's job list
and the dashboard answer for the demo user, logged in through the admin's login page.
Exits non-zero with the reason otherwise.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from catalog.models import IndexEntry, Product
from catalog.tasks import rebuild_index, report_price_refresh
from taskmill import get_batch
from taskmill.compat import TaskResultStatus

from .demo_jobs import enqueue_demo_jobs
from .demo_user import PASSWORD, USERNAME

FINISHED = (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)
#: Seconds without progress after which a running job counts as stuck (a rebuild
#: reports progress several times a second).
STALLED = 30


class Command(BaseCommand):
    help = "Check the demo works: the site answers, a rebuild succeeds, the operations side too."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--url", required=True, help="The running site's address.")
        parser.add_argument("--timeout", type=float, default=120.0)

    def handle(self, *args: Any, **options: Any) -> None:
        url = options["url"].rstrip("/") + "/"
        self.deadline = time.monotonic() + options["timeout"]
        self.timeout = options["timeout"]
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read().decode()
        if "Rebuild the search index" not in page:
            raise CommandError(f"{url} did not show the rebuild form.")
        self.stdout.write(f"Site answers at {url}.")

        self.check_rebuild()
        self.check_operations_jobs()
        self.check_operations_pages(url)

    def wait(self, result: Any, what: str) -> Any:
        last, moved_at = None, time.monotonic()
        while result.status not in FINISHED:
            if time.monotonic() > self.deadline:
                raise CommandError(f"{what} ({result.id}) still {result.status} after "
                                   f"{self.timeout:.0f}s: is the worker running?")
            if result.progress and time.monotonic() - moved_at > STALLED:
                raise CommandError(
                    f"{what} ({result.id}) has reported no progress for {STALLED}s, at "
                    f"{last!r}: it is stuck. On SQLite, a parallel_map child process can "
                    "hang for ever on its first query when it was forked while another "
                    "thread of the worker was inside SQLite (a known taskmill issue); the "
                    "worker's processes show it (py-spy dump, or gdb).")
            time.sleep(0.2)
            result.refresh()
            if result.progress and result.progress.message != last:
                last, moved_at = result.progress.message, time.monotonic()
                self.stdout.write(f"  {last}")
        return result

    def check_rebuild(self) -> None:
        result = self.wait(rebuild_index.enqueue(slowdown_ms=0), "The rebuild")
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

    def check_operations_jobs(self) -> None:
        jobs = enqueue_demo_jobs()
        publish = self.wait(jobs.publish, "The marketplace publish")
        if publish.status != TaskResultStatus.SUCCESSFUL or len(publish.errors) != 1:
            raise CommandError(f"The marketplace publish should succeed on its second attempt; "
                               f"it ended {publish.status} with {len(publish.errors)} error(s).")
        bad_import = self.wait(jobs.bad_import, "The supplier feed import")
        if (bad_import.status != TaskResultStatus.FAILED
                or "BadFeedRow" not in bad_import.errors[-1].traceback):
            raise CommandError(f"The Borealis feed import should fail on its bad row; it ended "
                               f"{bad_import.status}.")
        batch = jobs.batch
        while batch.then_result_id is None:
            if time.monotonic() > self.deadline:
                raise CommandError(f"The price refresh batch {batch.id} has {batch.done} of "
                                   f"{batch.total} jobs done after {self.timeout:.0f}s.")
            time.sleep(0.2)
            batch = batch.refresh()
        report = self.wait(report_price_refresh.get_result(batch.then_result_id),
                           "The price refresh report")
        if report.status != TaskResultStatus.SUCCESSFUL or get_batch(batch.id).failed:
            raise CommandError(f"The price refresh batch {batch.id} did not succeed: "
                               f"report {report.status}.")
        self.stdout.write(self.style.SUCCESS(
            f"Operations jobs OK: a retry (attempt {publish.attempts} succeeded), a failure "
            f"with its traceback, a batch of {batch.total} jobs and its report."))

    def check_operations_pages(self, url: str) -> None:
        client = LoggedIn(url, USERNAME, PASSWORD)
        jobs_page = client.get("admin/taskmill/job/")
        if "catalog.tasks.rebuild_index" not in jobs_page:
            raise CommandError("The admin's job list does not show the rebuild.")
        dashboard = client.get("taskmill/")
        if 'data-total="waiting"' not in dashboard:
            raise CommandError("The dashboard page did not show its totals.")
        data = json.loads(client.get("taskmill/dashboard.json"))
        if data["totals"]["succeeded"] < 1 or data["totals"]["failed"] < 1:
            raise CommandError(f"The dashboard counts no success or no failure: {data['totals']}")
        self.stdout.write(self.style.SUCCESS(
            f"Admin and dashboard OK for the demo user {USERNAME!r}: {url}admin/taskmill/job/ "
            f"and {url}taskmill/"))


class LoggedIn:
    """A cookie-keeping HTTP client, logged in through the admin's login page."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        login = "admin/login/?next=/admin/"
        page = self.get(login)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if token is None:
            raise CommandError(f"{url}{login} did not show a login form.")
        body = urllib.parse.urlencode({"username": username, "password": password,
                                       "csrfmiddlewaretoken": token.group(1)}).encode()
        request = urllib.request.Request(url + login, data=body,
                                         headers={"Referer": url + login})
        with self.opener.open(request, timeout=10) as response:
            if "/admin/login/" in response.geturl():
                raise CommandError(f"Could not log in as {username!r} (was the demo user "
                                   "created? manage.py demo_user).")

    def get(self, path: str) -> str:
        try:
            with self.opener.open(self.url + path, timeout=10) as response:
                if "/admin/login/" in response.geturl() and "login" not in path:
                    raise CommandError(f"{self.url}{path} sent the demo user to the login page.")
                return response.read().decode()
        except urllib.error.HTTPError as error:
            raise CommandError(f"{self.url}{path} answered {error.code}.") from None
