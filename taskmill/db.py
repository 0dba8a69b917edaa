"""Database connections across ``fork()``, and database errors in plain words.

A forked child inherits its parent's open database connections: the same socket, the
same server session, in whatever state the parent left it (mid-transaction, mid-result).
If the child *uses* such a connection, parent and child interleave bytes on one session
("SSL error: decryption failed", "Packet sequence number wrong", a query answered with
another's rows). If the child *closes* it, the driver says goodbye on the parent's
socket (PostgreSQL's Terminate, MySQL's COM_QUIT) and the server ends the parent's
session ("server closed the connection unexpectedly" in the parent). Even garbage
collection can close it: after a fork from a multi-threaded process, Python frees the
other threads' state in the child, and with it their connections.

:func:`close_inherited_connections` drops the inherited connections without ever
touching the parent's sessions: it points each inherited socket's file descriptor at
``/dev/null`` (so nothing a driver writes on it can reach the server), then forgets the
connection, so Django opens a fresh one on the next query. A before-fork hook keeps every
connection alive across the fork until then, so none is closed by garbage collection,
and an after-fork hook drops inherited psycopg pools in every child (a pool's threads do
not survive a fork: waiting on it would hang).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import socket
import stat
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.db.utils import load_backend

from . import forkgate

__all__ = ["close_inherited_connections", "describe_database", "explain_connection_error",
           "pool_size", "private_connection", "try_connect", "wait_for_database"]

#: Every connection this process opened, in any thread (weakly held).
_live: weakref.WeakSet[BaseDatabaseWrapper] = weakref.WeakSet()
_live_lock = threading.Lock()
#: Strong references taken just before a fork, so the child frees none of them.
_held: list[BaseDatabaseWrapper] = []
#: What a child dropped: kept forever so it is never garbage collected (and closed).
_abandoned: list[Any] = []


def _track(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    with _live_lock:
        _live.add(connection)


connection_created.connect(_track, dispatch_uid="taskmill.db.track")


def _before_fork() -> None:
    # Runs in the forking thread. Without these references, the child would free the
    # other threads' connections on its first breath, and mysqlclient frees by quitting.
    with _live_lock:
        _held[:] = [w for w in _live if w.connection is not None]


def _after_fork_in_parent() -> None:
    _held.clear()


def _after_fork_in_child() -> None:
    global _live_lock
    _live_lock = threading.Lock()  # Another thread may have held it at the fork.
    # An inherited psycopg pool is always broken in the child: its threads did not
    # survive the fork, so waiting on it hangs until its timeout, and its idle
    # connections are the parent's sessions. Drop it; the child builds its own on use.
    try:
        _drop_inherited_pools()
    except Exception:  # pragma: no cover - never let a fork fail over this
        pass


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


def close_inherited_connections() -> None:
    """Drop every database connection inherited from the parent process, safely.

    Call it first thing in a child process started with ``fork`` (``multiprocessing``'s
    default on Linux before Python 3.14). The parent's sessions are left exactly as
    they were; the child's next query opens its own connection. Pooled connections
    (``OPTIONS: {"pool": ...}``) are dropped the same way and the child gets its own pool.

    The child's connections keep the settings the forking thread's had: a worker thread
    begins its SQLite transactions ``IMMEDIATE`` (set on its own connections only), and a
    child of a task must too, or its read-then-write transactions are refused.
    """
    wrappers: list[BaseDatabaseWrapper] = []
    kept_settings: dict[str, dict[str, Any]] = {}
    # Django's per-thread (asgiref Local) store of this thread's connections.
    local: Any = getattr(connections, "_connections")  # noqa: B009
    for alias in connections:
        wrapper = getattr(local, alias, None)
        if wrapper is not None:
            wrappers.append(wrapper)
            kept_settings[alias] = wrapper.settings_dict
            delattr(local, alias)  # The next access makes a new one.
    for alias, settings_dict in kept_settings.items():
        connections[alias].settings_dict = settings_dict  # A new wrapper, not connected.
    with _live_lock:
        wrappers.extend(_held)
        wrappers.extend(_live)
        _held.clear()
        _live.clear()
    for wrapper in wrappers:
        raw = wrapper.connection
        if raw is not None:
            _disarm(raw)
        _abandoned.append(wrapper)
    _drop_inherited_pools()


def _drop_inherited_pools() -> None:
    """psycopg pools live per process on the backend class; their threads did not survive."""
    module = sys.modules.get("django.db.backends.postgresql.base")
    if module is None:  # Never imported: there are no pools.
        return
    pools = module.DatabaseWrapper._connection_pools
    for alias in list(pools):
        pool = pools.pop(alias)
        for raw in list(getattr(pool, "_pool", ())):
            _disarm(raw)
        _abandoned.append(pool)


def _disarm(raw: Any) -> None:
    """Point the connection's socket at /dev/null: whatever the driver writes goes nowhere."""
    fd = _socket_fd(raw)
    if fd is None:
        return  # SQLite, or already closed: nothing shared with the parent's session.
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def _socket_fd(raw: Any) -> int | None:
    candidates: tuple[Callable[[], Any], ...] = (
        lambda: raw.pgconn.socket,   # psycopg 3
        lambda: raw.fileno(),        # mysqlclient, psycopg2
        lambda: raw._sock.fileno(),  # PyMySQL
    )
    for candidate in candidates:
        try:
            fd = candidate()
        except Exception:
            continue
        if isinstance(fd, int) and fd >= 0:
            try:
                if stat.S_ISSOCK(os.fstat(fd).st_mode):
                    return fd
            except OSError:
                continue
    return None


