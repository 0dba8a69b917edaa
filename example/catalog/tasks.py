"""The background job: rebuild the whole search index, split over several processes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from django.conf import settings

from taskmill import parallel_map, task

from .indexing import Chunk, index_range
from .models import IndexEntry, Product

#: Products per chunk handed to a child process.
CHUNK_SIZE = 100


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@task(takes_context=True, unique=True, unique_key="catalog.rebuild_index", max_attempts=1)
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
