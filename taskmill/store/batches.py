"""Batch completion: the ``then`` job of a batch is enqueued exactly once.

:func:`on_children_finished` runs inside the transaction that records a child's final
state (the store calls it) and:

1. locks the batch row (``SELECT ... FOR UPDATE``; on SQLite the writer's lock already
   serialises it), so concurrent completions of one batch queue up here;
2. asks whether any child is still READY or RUNNING, with a fresh read: the completion
   that got the lock second sees the first one's commit (READ COMMITTED, the default of
   PostgreSQL and of Django on MySQL);
3. if none is, enqueues ``then`` and sets ``finished_at``/``then_job_id`` in the same
   transaction, guarded by ``finished_at IS NULL``.

Hazard: with MySQL's REPEATABLE READ (not Django's default) a ``transactional`` task
that read the job table earlier in its transaction could see a stale snapshot in step 2;
keep Django's default isolation level for the job database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from .. import compat
from ..ids import new_job_id


def on_children_finished(store: Any, batch_ids: Iterable[uuid.UUID]) -> None:
    """Enqueue ``then`` for each of these batches whose children have all finished.

    Called by the store inside the transaction that recorded the children's outcomes
    (and by recovery when a lost worker's job ends FAILED). See the module docstring
    for why this is exactly once.
    """
    connection = store.connection
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    # Normally inside the completion's transaction; store.atomic() opens one on the
    # store's own connection when the caller did not, so the lock lasts until the insert.
    with store.atomic(), connection.cursor() as cursor:
        # A fixed lock order: two transactions finishing children of the same batches
        # never wait for each other in a circle.
        for batch_id in sorted(batch_ids):
            param = store.id_param(batch_id)
            cursor.execute(
                "SELECT then_task_path, finished_at FROM taskmill_batch WHERE id = %s" + lock,
                [param],
            )
            row = cursor.fetchone()
            if row is None or row[1] is not None:
                continue  # Deleted, or already finished (then already enqueued).
            cursor.execute(
                f"SELECT 1 FROM {store.table} WHERE batch_id = %s "
                "AND status IN ('READY', 'RUNNING') LIMIT 1",
                [param],
            )
            if cursor.fetchone() is not None:
                continue
            job = _then_job(row[0], batch_id) if row[0] else None
            cursor.execute(
                "UPDATE taskmill_batch SET finished_at = %s, then_job_id = %s "
                "WHERE id = %s AND finished_at IS NULL",
                [store.dt_param(timezone.now()), store.id_param(job.id) if job else None, param],
            )
            # Guarded: only the transaction that finished the batch enqueues ``then``.
            if job is not None and cursor.rowcount == 1:
                store.insert([job])


def _then_job(task_path: str, batch_id: uuid.UUID) -> Any:
    """The ``then`` job. A path that no longer names a task still gets a row, which fails
    with a clear error when run: raising here would undo the children's completion."""
    from ..jobs import resolve_task
    from ..store import NewJob

    try:
        task = resolve_task(task_path)
        return task.get_backend().new_job(task, [str(batch_id)], {})
    except Exception:
        now = timezone.now()
        return NewJob(
            id=new_job_id(), backend=compat.DEFAULT_TASK_BACKEND_ALIAS, task_path=task_path,
            queue_name=compat.DEFAULT_TASK_QUEUE_NAME, priority=0,
            args_json=json.dumps([str(batch_id)]), kwargs_json="{}", enqueued_at=now,
            run_after=now, max_attempts=1, retry_backoff=0.0, timeout=None,
        )
