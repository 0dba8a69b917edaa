"""Shared-cache SQLite: another connection's table lock is waited for, as a file lock is.

Django opens an in-memory SQLite test database as
``file:memorydb_default?mode=memory&cache=shared``, so that the test's threads share it.
The connections of a shared cache do not lock the file, they lock tables, and a
statement that meets another connection's table lock fails at once with "database table
is locked" (``SQLITE_LOCKED``): the busy timeout that makes a file database wait does not
apply to it. With a worker in threads of the test process (``taskmill.testing.worker()``),
the test's own queries meet the worker's claims and completions all the time.

:func:`wait_for_table_locks` is installed on every connection to such a database when it
connects (Django's execute wrappers, see :func:`install`): a statement refused that way
is run again after a short sleep, for up to the connection's ``timeout`` (``OPTIONS``,
5 seconds unless set), which is what SQLite does for a file's lock.

Why a statement may simply run again: SQLite takes a statement's table locks, and the
shared cache's write transaction, before the statement changes anything, so one refused
them did nothing; a transaction it was part of is still open and whole.

Hazard: only statements run through Django's cursors wait (the ORM's, taskmill's); a
COMMIT does not, nor does a raw ``sqlite3`` cursor. Two connections that each hold a table
the other's transaction waits for wait out the timeout, then fail, as on a file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

__all__ = ["install", "is_shared_cache", "wait_for_table_locks"]

#: SQLite's own default busy timeout, which Python's ``sqlite3.connect`` applies too.
DEFAULT_TIMEOUT = 5.0
#: The first and the longest sleep between two tries, in seconds.
FIRST_SLEEP = 0.001
LONGEST_SLEEP = 0.05


def is_shared_cache(connection: BaseDatabaseWrapper) -> bool:
    """Whether ``connection`` opens a SQLite shared cache (Django's in-memory test database)."""
    if connection.vendor != "sqlite":
        return False
    name = str(connection.settings_dict.get("NAME") or "")
    return name.startswith("file:") and "cache=shared" in name


def wait_for_table_locks(execute: Callable[..., Any], sql: str, params: Any, many: bool,
                         context: dict[str, Any]) -> Any:
    """An execute wrapper: run the statement again while another connection's table lock
    refuses it, sleeping a little longer each time, up to the connection's timeout."""
    connection: BaseDatabaseWrapper = context["connection"]
    deadline: float | None = None
    sleep = FIRST_SLEEP
    while True:
        try:
            return execute(sql, params, many, context)
        except OperationalError as exc:
            if not _table_locked(exc):
                raise
            now = time.monotonic()
            if deadline is None:
                options = connection.settings_dict.get("OPTIONS") or {}
                deadline = now + float(options.get("timeout", DEFAULT_TIMEOUT))
            if now >= deadline:
                raise
            time.sleep(min(sleep, deadline - now))
            sleep = min(sleep * 2, LONGEST_SLEEP)


def _table_locked(exc: OperationalError) -> bool:
    code = getattr(exc.__cause__, "sqlite_errorcode", 0)  # sqlite3's error, as Django raised it
    return bool(code & 0xFF == sqlite3.SQLITE_LOCKED)


def _on_connect(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    if is_shared_cache(connection) and wait_for_table_locks not in connection.execute_wrappers:
        # What ``connection.execute_wrapper()`` does for a block, for the connection's life.
        connection.execute_wrappers.append(wait_for_table_locks)


def install() -> None:
    """Have every shared-cache connection opened from now on wait for table locks."""
    connection_created.connect(_on_connect, dispatch_uid="taskmill.sharedcache")
