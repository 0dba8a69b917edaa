"""The catalog's background jobs.

The main one rebuilds the search index, split over several processes, with progress.
The others are small and show the operations side (the admin, the dashboard): a job
that fails once and succeeds on its retry, one that fails for good with a traceback, a
periodic one (``TASKMILL_SCHEDULE`` in the settings) and a batch with a follow-up job.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from django.conf import settings
from django.db import transaction

from taskmill import enqueue_batch, get_batch, parallel_map, task
from taskmill.compat import TaskResultStatus

from .feeds import parse_feed
from .indexing import Chunk, index_range
from .models import CATEGORIES, IndexEntry, Product, products_in

logger = logging.getLogger(__name__)

#: Products per chunk handed to a child process.
CHUNK_SIZE = 100


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


#: Seconds a rebuild may take. It takes seconds; one still running after five minutes is
#: stuck, and ends FAILED (JobTimeout) instead of holding the unique key for ever.
REBUILD_TIMEOUT = 300


@task(takes_context=True, unique=True, unique_key="catalog.rebuild_index", max_attempts=1,
      timeout=REBUILD_TIMEOUT)
def rebuild_index(context: Any, slowdown_ms: int = 0, fail: bool = False) -> dict[str, Any]:
    """Re-index every product. ``unique``: a second request while one runs gets this one."""
    started = time.monotonic()
    pks = list(Product.objects.order_by("pk").values_list("pk", flat=True))
    total = len(pks)
    fail_pk = pks[total * 2 // 3] if fail and pks else None
    chunks = [Chunk(group[0], group[-1], slowdown_ms / 1000, fail_pk)
              for group in batched(pks, CHUNK_SIZE)]
    processes = settings.CATALOG_REBUILD_PROCESSES
    context.set_progress(0, total, "Starting")
    done = 0
    pids: set[int] = set()
    # A round of chunks per call, so the progress bar moves while the work goes on.
    for round_ in batched(chunks, processes):
        for count, pid in parallel_map(index_range, round_, processes=processes):
            done += count
            pids.add(pid)
        context.set_progress(done, total, f"{done} of {total} products indexed")
    IndexEntry.objects.exclude(product_id__in=pks).delete()  # Products deleted meanwhile.
    return {
        "products": total,
        "entries": IndexEntry.objects.count(),
        "processes": min(processes, len(chunks)),  # at a time
        "child_pids": sorted(pids),  # every child process of every round
        "worker_pid": os.getpid(),
        "seconds": round(time.monotonic() - started, 2),
    }


# -- The operations side ---------------------------------------------------------------


class MarketplaceTimeout(ConnectionError):
    """The marketplace's API did not answer in time."""


@task(takes_context=True, max_attempts=3, retry_backoff=6.0)
def publish_to_marketplace(context: Any) -> dict[str, Any]:
    """Send the catalog to a marketplace whose API is slow to wake up.

    The first attempt times out (simulated); taskmill records its error and runs the job
    again after a backoff of 3 to 6 seconds (the dashboard counts it as scheduled
    meanwhile), and the second attempt succeeds. In the admin: attempts 2 / 3, one error
    with its traceback, status Successful.
    """
    if context.attempt == 1:
        raise MarketplaceTimeout("The marketplace did not answer within 10 s (simulated: its "
                                 "first answer of the day always times out).")
    total = Product.objects.count()
    context.set_progress(total, total, f"{total} products published")
    return {"published": total, "attempt": context.attempt}


@task(max_attempts=1)
def import_supplier_feed(supplier: str) -> dict[str, Any]:
    """Import a supplier's price list: every row, or none of them.

    Bad data does not get better by trying again, so one attempt: a feed with a bad row
    ends FAILED, with the row named in the error and the traceback in the admin.
    """
    rows = parse_feed(supplier)  # Raises BadFeedRow on the first bad row.
    created = 0
    with transaction.atomic():
        for row in rows:
            _, new = Product.objects.update_or_create(
                name=row.name,
                defaults={"price_cents": row.price_cents, "description": row.description})
            created += new
    return {"supplier": supplier, "rows": len(rows), "new_products": created}


def price_factor(category: str) -> float:
    """The supplier's price change for a category: the same within a day, -5 %..+5 %."""
    seed = f"{category}:{time.strftime('%Y-%m-%d')}".encode()
    return 0.95 + int(hashlib.sha256(seed).hexdigest()[:4], 16) / 0xFFFF * 0.10


@task()
def refresh_category_prices(category: str) -> dict[str, Any]:
    """One job of the price refresh batch: reprice one category's products."""
    factor = price_factor(category)
    products = list(products_in(category))
    for product in products:
        product.price_cents = max(100, round(product.price_cents * factor))
    Product.objects.bulk_update(products, ["price_cents"], batch_size=500)
    time.sleep(0.2)  # A supplier's API would take this long; lets the batch be watched.
    return {"category": category, "products": len(products),
            "change_percent": round((factor - 1) * 100, 1)}


@task()
def report_price_refresh(batch_id: str) -> dict[str, Any]:
    """The batch's ``then`` job: runs once, after every category's job has finished."""
    batch = get_batch(batch_id)
    repriced = 0
    for result_id in batch.result_ids:
        result = refresh_category_prices.get_result(result_id)
        if result.status == TaskResultStatus.SUCCESSFUL:
            repriced += result.return_value["products"]
    logger.info("Price refresh %s: %d categories, %d products repriced, %d failed.",
                batch_id, batch.total, repriced, batch.failed)
    return {"categories": batch.total, "failed": batch.failed, "products_repriced": repriced}


def refresh_prices() -> Any:
    """Start a price refresh: one job per category, then the report. Returns the batch."""
    return enqueue_batch(refresh_category_prices, CATEGORIES, then=report_price_refresh)


#: Who gets the weekly digest (the demo only writes it to the worker's log).
DIGEST_SUBSCRIBERS = ["buyers@example.com", "marketing@example.com", "shops@example.com"]


@task()
def send_weekly_digest() -> dict[str, Any]:
    """The periodic job (``TASKMILL_SCHEDULE``): mail the newest products to subscribers."""
    newest = list(Product.objects.order_by("-pk").values_list("name", flat=True)[:5])
    logger.info("Weekly digest sent to %d subscribers: %s.", len(DIGEST_SUBSCRIBERS),
                ", ".join(newest) or "nothing new")
    return {"recipients": len(DIGEST_SUBSCRIBERS), "newest": newest}
