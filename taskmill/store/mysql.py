"""MySQL and MariaDB: SELECT ... FOR UPDATE SKIP LOCKED, then UPDATE, in one transaction.

Neither has UPDATE ... RETURNING, so a claim takes three statements; the row locks
taken by the SELECT keep other workers off these jobs until the commit.
Needs MySQL 8.0.1+ or MariaDB 10.8+ (SKIP LOCKED, DESC indexes): see taskmill.capabilities.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, IntegrityError
from django.db.backends.utils import CursorWrapper

from .base import JobStore
from .connection import Params
from .rows import HeldSnapshot
from .starts import ClaimRange

logger = logging.getLogger("taskmill.store")

#: The parameters of a range's statements (``in_range``), numbered for each range.
_RANGE_PARAM = re.compile(r"%\((?P<name>queue|top|bottom|turn|due|limit)\)s")


class MySQLJobStore(JobStore):
    vendor = "mysql"
    #: Whether this store said it cannot see InnoDB's transactions (it says so once).
    _said_no_process_privilege = False

    def list_param(self, values: Sequence[Any]) -> Any:
        return tuple(values)  # mysqlclient writes a tuple as ('a', 'b')

    @contextmanager
    def claim_transaction(self) -> Iterator[None]:
        # On the store's own connection: the row locks must last until the UPDATE, and
        # the limits are enforced before they are released.
        with self.atomic():
            yield

    def claimable(self, queues: Sequence[str], limit: int, *,
                  from_front: bool = True) -> tuple[str, Params]:
        """The SELECT that locks a claim's jobs, and its parameters: one
        ``claimable_in_queue`` per queue, united, the best ``limit`` of them kept. While
        a read view holds back InnoDB's purge (:mod:`.starts`), one ``claimable_in_range``
        per range instead (each queue from its start, or from the front), each locking
        no more jobs than a consistent read of its range counted a moment before.

        Why count first: a locking read that runs out of its range before its LIMIT goes
        on over the delete-marked entries that follow it (InnoDB passes over them before
        it checks the range's end) up to the first live one; under a held read view that
        is the entry of every job run since, each looked up with its row's versions.
        With as many jobs as it counted, it stops at the last. A consistent read passes
        over them about a hundred times cheaper.

        Hazards: a queue's jobs that lose to another queue's stay locked until the claim
        commits (at most ``limit`` a queue); other claims pass over them meanwhile. A job
        another claim takes between the count and the lock is passed over, and that range
        is read past its end as before.
        """
        if not self._horizon_held:
            parts, params = self.per_queue("claimable_in_queue", queues)
        else:
            ranges = self.read_ranges(queues, from_front=from_front)
            parts, params = self.per_range("claimable_in_range", ranges)
            counting, counted = self.per_range("available_in_range", ranges)
            counted.update({f"limit_{index}": limit for index in range(len(ranges))})
            with self.cursor() as cursor:
                cursor.execute("SELECT " + ", ".join(f"({part})" for part in counting),
                               counted)
                available = cursor.fetchone()
            params.update({f"limit_{index}": int(count)
                           for index, count in enumerate(available)})
        sql = (" UNION ALL ".join(parts)
               + " ORDER BY priority DESC, fair_rank, run_after, id LIMIT %(limit)s")
        return sql, {**params, "limit": limit}

    def per_range(self, name: str, ranges: Sequence[ClaimRange]) -> tuple[list[str], dict[str, Any]]:
        """As :meth:`per_queue`, a copy of the statement ``name`` for each of ``ranges``
        (:meth:`read_ranges`), with parameters of its own for the range's queue,
        priorities, turn and due time (``in_range``), and its limit."""
        parts: list[str] = []
        params: dict[str, Any] = {}
        for index, claim_range in enumerate(ranges):
            params.update({
                f"queue_{index}": claim_range.queue, f"top_{index}": claim_range.top,
                f"bottom_{index}": claim_range.bottom, f"turn_{index}": claim_range.turn,
                # run_after is naive, in the connection's time zone; EARLIEST (year 1)
                # is before DATETIME's range, and would not convert west of UTC.
                f"due_{index}": (None if claim_range.from_front
                                 else self.dt_param(claim_range.due)),
            })
            parts.append(_RANGE_PARAM.sub(rf"%(\g<name>_{index})s", self.sql[name]))
        return parts, params

    def next_wake_query(self, queues: Sequence[str]) -> tuple[str, dict[str, Any]]:
        """As the base's; while claims start past the jobs claimed last, the due and
        deferred jobs read from where they start (``next_wake_in_range``)."""
        if self.front_read_due():
            return super().next_wake_query(queues)
        parts, params = self.per_range("next_wake_in_range", self.read_ranges(queues))
        parts.append(self.sql["next_rate_room"])
        return f"SELECT MIN(due.seconds) FROM ({' UNION ALL '.join(parts)}) due", params

    def horizon_held_for(self) -> float | None:
        """The age of the oldest read view on the server (:meth:`oldest_snapshot`):
        InnoDB purges no delete-marked index entry while one older is open, whatever
        database it reads. None without the PROCESS privilege: claims read from the
        front, as everywhere outside a window."""
        held = self.oldest_snapshot()
        return None if held is None else held.age

    def cleanup_backlog(self) -> int | None:
        """InnoDB's history list length (``purge_backlog`` in mysql.sql): the committed
        transactions whose old row versions, and delete-marked index entries, purge has
        yet to remove. None where it cannot be read (without PROCESS)."""
        try:
            row = self.fetchone("purge_backlog")
        except DatabaseError:
            return None
        return None if row is None else int(row[0])

    def ready_queues(self) -> list[str]:
        """As the base's, one index probe a statement (see ``first_ready_queue``)."""
        names: list[str] = []
        row = self.fetchone("first_ready_queue")
        while row is not None and row[0] is not None:
            names.append(row[0])
            row = self.fetchone("next_ready_queue", {"after": row[0]})
        return names

    def oldest_snapshot(self) -> HeldSnapshot | None:
        """As PostgreSQL's, of the whole server (see ``oldest_snapshot`` in mysql.sql):
        a read view held anywhere on it holds back the purge of the job tables. None
        without the PROCESS privilege, which ``information_schema.innodb_trx`` needs."""
        try:
            row = self.fetchone("oldest_snapshot")
        except DatabaseError as exc:
            if self._said_no_process_privilege:
                return None
            self._said_no_process_privilege = True
            logger.info("Cannot tell which transaction holds back InnoDB's purge (%s): "
                        "the database user needs the PROCESS privilege.", exc)
            return None
        if row is None:
            return None
        thread_id, age, application, state = row
        return HeldSnapshot(pid=int(thread_id), age=float(age), application=application,
                            state=state)

    def claim_rows(self, queues: Sequence[str], limit: int, worker_id: str, *,
                   from_front: bool = True) -> list[Sequence[Any]]:
        sql, selecting = self.claimable(queues, limit, from_front=from_front)
        with self.cursor() as cursor:
            cursor.execute(sql, selecting)
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return []
            params = {"worker": worker_id, "ids": self.list_param(ids)}
            self.execute(cursor, "mark_claimed", params)
            # Only rows this statement really took: a row that stopped being READY since
            # the SELECT (never expected under the lock, but cheap to rule out).
            self.execute(cursor, "claimed_jobs", params)
            return list(cursor.fetchall())

    def unpark_rate_jobs(self, key: str, count: int) -> list[str]:
        """Lock the best parked jobs (passing over held ones), then unpark them: MySQL's
        UPDATE returns no rows, and takes no LIMIT in an IN subquery."""
        with self.atomic(), self.cursor() as cursor:
            self.execute(cursor, "lock_parked_rate_jobs", {"key": key, "count": count})
            locked = list(cursor.fetchall())
            if locked:
                self.execute(cursor, "unpark_locked_jobs",
                             {"ids": self.list_param([job_id for job_id, _ in locked])})
        return [queue for _, queue in locked]

    def flag_parked_rate_keys(self) -> None:
        """Read the keys, then flag them: an UPDATE whose subquery reads the jobs would
        lock them (and MySQL's may not read the table it updates)."""
        keys = [key for (key,) in self.fetchall("rate_keys_to_flag")]
        if keys:
            self.run("flag_rate_keys_with_room", {"keys": self.list_param(keys)})

    def rate_key_has_parked(self, cursor: CursorWrapper, key: str) -> bool:
        self.execute(cursor, "rate_key_has_parked", {"key": key})
        row = cursor.fetchone()
        return bool(row and row[0])

    def prune_concurrency_locks(self) -> int:
        """Read the idle keys, then delete their rows: a DELETE that reads the jobs in
        its own WHERE takes shared locks on their index entries, one lock row at a time,
        and deadlocked with a claim that held a job of the key and wanted its lock row.

        A key that gets a job between the read and the delete loses its row all the
        same: harmless, the next claim of it inserts the row again; a claim holding the
        row keeps it until it commits (the delete waits for it).
        """
        keys = [key for (key,) in self.fetchall("idle_concurrency_locks")]
        if not keys:
            return 0
        return self.run("delete_concurrency_locks", {"keys": self.list_param(keys)})

    def _insert_if_key_free(self, cursor: CursorWrapper, params: Params) -> bool:
        """Read first: an insert that meets the key, even one that does nothing on the
        conflict (``ON DUPLICATE KEY UPDATE``), locks the holder's index record until the
        enqueuer commits, holding up its completion and its whole batch."""
        self.execute(cursor, "unique_key_holder", {"key": params["unique_key"]})
        if cursor.fetchone() is not None:
            return False  # The caller reads the holder back.
        try:
            self.execute(cursor, "insert_unique_job", params)
        except IntegrityError:  # Another enqueue took the key since we read.
            return False
        return True
