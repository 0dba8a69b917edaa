"""``taskmill prune``: delete finished jobs older than RESULT_TTL (or --older-than)."""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.core.management.base import CommandError
from django.utils import timezone

from ..store import get_store
from .common import get_backend

HELP = "Delete SUCCESSFUL and FAILED jobs finished longer ago than RESULT_TTL."


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
    cutoff = timezone.now() - timedelta(seconds=older_than)
    deleted = get_store(backend.database).prune(cutoff)
    command.stdout.write(f"Pruned {deleted} finished job(s) older than {older_than:g}s.")
