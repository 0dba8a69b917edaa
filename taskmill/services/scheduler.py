"""The periodic scheduler (``TASKMILL_SCHEDULE``); runs in every worker's maintenance thread.

Ticks are fixed instants every worker computes alike: for ``every: N``, the multiples
of N seconds since the Unix epoch; for ``cron``, the cron expression's instants in
``settings.TIME_ZONE``. Each tick is enqueued exactly once, however many workers and
hosts run the scheduler and however often they restart: the worker that enqueues it
moves ``ScheduleState.last_tick`` forward with a guarded ``UPDATE ... WHERE last_tick
< tick`` in the same transaction as the enqueue, so of all the workers that try, one
wins and the others change nothing. Ticks missed while no worker ran are not replayed
one by one: the latest runs once. A worker that was running but looked late (its
maintenance thread busy, its host short of CPU) enqueues each tick since its own last
look, up to ``CATCH_UP`` back, so a tick is lost only when no worker could reach the
database (a look that failed on the database counts as not running). A new entry starts
with the next tick after it was first seen (a nightly job added at 14:00 first runs that
night, not at once).

Cheap when nothing is due: each process computes the next tick of each entry and does
not touch the database until then. Ticks are computed on the database's clock, so a
host whose clock runs ahead does not enqueue a tick early; and a clock running behind
cannot enqueue an old tick again (the guard only moves forward).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from croniter import croniter
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from ..backend import TaskmillBackend
from ..compat import AnyTask
from ..jobs import encode_arguments, new_job, resolve_task
from ..store import JobStore

logger = logging.getLogger("taskmill.scheduler")

KEYS = {"task", "every", "cron", "args", "kwargs", "queue_name", "priority"}
#: Shortest ``every``: the scheduler looks twice a second.
MIN_EVERY = 1.0
#: How far back a worker that looked late enqueues the ticks it passed, one by one.
CATCH_UP = dt.timedelta(seconds=60)
NAME_MAX = 200  # ScheduleState.name


@dataclass(frozen=True)
class Entry:
    """One validated ``TASKMILL_SCHEDULE`` entry."""

    name: str
    task_path: str
    every: float | None = None
    cron: str | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue_name: str | None = None
    priority: int | None = None

    def latest_tick(self, now: dt.datetime) -> dt.datetime:
        """The last tick at or before ``now``."""
        if self.every is not None:
            seconds = math.floor(now.timestamp() / self.every) * self.every
            return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
        assert self.cron is not None  # one of every/cron, checked by parse_schedule
        local = timezone.localtime(now)
        # croniter's get_prev excludes ``now`` itself; look from just after it.
        tick = croniter(self.cron, local + dt.timedelta(microseconds=1)).get_prev(dt.datetime)
        return tick.astimezone(dt.UTC)

    def next_tick(self, now: dt.datetime) -> dt.datetime:
        """The first tick after ``now``."""
        if self.every is not None:
            return self.latest_tick(now) + dt.timedelta(seconds=self.every)
        assert self.cron is not None
        tick = croniter(self.cron, timezone.localtime(now)).get_next(dt.datetime)
        return tick.astimezone(dt.UTC)

    def task(self) -> AnyTask:
        """The task, with this entry's queue and priority (raises if they are invalid)."""
        task = resolve_task(self.task_path)
        changes: dict[str, Any] = {}
        if self.queue_name is not None:
            changes["queue_name"] = self.queue_name
        if self.priority is not None:
            changes["priority"] = self.priority
        return task.using(**changes) if changes else task


