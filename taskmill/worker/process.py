"""One worker process: claims jobs, runs them on executor threads, records outcomes.

Threads of a worker process and what each holds:

* main (the *producer*): claims due jobs and records finished ones, on a connection of
  its own. It completes the last round's jobs and claims the next round in a single
  transaction, so a busy worker commits once per batch, not once per job.
* ``--threads`` executors: run jobs. Each has Django's ordinary per-thread connections
  for the task's own queries (closed when stale, as between requests) plus a private
  connection for progress and checkpoints, and closes them all when it ends.
* heartbeat: renews this process's lease, passes cancel requests to running jobs, and
  runs the maintenance services (recovery of dead workers' jobs, pruning, scheduling).
* watchdog: enforces ``timeout`` and forced cancels (see :mod:`.watchdog`).
* listener (PostgreSQL): LISTEN for new jobs, so an idle worker starts within a
  millisecond or two of the enqueue's commit.

How many jobs a round claims adapts to how long jobs take: short jobs are claimed in
batches (up to ``MAX_BATCH``, about ``CLAIM_HORIZON`` seconds of work), long ones only
as threads come free, so a slow job never sits in one worker's buffer while another
worker idles. A job claimed but not yet started is given back (attempt refunded) on a
graceful stop; if the process is killed, it is recovered like a running one.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
from collections import deque
from functools import partial
from typing import Any

from django.db import connections
from django.utils import timezone

from ..context import JobRuntime
from ..exceptions import Cancelled, JobTimeout
from ..store import ClaimedJob, JobStore, Outcome, close_store, get_store, private_store
from .config import WorkerConfig
from .executor import announce_finished, execute, failure_outcome
from .heartbeat import Heartbeat
from .notifier import Listener
from .outage import DatabaseGate
from .watchdog import Watchdog

logger = logging.getLogger("taskmill.worker")

#: Exit codes a child uses to tell the supervisor why it ended.
EXIT_OK = 0
EXIT_BURST_DONE = 0
EXIT_RECYCLE = 75

MAX_BATCH = 200
CLAIM_HORIZON = 0.05  # seconds of work one claim may take on, for short jobs
FLUSH_AFTER = 0.02  # seconds a finished job may wait to be recorded


class WorkerProcess:
    """Runs until stopped, burst-done or recycled; :meth:`run` returns the exit code."""

    def __init__(self, config: WorkerConfig, worker_id: str) -> None:
        self.config = config
        self.worker_id = worker_id
        self.hostname = socket.gethostname()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.exit_code = EXIT_OK
        self.gate = DatabaseGate(config.database, reset=self._reset_store)
        self.ready: queue.SimpleQueue[ClaimedJob | None] = queue.SimpleQueue()
        self.buffered = 0  # claimed, not yet started
        self.running: dict[Any, tuple[ClaimedJob, JobRuntime, int]] = {}
        self.done: deque[tuple[Outcome, Any]] = deque()
        #: Ids of every job this process holds a lease on, from claim to recorded outcome.
        self.held: set[Any] = set()
        self.lock = threading.Lock()
        self.processed = 0
        self.avg_duration = 0.05  # seconds; an exponential moving average
        self.threads: list[threading.Thread] = []
        self.watchdog = Watchdog(self._on_stuck)
        self.failure: BaseException | None = None
        self._store: JobStore | None = None
        self._registered = False
        self.heartbeat: Heartbeat | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
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
            self._store = private_store(self.config.database)
        return self._store

    def run(self) -> int:
        config = self.config
        self.gate.call(self._prepare_database, "register worker", self.stopping)
        if not self._registered:  # Stopped while waiting for the database.
            return self.exit_code
        self.watchdog.start()
        heartbeat = self.heartbeat = Heartbeat(self)
        heartbeat.start()
        listener = None
        if self.store.vendor == "postgresql":
            listener = Listener(config.database, config.queues, self.wake)
            listener.start()
        for index in range(config.threads):
            thread = threading.Thread(target=self._executor_loop, name=f"taskmill-executor-{index}",
                                      daemon=True)
            thread.start()
            self.threads.append(thread)
        logger.info("Worker %s started: queues %s, %d thread(s).", self.worker_id,
                    ",".join(config.queues), config.threads)
        try:
            self._produce()
        finally:
            self._shutdown()
            if listener is not None:
                listener.stop()
            self.watchdog.stop()
            self.watchdog.join(timeout=5)  # quick: it only waits on a condition
            if listener is not None:
                # Its connection is closed when it ends; wait, so none outlives run()
                # (an in-process test worker must leave the test database droppable).
                listener.join(timeout=5)
            close_store(self._store)
        return self.exit_code

    def _prepare_database(self) -> None:
        if self.store.vendor == "sqlite":
            with self.store.connection.cursor() as cursor:
                cursor.execute("PRAGMA journal_mode=WAL")
        self.store.register_worker(self.worker_id, self.hostname, os.getpid(),
                                   self.config.queues, self.config.threads, timezone.now())
        self._registered = True

    # -- the producer --------------------------------------------------------------------

    def _capacity(self) -> int:
        """How many more jobs to claim now."""
        threads = self.config.threads
        busy = len(self.running) + self.buffered
        if self.avg_duration * 4 > CLAIM_HORIZON:
            # Long jobs: one per free thread, so none waits here while another worker idles.
            target = threads
        else:  # Short jobs: about CLAIM_HORIZON seconds of work per round.
            target = max(threads, min(MAX_BATCH, int(CLAIM_HORIZON / max(self.avg_duration, 1e-6))))
        if self.config.max_tasks_per_child:
            target = min(target, self.config.max_tasks_per_child - self.processed)
        return max(0, target - busy)

    def _produce(self) -> None:
        config = self.config
        while True:
            self.wake.clear()
            outcomes = self._take_done()
            claim = 0 if self.stopping.is_set() else self._capacity()
            claimed: list[ClaimedJob] = []
            if outcomes or claim:
                taken = self.gate.call(
                    partial(self._complete_and_claim, outcomes, claim), "claim jobs",
                    self.stopping,
                )
                if taken is None:  # Stopped while the database was away: record later.
                    self.done.extendleft(reversed(outcomes))
                    outcomes = []
                else:
                    claimed = taken
                for outcome, result in outcomes:
                    announce_finished(result, outcome)
            if claimed:
                with self.lock:
                    self.buffered += len(claimed)
                    self.held.update(job.id for job in claimed)
                for job in claimed:
                    self.ready.put(job)
            if self.stopping.is_set():
                # _shutdown() waits for running jobs, up to the shutdown timeout (a crashed
                # executor, see ``self.failure``, never empties ``running``: no wait there).
                return
            if self._memory_exceeded():
                logger.info("Worker %s is over --max-memory-per-child; recycling.", self.worker_id)
                self.stop(EXIT_RECYCLE)
                continue
            if config.max_tasks_per_child and self.processed >= config.max_tasks_per_child:
                self.stop(EXIT_RECYCLE)
                continue
            idle = not self.running and not self.buffered and not self.done
            if claim and len(claimed) == claim:
                continue  # Probably more waiting: claim again right away.
            if config.burst and idle and not claimed:
                if not self._due_soon():
                    logger.info("Worker %s: nothing due, burst done.", self.worker_id)
                    self.stop(EXIT_BURST_DONE)
                continue
            if self.done:
                self.wake.wait(FLUSH_AFTER)
            elif idle and not claimed:
                self.wake.wait(self._idle_wait())
            else:
                self.wake.wait(config.poll_interval)

    def _complete_and_claim(self, outcomes: list[tuple[Outcome, Any]],
                            limit: int) -> list[ClaimedJob]:
        store = self.store
        store.tune_for_worker()
        pending = [o for o, _ in outcomes if o.needs_recording]
        if pending:  # One commit for the round's outcomes and the next claim.
            with store.atomic():
                store.record_outcomes(pending, self.worker_id)
                jobs = store.claim(self.config.queues, limit, self.worker_id,
                                   timezone.now()) if limit else []
        else:  # A claim alone is one statement: autocommit saves two round trips.
            jobs = store.claim(self.config.queues, limit, self.worker_id,
                               timezone.now()) if limit else []
        with self.lock:
            self.held.difference_update(o.job.id for o, _ in outcomes)
        for outcome in pending:
            outcome.needs_recording = False
            if not outcome.recorded:
                logger.warning("Job %s: lease lost before its outcome was recorded; "
                               "another attempt owns it.", outcome.job.id)
        for outcome, _ in outcomes:
            self._log_outcome(outcome)
        return jobs

    def _log_outcome(self, outcome: Outcome) -> None:
        job = outcome.job
        # Structured fields for log systems (taskmill.logging.JSONFormatter shows them).
        fields = {"job_id": str(job.id), "task": job.task_path, "queue": job.queue_name,
                  "attempt": job.attempts, "worker_id": self.worker_id}
        if outcome.succeeded:
            logger.debug("Job %s %s succeeded (attempt %d).", job.id, job.task_path, job.attempts,
                         extra={**fields, "event": "job_succeeded"})
        elif outcome.retry_at is not None:
            logger.warning("Job %s %s failed (attempt %d of %d, %s); retrying at %s.", job.id,
                           job.task_path, job.attempts, job.max_attempts,
                           outcome.exception_class_path, outcome.retry_at.isoformat(),
                           extra={**fields, "event": "job_retrying",
                                  "exception": outcome.exception_class_path})
        else:
            logger.error("Job %s %s failed for good (attempt %d of %d): %s", job.id,
                         job.task_path, job.attempts, job.max_attempts,
                         outcome.traceback.strip().splitlines()[-1] if outcome.traceback else
                         outcome.exception_class_path,
                         extra={**fields, "event": "job_failed",
                                "exception": outcome.exception_class_path})

    def _take_done(self) -> list[tuple[Outcome, Any]]:
        items = []
        while self.done:
            items.append(self.done.popleft())
        return items

    def _due_soon(self) -> bool:
        due = self.gate.call(lambda: self.store.next_due(self.config.queues), "check due jobs",
                             self.stopping)
        return due is not None and due <= timezone.now()

    def _idle_wait(self) -> float:
        due = self.gate.call(lambda: self.store.next_due(self.config.queues), "check due jobs",
                             self.stopping)
        if due is None:
            return self.config.poll_interval
        return max(0.0, min(self.config.poll_interval, (due - timezone.now()).total_seconds()))

    def _memory_exceeded(self) -> bool:
        limit = self.config.max_memory_per_child
        if not limit or not self.processed:
            return False  # Judge after a job: a fresh process over the limit would loop.
        return resident_memory_mb() > limit

    # -- executors -----------------------------------------------------------------------

    def _executor_loop(self) -> None:
        store = private_store(self.config.database)
        try:
            while True:
                job = self.ready.get()
                if job is None:
                    return
                with self.lock:
                    self.buffered -= 1
                # The private connection for progress and checkpoints follows Django's
                # rules between requests too (CONN_MAX_AGE, CONN_HEALTH_CHECKS, errors).
                store.connection.close_if_unusable_or_obsolete()
                self._run_one(job, store)
        except BaseException as exc:  # pragma: no cover - a bug in the worker itself
            logger.exception("Executor thread crashed.")
            self.failure = exc
            self.stop(EXIT_RECYCLE)
        finally:
            store.connection.close()
            connections.close_all()

    def _run_one(self, job: ClaimedJob, store: JobStore) -> None:
        runtime = JobRuntime(job, self.worker_id, store)
        token = runtime
        with self.lock:
            self.running[job.id] = (job, runtime, threading.get_ident())
        if job.timeout:
            self.watchdog.watch(token, threading.get_ident(), job.timeout, JobTimeout)
        started = time.perf_counter()
        try:
            outcome, result = execute(
                job, runtime,
                record=lambda o: get_store(connections[store.alias]).record_outcomes(
                    [o], self.worker_id),
            )
        finally:
            self.watchdog.release(token)
        duration = time.perf_counter() - started
        with self.lock:
            self.running.pop(job.id, None)
            self.processed += 1
            self.avg_duration = self.avg_duration * 0.8 + duration * 0.2
        self.done.append((outcome, result))
        if self.ready.empty() or len(self.done) >= MAX_BATCH // 2 or self.stopping.is_set():
            self.wake.set()

    def held_job_ids(self) -> set[Any]:
        """Jobs this process knows it holds: running, or claimed and waiting for a thread."""
        with self.lock:
            return set(self.held)

    def request_cancel(self, job_id: Any, force: bool) -> None:
        """Called by the heartbeat when someone cancelled a job this process runs."""
        with self.lock:
            entry = self.running.get(job_id)
        if entry is None:
            return
        job, runtime, thread_id = entry
        if not runtime.cancel_event.is_set():
            runtime.cancel_event.set()
            logger.info("Job %s: cancel requested%s.", job_id, " (forced)" if force else "")
        if force and not runtime.cancel_forced:  # Also when a plain cancel came first.
            runtime.cancel_forced = True
            self.watchdog.watch(runtime, thread_id, FORCE_CANCEL_GRACE, Cancelled)

    def _on_stuck(self, token: object, exc_type: type[BaseException]) -> None:
        """A job ignored its timeout/cancel: fail it now and recycle the process."""
        runtime = token
        assert isinstance(runtime, JobRuntime)
        outcome = failure_outcome(runtime.job, exc_type(f"Job {runtime.job.id} was stopped "
                                                  f"({exc_type.__name__})."),
                           final=exc_type is Cancelled)
        with self.lock:
            self.running.pop(runtime.job.id, None)
        self.done.append((outcome, None))
        self.stop(EXIT_RECYCLE)

    # -- shutdown ------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Give back unstarted jobs, wait for running ones, hand back what is left."""
        unstarted: list[ClaimedJob] = []
        while True:
            try:
                job = self.ready.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                unstarted.append(job)
        with self.lock:
            self.buffered -= len(unstarted)
        if unstarted:
            self.gate.call(lambda: self.store.hand_back(unstarted, self.worker_id, started=False),
                           "hand back jobs", None, attempts=5)
        deadline = time.monotonic() + self.config.shutdown_timeout
        while self.running and time.monotonic() < deadline:
            self._flush_done()
            time.sleep(0.05)
        self._flush_done()
        with self.lock:
            leftover = [job for job, _, _ in self.running.values()]
        if leftover:
            logger.warning("Worker %s: %d job(s) still running after %.0fs; handing them back.",
                           self.worker_id, len(leftover), self.config.shutdown_timeout)
            self.gate.call(lambda: self.store.hand_back(leftover, self.worker_id, started=True),
                           "hand back jobs", None, attempts=5)
        for _ in self.threads:
            self.ready.put(None)
        # Idle executors exit at once; one still busy is stuck in a job (handed back or
        # failed by the watchdog) and dies with the process.
        deadline = time.monotonic() + 1.0
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        # The lease ends here: stop renewing it first, or a last heartbeat could find the
        # row gone and register the worker again.
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat.join(timeout=5)
        self.gate.call(lambda: self.store.unregister_worker(self.worker_id), "unregister worker",
                       None, attempts=3)
        logger.info("Worker %s stopped after %d job(s).", self.worker_id, self.processed)

    def _flush_done(self) -> None:
        outcomes = self._take_done()
        if outcomes:
            self.gate.call(lambda: self._complete_and_claim(outcomes, 0), "record outcomes",
                           None, attempts=10)
            for outcome, result in outcomes:
                announce_finished(result, outcome)

    def _reset_store(self) -> None:
        """Drop the producer's connection after an error; the next call reconnects."""
        close_store(self._store)


FORCE_CANCEL_GRACE = 5.0


def resident_memory_mb() -> float:
    """This process's resident set size, in MB (Linux; 0 where unknown)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError):
        return 0.0


__all__ = ["EXIT_RECYCLE", "WorkerProcess", "resident_memory_mb"]
