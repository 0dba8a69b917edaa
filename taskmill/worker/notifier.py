"""Wakes an idle worker the moment a job is enqueued: LISTEN/NOTIFY on PostgreSQL, a
watch on the database file on SQLite.

The job table's insert trigger sends ``NOTIFY taskmill, '<queue>'`` with the enqueue's
commit, so a worker hears of a job exactly when it becomes visible. Polling stays as the
fallback: a missed notification (the connection lost) only costs up to one poll interval.

Behind a pooler in transaction mode (PgBouncer's ``pool_mode = transaction``) LISTEN is
accepted, yet no notification ever arrives: the session that listened goes back to the
pool with the transaction. So after each LISTEN a listener sends itself a notification,
from another connection as an enqueue would, and sets ``hears`` once one arrives; none
within ``HEARING_PROBE_WAIT``, it warns once. Until it hears, its worker looks for jobs
as an unwoken one does (:mod:`.looks`): soon after taking jobs, then less and less
often, up to its poll interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from pathlib import Path

from ..db import private_connection
from ..store.postgresql import CHANNEL

logger = logging.getLogger("taskmill.worker")

#: Seconds between tries to listen again after the connection was lost, growing to the
#: most: jobs enqueued once the database is back are heard within about that long.
RETRY_FIRST = 0.2
RETRY_MAX = 1.0

#: Seconds a listener waits for the notification it sends itself after LISTEN before it
#: judges itself deaf. A direct connection hears it within milliseconds; the margin is for
#: a loaded host, where a deaf verdict that was wrong would cost a misleading warning.
HEARING_PROBE_WAIT = 2.0

#: That notification's payload: not a queue's name, so no worker is woken by it.
PROBE_PAYLOAD = "taskmill:hearing-probe"


class Listener(threading.Thread):
    """Sets ``wake`` whenever a job for one of ``queues`` is committed, and ``hears`` while
    notifications are known to reach it (see the module's docstring)."""

    def __init__(self, database: str, queues: Collection[str], wake: threading.Event) -> None:
        super().__init__(name="taskmill-listener", daemon=True)
        self.database = database
        self.queues = set(queues)
        self.wake = wake
        self._stopped = threading.Event()
        self.listening = threading.Event()
        #: Set once a notification reached this connection: only then may the worker
        #: wait out its poll interval between looks, trusting NOTIFY to wake it.
        self.hears = threading.Event()
        self._said_deaf = False

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
                self._send_probe()  # Each new session is judged anew: the path may differ.
                judge_at: float | None = time.monotonic() + HEARING_PROBE_WAIT
                while not self._stopped.is_set():
                    for notify in conn.notifies(timeout=0.25):
                        self._heard()  # Any notification proves it, the probe or an enqueue.
                        if notify.payload in self.queues:
                            self.wake.set()
                    if judge_at is not None and time.monotonic() >= judge_at:
                        judge_at = None
                        if not self.hears.is_set():
                            self._found_deaf()
            except Exception as exc:  # The database went away: poll until it is back.
                self.listening.clear()
                self.hears.clear()
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

    def _send_probe(self) -> None:
        """NOTIFY this listener from a connection of its own, the way an enqueue does.

        Not from the listening connection: through a pooler in transaction mode its own
        NOTIFY may run in the very server session that listened, and come back with that
        statement's reply, while an enqueue's, sent from another session, never would.
        """
        wrapper = private_connection(self.database)
        try:
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, PROBE_PAYLOAD])
        finally:
            wrapper.close()

    def _heard(self) -> None:
        if self.hears.is_set():
            return
        self.hears.set()
        if self._said_deaf:
            self._said_deaf = False
            logger.info("Job notifications reach this worker again: idle, it waits for them "
                        "and looks for jobs once per poll interval.")

    def _found_deaf(self) -> None:
        """One warning until it hears again: a reconnection to the same pooler would
        otherwise repeat it after every outage."""
        if self._said_deaf:
            return
        self._said_deaf = True
        logger.warning(
            "Job notifications do not reach this worker: LISTEN on DATABASES[%r] was "
            "accepted, but a NOTIFY sent to it was not heard within %gs. A pooler in "
            "transaction mode is probably in between (PgBouncer's pool_mode = transaction), "
            "and it never passes notifications on. The worker looks for jobs soon after each "
            "claim that took some instead, but an idle one still only once per "
            "--poll-interval. Give workers a direct connection (or a session-mode pool) for "
            "the job database, or run them with --poll-interval 1.",
            self.database, HEARING_PROBE_WAIT)


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
        #: A local file's changes are always seen: the worker trusts them from the start.
        self.hears = threading.Event()
        self.hears.set()

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