# -- connections of the worker's own --------------------------------------------------


def private_connection(alias: str, *, vanish_after: float | None = None) -> BaseDatabaseWrapper:
    """A connection of its own to ``alias``: outside Django's per-thread connections (not
    closed with a task's, not joined to its transaction), and never taken from a
    connection pool. A worker holds a few for as long as it lives (its producer, heartbeat,
    maintenance, listener); taken from ``OPTIONS["pool"]`` they would leave the tasks'
    threads waiting for a free one. Nothing connects until first use.

    On MySQL/MariaDB it reads at READ COMMITTED whatever the project chose: the store's
    checks made under a lock (a concurrency key's running jobs, a batch's unfinished
    children) must see what committed before the lock was theirs, not a REPEATABLE READ
    snapshot taken earlier in the transaction.

    On PostgreSQL its ``application_name`` is ``taskmill worker <host>:<pid>`` (unless
    ``OPTIONS`` names one): ``pg_stat_activity``, and a lock wait or a held transaction
    seen there, then say which worker it is, through PgBouncer too.

    ``vanish_after``: seconds within which the server is to end this session once its
    client is gone without a word (its host cut off or powered down). Without it, a
    session left inside a transaction keeps its row locks until the operating system's
    TCP keepalive gives up, about two hours by default, and every worker that needs one
    of those rows waits as long (see :func:`_session_bounds`).
    """
    settings = forkgate.gated_settings(copy.deepcopy(connections.settings[alias]))
    options = settings.setdefault("OPTIONS", {})
    options.pop("pool", None)
    if settings["ENGINE"].endswith("mysql"):
        options["isolation_level"] = "read committed"
    backend = load_backend(settings["ENGINE"]).DatabaseWrapper
    if backend.vendor == "postgresql":
        options.setdefault("application_name",
                           f"taskmill worker {socket.gethostname()}:{os.getpid()}")
    if vanish_after is not None:
        backend = _bounded(backend)
    wrapper: BaseDatabaseWrapper = backend(settings, alias)
    if vanish_after is not None:
        wrapper.taskmill_vanish_after = vanish_after  # type: ignore[attr-defined]
    return wrapper


@functools.cache
def _bounded(backend: type[BaseDatabaseWrapper]) -> type[BaseDatabaseWrapper]:
    """``backend`` with :func:`_session_bounds` applied on every (re)connection."""

    class Bounded(backend):  # type: ignore[valid-type,misc]
        def init_connection_state(self) -> None:
            super().init_connection_state()
            sql = _session_bounds(self, self.taskmill_vanish_after)
            if sql:
                with self.connection.cursor() as cursor:
                    cursor.execute(sql)

    return Bounded


