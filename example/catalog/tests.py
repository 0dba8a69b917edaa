"""The example's own tests, written the way a project using taskmill would write them.

The form and the views run in ``TestCase`` with ``run_pending`` where no other process
is involved. The rebuild itself forks child processes that read products through their
own connections, so it needs committed data: ``TransactionTestCase`` with a worker.
"""

from __future__ import annotations

import io
import os

from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import TestCase, TransactionTestCase, override_settings
from django.urls import reverse

from taskmill import get_batch
from taskmill.compat import TaskResultStatus
from taskmill.testing import run_pending, worker

from .feeds import BadFeedRow, parse_feed
from .indexing import Chunk, index_range
from .models import CATEGORIES, IndexEntry, Product, Rebuild
from .tasks import (
    import_supplier_feed,
    publish_to_marketplace,
    rebuild_index,
    report_price_refresh,
    send_weekly_digest,
)


def seed(products: int) -> None:
    call_command("seed_catalog", products=products, stdout=io.StringIO())


class FormTests(TestCase):
    def test_the_form_enqueues_one_rebuild_and_a_second_submit_joins_it(self):
        seed(10)
        page = self.client.get(reverse("index"))
        self.assertContains(page, "Rebuild the search index")

        first = self.client.post(reverse("index"), {"slowdown_ms": 0})
        second = self.client.post(reverse("index"), {"slowdown_ms": 0}, follow=True)

        self.assertEqual(Rebuild.objects.count(), 1)
        self.assertRedirects(first, second.redirect_chain[0][0], fetch_redirect_response=False)
        self.assertContains(second, "already under way")
        status = self.client.get(reverse("rebuild-status", args=[Rebuild.objects.get().result_id]))
        self.assertEqual(status.json()["status"], "READY")

    def test_a_chunk_indexes_its_products_on_the_tests_connection(self):
        # index_range alone runs fine in-process: run it directly, no worker needed.
        seed(5)
        first, last = Product.objects.order_by("pk").values_list("pk", flat=True)[::4]
        self.assertEqual(index_range(Chunk(first, last)), (5, os.getpid()))
        self.assertEqual(IndexEntry.objects.count(), 5)

    def test_an_invalid_form_enqueues_nothing(self):
        response = self.client.post(reverse("index"), {"slowdown_ms": -1})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(run_pending(), 0)


class RebuildTests(TransactionTestCase):
    def test_a_rebuild_indexes_every_product_in_several_processes(self):
        seed(450)
        with worker() as running:
            response = self.client.post(reverse("index"), {"slowdown_ms": 0})
            result = rebuild_index.get_result(Rebuild.objects.get().result_id)
            running.wait(result, timeout=30)
        self.assertRedirects(response, reverse("rebuild", args=[result.id]))
        state = self.client.get(reverse("rebuild-status", args=[result.id])).json()
        self.assertEqual((state["status"], state["percent"]), ("SUCCESSFUL", 100))
        self.assertEqual(state["result"]["entries"], 450)
        self.assertEqual(IndexEntry.objects.count(), 450)
        pids = set(IndexEntry.objects.values_list("built_by_pid", flat=True))
        self.assertGreater(len(pids), 1)
        self.assertNotIn(os.getpid(), pids)

    def test_a_failed_rebuild_shows_its_error(self):
        seed(300)
        with worker() as running:
            self.client.post(reverse("index"), {"slowdown_ms": 0, "fail": "on"})
            result = rebuild_index.get_result(Rebuild.objects.get().result_id)
            running.wait(result, timeout=30)
        state = self.client.get(reverse("rebuild-status", args=[result.id])).json()
        self.assertEqual(state["status"], "FAILED")
        self.assertIn("BadProduct: Product #", state["error"])
        page = self.client.get(reverse("rebuild", args=[result.id]))
        self.assertContains(page, "simulated bad data")


