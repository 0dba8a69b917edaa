"""Wakes an idle worker the moment a job is enqueued (PostgreSQL LISTEN/NOTIFY).

The job table's insert trigger sends ``NOTIFY taskmill, '<queue>'`` with the enqueue's
commit, so a worker hears of a job exactly when it becomes visible. Polling stays as the
fallback: a missed notification (connection lost, PgBouncer in transaction mode, where
LISTEN does not work) only costs up to one poll interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection

from django.db import connections

from ..store.postgresql import CHANNEL

logger = logging.getLogger("taskmill.worker")


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
        delay = 0.5
        while not self._stopped.is_set():
            wrapper = connections.create_connection(self.database)
            try:
                wrapper.ensure_connection()
                conn = wrapper.connection
                conn.autocommit = True
                conn.execute(f"LISTEN {CHANNEL}")
                self.listening.set()
                delay = 0.5
                while not self._stopped.is_set():
                    for notify in conn.notifies(timeout=0.25):
                        if notify.payload in self.queues:
                            self.wake.set()
            except Exception as exc:  # The database went away: poll until it is back.
                self.listening.clear()
                if not self._stopped.is_set():
                    logger.warning("Job notifications unavailable (%s); polling meanwhile.",
                                   str(exc).strip().splitlines()[0] if str(exc) else exc)
                    self.wake.set()
                    self._stopped.wait(delay)
                    delay = min(delay * 2, 10.0)
            finally:
                try:
                    wrapper.close()
                except Exception:
                    pass