def _session_bounds(wrapper: BaseDatabaseWrapper, seconds: float) -> str | None:
    """The statement that makes the server drop this session ``seconds`` after its client
    vanished.

    PostgreSQL: keepalive probes from the server's side of the socket, and a limit on how
    long data it sent may go unacknowledged (``tcp_user_timeout``): both only ever end a
    session whose client is unreachable, so they are harmless even where a pooler in
    transaction mode passes them on to other clients. MariaDB: ``idle_transaction_timeout``
    (a transaction idle that long is rolled back and its session closed; a worker never
    leaves one idle). MySQL has no such bound per session; its ``wait_timeout`` would also
    end healthy idle sessions.
    """
    whole = max(1, int(seconds))
    if wrapper.vendor == "postgresql":
        idle = max(1, whole // 3)
        interval = max(1, whole // 6)
        return (f"SELECT set_config('tcp_keepalives_idle', '{idle}', false), "
                f"set_config('tcp_keepalives_interval', '{interval}', false), "
                "set_config('tcp_keepalives_count', '3', false), "
                f"set_config('tcp_user_timeout', '{whole * 1000}', false)")
    if wrapper.vendor == "mysql" and getattr(wrapper, "mysql_is_mariadb", False):
        return f"SET SESSION idle_transaction_timeout = {whole}"
    return None


def pool_size(alias: str) -> int | None:
    """How many connections ``alias``'s pool (Django's psycopg pool) holds at most; None
    when it has none."""
    options = connections.settings[alias].get("OPTIONS", {}).get("pool")
    if not options:
        return None
    if options is True:
        options = {}
    # psycopg_pool's defaults: min_size 4, max_size = min_size.
    min_size = int(options.get("min_size", 4))
    max_size = options.get("max_size")
    return int(max_size) if max_size is not None else min_size


# -- errors in plain words -----------------------------------------------------------


def describe_database(alias: str = DEFAULT_DB_ALIAS) -> str:
    """``'default' (postgresql at 127.0.0.1:5432)`` — for messages people read."""
    settings = connections.settings[alias]
    engine = settings.get("ENGINE", "").rsplit(".", 1)[-1]
    if engine == "sqlite3":
        return f"{alias!r} (sqlite file {settings.get('NAME')})"
    host = settings.get("HOST") or "localhost"
    port = settings.get("PORT") or {"postgresql": 5432, "mysql": 3306}.get(engine, "")
    return f"{alias!r} ({engine} at {host}:{port})"


#: (fragments of a driver's message, what it means). First match wins.
_EXPLANATIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("connection refused", "can't connect to mysql server", "can't connect to server"),
     "connection refused: nothing listens there; is the server running, and are HOST "
     "and PORT right?"),
    (("could not translate host name", "name or service not known",
      "unknown mysql server host", "nodename nor servname", "temporary failure in name"),
     "the host name does not resolve; check HOST"),
    (("timeout expired", "timed out", "connection timed out"),
     "no answer before the timeout; a firewall, a wrong HOST, or a server too busy to accept"),
    (("password authentication failed", "access denied", "no password supplied",
      "authentication failed", "no pg_hba.conf entry"),
     "the server refused these credentials; check USER and PASSWORD (and pg_hba.conf)"),
    (('role "',), "the server has no such USER (role); check USER"),
    (("does not exist", "unknown database"),
     "the server answered, but the database NAME does not exist there; create it or "
     "fix NAME"),
    (("the database system is starting up", "the database system is shutting down",
      "in recovery mode", "the database system is not yet accepting connections"),
     "the server is starting up or shutting down; it should answer shortly"),
    (("too many connections", "remaining connection slots", "too many clients"),
     "the server has no free connection slots; fewer worker threads, a lower "
     "CONN_MAX_AGE, or a connection pool will help"),
    (("handshake: reading initial communication packet", "reading authorization packet"),
     "the server accepted the connection but did not answer the handshake in time: it is "
     "overloaded or starting, or what listens there is not a MySQL/MariaDB server"),
    (("server closed the connection unexpectedly", "lost connection", "has gone away",
      "connection already closed", "ssl syscall error", "eof detected",
      "terminating connection", "consuming input failed", "connection is lost"),
     "the connection was cut: the server restarted, or a proxy or firewall closed an "
     "idle connection"),
    (("ssl",), "the TLS handshake failed; check the sslmode/ssl OPTIONS"),
)


def explain_connection_error(exc: BaseException) -> str:
    """One plain sentence for a driver's connection error (its first line kept after it)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    lowered = text.lower()
    for fragments, meaning in _EXPLANATIONS:
        if any(fragment in lowered for fragment in fragments):
            return f"{meaning} ({first})"
    return first


def try_connect(alias: str, connect_timeout: float = 5.0) -> Exception | None:
    """Open a direct connection (never a pooled one) and run ``SELECT 1``.

    Returns the error, or None if the database answered. For start-up code that must
    wait for the database before anything else connects (system checks on Django 6
    connect to PostgreSQL to read its version).
    """
    settings = forkgate.gated_settings(copy.deepcopy(connections.settings[alias]))
    options = settings.setdefault("OPTIONS", {})
    options.pop("pool", None)  # Test the server itself, not a pool's wait.
    engine = settings.get("ENGINE", "")
    if "postgresql" in engine or "mysql" in engine:
        options["connect_timeout"] = max(1, int(connect_timeout))
    wrapper = load_backend(engine).DatabaseWrapper(settings, alias)
    try:
        wrapper.ensure_connection()
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return exc
    finally:
        with contextlib.suppress(Exception):
            wrapper.close()
    return None


def wait_for_database(alias: str, *, timeout: float | None = None,
                      say: Callable[[str], None] | None = None) -> Exception | None:
    """Block until ``alias`` answers (None) or ``timeout`` runs out (the last error).

    ``say`` gets one line when the wait starts and one when the database is back: a
    process started while the database is down says so once, not once per retry.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delay, since = 0.25, time.monotonic()
    error = try_connect(alias)
    while error is not None:
        if say is not None and delay == 0.25:
            say(f"Database {describe_database(alias)} unavailable: "
                f"{explain_connection_error(error)}. Waiting until it answers.")
        if deadline is not None and time.monotonic() >= deadline:
            return error
        time.sleep(delay if deadline is None else max(0.0, min(delay,
                                                                 deadline - time.monotonic())))
        delay = min(delay * 2, 5.0)
        error = try_connect(alias)
        if error is None and say is not None:
            say(f"Database {describe_database(alias)} is back after "
                f"{time.monotonic() - since:.1f}s.")
    return None
