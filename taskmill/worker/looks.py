"""How long an idle worker waits before it looks for jobs again.

A worker that enqueues wake (PostgreSQL's NOTIFY, SQLite's file watch) waits until the
next job is due or its poll interval ends, whichever comes first. Where nothing wakes it
(MySQL has no LISTEN), a worker that waited a whole poll after each claim that took jobs
left jobs that keep coming waiting for that poll: 782 ms pickup at a steady 500 jobs/s on
MariaDB, with a 1 s poll. There, its first look after a claim that took jobs comes
``QUICK_LOOK`` later, each next one twice as late, up to the poll interval: jobs that
keep coming are found within tens of milliseconds (16 ms), and a worker idle for long
still looks once a poll (about seven looks more in the second after its last job).

A PostgreSQL worker looks this way too while its listener is not known to hear: until
the notification it sends itself has come back, and for good behind a pooler in
transaction mode, where LISTEN is accepted but nothing is ever delivered (see
:mod:`.notifier`). Trusting that LISTEN, it waited out its whole poll there: a job
enqueued 0.2 s after the last one started 4.8 s later with the default 5 s poll, behind
PgBouncer; 0.17 s with these looks.
"""

from __future__ import annotations

import threading

__all__ = ["QUICK_LOOK", "IdleLooks"]

#: Seconds from a claim that took jobs to an unwoken worker's first look after it.
QUICK_LOOK = 0.01


class IdleLooks:
    """The waits of one worker's producer between looks for jobs."""

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        #: Set while enqueues are known to wake this worker: the ``hears`` of its file
        #: watch or listener. Unset (MySQL, or a listener not heard yet), it looks soon.
        self.woken_by_enqueues = threading.Event()
        self._next = QUICK_LOOK

    def took_jobs(self) -> None:
        """A claim took jobs: more may come soon."""
        self._next = QUICK_LOOK

    def wait(self, due_in: float | None) -> float:
        """Seconds to wait for the next look, the next job due in ``due_in`` (None:
        none is waiting)."""
        wait = self.poll_interval if due_in is None else max(0.0, due_in)
        if not self.woken_by_enqueues.is_set():
            wait = min(wait, self._next)
            self._next = min(self._next * 2, self.poll_interval)
        return min(self.poll_interval, wait)
