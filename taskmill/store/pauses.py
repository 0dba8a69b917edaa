"""Pauses: rows of ``taskmill_pause`` that every claim reads (``not_paused``).

Stored, not held in a worker's memory, so one call pauses every worker on every host,
a restarted worker is paused too, and a job enqueued meanwhile simply waits.
"""

from __future__ import annotations

import datetime as dt

from .enqueue import Enqueueing
from .parking import Parking


class Pauses(Enqueueing, Parking):
    def pause(self, queue: str | None, task_path: str | None) -> bool:
        """Pause a queue, a task (on every queue, or on ``queue``), or everything;
        False if that pause was already in force."""
        scope = {"queue": queue or "", "task": task_path or ""}
        # Asked first: MySQL counts a duplicate of ON DUPLICATE KEY UPDATE as a row found.
        existed = self.fetchone("pause_exists", scope) is not None
        self.run("add_pause", scope)
        return not existed

    def resume(self, queue: str | None, task_path: str | None) -> int:
        """Lift the pauses of ``queue`` and/or ``task_path`` (neither: all); how many."""
        return self._wake_if(self.run("remove_pauses", {"queue": queue, "task": task_path}))

    def lift_pause(self, queue_name: str, task_path: str) -> int:
        """Lift exactly one pause ("" and "": the pause of everything); 1 if it was in force."""
        return self._wake_if(self.run("remove_pause", {"queue": queue_name, "task": task_path}))

    def pauses(self) -> list[tuple[str, str, dt.datetime | None]]:
        """Every pause in force: (queue, task path, since); blank means "any"."""
        return [(queue, task, self.dt_from_db(since))
                for queue, task, since in self.fetchall("pauses")]

    def _wake_if(self, lifted: int) -> int:
        """After pauses were lifted: wake idle workers at once (PostgreSQL; others see it
        at their next poll)."""
        if lifted:
            self.unpark_startable()  # The jobs of a paused task idle workers parked.
            self.notify(self.worker_queues())
        return lifted

    def worker_queues(self) -> set[str]:
        """The queues live workers serve (to wake them)."""
        queues: set[str] = set()
        for (value,) in self.fetchall("worker_queue_lists"):
            queues.update(self.json_from_db(value) or [])
        return queues
