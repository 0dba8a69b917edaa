"""The Django admin for jobs, batches, workers and pauses.

Built for a job table with millions of rows: the list never counts the whole table
(:class:`CappedPaginator`), filter choices come from configuration and a bounded
sample instead of ``SELECT DISTINCT`` over the history, and every column of the job
list is read from the job row itself (no query per row).

Jobs are read-only here: every state change goes through :mod:`taskmill.api`
(retry, cancel, purge), each action gated by its own permission (``taskmill.retry_job``,
``taskmill.cancel_job``, ``taskmill.purge_job``) and reporting what it did.
"""

from .batches import BatchAdmin
from .jobs import JobAdmin
from .paginator import CappedPaginator
from .pauses import PauseAdmin
from .workers import WorkerAdmin

__all__ = ["BatchAdmin", "CappedPaginator", "JobAdmin", "PauseAdmin", "WorkerAdmin"]
