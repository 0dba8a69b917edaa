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

from ..lazy import lazy_exports

__all__ = ["TestWorker", "TooManyJobs", "WorkerCrashed", "run_pending", "worker"]

#: name -> module that defines it. Imported on first use: the pytest plugin
#: (``taskmill.testing.pytest_plugin``) loads this package before Django is set up.
_EXPORTS = {
    "run_pending": "taskmill.testing.pending",
    "TooManyJobs": "taskmill.testing.pending",
    "worker": "taskmill.testing.threaded",
    "TestWorker": "taskmill.testing.threaded",
    "WorkerCrashed": "taskmill.testing.threaded",
}

__getattr__ = lazy_exports("taskmill.testing", globals(), _EXPORTS)