class OperationsJobsTests(TestCase):
    """The small jobs of the page, each run by ``run_pending`` in the test's transaction."""

    def started(self) -> list[str]:
        return [entry["id"] for entry in self.client.session["catalog_started_jobs"]]

    def test_the_marketplace_publish_fails_once_then_is_retried(self):
        self.client.post(reverse("publish"))
        [job_id] = self.started()
        run_pending()  # The first attempt times out; the retry is due in about a second.
        result = publish_to_marketplace.get_result(job_id)
        self.assertEqual(result.status, TaskResultStatus.READY)
        self.assertEqual(len(result.errors), 1)
        self.assertIn("MarketplaceTimeout", result.errors[0].traceback)
        page = self.client.get(reverse("index"))
        self.assertContains(page, "Publish to the marketplace")
        self.assertContains(page, "attempt 1, 1 error(s)")

    def test_a_feed_with_a_bad_row_fails_for_good_and_imports_nothing(self):
        self.client.post(reverse("import-feed"), {"supplier": "borealis"})
        [job_id] = self.started()
        run_pending()
        result = import_supplier_feed.get_result(job_id)
        self.assertEqual(result.status, TaskResultStatus.FAILED)
        self.assertIn("BadFeedRow: Borealis Outdoor feed, line 4: price '12.9O'",
                      result.errors[-1].traceback)
        self.assertFalse(Product.objects.filter(name__startswith="Borealis").exists())

    def test_a_clean_feed_is_imported_once_however_often_it_runs(self):
        for _ in range(2):
            self.client.post(reverse("import-feed"), {"supplier": "northwind"})
            run_pending()
        self.assertEqual(Product.objects.filter(name__startswith="Northwind").count(), 3)
        self.assertEqual(len(parse_feed("northwind")), 3)
        with self.assertRaises(BadFeedRow):
            parse_feed("borealis")

    def test_an_unknown_feed_enqueues_nothing(self):
        self.client.post(reverse("import-feed"), {"supplier": "<script>"})
        self.assertEqual(run_pending(), 0)

    def test_the_price_refresh_is_a_batch_with_a_report(self):
        seed(60)
        self.client.post(reverse("refresh-prices"))
        [batch_id] = self.started()
        run_pending()
        batch = get_batch(batch_id)
        self.assertEqual((batch.total, batch.succeeded), (len(CATEGORIES), len(CATEGORIES)))
        report = report_price_refresh.get_result(batch.then_result_id)
        self.assertEqual(report.status, TaskResultStatus.SUCCESSFUL)
        self.assertEqual(report.return_value["products_repriced"], 60)
        self.assertContains(self.client.get(reverse("index")),
                            f"{len(CATEGORIES)} succeeded, 0 failed of {len(CATEGORIES)}")

    def test_the_weekly_digest_lists_the_newest_products(self):
        seed(7)
        result = send_weekly_digest.enqueue()
        run_pending()
        result.refresh()
        self.assertEqual(result.return_value["newest"][0], Product.objects.latest("pk").name)

    def test_the_jobs_forms_only_accept_posts(self):
        for name in ("publish", "import-feed", "refresh-prices"):
            self.assertEqual(self.client.get(reverse(name)).status_code, 405)


class OperationsPagesTests(TestCase):
    def test_the_page_links_to_the_admin_and_the_dashboard(self):
        page = self.client.get(reverse("index"))
        self.assertContains(page, f'href="{reverse("admin:taskmill_job_changelist")}"')
        self.assertContains(page, f'href="{reverse("taskmill:dashboard")}"')

    @override_settings(DEBUG=True)  # The test runner turns it off; the demo runs with it on.
    def test_the_demo_user_sees_the_admin_and_the_dashboard(self):
        call_command("demo_user", stdout=io.StringIO())
        # Both send a visitor to the admin's login page, which works for both.
        self.assertRedirects(self.client.get(reverse("taskmill:dashboard")),
                             f"{reverse('admin:login')}?next={reverse('taskmill:dashboard')}")
        login = self.client.post(reverse("admin:login"),
                                 {"username": "demo", "password": "demo", "next": "/taskmill/"})
        self.assertRedirects(login, "/taskmill/")
        self.assertContains(self.client.get(reverse("taskmill:dashboard")), 'data-total="waiting"')
        self.assertEqual(self.client.get(reverse("admin:taskmill_job_changelist")).status_code, 200)

    @override_settings(DEBUG=False)
    def test_no_demo_user_with_debug_off(self):
        with self.assertRaises(CommandError):
            call_command("demo_user", stdout=io.StringIO())
        self.assertFalse(get_user_model().objects.exists())
