"""The heartbeat thread: renews the lease, relays cancels, runs maintenance services."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Collection
from datetime import timedelta
from typing import Any, Protocol

from django.utils import timezone

from ..services import scheduler
from ..store import JobStore, close_store, private_store
from .config import WorkerConfig
from .outage import DatabaseGate

logger = logging.getLogger("taskmill.worker")

TICK = 0.5  # seconds between cancel checks


class LeaseHolder(Protocol):
    """What the heartbeat needs of the worker process whose lease it renews."""

    config: WorkerConfig
    worker_id: str
    hostname: str

    @property
    def running(self) -> Collection[Any]: ...

    def held_job_ids(self) -> set[uuid.UUID]: ...

    def request_cancel(self, job_id: uuid.UUID, force: bool) -> None: ...


class Heartbeat(threading.Thread):
    def __init__(self, worker: LeaseHolder) -> None:
        super().__init__(name="taskmill-heartbeat", daemon=True)
        self.worker = worker
        self.config = worker.config
        self._stopped = threading.Event()
        self._store: JobStore | None = None
        self.gate = DatabaseGate(self.config.database, reset=self._reset)
        lease = self.config.lease_seconds
        self.beat_every = max(0.5, lease / 4)
        self.recover_every = max(1.0, lease / 2)
        self.prune_every = 3600.0

    @property
    def store(self) -> JobStore:
        if self._store is None:
            self._store = private_store(self.config.database)
        return self._store

    def _reset(self) -> None:
        close_store(self._store)

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        now = time.monotonic()
        next_beat = now + self.beat_every
        # Spread maintenance over the processes so they do not all run it at once.
        next_recover = now + random.uniform(0, self.recover_every)
        next_prune = now + random.uniform(60, 300)
        try:
            while not self._stopped.wait(TICK):
                now = time.monotonic()
                if self.gate.down_since is not None and self.gate.call(
                        self._ping, "reach the database", self._stopped, attempts=1) is None:
                    continue  # Still down: nothing else to try this tick.
                if self.worker.running:
                    self.gate.call(self._relay_cancels, "check for cancelled jobs", self._stopped,
                                   attempts=1)
                if now >= next_beat:
                    next_beat = now + self.beat_every
                    self.gate.call(self._beat, "renew the worker lease", self._stopped, attempts=1)
                if self.config.maintenance and now >= next_recover:
                    next_recover = now + self.recover_every * random.uniform(0.8, 1.2)
                    self.gate.call(self._recover, "recover jobs of dead workers", self._stopped,
                                   attempts=1)
                if self.config.maintenance and now >= next_prune:
                    next_prune = now + self.prune_every
                    self.gate.call(self._prune, "prune finished jobs", self._stopped, attempts=1)
                if self.config.maintenance:
                    self.gate.call(self._schedule, "enqueue periodic tasks", self._stopped,
                                   attempts=1)
        finally:
            self._reset()

    def _ping(self) -> bool:
        with self.store.connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True

    def _beat(self) -> None:
        worker = self.worker
        if not self.store.heartbeat(worker.worker_id, timezone.now()):
            logger.warning(
                "Worker %s was declared dead (no heartbeat for %ss) and its jobs recovered; "
                "re-registering. Results of jobs it was running are discarded.",
                worker.worker_id, self.config.lease_seconds,
            )
            self.store.register_worker(worker.worker_id, worker.hostname, os.getpid(),
                                       self.config.queues, self.config.threads, timezone.now())
        self._reconcile()

    def _reconcile(self) -> None:
        """Hand back jobs leased to us that we do not know of (a claim whose reply was lost)."""
        claimed_before = timezone.now() - timedelta(seconds=max(5.0, self.beat_every * 2))
        leased = self.store.leased_jobs(self.worker.worker_id, claimed_before)
        known = self.worker.held_job_ids()
        unknown = [job for job in leased if job.id not in known]
        if unknown:
            count = self.store.hand_back(unknown, self.worker.worker_id, started=False)
            if count:
                logger.warning("Worker %s handed back %d job(s) it held without knowing "
                               "(a claim whose reply was lost).", self.worker.worker_id, count)

    def _relay_cancels(self) -> None:
        for job_id, force in self.store.cancel_requests(self.worker.worker_id).items():
            self.worker.request_cancel(job_id, force)

    def _recover(self) -> None:
        recovered_at = self.gate.last_recovered_at
        lease = self.config.lease_seconds
        if recovered_at is not None and time.monotonic() - recovered_at < lease:
            return  # We were cut off ourselves: give every worker a lease to heartbeat first.
        now = timezone.now()
        expired = self.store.expire_workers(now - timedelta(seconds=lease))
        for worker_id in expired:
            logger.warning("Worker %s stopped heartbeating; recovering its jobs.", worker_id)
        count = self.store.recover_orphans(now)
        if count:
            logger.warning("Recovered %d job(s) from dead workers.", count)

    def _prune(self) -> None:
        cutoff = timezone.now() - timedelta(seconds=self.config.result_ttl)
        count = self.store.prune(cutoff)
        if count:
            logger.info("Pruned %d finished job(s) older than RESULT_TTL.", count)

    def _schedule(self) -> None:
        scheduler.run_due(self.store)
