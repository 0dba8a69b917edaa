"""Leases: worker rows and their heartbeats, and recovery of dead workers' jobs.

A worker process's lease is its ``taskmill_worker`` row's heartbeat; it covers every
job the process holds. There is no time-since-start rescue: a job of a live worker is
never recovered, however long it runs. A worker silent past ``LEASE_SECONDS`` is
deleted (declared dead), and its jobs become orphans: re-queued with the lost attempt
recorded (``WorkerLost``), or FAILED when that was their last attempt.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence

from .outcomes import CANCELLED, Outcomes
from .rows import ClaimedJob

WORKER_LOST = "taskmill.exceptions.WorkerLost"
_LOST = ("worker {} stopped heartbeating while running this job (killed, out of memory, "
         "or hung).")
_CANCELLED_AND_LOST = "cancelled, and worker {} stopped heartbeating while running it."


class Leases(Outcomes):
    def register_worker(self, worker_id: str, hostname: str, pid: int, queues: Sequence[str],
                        threads: int, now: dt.datetime) -> None:
        self.run("register_worker", {
            "id": worker_id, "hostname": hostname, "pid": pid, "queues": json.dumps(list(queues)),
            "threads": threads, "now": self.dt_param(now)})

    def heartbeat(self, worker_id: str, now: dt.datetime) -> bool:
        """Renew the lease. False: this worker was declared dead and its jobs recovered."""
        return self.run("renew_lease", {"id": worker_id, "now": self.dt_param(now)}) == 1

    def unregister_worker(self, worker_id: str) -> None:
        self.run("unregister_worker", {"id": worker_id})

    def expire_workers(self, cutoff: dt.datetime) -> list[str]:
        """Delete workers silent since ``cutoff``; their jobs become orphans to recover."""
        cutoff_param = {"cutoff": self.dt_param(cutoff)}
        expired = []
        with self.cursor() as cursor:
            self.execute(cursor, "stale_workers", cutoff_param)
            for (worker_id,) in cursor.fetchall():
                if self.execute(cursor, "expire_worker", {**cutoff_param, "id": worker_id}):
                    expired.append(worker_id)
        return expired

    def recover_orphans(self, now: dt.datetime, worker_id: str | None = None) -> int:
        """Re-queue RUNNING jobs whose worker is gone; each lost attempt is recorded.

        A job that has used all its attempts ends FAILED with ``WorkerLost`` instead.
        ``worker_id`` narrows it to one dead worker (the supervisor knows its child died).
        """
        recovered = 0
        queues: set[str] = set()
        finished_batches: set[uuid.UUID] = set()
        with self.atomic(), self.cursor() as cursor:
            if worker_id is None:
                self.execute(cursor, "orphans")
            else:
                self.execute(cursor, "orphans_of_worker", {"owner": worker_id})
            for (job_id, attempts, max_attempts, owner, queue_name, cancelled,
                 batch_id) in cursor.fetchall():
                # A job someone cancelled is not run again.
                final = attempts >= max_attempts or cancelled is not None
                if not self.execute(cursor, "recover_orphan", {
                        "id": job_id, "owner": owner, "attempt": attempts,
                        "status": "FAILED" if final else "READY",
                        "finished_at": self.dt_param(now) if final else None}):
                    continue
                recovered += 1
                queues.add(queue_name)
                exception, why = ((CANCELLED, _CANCELLED_AND_LOST) if cancelled is not None
                                  else (WORKER_LOST, _LOST))
                self.insert_error(cursor, self.id_from_db(job_id), attempts, owner, exception,
                                  f"{exception}: {why.format(owner)}\n", now)
                if final and batch_id is not None:
                    finished_batches.add(self.id_from_db(batch_id))
            if finished_batches:  # A lost child that ends FAILED counts toward its batch.
                self.finish_batches(finished_batches)
        if queues:
            self.notify(queues)
        return recovered

    def leased_jobs(self, worker_id: str, claimed_before: dt.datetime) -> list[ClaimedJob]:
        """RUNNING jobs leased to ``worker_id`` whose attempt started before the cutoff."""
        rows = self.fetchall("leased_jobs", {"worker": worker_id,
                                             "before": self.dt_param(claimed_before)})
        return [self.row_to_claimed(row) for row in rows]

    def cancel_requests(self, worker_id: str) -> dict[uuid.UUID, bool]:
        """The running jobs of ``worker_id`` someone asked to cancel, with their force flag."""
        rows = self.fetchall("cancel_requests", {"worker": worker_id})
        return {self.id_from_db(job_id): bool(force) for job_id, force in rows}
