"""Leases: worker rows and their heartbeats, and recovery of dead workers' jobs.

A worker process's lease is its ``taskmill_worker`` row's heartbeat; it covers every
job the process holds. There is no time-since-start rescue: a job of a live worker is
never recovered, however long it runs. A worker silent past ``LEASE_SECONDS`` is
deleted (declared dead), and its jobs become orphans: re-queued with the lost attempt
recorded (``WorkerLost``), or FAILED when that was their last attempt.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence

from .outcomes import CANCELLED, Outcomes
from .rows import ClaimedJob

WORKER_LOST = "taskmill.exceptions.WorkerLost"
_LOST = ("worker {} stopped heartbeating while running this job (killed, out of memory, "
         "or hung).")
_CANCELLED_AND_LOST = "cancelled, and worker {} stopped heartbeating while running it."


class Leases(Outcomes):
    def register_worker(self, worker_id: str, hostname: str, pid: int, queues: Sequence[str],
                        threads: int) -> None:
        self.run("register_worker", {
            "id": worker_id, "hostname": hostname, "pid": pid, "queues": json.dumps(list(queues)),
            "threads": threads})

    def heartbeat(self, worker_id: str) -> bool:
        """Renew the lease. False: this worker was declared dead and its jobs recovered."""
        return self.run("renew_lease", {"id": worker_id}) == 1

    def unregister_worker(self, worker_id: str) -> None:
        self.run("unregister_worker", {"id": worker_id})

    def expire_workers(self, lease_seconds: float) -> list[str]:
        """Delete workers silent for longer than ``lease_seconds``, by the database's
        clock; their jobs become orphans to recover."""
        lease = {"lease": lease_seconds}
        expired = []
        with self.cursor() as cursor:
            self.execute(cursor, "stale_workers", lease)
            for (worker_id,) in cursor.fetchall():
                if self.execute(cursor, "expire_worker", {**lease, "id": worker_id}):
                    expired.append(worker_id)
        return expired

    def recover_orphans(self, worker_id: str | None = None) -> int:
        """Re-queue RUNNING jobs whose worker is gone; each lost attempt is recorded.

        A job that has used all its attempts ends FAILED with ``WorkerLost`` instead, and
        one someone cancelled ends FAILED with ``Cancelled``. ``worker_id`` narrows it to
        one dead worker (the supervisor knows its child died).
        """
        recovered = 0
        queues: set[str] = set()
        finished_batches: set[uuid.UUID] = set()
        with self.atomic(), self.cursor() as cursor:
            if worker_id is None:
                self.execute(cursor, "orphans")
            else:
                self.execute(cursor, "orphans_of_worker", {"owner": worker_id})
            for (job_id, attempts, _max_attempts, owner, queue_name, cancelled,
                 batch_id) in cursor.fetchall():
                lease = {"id": job_id, "worker": owner, "attempt": attempts}
                if cancelled is not None:
                    final = self.execute(cursor, "fail_cancelled_job", lease) == 1
                    if not final:
                        continue
                    exception, why = CANCELLED, _CANCELLED_AND_LOST
                elif self.execute(cursor, "requeue_orphan", lease) == 1:
                    final, exception, why = False, WORKER_LOST, _LOST
                elif self.execute(cursor, "fail_job", lease) == 1:
                    final, exception, why = True, WORKER_LOST, _LOST
                else:
                    continue  # No longer RUNNING under that lease: someone else settled it.
                recovered += 1
                queues.add(queue_name)
                self.insert_error(cursor, self.id_from_db(job_id), attempts, owner, exception,
                                  f"{exception}: {why.format(owner)}\n")
                if final and batch_id is not None:
                    finished_batches.add(self.id_from_db(batch_id))
            if finished_batches:  # A lost child that ends FAILED counts toward its batch.
                self.finish_batches(finished_batches)
        if recovered:  # Slots of their keys opened (the orphans' keys are not read here).
            self.unpark_if_room()
        if queues:
            self.notify(queues)
        return recovered

    def leased_jobs(self, worker_id: str, older_than: float) -> list[ClaimedJob]:
        """RUNNING jobs leased to ``worker_id`` whose attempt started more than
        ``older_than`` seconds ago."""
        rows = self.fetchall("leased_jobs", {"worker": worker_id, "age": older_than})
        return [self.row_to_claimed(row) for row in rows]

    def cancel_requests(self, worker_id: str,
                        job_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, bool]:
        """Which of ``job_ids``, running on ``worker_id``, someone asked to cancel, with
        their force flag. Read by id, not by lease owner: while a snapshot is held, the
        index of RUNNING jobs keeps an entry for every job this worker ran since."""
        if not job_ids:
            return {}
        rows = self.fetchall("cancel_requests", {"worker": worker_id,
                                                 "ids": self.ids_param(list(job_ids))})
        return {self.id_from_db(job_id): bool(force) for job_id, force in rows}

    def take_service(self, name: str, worker_id: str, seconds: float) -> bool:
        """Whether ``worker_id`` may run the maintenance service ``name`` for the next
        ``seconds``: one worker at a time across every host, passed on as it expires."""
        params = {"name": name, "worker": worker_id, "ttl": seconds}
        if self.run("take_service", params) == 1:
            return True
        self.run("add_service", params)  # First sight of it: the next look may take it.
        return False
