"""``taskmill worker``: the supervisor and its worker processes."""

from __future__ import annotations

import logging
import os
import sys
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from django.db import connections

from ..capabilities import database_problems
from ..db import pool_size
from ..worker.config import WorkerConfig
from ..worker.supervisor import run_worker
from .common import configure_logging, get_backend
from .reloading import run_reloading

#: Seconds between looks for due jobs when nothing wakes the worker sooner.
DEFAULT_POLL_INTERVAL = {"postgresql": 5.0, "mysql": 1.0, "sqlite": 1.0}

HELP = "Run workers: --processes children, each with --threads executors."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--backend", help="Alias in TASKS (default: the taskmill backend).")
    parser.add_argument("--queues", help="Comma-separated queues (default: the backend's QUEUES).")
    parser.add_argument("--processes", type=int, default=None,
                        help="Worker processes (default: CPU count; 1 on SQLite).")
    parser.add_argument("--threads", type=int, default=1, help="Executor threads per process.")
    parser.add_argument("--burst", action="store_true", help="Exit once nothing is due.")
    parser.add_argument("--max-tasks-per-child", type=int, default=None,
                        help="Replace a process after it ran this many jobs.")
    parser.add_argument("--max-memory-per-child", type=int, default=None, metavar="MB",
                        help="Replace a process once its resident memory exceeds this.")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="S",
                        help="On SIGTERM, how long running jobs may take to finish.")
    parser.add_argument("--health-file", metavar="PATH",
                        help="Keep touching PATH while every process heartbeats and claims "
                             "(probe it with `taskmill health --file PATH`).")
    parser.add_argument("--reload", action="store_true",
                        help="Development only (DEBUG = True): restart the worker when "
                             "project code changes.")
    parser.add_argument("--poll-interval", type=float, default=None, metavar="S",
                        help="Longest wait between looks for due jobs: 5 on PostgreSQL "
                             "(woken by NOTIFY), 1 on SQLite (woken by a watch on its "
                             "file) and MySQL.")


def build_config(options: dict[str, Any]) -> tuple[WorkerConfig, int]:
    backend = get_backend(options.get("backend"))
    if options.get("queues"):
        queues = [q.strip() for q in options["queues"].split(",") if q.strip()]
        unknown = [q for q in queues if backend.queues and q not in backend.queues]
        if unknown:
            raise CommandError(f"Unknown queue(s) {unknown} for backend {backend.alias!r}; "
                               f"its QUEUES are {sorted(backend.queues)}.")
    else:
        queues = sorted(backend.queues) or ["default"]
    for name in ("threads", "processes", "max_tasks_per_child", "max_memory_per_child"):
        value = options.get(name)
        if value is not None and value < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1.")
    if options["shutdown_timeout"] < 0:
        raise CommandError("--shutdown-timeout must not be negative.")
    _check_pools(options["threads"])
    _check_database(backend.database)
    vendor = connections[backend.database].vendor
    poll = options.get("poll_interval") or DEFAULT_POLL_INTERVAL.get(vendor, 1.0)
    config = WorkerConfig(
        database=backend.database,
        queues=queues,
        threads=options["threads"],
        burst=options["burst"],
        max_tasks_per_child=options.get("max_tasks_per_child"),
        max_memory_per_child=options.get("max_memory_per_child"),
        shutdown_timeout=options["shutdown_timeout"],
        lease_seconds=backend.config.lease_seconds,
        result_ttl=backend.config.result_ttl,
        retention=backend.config.retention,
        priority_aging=backend.config.priority_aging,
        poll_interval=poll,
        health_file=options.get("health_file"),
    )
    return config, options.get("processes") or default_processes(vendor)


def default_processes(vendor: str) -> int:
    """One per CPU; one on SQLite, where writers take turns anyway (more processes only
    wait for each other's write lock)."""
    return 1 if vendor == "sqlite" else os.cpu_count() or 1


def _check_pools(threads: int) -> None:
    """Each executor thread may hold a pooled connection of every database its tasks use
    (the worker's own connections never come from a pool): a smaller pool would leave
    threads waiting for one, and tasks failing with "couldn't get a connection"."""
    for alias in connections.settings:
        size = pool_size(alias)
        if size is not None and size < threads:
            raise CommandError(
                f"--threads {threads} needs up to {threads} connections from the pool of "
                f"DATABASES[{alias!r}], which holds at most {size}. Give it more, e.g. "
                f'"OPTIONS": {{"pool": {{"max_size": {threads}}}}}, or run fewer threads.')


def _check_database(alias: str) -> None:
    """The database checks of ``check --database`` for the job database: a worker on a
    database that cannot hold its promises refuses to start, and says why."""
    for message in database_problems(alias):
        if message.is_serious():
            raise CommandError(f"{message.msg} {message.hint or ''} ({message.id})".strip())
        logging.getLogger("taskmill.worker").warning("%s %s (%s)", message.msg,
                                                     message.hint or "", message.id)


def handle(command: Any, options: dict[str, Any]) -> None:
    configure_logging(options["verbosity"])
    if options.get("reload"):
        if not settings.DEBUG:
            raise CommandError("--reload is for development: it restarts the worker, and its "
                               "running jobs, whenever code changes. It needs DEBUG = True.")
        sys.exit(run_reloading())
    config, processes = build_config(options)
    run_worker(config, processes)
