"""The executor threads of a worker process, and the jobs between claim and record.

A claimed job waits in :attr:`ExecutorPool.ready` for a free thread, runs (its id in
:attr:`running`), and its outcome waits in :attr:`done` for the producer to record it.
Every job handed in comes out as exactly one outcome, whatever happens on the way: an
executor thread never dies of a job (see :mod:`.executor`), and one stuck in C past its
grace period is given up on by the watchdog, which fails its job and recycles the
process. Each thread has Django's ordinary per-thread connections for the task's own
queries (closed when stale, as between requests) plus a private connection for
progress and checkpoints, and closes them all when it ends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable

from django.db import connections

from ..context import JobRuntime
from ..exceptions import Cancelled, JobTimeout
from ..results import JobResult
from ..store import ClaimedJob, JobStore, Outcome, get_store, private_store
from .executor import execute, failure_outcome
from .watchdog import Watchdog

logger = logging.getLogger("taskmill.worker")

#: Seconds a force-cancelled job has to stop before ``Cancelled`` is raised inside it.
FORCE_CANCEL_GRACE = 5.0
#: Outcomes waiting to be recorded before the producer is woken whatever else happens.
WAKE_AFTER = 100

Done = tuple[Outcome, JobResult | None]


class ExecutorPool:
    def __init__(self, database: str, worker_id: str, threads: int, *,
                 wake: threading.Event, recycle: Callable[[], None]) -> None:
        self.database = database
        self.worker_id = worker_id
        self.size = threads
        self.wake = wake
        self._recycle = recycle
        self.ready: queue.SimpleQueue[ClaimedJob | None] = queue.SimpleQueue()
        self.buffered = 0  # claimed, not yet started
        self.running: dict[uuid.UUID, tuple[ClaimedJob, JobRuntime, int]] = {}
        self.done: deque[Done] = deque()
        #: Ids of every job this process holds a lease on, from claim to recorded outcome.
        self.held: set[uuid.UUID] = set()
        self.lock = threading.Lock()
        self.processed = 0
        self.avg_duration = 0.05  # seconds; an exponential moving average
        self.threads: list[threading.Thread] = []
        self.watchdog = Watchdog(self._on_stuck)
        self.stopping = False

    # -- the producer's side -----------------------------------------------------------

    def start(self) -> None:
        self.watchdog.start()
        for index in range(self.size):
            thread = threading.Thread(target=self._loop, name=f"taskmill-executor-{index}",
                                      daemon=True)
            thread.start()
            self.threads.append(thread)

    def busy(self) -> int:
        """Jobs held and not finished: running, or waiting for a thread."""
        return len(self.running) + self.buffered

    def hand_out(self, jobs: list[ClaimedJob]) -> None:
        with self.lock:
            self.buffered += len(jobs)
            self.held.update(job.id for job in jobs)
        for job in jobs:
            self.ready.put(job)

    def take_done(self) -> list[Done]:
        items = []
        while self.done:
            items.append(self.done.popleft())
        return items

    def put_back(self, items: list[Done]) -> None:
        """Outcomes that could not be recorded yet (the database is away)."""
        self.done.extendleft(reversed(items))

    def recorded(self, items: list[Done]) -> None:
        with self.lock:
            self.held.difference_update(outcome.job.id for outcome, _ in items)

    def held_job_ids(self) -> set[uuid.UUID]:
        """Jobs this process knows it holds: running, or claimed and waiting for a thread."""
        with self.lock:
            return set(self.held)

    def take_unstarted(self) -> list[ClaimedJob]:
        """Claimed jobs no thread has started (to give back at shutdown)."""
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
        return unstarted

    def still_running(self) -> list[ClaimedJob]:
        with self.lock:
            return [job for job, _, _ in self.running.values()]

    def stop(self, timeout: float) -> None:
        """Let idle threads go; one still busy is stuck in a job (handed back or failed by
        the watchdog) and dies with the process."""
        self.stopping = True
        for _ in self.threads:
            self.ready.put(None)
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.watchdog.stop()
        self.watchdog.join(timeout=5)  # quick: it only waits on a condition

    def request_cancel(self, job_id: uuid.UUID, force: bool) -> None:
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

    # -- the executor threads ------------------------------------------------------------

    def _loop(self) -> None:
        store = private_store(self.database)
        sqlite_writes_up_front()
        try:
            while True:
                job = self.ready.get()
                if job is None:
                    return
                with self.lock:
                    self.buffered -= 1
                # The private connection for progress and checkpoints follows Django's
                # rules between requests too (CONN_MAX_AGE, CONN_HEALTH_CHECKS, errors).
                try:
                    store.connection.close_if_unusable_or_obsolete()
                except Exception:
                    store.connection.close()
                self._run_one(job, store)
        finally:
            store.connection.close()
            connections.close_all()

    def _run_one(self, job: ClaimedJob, store: JobStore) -> None:
        thread_id = threading.get_ident()
        runtime = JobRuntime(job, self.worker_id, store,
                             on_body_done=lambda: self.watchdog.release(runtime))
        with self.lock:
            self.running[job.id] = (job, runtime, thread_id)
        if job.timeout:
            self.watchdog.watch(runtime, thread_id, job.timeout, JobTimeout)
        started = time.perf_counter()
        try:
            done = execute(job, runtime, record=lambda o: get_store(
                connections[store.alias]).record_outcomes([o], self.worker_id))
        except BaseException as exc:  # Never expected (execute() returns an outcome for
            # everything), but a job must not leave this thread without one.
            logger.exception("Job %s: the worker failed around the task.", job.id)
            done = failure_outcome(job, exc, final=False), None
        self.watchdog.release(runtime)  # Where the body never ran (or a second time).
        self._finish(job, runtime, done, time.perf_counter() - started)

    def _finish(self, job: ClaimedJob, runtime: JobRuntime, done: Done,
                duration: float) -> None:
        self.watchdog.forget(runtime)
        with self.lock:
            given_up = self.running.pop(job.id, None) is None  # the watchdog failed it
            self.processed += 1
            self.avg_duration = self.avg_duration * 0.8 + duration * 0.2
        if not given_up:
            self.done.append(done)
        if self.ready.empty() or len(self.done) >= WAKE_AFTER or self.stopping:
            self.wake.set()

    def _on_stuck(self, token: object, exc_type: type[BaseException]) -> None:
        """A job ignored its timeout or forced cancel: fail it now and recycle the process."""
        assert isinstance(token, JobRuntime)
        job = token.job
        outcome = failure_outcome(job, exc_type(f"Job {job.id} was stopped "
                                                f"({exc_type.__name__})."),
                                  final=exc_type is Cancelled)
        with self.lock:
            if self.running.pop(job.id, None) is None:
                return  # It finished after all.
        self.done.append((outcome, None))
        self._recycle()
        self.wake.set()


def sqlite_writes_up_front() -> None:
    """Make this thread's SQLite transactions take the write lock when they begin
    (``BEGIN IMMEDIATE``), as taskmill's own do, unless the project chose a mode itself.

    A task that reads and then writes in ``transaction.atomic()`` (most do) otherwise
    fails at once with "database is locked" whenever another process wrote in between:
    SQLite cannot turn a reader whose snapshot went stale into a writer, whatever the
    timeout. Taking the lock up front makes it wait its turn instead. The cost: a
    read-only atomic block in a task holds other writers back while it runs.
    """
    for alias in connections:
        wrapper = connections[alias]
        options = wrapper.settings_dict.get("OPTIONS", {})
        if wrapper.vendor == "sqlite" and "transaction_mode" not in options:
            # This thread's wrapper only: the settings dict is shared by every thread's.
            wrapper.settings_dict = {**wrapper.settings_dict,
                                     "OPTIONS": {**options, "transaction_mode": "IMMEDIATE"}}


__all__ = ["FORCE_CANCEL_GRACE", "ExecutorPool", "sqlite_writes_up_front"]