def parse_schedule(raw: Any) -> list[Entry]:
    """Validate ``TASKMILL_SCHEDULE``; raise ``ImproperlyConfigured`` naming the culprit."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(
            f"TASKMILL_SCHEDULE must be a dict of name -> entry, not {type(raw).__name__}.")
    return [_parse_entry(name, spec) for name, spec in raw.items()]


def _parse_entry(name: Any, spec: Any) -> Entry:
    where = f"TASKMILL_SCHEDULE[{name!r}]"
    if not isinstance(name, str) or not name or len(name) > NAME_MAX:
        raise ImproperlyConfigured(f"{where}: names must be non-empty strings of at most "
                                   f"{NAME_MAX} characters.")
    if not isinstance(spec, dict):
        raise ImproperlyConfigured(f"{where} must be a dict such as "
                                   '{"task": "app.tasks.name", "every": 60}.')
    unknown = set(spec) - KEYS
    if unknown:
        raise ImproperlyConfigured(f"{where} has unknown keys {sorted(unknown)}; "
                                   f"allowed: {sorted(KEYS)}.")
    task_path = spec.get("task")
    if not isinstance(task_path, str) or not task_path:
        raise ImproperlyConfigured(f"{where} needs 'task': the dotted path of a task.")
    every, cron = spec.get("every"), spec.get("cron")
    if (every is None) == (cron is None):
        raise ImproperlyConfigured(f"{where} needs exactly one of 'every' (seconds) or 'cron'.")
    if every is not None and (isinstance(every, bool) or not isinstance(every, (int, float))
                              or not math.isfinite(every) or every < MIN_EVERY):
        raise ImproperlyConfigured(f"{where}['every'] must be a number of seconds, at least "
                                   f"{MIN_EVERY:g}; got {every!r}.")
    if cron is not None and (not isinstance(cron, str) or not croniter.is_valid(cron)):
        raise ImproperlyConfigured(f"{where}['cron'] is not a valid cron expression: "
                                   f"{cron!r} (e.g. '0 3 * * *': every day at 03:00).")
    args, kwargs = spec.get("args", []), spec.get("kwargs", {})
    if not isinstance(args, (list, tuple)):
        raise ImproperlyConfigured(f"{where}['args'] must be a list, not {type(args).__name__}.")
    if not isinstance(kwargs, dict):
        raise ImproperlyConfigured(f"{where}['kwargs'] must be a dict, not "
                                   f"{type(kwargs).__name__}.")
    queue_name, priority = spec.get("queue_name"), spec.get("priority")
    if queue_name is not None and not isinstance(queue_name, str):
        raise ImproperlyConfigured(f"{where}['queue_name'] must be a string.")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ImproperlyConfigured(f"{where}['priority'] must be a whole number.")
    return Entry(name=name, task_path=task_path, every=float(every) if every is not None else None,
                 cron=cron, args=list(args), kwargs=dict(kwargs), queue_name=queue_name,
                 priority=priority)


def check_entry(entry: Entry) -> None:
    """What only a loaded project can tell: the task exists, takes these arguments, uses a
    taskmill backend that accepts this queue and priority. Raises ``ImproperlyConfigured``."""
    where = f"TASKMILL_SCHEDULE[{entry.name!r}]"
    try:
        task = entry.task()
        backend = task.get_backend()
        if not isinstance(backend, TaskmillBackend):
            raise ImproperlyConfigured(
                f"{where}: {entry.task_path} uses backend {type(backend).__name__}; periodic "
                "tasks run inside taskmill workers, so the task needs a taskmill backend.")
        backend.validate_task(task)
        encode_arguments(task, entry.args, "args")
        encode_arguments(task, entry.kwargs, "kwargs")
    except ImproperlyConfigured:
        raise
    except Exception as exc:
        raise ImproperlyConfigured(f"{where}: {exc}") from exc


class Scheduler:
    """Per-process state: when each entry is next worth a look."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.next_check: dict[str, dt.datetime] = {}

    def run_due(self, store: JobStore, now: dt.datetime) -> int:
        """Enqueue the due ticks this store's database is responsible for; how many.

        ``now`` is the database's time (:class:`taskmill.store.clock.DatabaseClock`), so
        that workers whose clocks disagree agree on which tick is due.
        """
        enqueued = 0
        for entry in self.entries:
            due = self.next_check.get(entry.name)
            if due is not None and now < due:
                continue
            try:
                for tick in self._ticks_at(entry, due, now):
                    if self._fire(store, entry, tick):
                        enqueued += 1
            except (OperationalError, InterfaceError):
                # The database is away: the heartbeat's gate waits, we try again. What
                # is missed meanwhile collapses into the latest tick, as if stopped.
                self.next_check.pop(entry.name, None)
                raise
            except Exception:
                logger.exception("Periodic task %r (%s) could not be enqueued; trying again "
                                 "at its next tick.", entry.name, entry.task_path)
            self.next_check[entry.name] = entry.next_tick(now)
        return enqueued

    @staticmethod
    def _ticks_at(entry: Entry, due: dt.datetime | None, now: dt.datetime) -> list[dt.datetime]:
        """The ticks a look at ``now`` tries, oldest first: each one since this process's
        last look (``due`` is the first tick after it) if that was under ``CATCH_UP``
        ago; else, and at a first look, the latest only."""
        latest = entry.latest_tick(now)
        if due is None or now - due > CATCH_UP:
            return [latest]
        if entry.every is not None:  # Counted back from the latest: no float drift.
            step = dt.timedelta(seconds=entry.every)
            count = max(1, round((latest - due) / step) + 1)
            return [latest - step * n for n in reversed(range(count))]
        ticks = [due]  # Cron instants: whole seconds, each strictly after the last.
        while ticks[-1] < latest:
            ticks.append(entry.next_tick(ticks[-1]))
        return ticks

    def next_look(self) -> dt.datetime | None:
        """When the next entry is due (the database's time); None before the first look."""
        if len(self.next_check) < len(self.entries):
            return None
        return min(self.next_check.values())

    def _fire(self, store: JobStore, entry: Entry, tick: dt.datetime) -> bool:
        """Enqueue ``tick`` of ``entry`` unless a worker did already; True if we did."""
        task = entry.task()
        backend = task.get_backend()
        if getattr(backend, "database", None) != store.alias:
            return False  # Workers of that task's database schedule it.
        job = new_job(task, entry.args, entry.kwargs)
        if not store.enqueue_tick(entry.name, tick, job):
            return False
        logger.info("Enqueued periodic task %r (%s) for %s: job %s.", entry.name,
                    entry.task_path, tick.isoformat(), job.id)
        return True


_scheduler: Scheduler | None = None
_source: Any = None


def get_scheduler() -> Scheduler | None:
    """This process's scheduler for the current ``TASKMILL_SCHEDULE`` (None: empty or invalid)."""
    global _scheduler, _source
    raw = getattr(settings, "TASKMILL_SCHEDULE", None)
    if raw is not _source:
        _source = raw
        try:
            entries = parse_schedule(raw)
        except ImproperlyConfigured as exc:
            logger.error("Periodic tasks disabled: %s", exc)
            entries = []
        _scheduler = Scheduler(entries) if entries else None
    return _scheduler


def run_due(store: JobStore, now: dt.datetime) -> dt.datetime | None:
    """Enqueue every schedule tick that is due at ``now`` (the database's time); returns
    when the next one is (None: no schedule).

    Hazard: a look that comes after the tick following a due one enqueues only the later
    (ticks collapse), so a look late by a whole ``every`` loses a tick although workers
    ran: the caller looks again at the returned instant, not a poll interval after it.
    """
    scheduler = get_scheduler()
    if scheduler is None:
        return None
    scheduler.run_due(store, now)
    return scheduler.next_look()


__all__ = ["Entry", "Scheduler", "check_entry", "parse_schedule", "run_due"]
