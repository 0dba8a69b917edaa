"""Exceptions users see: raised at the point of the mistake, or recorded on a job."""

from __future__ import annotations


class TaskmillError(Exception):
    """Base class for taskmill's own errors."""


class InvalidTaskArguments(TaskmillError, TypeError):
    """The arguments of an enqueue cannot be stored as JSON; nothing was stored."""


class TaskNotFound(TaskmillError):
    """A job names something that is not a task (renamed, deleted, or never a task)."""


class JobTimeout(TaskmillError):
    """The attempt ran longer than the task's ``timeout`` and was stopped."""


class Cancelled(TaskmillError):
    """The job was cancelled with ``taskmill.cancel()``."""


class Interrupted(TaskmillError):
    """The worker stopped (its shutdown timeout ran out) while the attempt ran."""


class ResultNotStored(TaskmillError):
    """The database refused the attempt's outcome (a return value it cannot store, say)."""


class WorkerLost(TaskmillError):
    """The worker running the attempt stopped heartbeating (killed, out of memory, hung)."""
