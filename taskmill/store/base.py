"""The job store: every job-state transition, in one class over one connection.

A :class:`JobStore` wraps one Django database connection and speaks to the job tables
through it. Its parts, each in a module of its own and each building on the last:

========================  ===========================================================
:mod:`.connection`        transactions on this connection, statements, value conversion
:mod:`.enqueue`           insert, unique insert, periodic ticks
:mod:`.batches`           batches, and their ``then`` job exactly once
:mod:`.fairness`          turns of fairness keys, given at enqueue
:mod:`.rates`             rate limits (a sliding-window log)
:mod:`.limits`            concurrency and rate limits, enforced after a claim
:mod:`.parking`           due jobs that may not start, set aside from the claims
:mod:`.claim`             the claim; parking what it stepped over; when to look again
:mod:`.outcomes`          complete, fail, retry later, hand back, progress
:mod:`.leases`            worker heartbeats, recovery of dead workers' jobs
:mod:`.operations`        cancel, retry, purge, prune
:mod:`.pauses`            pause and resume queues and tasks
========================  ===========================================================

The SQL itself is in :mod:`.sql`, one named, annotated statement at a time. Every
transition names the state it expects in its ``WHERE``; a write that finds the job
elsewhere changes nothing. Vendor subclasses (:mod:`.postgresql`, :mod:`.mysql`,
:mod:`.sqlite`) supply what differs beyond SQL: the claim's shape, bulk inserts, locks.
"""

from __future__ import annotations

from .leases import Leases
from .operations import Operations
from .pauses import Pauses
from .rows import HeldSnapshot


class JobStore(Leases, Operations, Pauses):
    """The job tables seen through one connection. Not thread-safe: one per thread."""

    def prepare_for_worker(self) -> None:
        """What a worker process needs of the database once, when it starts."""

    def oldest_snapshot(self) -> HeldSnapshot | None:
        """The open transaction that holds back the cleanup of the job tables longest, if
        the database tells (PostgreSQL does; None here)."""
        return None
