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


class Snooze(TaskmillError):
    """Raised inside a task: "not now, try again in ``seconds``".

    The job goes back to waiting for that long without failing and without using an
    attempt. A job that snoozes more than the backend's ``MAX_SNOOZES`` times ends FAILED
    with :class:`SnoozedTooOften`, so a task that always snoozes cannot loop for ever.
    """

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"Snooze takes a number of seconds, not {seconds!r}.")
        if not seconds >= 0 or seconds == float("inf"):  # (not >= also refuses NaN)
            raise ValueError(f"Snooze takes a finite number of seconds >= 0, not {seconds!r}.")
        super().__init__(f"snoozed for {seconds:g}s")
        self.seconds = float(seconds)


class SnoozedTooOften(TaskmillError):
    """The job snoozed ``MAX_SNOOZES`` times and asked for one more; it was failed instead."""
