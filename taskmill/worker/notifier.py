"""Wakes an idle worker the moment a job is enqueued: LISTEN/NOTIFY on PostgreSQL, a
watch on the database file on SQLite.

The job table's insert trigger sends ``NOTIFY taskmill, '<queue>'`` with the enqueue's
commit, so a worker hears of a job exactly when it becomes visible. Polling stays as the
fallback: a missed notification (connection lost, PgBouncer in transaction mode, where
LISTEN does not work) only costs up to one poll interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from pathlib import Path

from ..db import private_connection
from ..store.postgresql import CHANNEL

logger = logging.getLogger("taskmill.worker")

#: Seconds between tries to listen again after the connection was lost, growing to the
#: most: jobs enqueued once the database is back are heard within about that long.
RETRY_FIRST = 0.2
RETRY_MAX = 1.0


class Listener(threading.Thread):
    """Sets ``wake`` whenever a job for one of ``queues`` is committed."""

    def __init__(self, database: str, queues: Collection[str], wake: threading.Event) -> None:
        super().__init__(name="taskmill-listener", daemon=True)
        self.database = database
        self.queues = set(queues)
        self.wake = wake
        self._stopped = threading.Event()
        self.listening = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        delay = RETRY_FIRST
        said = False  # One line per outage, not one per retry.
        while not self._stopped.is_set():
            wrapper = private_connection(self.database)
            try:
                wrapper.ensure_connection()
                conn = wrapper.connection
                conn.autocommit = True
                conn.execute(f"LISTEN {CHANNEL}")
                self.listening.set()
                if said:  # Back after an outage: what was enqueued meanwhile was not heard.
                    self.wake.set()
                delay, said = RETRY_FIRST, False
                while not self._stopped.is_set():
                    for notify in conn.notifies(timeout=0.25):
                        if notify.payload in self.queues:
                            self.wake.set()
            except Exception as exc:  # The database went away: poll until it is back.
                self.listening.clear()
                if not self._stopped.is_set():
                    if not said:
                        logger.warning("Job notifications unavailable (%s); polling meanwhile.",
                                       str(exc).strip().splitlines()[0] if str(exc) else exc)
                        said = True
                    self.wake.set()
                    self._stopped.wait(delay)
                    delay = min(delay * 2, RETRY_MAX)
            finally:
                try:
                    wrapper.close()
                except Exception:
                    pass


class FileWatcher(threading.Thread):
    """SQLite's stand-in for LISTEN: sets ``wake`` whenever the database's write-ahead
    log changes, that is whenever any process committed a write (an enqueue among them).

    A ``stat()`` every :data:`WATCH_EVERY` seconds is all it costs (a few microseconds,
    no query, no lock): an idle worker starts a job within about that of its commit, and
    burns next to nothing meanwhile. The worker's own writes wake it too, harmlessly:
    the producer looks, finds nothing new, and waits again.
    """

    def __init__(self, database_file: str, wake: threading.Event) -> None:
        super().__init__(name="taskmill-file-watcher", daemon=True)
        self.paths = [Path(database_file + "-wal"), Path(database_file)]
        self.wake = wake
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        seen = self._look()
        while not self._stopped.wait(WATCH_EVERY):
            now = self._look()
            if now != seen:
                seen = now
                self.wake.set()

    def _look(self) -> tuple[tuple[int, int], ...]:
        found = []
        for path in self.paths:
            try:
                status = path.stat()
            except OSError:  # No WAL file between checkpoints, or not yet.
                found.append((-1, -1))
                continue
            found.append((status.st_size, status.st_mtime_ns))
        return tuple(found)


#: Seconds between two looks at a SQLite database's files.
WATCH_EVERY = 0.005
