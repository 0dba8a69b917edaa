"""PostgreSQL: one-statement claims with SKIP LOCKED, COPY for bulk enqueue, NOTIFY wake-ups."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from .base import CLAIM_COLUMNS, INSERT_COLUMNS, ClaimedJob, JobStore, NewJob, Outcome

#: Channel the insert trigger (migration 0002) and :meth:`notify` publish queue names on.
CHANNEL = "taskmill"

_RETURNING = ", ".join(CLAIM_COLUMNS)

CLAIM_SQL = f"""
UPDATE taskmill_job SET
    status = 'RUNNING',
    attempts = attempts + 1,
    lease_owner = %(worker)s,
    started_at = COALESCE(started_at, %(now)s),
    last_attempted_at = %(now)s,
    worker_ids = CASE WHEN worker_ids = '' THEN %(worker)s ELSE worker_ids || ',' || %(worker)s END
WHERE id IN (
    SELECT id FROM taskmill_job
    WHERE status = 'READY' AND queue_name = ANY(%(queues)s) AND run_after <= %(now)s
    ORDER BY priority DESC, run_after, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING {_RETURNING}
"""


class PostgreSQLJobStore(JobStore):
    vendor = "postgresql"

    def insert(self, jobs: Sequence[NewJob]) -> None:
        # The statement-level trigger sends the NOTIFY; it is delivered on commit.
        if len(jobs) <= 1:
            return self._insert_one(jobs)
        with self.connection.cursor() as cursor:
            copy_sql = f"COPY {self.table} ({', '.join(INSERT_COLUMNS)}) FROM STDIN"
            with cursor.copy(copy_sql) as copy:
                for job in jobs:
                    copy.write_row(self._copy_row(job))

    def _insert_one(self, jobs: Sequence[NewJob]) -> None:
        if not jobs:
            return
        placeholders = ", ".join(["%s"] * len(INSERT_COLUMNS))
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {self.table} ({', '.join(INSERT_COLUMNS)}) VALUES ({placeholders})",
                self.insert_params(jobs[0]),
            )

    @staticmethod
    def _copy_row(job: NewJob) -> tuple:
        return (
            job.id, job.backend, job.task_path, job.queue_name, job.priority, "READY",
            job.args_json, job.kwargs_json, job.enqueued_at, job.run_after, 0,
            job.max_attempts, job.retry_backoff, job.timeout, job.transactional, "", False,
            job.unique_key, job.concurrency_key, job.concurrency_limit, job.batch_id,
        )

    def notify(self, queues: Iterable[str]) -> None:
        with self.connection.cursor() as cursor:
            for queue in sorted(set(queues)):
                cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, queue])

    def claim(self, queues: Sequence[str], limit: int, worker_id: str,
              now: dt.datetime) -> list[ClaimedJob]:
        with self.connection.cursor() as cursor:
            cursor.execute(
                CLAIM_SQL,
                {"worker": worker_id, "now": now, "queues": list(queues), "limit": limit},
            )
            rows = cursor.fetchall()
        jobs = [self.row_to_claimed(row) for row in rows]
        jobs.sort(key=lambda j: (-j.priority, j.run_after, j.id))
        return jobs

    def record_successes(self, outcomes: Sequence[Outcome], worker_id: str) -> None:
        """One guarded UPDATE for the whole batch, joined to a VALUES list."""
        values = ", ".join(["(%s::uuid, %s::integer, %s::jsonb, %s::timestamptz)"] * len(outcomes))
        params: list = []
        for o in outcomes:
            params += [o.job.id, o.job.attempts, o.return_json, o.finished_at]
        params.append(worker_id)
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {self.table} AS j SET status = 'SUCCESSFUL', return_value = v.rv, "
                "finished_at = v.fin, lease_owner = NULL "
                f"FROM (VALUES {values}) AS v(id, att, rv, fin) "
                "WHERE j.id = v.id AND j.status = 'RUNNING' AND j.lease_owner = %s "
                "AND j.attempts = v.att RETURNING j.id",
                params,
            )
            done = {row[0] for row in cursor.fetchall()}
        for o in outcomes:
            o.recorded = o.job.id in done
