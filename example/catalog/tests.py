"""The example's own tests, written the way a project using taskmill would write them.

The form and the views run in ``TestCase`` with ``run_pending`` where no other process
is involved. The rebuild itself forks child processes that read products through their
own connections, so it needs committed data: ``TransactionTestCase`` with a worker.
"""

from __future__ import annotations

import io
import os

from django.core.management import call_command
from django.test import TestCase, TransactionTestCase
from django.urls import reverse

from taskmill.testing import run_pending, worker

from .indexing import Chunk, index_range
from .models import IndexEntry, Product, Rebuild
from .tasks import rebuild_index


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
            running.wait(result, timeout=60)
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
            running.wait(result, timeout=60)
        state = self.client.get(reverse("rebuild-status", args=[result.id])).json()
        self.assertEqual(state["status"], "FAILED")
        self.assertIn("BadProduct: Product #", state["error"])
        page = self.client.get(reverse("rebuild", args=[result.id]))
        self.assertContains(page, "simulated bad data")
