"""Run taskmill jobs from a project's tests.

Two helpers, one per kind of test:

* :func:`run_pending` — for ``TestCase`` (pytest: ``@pytest.mark.django_db``). Jobs run
  right here, in this thread, on this thread's connection, inside the test's
  transaction: they see rows the test has not committed, and the test sees theirs.
  Nothing runs in the background, so the test is deterministic.
* :func:`worker` — for ``TransactionTestCase``, ``LiveServerTestCase`` and pytest's
  ``transaction=True``. A real worker (the same code as ``manage.py taskmill worker``)
  runs in threads of the test process and sees what the test commits, as in production.

Both claim, run and record jobs through the worker's own machinery (the job store and
:func:`taskmill.worker.executor.execute`), so retries, progress, checkpoints and
``transactional`` tasks behave as they do in production.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.utils import timezone

__all__ = ["TooManyJobs", "WorkerCrashed", "TestWorker", "run_pending", "worker"]

#: Default bound of :func:`run_pending`: a job that keeps enqueueing jobs stops here.
RUN_PENDING_LIMIT = 1000


class TooManyJobs(RuntimeError):
    """``run_pending`` hit its limit with jobs still due: probably a job re-enqueueing itself."""


class WorkerCrashed(AssertionError):
    """The in-process worker of :func:`worker` died or could not stop cleanly.

    An ``AssertionError``, so the test fails (rather than errors) with the reason.
    """


# -- which queues live in which database ----------------------------------------------


def _taskmill_backends() -> dict[str, Any]:
    from ..backend import taskmill_backends

    return taskmill_backends()


def queues_by_database(queues: Iterable[str] | None = None) -> dict[str, list[str]]:
    """``{database alias: [queue, ...]}`` for every taskmill backend, narrowed to ``queues``.

    A worker claims by queue name on one database, so backends that share a database
    are served together.
    """
    backends = _taskmill_backends()
    if not backends:
        raise RuntimeError(
            "No taskmill backend is configured in settings.TASKS; add "
            '{"BACKEND": "taskmill.backend.TaskmillBackend"} to use taskmill.testing.'
        )
    wanted = None if queues is None else set(_as_list(queues))
    found: dict[str, set[str]] = {}
    for backend in backends.values():
        served = set(backend.queues) or {"default"}
        if wanted is not None:
            served &= wanted
        if served:
            found.setdefault(backend.database, set()).update(served)
    if wanted is not None:
        known = set().union(*found.values()) if found else set()
        unknown = wanted - known
        if unknown:
            every = sorted({q for b in backends.values() for q in (b.queues or {"default"})})
            raise ValueError(f"Unknown queue(s) {sorted(unknown)}: no taskmill backend has them "
                             f"in its QUEUES (configured: {every}).")
    return {database: sorted(names) for database, names in found.items()}


def _as_list(queues: Iterable[str]) -> list[str]:
    if isinstance(queues, str):  # A common slip: queues="reports".
        return [queues]
    return list(queues)


def _worker_id(kind: str) -> str:
    from ..ids import new_worker_id

    return new_worker_id(f"{socket.gethostname()}-{kind}", os.getpid())


# -- run_pending -----------------------------------------------------------------------


def run_pending(queues: Iterable[str] | None = None, *, limit: int = RUN_PENDING_LIMIT) -> int:
    """Run every due job now, in this thread, on this thread's connection; return how many.

    Jobs that those jobs enqueue run too, until nothing is due. A failed attempt whose
    retry is due later (``RETRY_BACKOFF``) is left READY; deferred jobs (``run_after``
    in the future) are not run. ``timeout`` is not enforced here: use :func:`worker`.
    Raises :class:`TooManyJobs` once ``limit`` jobs ran and more are still due.
    """
    from ..store import get_store

    targets = queues_by_database(queues)
    worker_id = _worker_id("run_pending")
    stores = {database: get_store(connections[database]) for database in targets}
    now = timezone.now()
    for database, store in stores.items():
        # Registered like any worker, so a real worker's recovery never takes these jobs.
        store.register_worker(worker_id, socket.gethostname(), os.getpid(), targets[database],
                              1, now)
    ran = 0
    try:
        while True:
            progressed = False
            for database, names in targets.items():
                store = stores[database]
                while True:
                    claimed = store.claim(names, 1, worker_id, timezone.now())
                    if not claimed:
                        break
                    if ran >= limit:
                        store.hand_back(claimed, worker_id, started=False)
                        raise TooManyJobs(
                            f"run_pending ran {ran} jobs and more are still due (next: "
                            f"{claimed[0].task_path}); does a job keep enqueueing jobs? "
                            "Pass limit= to allow more."
                        )
                    _run_claimed(store, claimed[0], worker_id)
                    ran += 1
                    progressed = True
            if not progressed:
                return ran
    finally:
        for store in stores.values():
            store.unregister_worker(worker_id)


def _run_claimed(store: Any, job: Any, worker_id: str) -> None:
    """Run one claimed job inside a savepoint of the test's transaction, if there is one."""
    from ..context import JobRuntime
    from ..worker.executor import announce_finished, execute

    connection = store.connection
    savepoint = _savepoint_create(using=store.alias) if connection.in_atomic_block else None
    outcome, result = execute(
        job, JobRuntime(job, worker_id, store), manage_connections=False,
        record=lambda o: store.record_outcomes([o], worker_id),
    )
    if savepoint is not None:
        if outcome.succeeded or _usable(connection):
            # A failed attempt keeps the writes it made before failing, as in production.
            transaction.savepoint_commit(savepoint, using=store.alias)
        else:
            # The task broke the transaction (a failed query on PostgreSQL, say): undo the
            # attempt's writes so the test's transaction, and the failure record, go on.
            connection.needs_rollback = False
            transaction.savepoint_rollback(savepoint, using=store.alias)
    if outcome.needs_recording:
        store.complete([outcome], worker_id)
    announce_finished(result, outcome)


