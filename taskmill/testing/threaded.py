"""``worker()``: a real worker in threads of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import connections

from .. import forkgate
from ..backend import taskmill_backends
from ..compat import TaskResultStatus
from ..models import Job, JobStatus
from ..store import get_store
from ..worker.config import WorkerConfig
from ..worker.process import WorkerProcess
from .queues import queues_by_database, worker_id_for


class WorkerCrashed(AssertionError):
    """The in-process worker of :func:`worker` died or could not stop cleanly.

    An ``AssertionError``, so the test fails (rather than errors) with the reason.
    """


class TestWorker:
    """Real workers (one per job database) running in threads of the test process."""

    __test__ = False  # Not a test class, whatever pytest thinks of the name.

    def __init__(self, targets: dict[str, list[str]], *, threads: int, poll_interval: float,
                 shutdown_timeout: float, maintenance: bool) -> None:
        backends = taskmill_backends().values()
        self.configs = []
        for database, names in targets.items():
            options = next(b.config for b in backends if b.database == database)
            self.configs.append(WorkerConfig(
                database=database, queues=names, threads=threads,
                shutdown_timeout=shutdown_timeout, lease_seconds=options.lease_seconds,
                result_ttl=options.result_ttl, retention=options.retention,
                poll_interval=poll_interval,
                maintenance=maintenance, priority_aging=options.priority_aging,
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
        for config in self.configs:
            process = WorkerProcess(config, worker_id_for("test-worker"))
            thread = threading.Thread(target=self._serve, args=(process,),
                                      name=f"taskmill-test-worker-{config.database}", daemon=True)
            self.processes.append(process)
            self.threads.append(thread)
            thread.start()

    def _serve(self, process: WorkerProcess) -> None:
        try:
            code = process.run()
            if not self._stopping:
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
        left = [t.name for process in self.processes for t in process.pool.threads
                if t.is_alive()]
        if left:
            self.errors.append(f"executor threads still running a job after the shutdown "
                               f"timeout (their connections stay open): {left}")

    def check(self) -> None:
        """Raise :class:`WorkerCrashed` if a worker died (or is dying)."""
        errors = list(self.errors)
        if errors:
            raise WorkerCrashed("taskmill test worker failed: " + "; ".join(errors))

    def wait(self, *results: Any, timeout: float = 10.0) -> None:
        """Wait until every given result has finished (succeeded or failed for good)."""
        finished = {TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED}
        self._wait_until(lambda: all(_refreshed(r).status in finished for r in results),
                         timeout, f"{len(results)} job(s) to finish")

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until no job of the served queues is due or running."""
        self._wait_until(self._idle, timeout, "the queues to drain")

    def _idle(self) -> bool:
        for config in self.configs:
            jobs = Job.objects.using(config.database).filter(queue_name__in=config.queues)
            if jobs.filter(status=JobStatus.RUNNING).exists():
                return False
            due_in = get_store(config.database).next_wake(config.queues)
            if due_in is not None and due_in <= 0:
                return False
        return True

    def _wait_until(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            with forkgate.inside():  # A task's parallel_map may fork meanwhile.
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
