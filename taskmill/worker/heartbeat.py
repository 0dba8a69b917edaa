"""The heartbeat thread: renews this process's lease and relays cancel requests.

It does nothing else, on a connection of its own, so nothing can delay a renewal:
maintenance runs on its own thread (:mod:`.maintenance`). An unexpected error is logged
and the next tick tries again; the producer reads :attr:`Heartbeat.renewed_at` before
every claim and stops claiming while the lease is going stale (:meth:`lease_is_fresh`),
so a worker that cannot renew its lease never takes jobs another worker may soon be
told to recover.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Collection
from typing import Any, Protocol

from ..store import JobStore, close_store
from .config import WorkerConfig
from .outage import DatabaseGate, DatabaseHealth

logger = logging.getLogger("taskmill.worker")

TICK = 0.2  # seconds between two retries of a renewal that failed
CANCEL_CHECK = 0.5  # seconds between looks at cancel requests while jobs run


class LeaseHolder(Protocol):
    """What the heartbeat needs of the worker process whose lease it renews."""

    config: WorkerConfig
    worker_id: str
    hostname: str
    wake: threading.Event

    def report_alive(self) -> None: ...

    @property
    def running(self) -> Collection[Any]: ...

    def held_job_ids(self) -> set[uuid.UUID]: ...

    def request_cancel(self, job_id: uuid.UUID, force: bool) -> None: ...


class Heartbeat(threading.Thread):
    def __init__(self, worker: LeaseHolder, health: DatabaseHealth) -> None:
        super().__init__(name="taskmill-heartbeat", daemon=True)
        self.worker = worker
        self.config = worker.config
        self._stopped = threading.Event()
        self._store: JobStore | None = None
        self.gate = DatabaseGate(health, lambda: self.store.connection)
        lease = self.config.lease_seconds
        self.beat_every = max(0.2, lease / 4)
        #: Monotonic time of the last renewal that went through (registration counts).
        self.renewed_at = time.monotonic()

    @property
    def store(self) -> JobStore:
        if self._store is None:
            self._store = self.config.private_store()
        return self._store

    def stop(self) -> None:
        self._stopped.set()

    def lease_is_fresh(self) -> bool:
        """Whether the lease was renewed recently enough to take more jobs under it: two
        renewals may fail in a row (half a lease) before the worker stops claiming."""
        return self.is_alive() and time.monotonic() - self.renewed_at < self.beat_every * 2.5

    def run(self) -> None:
        next_beat = time.monotonic() + self.beat_every
        next_cancel_check = 0.0
        try:
            while not self._stopped.wait(TICK):
                try:
                    now = time.monotonic()
                    if now >= next_beat and self.gate.call(
                            self._beat, "renew the worker lease", self._stopped, attempts=1):
                        next_beat = time.monotonic() + self.beat_every
                    if self.worker.running and now >= next_cancel_check:
                        next_cancel_check = now + CANCEL_CHECK
                        self.gate.call(self._relay_cancels, "check for cancelled jobs",
                                       self._stopped, attempts=1)
                except Exception:  # A bug, not the database: say so, and beat again.
                    logger.exception("Worker %s: the heartbeat failed; retrying.",
                                     self.worker.worker_id)
        finally:
            close_store(self._store)

    def _beat(self) -> bool:
        worker = self.worker
        if not self.store.heartbeat(worker.worker_id):
            logger.warning(
                "Worker %s was declared dead (no heartbeat for %ss) and its jobs recovered; "
                "re-registering. Results of jobs it was running are discarded.",
                worker.worker_id, self.config.lease_seconds,
            )
            self.store.register_worker(worker.worker_id, worker.hostname, os.getpid(),
                                       self.config.queues, self.config.threads)
        stale = not self.lease_is_fresh()
        self.renewed_at = time.monotonic()
        if stale:
            worker.wake.set()  # The producer held back its claims: it may claim again.
        self._reconcile()
        worker.report_alive()
        return True

    def _reconcile(self) -> None:
        """Hand back jobs leased to us that we do not know of (a claim whose reply was lost)."""
        leased = self.store.leased_jobs(self.worker.worker_id, max(5.0, self.beat_every * 2))
        if not leased:
            return
        known = self.worker.held_job_ids()
        unknown = [job for job in leased if job.id not in known]
        if unknown:
            count = self.store.hand_back(unknown, self.worker.worker_id, started=False)
            if count:
                logger.warning("Worker %s handed back %d job(s) it held without knowing "
                               "(a claim whose reply was lost).", self.worker.worker_id, count)

    def _relay_cancels(self) -> None:
        requests = self.store.cancel_requests(self.worker.worker_id, self.worker.held_job_ids())
        for job_id, force in requests.items():
            self.worker.request_cancel(job_id, force)
