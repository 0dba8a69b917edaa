"""Riding out a database that is down or restarting.

Every database call a worker makes for its own bookkeeping goes through a
:class:`DatabaseGate`. A connection error closes the connection, logs one plain line
(which database, where, what failed) and retries with backoff until the database
answers or the worker is told to stop; when it is back, one line says so. Errors that
waiting cannot fix — missing tables, bad SQL — are raised at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError

from ..db import describe_database, explain_connection_error

logger = logging.getLogger("taskmill.worker")

T = TypeVar("T")

MAX_DELAY = 10.0


class DatabaseGate:
    """Retries a database call through outages, with one log line per outage."""

    def __init__(self, alias: str, reset: Callable[[], None] | None = None) -> None:
        self.alias = alias
        self.reset = reset
        self.down_since: float | None = None
        #: Monotonic time the last outage ended (used to hold back recovery briefly).
        self.last_recovered_at: float | None = None

    def call(self, fn: Callable[[], T], what: str, stop: threading.Event | None,
             attempts: int | None = None) -> T | None:
        """Return ``fn()``; None if ``stop`` was set or ``attempts`` ran out first."""
        delay = 0.2
        tries = 0
        while True:
            try:
                value = fn()
            except (OperationalError, InterfaceError) as exc:
                tries += 1
                if self.reset is not None:
                    try:
                        self.reset()
                    except Exception:
                        pass
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    logger.error("Database %s unavailable while trying to %s: %s. "
                                 "Retrying until it is back; no job is lost meanwhile.",
                                 describe_database(self.alias), what, explain_connection_error(exc))
                if attempts is not None and tries >= attempts:
                    return None
                if stop is not None and stop.wait(delay):
                    return None
                if stop is None:
                    time.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
                continue
            if self.down_since is not None:
                logger.warning("Database %s is back after %.1fs.", describe_database(self.alias),
                               time.monotonic() - self.down_since)
                self.down_since = None
                self.last_recovered_at = time.monotonic()
            return value
