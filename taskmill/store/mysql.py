"""MySQL and MariaDB: SELECT ... FOR UPDATE SKIP LOCKED, then UPDATE, in one transaction.

Neither has UPDATE ... RETURNING, so a claim takes three statements; the row locks
taken by the SELECT keep other workers off these jobs until the commit.
Needs MySQL 8.0.1+ or MariaDB 10.6+ (SKIP LOCKED).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from .base import CLAIM_COLUMNS, ROOM_FOR_KEY, ClaimedJob, JobStore
from .limits import enforce_limits


class MySQLJobStore(JobStore):
    vendor = "mysql"

    def claim(self, queues: Sequence[str], limit: int, worker_id: str,
              now: dt.datetime) -> list[ClaimedJob]:
        queue_marks = ", ".join(["%s"] * len(queues))
        now_param = self.dt_param(now)
        # On the store's own connection: the row locks must last until the UPDATE.
        with self.atomic(), self.connection.cursor() as cursor:
            cursor.execute(
                f"SELECT j.id FROM {self.table} j WHERE j.status = 'READY' "
                f"AND j.queue_name IN ({queue_marks}) AND j.run_after <= %s AND {ROOM_FOR_KEY} "
                "ORDER BY j.priority DESC, j.run_after, j.id LIMIT %s FOR UPDATE SKIP LOCKED",
                [*queues, now_param, limit],
            )
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return []
            id_marks = ", ".join(["%s"] * len(ids))
            cursor.execute(
                f"UPDATE {self.table} SET status = 'RUNNING', attempts = attempts + 1, "
                "lease_owner = %s, started_at = COALESCE(started_at, %s), "
                "last_attempted_at = %s, "
                "worker_ids = IF(worker_ids = '', %s, CONCAT(worker_ids, ',', %s)) "
                f"WHERE id IN ({id_marks}) AND status = 'READY'",
                [worker_id, now_param, now_param, worker_id, worker_id, *ids],
            )
            # Only rows this statement really took: a row that stopped being READY
            # since the SELECT (never expected under the lock, but cheap to rule out).
            cursor.execute(
                f"SELECT {', '.join(CLAIM_COLUMNS)} FROM {self.table} WHERE id IN ({id_marks}) "
                "AND status = 'RUNNING' AND lease_owner = %s AND last_attempted_at = %s",
                [*ids, worker_id, now_param],
            )
            rows = cursor.fetchall()
            jobs = [self.row_to_claimed(row) for row in rows]
            jobs.sort(key=lambda j: (-j.priority, j.run_after, j.id))
            return enforce_limits(self, jobs, worker_id)
