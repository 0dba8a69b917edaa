"""PostgreSQL: one-statement claims with SKIP LOCKED, COPY for bulk enqueue, NOTIFY wake-ups."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence

from .base import CLAIM_COLUMNS, INSERT_COLUMNS, ROOM_FOR_KEY, ClaimedJob, JobStore, NewJob, Outcome
from .limits import enforce_limits

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
    SELECT j.id FROM taskmill_job j
    WHERE j.status = 'READY' AND j.queue_name = ANY(%(queues)s) AND j.run_after <= %(now)s
      AND {ROOM_FOR_KEY}
    ORDER BY j.priority DESC, j.run_after, j.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING {_RETURNING}
"""


#: COPY text format: backslash, tab, newline and carriage return are escaped.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: object) -> str:
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "t" if value else "f"
    return str(value).translate(_COPY_ESCAPES)


def _copy_lines(jobs: Sequence[NewJob]) -> str:
    """Rows of ``COPY ... FROM STDIN`` (text format), columns in INSERT_COLUMNS order.

    Jobs of one enqueue_many share everything but id, arguments, unique key and batch,
    so the shared columns are formatted once per distinct combination.
    """
    cache: dict[tuple, tuple[str, str, str]] = {}
    lines = []
    for job in jobs:
        key = (job.backend, job.task_path, job.queue_name, job.priority, job.enqueued_at,
               job.run_after, job.max_attempts, job.retry_backoff, job.timeout,
               job.transactional, job.concurrency_key, job.concurrency_limit)
        parts = cache.get(key)
        if parts is None:
            head = "\t".join((_copy_text(job.backend), _copy_text(job.task_path),
                              _copy_text(job.queue_name), str(job.priority), "READY"))
            middle = "\t".join((
                job.enqueued_at.isoformat(), job.run_after.isoformat(), "0",
                str(job.max_attempts), repr(float(job.retry_backoff)), _copy_text(job.timeout),
                "t" if job.transactional else "f", "", "f"))
            tail = "\t".join((_copy_text(job.concurrency_key), _copy_text(job.concurrency_limit)))
            parts = cache[key] = (head, middle, tail)
        head, middle, tail = parts
        lines.append(
            f"{job.id.hex}\t{head}\t{job.args_json.translate(_COPY_ESCAPES)}\t"
            f"{job.kwargs_json.translate(_COPY_ESCAPES)}\t{middle}\t"
            f"{_copy_text(job.unique_key)}\t{tail}\t{_copy_text(job.batch_id)}\n"
        )
    return "".join(lines)


class PostgreSQLJobStore(JobStore):
    vendor = "postgresql"
    _tuned: object = None

    def tune_for_worker(self) -> None:
        """Commit the worker's claims and completions without waiting for the WAL flush.

        Only the worker's own bookkeeping connection is tuned: enqueues, checkpoints,
        progress and the body of a ``transactional`` task keep synchronous commits. The
        hazard: if the PostgreSQL *server* crashes, the last fraction of a second of
        claims and completions can be lost, and those jobs run again — exactly what
        at-least-once execution already allows; nothing enqueued is ever lost. What it
        buys: a claim does not wait for a disk flush, so an idle worker starts a job
        sooner and a busy one commits more rounds per second.
        """
        self.connection.ensure_connection()
        raw = self.connection.connection
        if raw is not self._tuned:
            with self.connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit TO off")
            self._tuned = raw

    def insert(self, jobs: Sequence[NewJob],
               while_sending: Callable[[], None] | None = None) -> None:
        # The statement-level trigger sends the NOTIFY; it is delivered on commit.
        if len(jobs) <= 1:
            return super().insert(jobs, while_sending)
        with self.connection.cursor() as cursor:
            copy_sql = f"COPY {self.table} ({', '.join(INSERT_COLUMNS)}) FROM STDIN"
            with cursor.copy(copy_sql) as copy:
                for start in range(0, len(jobs), 5000):
                    copy.write(_copy_lines(jobs[start:start + 5000]))
                if while_sending is not None:
                    while_sending()  # The server works through the rows meanwhile.

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
        return enforce_limits(self, jobs, worker_id)

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
