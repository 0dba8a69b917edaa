"""PostgreSQL: one-statement claims with SKIP LOCKED, COPY for bulk enqueue, NOTIFY wake-ups."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.db import DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper

from .base import JobStore
from .connection import Params
from .prepared import EXISTS, HOT, MISSING, SESSION_RESETS, SESSION_SETTINGS, prepared_form
from .rows import HeldSnapshot, NewJob, Outcome

logger = logging.getLogger("taskmill.store")

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
    """Rows of ``copy_jobs`` / ``copy_deferred_jobs`` (COPY text format), in their
    column order; ``run_after`` last, for deferred jobs only.

    Jobs of one enqueue_many share everything but id, arguments, unique key and batch,
    so the shared columns are formatted once per distinct combination.
    """
    cache: dict[tuple[Any, ...], tuple[str, str, str]] = {}
    lines = []
    for job in jobs:
        key = (job.backend, job.task_path, job.queue_name, job.priority, job.run_after,
               job.max_attempts, job.retry_backoff, job.timeout, job.transactional,
               job.concurrency_key, job.concurrency_limit, job.rate_key, job.rate_limit,
               job.rate_period, job.fairness_key, job.fair_rank, job.unique_until_start)
        parts = cache.get(key)
        if parts is None:
            head = "\t".join((_copy_text(job.backend), _copy_text(job.task_path),
                              _copy_text(job.queue_name), str(job.priority), "READY"))
            middle = "\t".join((
                "0", str(job.max_attempts), repr(float(job.retry_backoff)),
                _copy_text(job.timeout), "t" if job.transactional else "f", "", "f"))
            tail = "\t".join((_copy_text(job.concurrency_key), _copy_text(job.concurrency_limit)))
            flow = "\t".join((_copy_text(job.rate_key), _copy_text(job.rate_limit),
                              _copy_text(job.rate_period), _copy_text(job.fairness_key),
                              str(job.fair_rank), "t" if job.unique_until_start else "f"))
            if job.run_after is not None:
                tail = f"{tail}\t{{}}\t{flow}\t{job.run_after.isoformat()}"
            else:
                tail = f"{tail}\t{{}}\t{flow}"
            parts = cache[key] = (head, middle, tail)
        head, middle, tail = parts
        lines.append(
            f"{job.id.hex}\t{head}\t{job.args_json.translate(_COPY_ESCAPES)}\t"
            f"{job.kwargs_json.translate(_COPY_ESCAPES)}\t{middle}\t"
            f"{_copy_text(job.unique_key)}\t" + tail.format(_copy_text(job.batch_id)) + "\n"
        )
    return "".join(lines)


class PostgreSQLJobStore(JobStore):
    """The claim's transaction commits without waiting for the WAL flush (``claim`` in
    postgresql.sql). Enqueues, checkpoints, progress, completions recorded on their own
    and the body of a ``transactional`` task keep synchronous commits. The hazard: if the
    PostgreSQL *server* crashes, the last fraction of a second of claims (and of the
    completions recorded with them) can be lost, and those jobs run again: exactly what
    at-least-once execution already allows; nothing enqueued is ever lost. What it buys:
    a claim does not wait for a disk flush, so an idle worker starts a job sooner and a
    busy one commits more rounds per second.
    """

    vendor = "postgresql"

    def __init__(self, connection: BaseDatabaseWrapper, *, prepare: bool = False) -> None:
        super().__init__(connection)
        options = connection.settings_dict.get("OPTIONS", {})
        #: Whether the hot statements are prepared (:mod:`.prepared`): on a worker's own
        #: connections, unless the project turned prepared statements off itself.
        self.prepare = prepare and options.get("prepare_threshold", 0) is not None
        self._forms = ({name: prepared_form(name, self.sql[name]) for name in HOT}
                       if self.prepare else {})
        self._session: object = None  # The server session they were prepared in...
        self._ready = False  # ...and whether they were.

    def claim_call(self, queues: Sequence[str], limit: int, worker_id: str, *,
                   from_front: bool = True) -> tuple[str, dict[str, Any]]:
        if from_front:
            return super().claim_call(queues, limit, worker_id)
        return "claim_past_starts", {"worker": worker_id, "limit": limit,
                                     **self.claim_ranges(queues)}

    def next_wake_row(self, queues: Sequence[str]) -> Sequence[Any] | None:
        return self.fetchone(*self.next_wake_call(queues))

    def next_wake_call(self, queues: Sequence[str]) -> tuple[str, dict[str, Any]]:
        """``next_wake``'s statement and parameters: the due jobs read from where the
        claims start, as they do now (:mod:`.starts`)."""
        if self.front_read_due():
            return "next_wake", {"queues": self.list_param(queues)}
        return "next_wake_past_starts", self.claim_ranges(queues)

    def horizon_held_for(self) -> float | None:
        row = self.fetchone("horizon_held")
        return None if row is None or row[0] is None else float(row[0])

    def prepare_for_worker(self) -> None:
        super().prepare_for_worker()
        if self.prepare:
            with self.cursor() as cursor:
                self._prepare_all(cursor)

    def execute(self, cursor: CursorWrapper, name: str, params: Params | None = None) -> int:
        form = self._forms.get(name) if self.prepare else None
        if form is None:
            return super().execute(cursor, name, params)
        connection = self.connection
        in_transaction = connection.in_atomic_block or not connection.get_autocommit()
        if connection.connection is not self._session or not self._ready:
            if in_transaction:  # A failed PREPARE would abort the caller's transaction.
                return super().execute(cursor, name, params)
            self._prepare_all(cursor)
        try:
            cursor.execute(form.execute, params or {})
        except DatabaseError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != MISSING:
                raise
            # Not in this session, though prepared in "ours": a pooler in transaction
            # mode. Plain statements from now on; outside a transaction nothing ran, so
            # run it now; inside one, the caller's transaction failed and is retried.
            self.prepare = False
            try:
                for reset in SESSION_RESETS:
                    cursor.execute(reset)
            except DatabaseError:
                pass  # Best effort: only this session's prepared statements were affected.
            logger.warning("Prepared statements do not stay in one session on DATABASES[%r] "
                           "(a pooler in transaction mode?); using plain statements.",
                           self.alias)
            if in_transaction:
                raise
            return super().execute(cursor, name, params)
        return int(cursor.rowcount)

    def _prepare_all(self, cursor: CursorWrapper) -> None:
        for setting in SESSION_SETTINGS:
            cursor.execute(setting)
        for form in self._forms.values():
            try:
                cursor.execute(form.prepare)
            except DatabaseError as exc:
                if getattr(exc.__cause__, "sqlstate", None) != EXISTS:
                    raise  # (EXISTS: by its name, this very statement; fine.)
        self._session, self._ready = self.connection.connection, True

    def oldest_snapshot(self) -> HeldSnapshot | None:
        row = self.fetchone("oldest_snapshot")
        if row is None:
            return None
        pid, age, application, state = row
        return HeldSnapshot(pid=pid, age=float(age), application=application or "",
                            state=state or "")

    def insert_rows(self, jobs: Sequence[NewJob],
                    while_sending: Callable[[], None] | None = None) -> None:
        # The statement-level trigger sends the NOTIFY; it is delivered on commit.
        if len(jobs) <= 1:
            return super().insert_rows(jobs, while_sending)
        groups = [(statement, rows) for statement, rows in (
            ("copy_jobs", [job for job in jobs if job.run_after is None]),
            ("copy_deferred_jobs", [job for job in jobs if job.run_after is not None]),
        ) if rows]
        with self.atomic(), self.cursor() as cursor:
            for number, (statement, rows) in enumerate(groups, 1):
                with cursor.copy(self.sql[statement]) as copy:
                    for start in range(0, len(rows), 5000):
                        copy.write(_copy_lines(rows[start:start + 5000]))
                    if while_sending is not None and number == len(groups):
                        while_sending()  # The server works through the rows meanwhile.

    def notify(self, queues: Iterable[str]) -> None:
        with self.cursor() as cursor:
            for queue in sorted(set(queues)):
                self.execute(cursor, "notify", {"channel": CHANNEL, "queue": queue})

    def record_successes(self, outcomes: Sequence[Outcome], worker_id: str) -> None:
        """One guarded UPDATE for the whole round (``complete_jobs``)."""
        with self.cursor() as cursor:
            self.execute(cursor, "complete_jobs", self._successes(outcomes, worker_id))
            done = {row[0] for row in cursor.fetchall()}
        for o in outcomes:
            o.recorded = o.ended = o.job.id in done

    @staticmethod
    def _successes(outcomes: Sequence[Outcome], worker_id: str) -> dict[str, Any]:
        return {"worker": worker_id, "ids": [o.job.id for o in outcomes],
                "attempts": [o.job.attempts for o in outcomes],
                "return_values": [o.return_json for o in outcomes]}
