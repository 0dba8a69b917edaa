"""One worker process: claims jobs, runs them on executor threads, records outcomes.

Threads of a worker process and what each holds:

* main (the *producer*): claims due jobs and records finished ones, on a connection of
  its own. It completes the last round's jobs and claims the next round in a single
  transaction, so a busy worker commits once per batch, not once per job.
* ``--threads`` executors (:mod:`.executors`): run jobs.
* heartbeat (:mod:`.heartbeat`): renews this process's lease and passes cancel requests
  to running jobs, on a connection of its own and nothing else. The producer claims only
  while the lease is fresh.
* maintenance (:mod:`.maintenance`): recovery of dead workers' jobs, pruning, the
  periodic scheduler.
* watchdog: enforces ``timeout`` and forced cancels (see :mod:`.watchdog`).
* signals: acts on SIGTERM and SIGINT, which the signal handler itself must not
  (see :mod:`.signals`).
* listener (PostgreSQL): LISTEN for new jobs, so an idle worker starts within a
  millisecond or two of the enqueue's commit, once it has heard that notifications reach
  it (behind PgBouncer in transaction mode they never do; see :mod:`.notifier`).

How many jobs a round claims adapts to how long jobs take: short jobs are claimed in
batches (up to ``MAX_BATCH``, about ``CLAIM_HORIZON`` seconds of work), long ones only
as threads come free, so a slow job never sits in one worker's buffer while another
worker idles. A job claimed but not yet started is given back (attempt refunded) on a
graceful stop; if the process is killed, it is recovered like a running one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Collection
from functools import partial
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError

from .. import forkgate
from ..exceptions import ResultNotStored
from ..store import ClaimedJob, JobStore, close_store
from .config import WorkerConfig
from .executor import announce_finished, failure_outcome
from .executors import Done, ExecutorPool
from .heartbeat import Heartbeat
from .looks import IdleLooks
from .maintenance import Maintenance
from .notifier import FileWatcher, Listener
from .outage import DatabaseGate, DatabaseHealth
from .reporting import log_outcome, resident_memory_mb
from .signals import SignalRelay

logger = logging.getLogger("taskmill.worker")

#: Exit codes a child uses to tell the supervisor why it ended.
EXIT_OK = 0
EXIT_BURST_DONE = 0
EXIT_RECYCLE = 75

MAX_BATCH = 200
CLAIM_HORIZON = 0.05  # seconds of work one claim may take on, for short jobs
FLUSH_AFTER = 0.02  # seconds a finished job may wait to be recorded
#: --burst also runs what becomes due this soon (the retries of a failing job, say).
BURST_HORIZON = 10.0


class WorkerProcess:
    """Runs until stopped, burst-done or recycled; :meth:`run` returns the exit code."""

    def __init__(self, config: WorkerConfig, worker_id: str,
                 alive_at: ctypes.c_double | None = None) -> None:
        self.config = config
        #: Shared with the supervisor: when this process last showed it works.
        self.alive_at = alive_at
        #: When the producer last went round its loop (it does at least every poll).
        self.produced_at = time.monotonic()
        self.worker_id = worker_id
        self.hostname = socket.gethostname()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.exit_code = EXIT_OK
        self.health = DatabaseHealth(config.database)
        self.gate = DatabaseGate(self.health, lambda: self.store.connection)
        self.pool = ExecutorPool(config.database, worker_id, config.threads, wake=self.wake,
                                 recycle=partial(self.stop, EXIT_RECYCLE))
        self.heartbeat = Heartbeat(self, self.health)
        self.maintenance = (Maintenance(config, worker_id, self.health, self.wake)
                            if config.maintenance else None)
        self._store: JobStore | None = None
        self._registered = False
        self._holding_back = False
        self.looks = IdleLooks(config.poll_interval)

    # -- what the heartbeat sees of this process -----------------------------------------

    @property
    def running(self) -> Collection[Any]:
        return self.pool.running

    def held_job_ids(self) -> set[uuid.UUID]:
        return self.pool.held_job_ids()

    def request_cancel(self, job_id: uuid.UUID, force: bool) -> None:
        self.pool.request_cancel(job_id, force)

    def report_alive(self) -> None:
        """Called after each lease renewal: tell the supervisor this process works, if
        its producer also went round lately (a hung producer renews no health)."""
        quiet = time.monotonic() - self.produced_at
        if self.alive_at is not None and quiet < max(10.0, 3 * self.config.poll_interval):
            self.alive_at.value = time.monotonic()

    @property
    def processed(self) -> int:
        return self.pool.processed

    # -- lifecycle ---------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop this process (running jobs finish); the main thread
        must call it. They are acted on by a thread of their own (see :mod:`.signals`)."""
        SignalRelay((signal.SIGTERM, signal.SIGINT), self._on_signal).install()

    def _on_signal(self, signum: int) -> None:
        if not self.stopping.is_set():
            logger.info("Worker %s: %s received, finishing running jobs.", self.worker_id,
                        signal.Signals(signum).name)
        self.stop()

    def stop(self, exit_code: int | None = None) -> None:
        if exit_code is not None:
            self.exit_code = exit_code
        self.stopping.set()
        self.wake.set()

    @property
    def store(self) -> JobStore:
        if self._store is None:
            self._store = self.config.private_store()
        return self._store

    def run(self) -> int:
        forkgate.gate_every_sqlite_connection()  # Before any thread of ours connects.
        try:
            self.gate.call(self._prepare_database, "register worker", self.stopping)
            if self._registered:  # Else stopped while waiting for the database.
                self._serve()
        finally:
            close_store(self._store)
        return self.exit_code

    def _serve(self) -> None:
        config = self.config
        self.heartbeat.renewed_at = time.monotonic()  # Registering was the first beat.
        self.pool.start()
        self.heartbeat.start()
        if self.maintenance is not None:
            self.maintenance.start()
        listener: Listener | FileWatcher | None = None
        if self.store.vendor == "postgresql":
            listener = Listener(config.database, config.queues, self.wake)
        elif self.store.vendor == "sqlite":
            listener = FileWatcher(str(self.store.connection.settings_dict["NAME"]), self.wake)
        if listener is not None:
            self.looks.woken_by_enqueues = listener.hears  # Until it hears: quick looks.
            listener.start()
        logger.info("Worker %s started: queues %s, %d thread(s).", self.worker_id,
                    ",".join(config.queues), config.threads)
        try:
            self._produce()
        finally:
            self._shutdown()
            for thread in (listener, self.maintenance):
                if thread is not None:
                    thread.stop()
                    # Its connection is closed when it ends; wait, so none outlives run()
                    # (an in-process test worker must leave the test database droppable).
                    thread.join(timeout=5)

    def _prepare_database(self) -> None:
        self.store.prepare_for_worker()
        self.store.register_worker(self.worker_id, self.hostname, os.getpid(),
                                   self.config.queues, self.config.threads)
        self._registered = True

    # -- the producer --------------------------------------------------------------------

    def _capacity(self) -> int:
        """How many more jobs to claim now."""
        if not self._lease_allows_claims():
            return 0
        pool = self.pool
        threads = self.config.threads
        if pool.avg_duration * 4 > CLAIM_HORIZON:
            # Long jobs: one per free thread, so none waits here while another worker idles.
            target = threads
        else:  # Short jobs: about CLAIM_HORIZON seconds of work per round.
            target = max(threads, min(MAX_BATCH, int(CLAIM_HORIZON / max(pool.avg_duration,
                                                                           1e-6))))
        if self.config.max_tasks_per_child:
            target = min(target, self.config.max_tasks_per_child - pool.processed)
        return max(0, target - pool.busy())

    def _lease_allows_claims(self) -> bool:
        """Claim only under a lease the heartbeat keeps renewing: a worker whose lease is
        going stale is about to be declared dead, and its jobs handed to others."""
        if self.heartbeat.lease_is_fresh():
            if self._holding_back:
                self._holding_back = False
                logger.warning("Worker %s: lease renewed; claiming again.", self.worker_id)
            return True
        if not self.heartbeat.is_alive():
            logger.error("Worker %s: the heartbeat thread is gone; stopping so that the "
                         "supervisor starts a fresh process.", self.worker_id)
            self.stop(EXIT_RECYCLE)
        elif not self._holding_back:
            self._holding_back = True
            logger.warning("Worker %s: lease not renewed for %.1fs; claiming nothing until "
                           "it is.", self.worker_id,
                           time.monotonic() - self.heartbeat.renewed_at)
        return False

    def _produce(self) -> None:
        config = self.config
        while True:
            self.produced_at = time.monotonic()
            self.wake.clear()
            outcomes = self.pool.take_done()
            claim = 0 if self.stopping.is_set() else self._capacity()
            claimed: list[ClaimedJob] = []
            if outcomes or claim:
                taken = self.gate.call(
                    partial(self._complete_and_claim, outcomes, claim), "claim jobs",
                    self.stopping,
                )
                if taken is None:  # Stopped while the database was away: record later.
                    self.pool.put_back(outcomes)
                    outcomes = []
                else:
                    claimed = taken
                for outcome, result in outcomes:
                    announce_finished(result, outcome)
            if claimed:
                self.pool.hand_out(claimed)
                self.looks.took_jobs()
            if self.stopping.is_set():
                return  # _shutdown() waits for running jobs, up to the shutdown timeout.
            if self._memory_exceeded():
                logger.info("Worker %s is over --max-memory-per-child; recycling.", self.worker_id)
                self.stop(EXIT_RECYCLE)
                continue
            if config.max_tasks_per_child and self.pool.processed >= config.max_tasks_per_child:
                self.stop(EXIT_RECYCLE)
                continue
            idle = not self.pool.busy() and not self.pool.done
            if claim and len(claimed) == claim:
                continue  # Probably more waiting: claim again right away.
            if config.burst and idle and not claimed:
                due_in = self._next_wake()
                if due_in is None or due_in > BURST_HORIZON:
                    self._say_what_is_left()
                    self.stop(EXIT_BURST_DONE)
                else:  # A retry or a deferred job due shortly: it is part of the burst.
                    self.wake.wait(max(0.0, min(due_in, config.poll_interval)))
                continue
            if self.pool.done:
                self.wake.wait(FLUSH_AFTER)
            elif idle and not claimed:
                self.wake.wait(self._idle_wait())
            else:
                self.wake.wait(config.poll_interval)

    def _complete_and_claim(self, outcomes: list[Done], limit: int) -> list[ClaimedJob]:
        store = self.store
        pending = [o for o, _ in outcomes if o.needs_recording]
        try:
            if pending:  # One commit for the round's outcomes and the next claim.
                jobs = store.complete_and_claim(pending, self.config.queues, limit,
                                                self.worker_id)
            else:  # A claim alone is one statement: autocommit saves two round trips.
                jobs = store.claim(self.config.queues, limit, self.worker_id) if limit else []
        except (OperationalError, InterfaceError):
            raise  # The gate's to judge: an outage, or a conflict to retry.
        except DatabaseError:
            if not pending:
                raise
            # The database refused an outcome (a return value it cannot store, say): it
            # must not hold up the others, nor come back forever.
            self._record_one_by_one(outcomes)
            held = {o.job.id for o in pending}
            pending = [o for o, _ in outcomes if o.job.id in held]
            jobs = []
        self.pool.recorded(outcomes)
        for outcome in pending:
            outcome.needs_recording = False
            if not outcome.recorded:
                logger.warning("Job %s: lease lost before its outcome was recorded; "
                               "another attempt owns it.", outcome.job.id)
        for outcome, _ in outcomes:
            log_outcome(outcome, self.worker_id)
        return jobs

    def _record_one_by_one(self, outcomes: list[Done]) -> None:
        """Record each outcome on its own; one the database refuses is recorded as the
        failure of its attempt instead (in place in ``outcomes``)."""
        for index, (outcome, _result) in enumerate(outcomes):
            if not outcome.needs_recording:
                continue
            try:
                self.store.complete([outcome], self.worker_id)
                continue
            except (OperationalError, InterfaceError):
                raise
            except DatabaseError as exc:
                refused = failure_outcome(outcome.job, ResultNotStored(
                    f"The database refused the outcome of job {outcome.job.id} "
                    f"({type(exc).__name__}: {exc})."), final=False)
            self.store.complete([refused], self.worker_id)
            outcomes[index] = (refused, None)
            logger.error("Job %s: the database refused its outcome; recorded as a failure.",
                         outcome.job.id)

    def _next_wake(self) -> float | None:
        return self.gate.call(lambda: self.store.next_wake(self.config.queues),
                              "check due jobs", self.stopping)

    def _say_what_is_left(self) -> None:
        left = self.gate.call(lambda: self.store.waiting(self.config.queues),
                              "count waiting jobs", None, attempts=3)
        count, due_in = left if left is not None else (0, None)
        if not count:
            logger.info("Worker %s: nothing due, burst done.", self.worker_id)
        else:
            logger.warning("Worker %s: burst done; %d job(s) left waiting, the next due in "
                           "%.0fs (deferred, or retrying later than %.0fs from now).",
                           self.worker_id, count, due_in or 0.0, BURST_HORIZON)

    def _idle_wait(self) -> float:
        # The claim just came back short: set aside the due jobs it stepped over (a full
        # concurrency or rate key's, a paused task's), and put back those of rate keys
        # whose room came back (the wait that ends at that moment comes here first).
        self.gate.call(lambda: self.store.park_blocked(self.config.queues),
                       "park jobs that may not start", self.stopping)
        self.gate.call(self.store.unpark_reopened_rates, "unpark jobs of rate keys with room",
                       self.stopping)
        return self.looks.wait(self._next_wake())

    def _memory_exceeded(self) -> bool:
        limit = self.config.max_memory_per_child
        if not limit or not self.pool.processed:
            return False  # Judge after a job: a fresh process over the limit would loop.
        return resident_memory_mb() > limit

    # -- shutdown ------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Give back unstarted jobs, wait for running ones, hand back what is left."""
        unstarted = self.pool.take_unstarted()
        if unstarted:
            self.gate.call(lambda: self.store.hand_back(unstarted, self.worker_id, started=False),
                           "hand back jobs", None, attempts=5)
        deadline = time.monotonic() + self.config.shutdown_timeout
        while self.pool.running and time.monotonic() < deadline:
            self._flush_done()
            time.sleep(0.05)
        self._flush_done()
        leftover = self.pool.still_running()
        if leftover:
            logger.warning("Worker %s: %d job(s) still running after %.0fs; handing them back.",
                           self.worker_id, len(leftover), self.config.shutdown_timeout)
            self.gate.call(lambda: self.store.hand_back(leftover, self.worker_id, started=True),
                           "hand back jobs", None, attempts=5)
        self.pool.stop(timeout=1.0)
        # The lease ends here: stop renewing it first, or a last heartbeat could find the
        # row gone and register the worker again.
        self.heartbeat.stop()
        if self.heartbeat.is_alive():
            self.heartbeat.join(timeout=5)
        self.gate.call(lambda: self.store.unregister_worker(self.worker_id), "unregister worker",
                       None, attempts=3)
        logger.info("Worker %s stopped after %d job(s).", self.worker_id, self.pool.processed)

    def _flush_done(self) -> None:
        outcomes = self.pool.take_done()
        if outcomes:
            self.gate.call(lambda: self._complete_and_claim(outcomes, 0), "record outcomes",
                           None, attempts=10)
            for outcome, result in outcomes:
                announce_finished(result, outcome)


__all__ = ["EXIT_RECYCLE", "WorkerProcess"]
