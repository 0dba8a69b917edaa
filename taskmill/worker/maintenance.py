"""The maintenance thread: recovery, pruning, the periodic scheduler, rate keys' parked
jobs, the counts of jobs finished per minute and of deep backlogs, and a watch on
transactions that hold back vacuum.

Kept off the heartbeat's thread and connection: a prune of a long history or a slow
schedule entry can take its time here without delaying a lease renewal by a
millisecond. Recovery and pruning run on one worker at a time across every host (each
a *service* whose turn passes to another worker once it expires, see
``JobStore.take_service``), at offsets spread at random, and pruning stops after a
time budget and picks up where it stopped on its next turn. A service that raises is
logged and runs again at its next turn; it never stops the thread.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import backlogs, minutes
from ..services import scheduler
from ..services.aging import age_priorities
from ..services.pruning import prune_finished
from ..services.recovery import recover_dead_workers
from ..services.snapshots import SnapshotWatch
from ..store import JobStore, close_store
from ..store.clock import DatabaseClock
from .config import WorkerConfig
from .outage import DatabaseGate, DatabaseHealth

logger = logging.getLogger("taskmill.worker")

TICK = 0.5  # seconds between looks at what is due, at most
#: Shortest wait between two passes over the services (a service due at once).
MIN_WAIT = 0.01
#: Seconds between prunes when the last one caught up, and when it ran out of budget.
PRUNE_EVERY = 60.0
PRUNE_AGAIN = 5.0
#: Seconds one prune may take.
PRUNE_BUDGET = 1.0
#: Seconds to the next count of finished minutes when a turn counted all it may.
COUNT_AGAIN = 5.0
#: Seconds between looks for a transaction that holds back vacuum.
SNAPSHOT_CHECK_EVERY = 60.0


@dataclass
class _Service:
    name: str
    every: float
    run: Callable[[], float | None]  # returns when to run next, if not in ``every``
    #: Whether one worker at a time runs it (else every worker does, cheaply).
    exclusive: bool = True
    next_at: float = 0.0


class Maintenance(threading.Thread):
    def __init__(self, config: WorkerConfig, worker_id: str, health: DatabaseHealth,
                 wake: threading.Event | None = None) -> None:
        super().__init__(name="taskmill-maintenance", daemon=True)
        self.config = config
        self.worker_id = worker_id
        self.health = health
        #: Its worker's wake: jobs put back in line here are claimed at once.
        self.wake = wake
        self._stopped = threading.Event()
        self._store: JobStore | None = None
        self.gate = DatabaseGate(health, lambda: self.store.connection)
        self._clock: DatabaseClock | None = None
        lease = config.lease_seconds
        now = time.monotonic()
        # In the order they run when due at once: the schedule first, since a tick looked
        # at late can be lost (see scheduler.run_due); a prune may take PRUNE_BUDGET.
        self.services = [
            _Service("schedule", TICK, self._schedule, exclusive=False),
            # Busy workers never wait idle: jobs of a rate key whose room came back are
            # put back in line here too, within a tick.
            _Service("rates", TICK, self._unpark_rates, exclusive=False),
            _Service("recovery", max(1.0, lease / 2), self._recover),
            _Service("pruning", PRUNE_EVERY, self._prune),
            _Service("snapshots", SNAPSHOT_CHECK_EVERY, self._watch_snapshots),
            # The reports' hour, each closed minute counted once (taskmill.minutes).
            _Service("minutes", minutes.COUNT_EVERY, self._count_minutes),
            # The reports' figure for a deep backlog (taskmill.backlogs).
            _Service("backlogs", backlogs.COUNT_EVERY, self._count_backlogs),
        ]
        self.snapshots = SnapshotWatch()
        if config.priority_aging:
            self.services.append(_Service("aging", max(0.1, config.priority_aging / 4),
                                          self._age))
        for service in self.services:  # Spread over the processes: not all at once.
            service.next_at = now + random.uniform(0, min(service.every, 30.0))

    @property
    def store(self) -> JobStore:
        """This thread's connection (made on first use: Django's connections belong to
        the thread that made them)."""
        if self._store is None:
            self._store = self.config.private_store()
        return self._store

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        try:
            while not self._stopped.wait(self._until_next_turn()):
                for service in self.services:
                    if time.monotonic() >= service.next_at:
                        self._turn(service)
        finally:
            close_store(self._store)

    def _turn(self, service: _Service) -> None:
        next_in: float | None = None
        try:
            next_in = self.gate.call(lambda: self._take_and_run(service),
                                     f"run the {service.name} service", self._stopped,
                                     attempts=1)
        except Exception:
            logger.exception("The %s service failed; it runs again at its next turn.",
                             service.name)
        # Spread at random, unless the service said when (a tick is due at an instant).
        every = service.every * random.uniform(0.9, 1.1) if next_in is None else next_in
        service.next_at = time.monotonic() + every

    def _until_next_turn(self) -> float:
        soonest = min(service.next_at for service in self.services)
        return min(TICK, max(MIN_WAIT, soonest - time.monotonic()))

    def _take_and_run(self, service: _Service) -> float | None:
        # Held a little longer than the interval, so the holder keeps it while alive.
        if service.exclusive and not self.store.take_service(
                service.name, self.worker_id, service.every * 2 + PRUNE_BUDGET):
            return None
        return service.run()

    def _recover(self) -> float | None:
        back_at = self.health.back_at
        if back_at is not None and time.monotonic() - back_at < self.config.lease_seconds:
            return None  # We were cut off ourselves: give every worker a lease to heartbeat.
        recover_dead_workers(self.store, self.config.lease_seconds)
        return None

    def _prune(self) -> float | None:
        started = time.monotonic()
        prune_finished(self.store, self.config.result_ttl, PRUNE_BUDGET,
                       self.config.retention)
        # Out of budget means more is left: come back soon rather than in a minute.
        return PRUNE_AGAIN if time.monotonic() - started >= PRUNE_BUDGET else None

    def _count_minutes(self) -> float | None:
        with self.store.as_thread_default():
            counted = minutes.count_closed_minutes(self.store.alias, self.store.database_now())
        # A full turn (a first one, or after a stop) leaves more: go on soon.
        return COUNT_AGAIN if counted >= minutes.COUNT_AT_MOST else None

    def _count_backlogs(self) -> float | None:
        with self.store.as_thread_default():
            backlogs.count_backlogs(self.store.alias, self.store.database_now())
        return None

    def _age(self) -> float | None:
        assert self.config.priority_aging is not None
        age_priorities(self.store, self.config.queues, self.config.priority_aging)
        return None

    def _unpark_rates(self) -> float | None:
        # Its own worker may be waiting idle. On PostgreSQL the unpark's NOTIFY wakes it
        # (and SQLite's workers watch the database file); on MySQL nothing would, and the
        # jobs sat out a poll interval: a second with none of the key's starts.
        if self.store.unpark_reopened_rates() and self.wake is not None:
            self.wake.set()
        return None

    def _watch_snapshots(self) -> float | None:
        self.snapshots.check(self.store)
        return None

    def _schedule(self) -> float | None:
        if self._clock is None:
            self._clock = DatabaseClock(self.store)
        now = self._clock.reached()  # Looks come right at a tick: never a hair before it.
        next_tick = scheduler.run_due(self.store, now)
        if next_tick is None:
            return None
        return min(TICK, (next_tick - now).total_seconds())
