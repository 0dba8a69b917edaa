"""Riding out a database that is down or restarting.

Every database call a worker makes for its own bookkeeping goes through a
:class:`DatabaseGate`. When a call fails with an operational error, the gate looks at
what broke:

* the connection (closed, cut, refused): it is dropped, and the database is asked on a
  fresh one whether it answers. If it does, the call is made again at once (a restarted
  server, a proxy that cut an idle connection). If not, that is an outage: one line says
  which database, where and what failed (once per outage for the whole process, however
  many threads notice), and the gate probes every :data:`PROBE_EVERY` seconds, so work
  resumes within a fraction of a second of the database's return. "Back" is said only
  when the database has answered.
* the statement, on a connection that still works: a lock or serialization conflict
  ("database is locked" on SQLite, a deadlock) is retried a few times; anything else (a
  missing table, bad SQL) is raised at once: waiting cannot fix it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper

from ..db import describe_database, explain_connection_error

logger = logging.getLogger("taskmill.worker")

T = TypeVar("T")

#: Seconds between two looks at a database that is down.
PROBE_EVERY = 0.2
#: How often, and how far apart, a conflict the database reported is retried.
CONFLICT_RETRIES = 20
CONFLICT_DELAY = 0.05
#: Fragments of a driver's message that mean "try again", not "the database is gone".
CONFLICTS = ("database is locked", "database table is locked", "deadlock",
             "could not serialize", "lock wait timeout", "try restarting transaction")


class DatabaseHealth:
    """What one worker process knows of its job database; shared by its threads."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._lock = threading.Lock()
        self.down_since: float | None = None
        #: Monotonic time the last outage ended (recovery holds back for a lease after it).
        self.back_at: float | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, what: str, exc: BaseException) -> None:
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
        logger.error("Database %s unavailable while trying to %s: %s. Retrying until it is "
                     "back; no job is lost meanwhile.", describe_database(self.alias), what,
                     explain_connection_error(exc))

    def answered(self) -> None:
        with self._lock:
            since, self.down_since = self.down_since, None
            if since is not None:
                self.back_at = time.monotonic()
        if since is not None:
            logger.warning("Database %s is back after %.1fs.", describe_database(self.alias),
                           time.monotonic() - since)


class DatabaseGate:
    """One thread's way to the database: its connection (``connection()`` gives the
    current one), closed on errors, and the process's shared :class:`DatabaseHealth`."""

    def __init__(self, health: DatabaseHealth,
                 connection: Callable[[], BaseDatabaseWrapper]) -> None:
        self.health = health
        self._connection = connection

    def call(self, fn: Callable[[], T], what: str, stop: threading.Event | None,
             attempts: int | None = None) -> T | None:
        """Return ``fn()``; None if ``stop`` was set, or ``attempts`` calls failed, first."""
        tries = conflicts = 0
        while True:
            if self.health.down and not self._answers():
                tries += 1
                if (attempts is not None and tries >= attempts) or _wait(stop, PROBE_EVERY):
                    return None
                continue
            try:
                return fn()
            except (OperationalError, InterfaceError) as exc:
                if self._connection_works():
                    conflicts += 1
                    if not _is_conflict(exc) or conflicts > CONFLICT_RETRIES:
                        raise  # The database answers: waiting will not fix this.
                    if _wait(stop, CONFLICT_DELAY * conflicts):
                        return None
                    continue
                self._close()
                if self._answers():
                    continue  # A cut connection, replaced: try again at once.
                self.health.failed(what, exc)
                tries += 1
                if (attempts is not None and tries >= attempts) or _wait(stop, PROBE_EVERY):
                    return None

    def _connection_works(self) -> bool:
        """Whether the connection that saw the error still runs queries."""
        wrapper = self._connection()
        try:
            return wrapper.connection is not None and wrapper.is_usable()
        except Exception:
            return False

    def _answers(self) -> bool:
        """Whether the database runs a query now (on a fresh connection)."""
        wrapper = self._connection()
        try:
            wrapper.ensure_connection()
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError:
            self._close()
            return False
        self.health.answered()
        return True

    def _close(self) -> None:
        try:
            self._connection().close()
        except Exception:
            pass


def _is_conflict(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(fragment in text for fragment in CONFLICTS)


def _wait(stop: threading.Event | None, seconds: float) -> bool:
    """Sleep; True if told to stop meanwhile."""
    if stop is not None:
        return stop.wait(seconds)
    time.sleep(seconds)
    return False
