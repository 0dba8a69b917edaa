"""``taskmill prune``: delete finished jobs older than RESULT_TTL (or --older-than).

A big prune runs in time slices, oldest first, and says how far it is after each one
(on stderr, so stdout keeps the one-line summary scripts read).
"""

from __future__ import annotations

import math
from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.core.management.base import CommandError
from django.db.models import Min

from ..models import Job, JobStatus
from ..store import get_store
from .common import get_backend

HELP = "Delete SUCCESSFUL and FAILED jobs finished longer ago than RESULT_TTL."

#: From this many rows on, the prune reports its progress.
PROGRESS_MIN_ROWS = 10_000
#: Rows per time slice (roughly: slices are equal in time, not in rows).
SLICE_ROWS = 50_000
MAX_SLICES = 50


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--backend", help="Alias in TASKS (default: the taskmill backend).")
    parser.add_argument("--older-than", type=float, default=None, metavar="SECONDS",
                        help="Age cut-off (default: the backend's RESULT_TTL).")


def handle(command: Any, options: dict[str, Any]) -> None:
    backend = get_backend(options.get("backend"))
    older_than = options["older_than"]
    if older_than is None:
        older_than = backend.config.result_ttl
    if older_than < 0:
        raise CommandError("--older-than must not be negative.")
    store = get_store(backend.database)
    cutoff = store.database_now() - timedelta(seconds=older_than)
    finished = Job.objects.using(backend.database).filter(
        status__in=[JobStatus.SUCCESSFUL, JobStatus.FAILED], finished_at__lt=cutoff)
    # Both read the finished index: a range count and its first entry.
    total = finished.count()
    deleted = 0
    if total >= PROGRESS_MIN_ROWS and options.get("verbosity", 1) >= 1:
        oldest = finished.aggregate(oldest=Min("finished_at"))["oldest"] or cutoff
        slices = min(MAX_SLICES, max(2, math.ceil(total / SLICE_ROWS)))
        for i in range(1, slices + 1):
            deleted += store.prune(oldest + (cutoff - oldest) * i / slices if i < slices
                                   else cutoff)
            command.stderr.write(f"Pruning: {deleted:,} of {total:,} "
                                 f"({min(100.0, 100 * deleted / total):.0f}%)")
    else:
        deleted = store.prune(cutoff)
    command.stdout.write(f"Pruned {deleted} finished job(s) older than {older_than:g}s.")
