"""``taskmill prune``: delete finished jobs past their retention (RETENTION rules, then
RESULT_TTL), or all older than ``--older-than``.

A big prune runs in time slices, oldest first, and says how far it is after each one
(on stderr, so stdout keeps the summary scripts read: its last line).
"""

from __future__ import annotations

import math
from argparse import ArgumentParser
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import CommandError
from django.db.models import Min, QuerySet

from ..models import Job, JobStatus
from ..services.pruning import batch_ttl, retention_passes
from ..store import JobStore, get_store
from ..store.operations import FinishedScope
from .common import get_backend

HELP = ("Delete SUCCESSFUL and FAILED jobs past their retention: the first RETENTION rule "
        "that matches a job, else RESULT_TTL.")

#: From this many rows on, the prune reports its progress.
PROGRESS_MIN_ROWS = 10_000
#: Rows per time slice (roughly: slices are equal in time, not in rows).
SLICE_ROWS = 50_000
MAX_SLICES = 50


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--backend", help="Alias in TASKS (default: the taskmill backend).")
    parser.add_argument("--older-than", type=float, default=None, metavar="SECONDS",
                        help="Delete every finished job older than this, whatever its queue "
                             "or state: RETENTION rules and RESULT_TTL are not applied.")


def handle(command: Any, options: dict[str, Any]) -> None:
    backend = get_backend(options.get("backend"))
    older_than = options["older_than"]
    if older_than is not None and older_than < 0:
        raise CommandError("--older-than must not be negative.")
    store = get_store(backend.database)
    rules = backend.config.retention
    if older_than is not None or not rules:
        older_than = backend.config.result_ttl if older_than is None else older_than
        cutoff = store.database_now() - timedelta(seconds=older_than)
        deleted = _prune(command, store, None, cutoff, options, "Pruning")
        command.stdout.write(f"Pruned {deleted} finished job(s) older than {older_than:.15g}s.")
        return
    now = store.database_now()
    total = 0
    for retention_pass in retention_passes(rules, backend.config.result_ttl):
        name, ttl = retention_pass.name, retention_pass.ttl
        if ttl is None:
            command.stdout.write(f"Kept the finished jobs of {name}: for ever.")
        elif not retention_pass.deletes:
            command.stdout.write(f"{name}: every finished job is decided by a rule above.")
        else:
            deleted = _prune(command, store, retention_pass.scope,
                             now - timedelta(seconds=ttl), options, f"Pruning {name}")
            command.stdout.write(f"Pruned {deleted} finished job(s) of {name} older than "
                                 f"{ttl:.15g}s.")
            total += deleted
    store.prune_batches(now - timedelta(seconds=batch_ttl(rules, backend.config.result_ttl)))
    command.stdout.write(f"Pruned {total} finished job(s) in all.")


def _prune(command: Any, store: JobStore, scope: FinishedScope | None, cutoff: datetime,
           options: dict[str, Any], label: str) -> int:
    """Prune one scope (None: every finished job, and batches) up to ``cutoff``; a big
    one in slices, reporting after each."""
    finished = _jobs_in(store.alias, scope or FinishedScope(), cutoff)
    # Both read the finished index: a range count and its first entry.
    total = finished.count()
    if total < PROGRESS_MIN_ROWS or options.get("verbosity", 1) < 1:
        return store.prune(cutoff, scope=scope)
    deleted = 0
    oldest = finished.aggregate(oldest=Min("finished_at"))["oldest"] or cutoff
    slices = min(MAX_SLICES, max(2, math.ceil(total / SLICE_ROWS)))
    for i in range(1, slices + 1):
        deleted += store.prune(oldest + (cutoff - oldest) * i / slices if i < slices
                               else cutoff, scope=scope)
        command.stderr.write(f"{label}: {deleted:,} of {total:,} "
                             f"({min(100.0, 100 * deleted / total):.0f}%)")
    return deleted


def _jobs_in(database: str, scope: FinishedScope, cutoff: datetime) -> QuerySet[Job]:
    """The jobs ``store.prune(cutoff, scope=scope)`` deletes, for counting them."""
    jobs = Job.objects.using(database).filter(status__in=scope.statuses,
                                              finished_at__lt=cutoff)
    if scope.queue is not None:
        jobs = jobs.filter(queue_name=scope.queue)
    if scope.kept_successful:
        jobs = jobs.exclude(status=JobStatus.SUCCESSFUL, queue_name__in=scope.kept_successful)
    if scope.kept_failed:
        jobs = jobs.exclude(status=JobStatus.FAILED, queue_name__in=scope.kept_failed)
    return jobs
