"""What one worker process is asked to do (built by ``taskmill worker`` and the testing helpers)."""

from __future__ import annotations

from dataclasses import dataclass

from ..conf import RetentionRule
from ..store import JobStore, private_store


@dataclass
class WorkerConfig:
    database: str
    queues: list[str]
    threads: int = 1
    burst: bool = False
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None  # MB
    shutdown_timeout: float = 30.0
    lease_seconds: float = 30.0
    result_ttl: float = 7 * 24 * 3600.0
    #: ``RETENTION``: rules that keep some queues' or states' jobs longer or shorter.
    retention: tuple[RetentionRule, ...] = ()
    poll_interval: float = 1.0
    #: ``PRIORITY_AGING`` (None: off); see :mod:`taskmill.services.aging`.
    priority_aging: float | None = None
    #: Run the maintenance services (recovery, pruning, schedule).
    maintenance: bool = True
    #: A file the supervisor touches while every worker process heartbeats and claims
    #: (``--health-file``): a probe's liveness signal without a database round trip.
    health_file: str | None = None

    def private_store(self) -> JobStore:
        """A store on a connection of its own, for one of the worker's threads (Django's
        connections belong to the thread that made them). The server ends its session
        within about a lease if this host vanishes (:func:`taskmill.db.private_connection`)."""
        return private_store(self.database, vanish_after=self.lease_seconds)