#: ``savepoint()`` was renamed ``savepoint_create()`` in Django 6.1.
_savepoint_create = getattr(transaction, "savepoint_create", None) or transaction.savepoint


def _usable(connection: Any) -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False


# -- worker ------------------------------------------------------------------------------


class TestWorker:
    """Real workers (one per job database) running in threads of the test process."""

    __test__ = False  # Not a test class, whatever pytest thinks of the name.

    def __init__(self, targets: dict[str, list[str]], *, threads: int, poll_interval: float,
                 shutdown_timeout: float, maintenance: bool) -> None:
        from ..worker.process import WorkerConfig

        backends = _taskmill_backends().values()
        self.configs = []
        for database, names in targets.items():
            options = next(b.config for b in backends if b.database == database)
            self.configs.append(WorkerConfig(
                database=database, queues=names, threads=threads,
                shutdown_timeout=shutdown_timeout, lease_seconds=options.lease_seconds,
                result_ttl=options.result_ttl, poll_interval=poll_interval,
                maintenance=maintenance,
            ))
        self.processes: list[Any] = []
        self.threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self._stopping = False

    @property
    def queues(self) -> dict[str, list[str]]:
        """``{database alias: [queue, ...]}`` this worker serves."""
        return {config.database: list(config.queues) for config in self.configs}

    def start(self) -> None:
        from ..worker.process import WorkerProcess

        for config in self.configs:
            process = WorkerProcess(config, _worker_id("test-worker"))
            thread = threading.Thread(target=self._serve, args=(process,),
                                      name=f"taskmill-test-worker-{config.database}", daemon=True)
            self.processes.append(process)
            self.threads.append(thread)
            thread.start()

    def _serve(self, process: Any) -> None:
        try:
            code = process.run()
            if process.failure is not None:
                self.errors.append(f"a job crashed worker {process.worker_id}: "
                                   f"{type(process.failure).__name__}: {process.failure}")
            elif not self._stopping:
                self.errors.append(f"worker {process.worker_id} stopped on its own before the "
                                   f"end of the block (exit code {code}); a job probably "
                                   "ignored its timeout or a forced cancel")
        except BaseException as exc:
            self.errors.append(f"worker {process.worker_id} crashed: "
                               f"{type(exc).__name__}: {exc}")
        finally:
            # The producer's own ORM calls use this thread's connections.
            connections.close_all()

    def stop(self) -> None:
        """Stop claiming, let running jobs finish (``shutdown_timeout``), close connections."""
        self._stopping = True
        for process in self.processes:
            process.stop()
        deadline = time.monotonic() + max(config.shutdown_timeout for config in self.configs) + 10
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self.errors.append(f"{thread.name} did not stop in time")
        left = [t.name for process in self.processes for t in process.threads if t.is_alive()]
        if left:
            self.errors.append(f"executor threads still running a job after the shutdown "
                               f"timeout (their connections stay open): {left}")

    def check(self) -> None:
        """Raise :class:`WorkerCrashed` if a worker died (or is dying)."""
        errors = list(self.errors)
        if not self.threads or any(t.is_alive() for t in self.threads):
            errors += [f"a job crashed worker {p.worker_id}: {type(p.failure).__name__}: "
                       f"{p.failure}" for p in self.processes if p.failure is not None]
        if errors:
            raise WorkerCrashed("taskmill test worker failed: " + "; ".join(errors))

    def wait(self, *results: Any, timeout: float = 10.0) -> None:
        """Wait until every given result has finished (succeeded or failed for good)."""
        from ..compat import TaskResultStatus

        finished = {TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED}
        self._wait_until(lambda: all(_refreshed(r).status in finished for r in results),
                         timeout, f"{len(results)} job(s) to finish")

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until no job of the served queues is due or running."""
        self._wait_until(self._idle, timeout, "the queues to drain")

    def _idle(self) -> bool:
        from ..models import Job, JobStatus

        now = timezone.now()
        for config in self.configs:
            jobs = Job.objects.using(config.database).filter(queue_name__in=config.queues)
            if jobs.filter(status=JobStatus.RUNNING).exists():
                return False
            if jobs.filter(status=JobStatus.READY, run_after__lte=now).exists():
                return False
        return True

    def _wait_until(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            if predicate():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.02)


def _refreshed(result: Any) -> Any:
    result.refresh()
    return result


@contextmanager
def worker(queues: Sequence[str] | None = None, *, threads: int = 1,
           poll_interval: float = 0.05, shutdown_timeout: float = 10.0,
           maintenance: bool = False) -> Iterator[TestWorker]:
    """Run a real worker in threads of this process for the ``with`` block.

    With no ``queues`` it serves every queue of every taskmill backend. Use it where
    the test's data is committed (``TransactionTestCase``, live-server tests, pytest's
    ``transaction=True``): it works on its own connections and cannot see inside a
    ``TestCase`` transaction. At the end of the block it stops claiming, lets running
    jobs finish, closes every connection it opened (so the test database can be
    dropped) and raises :class:`WorkerCrashed` if a job crashed it.
    ``maintenance`` also runs recovery, pruning and the periodic scheduler.
    """
    test_worker = TestWorker(queues_by_database(queues), threads=threads,
                             poll_interval=poll_interval, shutdown_timeout=shutdown_timeout,
                             maintenance=maintenance)
    test_worker.start()
    try:
        yield test_worker
    finally:
        test_worker.stop()
    test_worker.check()
