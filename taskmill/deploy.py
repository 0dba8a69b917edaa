"""``manage.py check --deploy``: taskmill's deployment mistakes, Django's way.

The settings-only checks run with ``check --deploy``; those that must ask the database
(connections, live workers, a pooler in front, migrations) also need ``--database``:
``manage.py check --deploy --database default``.
"""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.db import connections
from django.db.migrations.executor import MigrationExecutor

from .backend import TaskmillBackend, taskmill_backends
from .models import Worker

#: A lease shorter than this is declared lost by a GC pause or a slow disk.
MIN_LEASE_SECONDS = 10.0
#: Connections a worker process holds besides its tasks' (producer, heartbeat,
#: maintenance, listener), and per thread (the task's own, and one for progress).
OWN_CONNECTIONS, PER_THREAD = 4, 2
#: Share of the server's connections the workers may take before it is a warning.
CONNECTION_SHARE = 0.8


@checks.register(checks.Tags.compatibility, deploy=True)
def check_lease(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    found: list[checks.CheckMessage] = []
    for alias, backend in taskmill_backends().items():
        lease = backend.config.lease_seconds
        if lease < MIN_LEASE_SECONDS:
            found.append(checks.Warning(
                f"TASKS[{alias!r}]['OPTIONS']['LEASE_SECONDS'] is {lease:g}: a worker that "
                f"pauses that long (a GC pause, a slow disk, a busy host) is declared dead "
                "and its running jobs run again elsewhere.",
                hint=f"Use {MIN_LEASE_SECONDS:g} or more (30 is the default).",
                id="taskmill.W104"))
    return found


@checks.register(checks.Tags.database, deploy=True)
def check_deployment(app_configs: Any = None, databases: Any = None,
                     **kwargs: Any) -> list[checks.CheckMessage]:
    found: list[checks.CheckMessage] = []
    for database, backends in _by_database().items():
        if database not in (databases or ()):
            continue
        try:
            unapplied = _unapplied_migrations(database)
        except Exception:  # Unreachable: taskmill.E010 says so.
            continue
        if unapplied:
            found.append(checks.Warning(
                f"DATABASES[{database!r}] lacks taskmill's migrations {unapplied}: workers "
                "and enqueues will fail.", hint=f"manage.py migrate --database {database}",
                id="taskmill.W106"))
            continue
        workers = list(Worker.objects.using(database).values_list("hostname", "queues",
                                                                   "threads"))
        found += _sqlite_hosts(database, workers)
        found += _connections(database, workers)
        found += _pooler(database)
        found += _unserved_queues(database, backends, workers)
    return found


def _by_database() -> dict[str, list[TaskmillBackend]]:
    found: dict[str, list[TaskmillBackend]] = {}
    for backend in taskmill_backends().values():
        found.setdefault(backend.database, []).append(backend)
    return found


def _unapplied_migrations(database: str) -> list[str]:
    executor = MigrationExecutor(connections[database])
    targets = [key for key in executor.loader.graph.leaf_nodes() if key[0] == "taskmill"]
    return [migration.name for migration, _ in executor.migration_plan(targets)]


def _sqlite_hosts(database: str, workers: list[tuple[str, Any, int]]) -> list[checks.CheckMessage]:
    hosts = sorted({hostname for hostname, _, _ in workers})
    if connections[database].vendor != "sqlite" or len(hosts) < 2:
        return []
    return [checks.Warning(
        f"DATABASES[{database!r}] is a SQLite file, and workers run on {len(hosts)} hosts "
        f"({', '.join(hosts)}): SQLite's locks do not hold over network file systems, and "
        "writers of several hosts corrupt it.",
        hint="Run every worker on the host that has the file, or use PostgreSQL.",
        id="taskmill.W102")]


def _connections(database: str, workers: list[tuple[str, Any, int]]) -> list[checks.CheckMessage]:
    connection = connections[database]
    if connection.vendor == "sqlite" or not workers:
        return []
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections" if connection.vendor == "postgresql"
                       else "SELECT @@max_connections")
        (limit,) = cursor.fetchone()
    needed = sum(OWN_CONNECTIONS + PER_THREAD * threads for _, _, threads in workers)
    if needed <= int(limit) * CONNECTION_SHARE:
        return []
    return [checks.Warning(
        f"The {len(workers)} worker process(es) seen on DATABASES[{database!r}] hold up to "
        f"{needed} connections ({OWN_CONNECTIONS} each, plus {PER_THREAD} per thread), of the "
        f"server's max_connections = {limit}, before any web process connects.",
        hint="Run fewer processes or threads, raise max_connections, or put a pooler in "
             "front of the web processes.", id="taskmill.W101")]


def _pooler(database: str) -> list[checks.CheckMessage]:
    """A pooler in front of PostgreSQL (PgBouncer, say): the server's own port differs
    from the one connected to, or two statements were served by different sessions."""
    connection = connections[database]
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return []
    pids, ports = set(), set()
    for _ in range(3):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid(), inet_server_port()")
            pid, port = cursor.fetchone()
            pids.add(pid)
            ports.add(port)
    settings_port = int(connection.settings_dict.get("PORT") or 5432)
    proxied = len(pids) > 1 or any(p is not None and p != settings_port for p in ports)
    if not proxied:
        return []
    mode = ("pools in transaction mode" if len(pids) > 1 else
            "is a pooler in transaction mode (PgBouncer's pool_mode = transaction)")
    cursors = "" if connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS") else (
        ' In that mode, set "DISABLE_SERVER_SIDE_CURSORS": True on it too, as Django asks.')
    return [checks.Warning(
        f"DATABASES[{database!r}] reaches PostgreSQL through a proxy (port {settings_port}, the "
        f"server's is {sorted(p for p in ports if p is not None)}). If it {mode}, workers "
        "cannot LISTEN there, and jobs start up to --poll-interval (5 s by default) after "
        f"their enqueue.{cursors}",
        hint="Give workers a direct connection (or a session-mode pool) for the job "
             "database, or run them with --poll-interval 1.", id="taskmill.W103")]


def _unserved_queues(database: str, backends: list[TaskmillBackend],
                     workers: list[tuple[str, Any, int]]) -> list[checks.CheckMessage]:
    served = {queue for _, queues, _ in workers for queue in (queues or [])}
    wanted = sorted({q for backend in backends for q in (backend.queues or {"default"})})
    missing = [queue for queue in wanted if queue not in served]
    if not missing:
        return []
    return [checks.Warning(
        f"No live worker serves queue(s) {missing} of DATABASES[{database!r}]: their jobs "
        "wait until one does.",
        hint=f"Start one: manage.py taskmill worker --queues {','.join(missing)}",
        id="taskmill.W105")]


__all__ = ["check_deployment", "check_lease"]
