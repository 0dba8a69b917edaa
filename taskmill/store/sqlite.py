"""SQLite: writers are serialized by the database, so a claim is one UPDATE ... RETURNING.

Needs SQLite 3.35+ and WAL mode (set by the worker) so readers never block the writer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from .base import CLAIM_COLUMNS, ROOM_FOR_KEY, ClaimedJob, JobStore
from .limits import enforce_limits


class SQLiteJobStore(JobStore):
    vendor = "sqlite"

    def claim(self, queues: Sequence[str], limit: int, worker_id: str,
              now: dt.datetime) -> list[ClaimedJob]:
        placeholders = ", ".join(["?"] * len(queues))
        now_param = self.dt_param(now)
        sql = (
            f"UPDATE {self.table} SET status = 'RUNNING', attempts = attempts + 1, "
            "lease_owner = ?, started_at = COALESCE(started_at, ?), last_attempted_at = ?, "
            "worker_ids = CASE WHEN worker_ids = '' THEN ? ELSE worker_ids || ',' || ? END "
            f"WHERE id IN (SELECT j.id FROM {self.table} j WHERE j.status = 'READY' "
            f"AND j.queue_name IN ({placeholders}) AND j.run_after <= ? AND {ROOM_FOR_KEY} "
            "ORDER BY j.priority DESC, j.run_after, j.id LIMIT ?) "
            f"RETURNING {', '.join(CLAIM_COLUMNS)}"
        )
        params = [worker_id, now_param, now_param, worker_id, worker_id, *queues, now_param, limit]
        # The raw sqlite3 cursor: Django's wrapper would rewrite "%s", and this
        # statement is the hottest in the worker.
        self.connection.ensure_connection()
        raw = self.connection.connection.cursor()
        try:
            rows = raw.execute(sql, params).fetchall()
        finally:
            raw.close()
        jobs = [self.row_to_claimed(row) for row in rows]
        jobs.sort(key=lambda j: (-j.priority, j.run_after, j.id))
        return enforce_limits(self, jobs, worker_id)
