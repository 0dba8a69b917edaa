"""What a task with ``takes_context=True`` receives: Django's TaskContext, and more."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import connections
from django.utils.functional import Promise

from .compat import AnyTaskContext
from .exceptions import Cancelled
from .results import Progress
from .store import ClaimedJob, JobStore, get_store


class JobRuntime:
    """The running attempt as the worker sees it: lease, store and cancel flag.

    Writes go through ``store``, a connection of the worker's own (not the task's), so
    progress is visible to other processes at once even while the task holds a
    transaction open. Not on SQLite: there a ``transactional`` task's transaction holds
    the database's one write lock (it begins ``IMMEDIATE``), and a write from another
    connection of this same thread would wait for it until it timed out. Such writes
    join the task's transaction instead, and are seen when it commits.
    """

    def __init__(self, job: ClaimedJob, worker_id: str, store: JobStore | None,
                 on_body_done: Callable[[], None] | None = None) -> None:
        self.job = job
        self.worker_id = worker_id
        self.store = store
        self._on_body_done = on_body_done
        self.checkpoint: Any = job.checkpoint
        self.cancel_event = threading.Event()
        #: Set once a forced cancel armed the watchdog for this attempt.
        self.cancel_forced = False

    def body_done(self) -> None:
        """The task body returned or raised: stop its timeout and forced cancel here."""
        if self._on_body_done is not None:
            self._on_body_done()

    def write(self, **values: Any) -> None:
        store = self.store
        if store is None:
            return
        if self.job.transactional and store.vendor == "sqlite":
            own = connections[store.connection.alias]  # This thread's, the task's.
            if own.in_atomic_block:
                store = get_store(own)
        store.update_running(self.job, self.worker_id, **values)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobContext(AnyTaskContext):  # type: ignore[misc]  # frozen in Django, not in its stubs
    """Django's ``TaskContext`` with progress, checkpoints and cancellation."""

    runtime: JobRuntime = field(repr=False, compare=False)

    def set_progress(self, current: float, total: float | None = None, message: str = "") -> None:
        """Record how far the job is; ``get_result``, the admin and the dashboard see it at once.

        ``current`` is a number from 0, ``total`` a number above 0 (or None: unknown),
        ``message`` text. Anything else raises here, in the task, and nothing is stored:
        the dashboard and the admin show what a task reports to everyone.
        """
        _check_progress(current, total, message)
        progress = Progress(current=current, total=total, message=str(message))
        self.runtime.write(progress=_json(progress.as_json()))

    @property
    def checkpoint(self) -> Any:
        """The value last passed to :meth:`save_checkpoint` in any attempt, or None."""
        return self.runtime.checkpoint

    def save_checkpoint(self, value: Any) -> None:
        """Keep a JSON value across attempts, so a re-run resumes instead of redoing work.

        Saved at once, outside the task's own transaction. In a ``transactional`` task
        that is a hazard: a killed attempt's writes roll back while its checkpoint stays,
        so do not use the checkpoint there to skip work whose effects are in the database.
        (On SQLite it is saved inside that transaction instead: see :class:`JobRuntime`.)
        """
        text = _json(value)
        self.runtime.write(checkpoint=text)
        self.runtime.checkpoint = value

    @property
    def cancel_requested(self) -> bool:
        """True once ``taskmill.cancel()`` was called for this job."""
        return self.runtime.cancel_event.is_set()

    def raise_if_cancelled(self) -> None:
        """Stop here (the job ends FAILED with ``Cancelled``) if a cancel was requested."""
        if self.cancel_requested:
            raise Cancelled(f"Job {self.runtime.job.id} was cancelled.")


def _check_progress(current: Any, total: Any, message: Any) -> None:
    for name, value in (("current", current), ("total", total)):
        if value is None and name == "total":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"set_progress: {name} must be a number, not {value!r}.")
        if not math.isfinite(value):
            raise ValueError(f"set_progress: {name} must be finite, not {value!r}.")
    if current < 0:
        raise ValueError(f"set_progress: current must be 0 or more, not {current!r}.")
    if total is not None and total <= 0:
        raise ValueError(f"set_progress: total must be above 0 (or None), not {total!r}.")
    if not isinstance(message, (str, Promise)):
        raise TypeError(f"set_progress: message must be text, not {message!r}.")


def _json(value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"Checkpoints and progress must be JSON: {exc}") from None
