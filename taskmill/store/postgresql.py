"""PostgreSQL: one-statement claims with SKIP LOCKED, COPY for bulk enqueue, NOTIFY wake-ups."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .base import JobStore
from .rows import NewJob, Outcome

#: Channel the insert trigger (migration 0002) and :meth:`notify` publish queue names on.
CHANNEL = "taskmill"

#: COPY text format: backslash, tab, newline and carriage return are escaped.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: object) -> str:
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "t" if value else "f"
    return str(value).translate(_COPY_ESCAPES)


def _copy_lines(jobs: Sequence[NewJob]) -> str:
    """Rows of ``copy_jobs`` (COPY text format), columns in INSERT_COLUMNS order.

    Jobs of one enqueue_many share everything but id, arguments, unique key and batch,
    so the shared columns are formatted once per distinct combination.
    """
    cache: dict[tuple[Any, ...], tuple[str, str, str]] = {}
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
        claims and completions can be lost, and those jobs run again (exactly what
        at-least-once execution already allows); nothing enqueued is ever lost. What it
        buys: a claim does not wait for a disk flush, so an idle worker starts a job
        sooner and a busy one commits more rounds per second.
        """
        self.connection.ensure_connection()
        raw = self.connection.connection
        if raw is not self._tuned:
            self.run("worker_commit_mode")
            self._tuned = raw

    def insert(self, jobs: Sequence[NewJob],
               while_sending: Callable[[], None] | None = None) -> None:
        # The statement-level trigger sends the NOTIFY; it is delivered on commit.
        if len(jobs) <= 1:
            return super().insert(jobs, while_sending)
        with self.cursor() as cursor, cursor.copy(self.sql["copy_jobs"]) as copy:
            for start in range(0, len(jobs), 5000):
                copy.write(_copy_lines(jobs[start:start + 5000]))
            if while_sending is not None:
                while_sending()  # The server works through the rows meanwhile.

    def notify(self, queues: Iterable[str]) -> None:
        with self.cursor() as cursor:
            for queue in sorted(set(queues)):
                self.execute(cursor, "notify", {"channel": CHANNEL, "queue": queue})

    def record_successes(self, outcomes: Sequence[Outcome], worker_id: str) -> None:
        """One guarded UPDATE for the whole round (``complete_jobs``)."""
        with self.cursor() as cursor:
            self.execute(cursor, "complete_jobs", {
                "worker": worker_id,
                "ids": [o.job.id for o in outcomes],
                "attempts": [o.job.attempts for o in outcomes],
                "return_values": [o.return_json for o in outcomes],
                "finished_ats": [o.finished_at for o in outcomes],
            })
            done = {row[0] for row in cursor.fetchall()}
        for o in outcomes:
            o.recorded = o.job.id in done
