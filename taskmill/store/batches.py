"""Batches: one job per item, then one ``then`` job, enqueued exactly once.

The batch row keeps the ``then`` job whole (``then_job``: every option it was given,
``.using()`` ones included), so finishing a batch inserts it as it was asked for,
without importing the task.

:meth:`Batches.finish_batches` runs inside every transaction that ends a child (a
completion, a failure, a cancel, recovery, a purge) and, for each batch:

1. locks the batch row (``SELECT ... FOR UPDATE``; on SQLite the writer's lock already
   serialises it), so concurrent completions of one batch queue up here;
2. asks whether any child is still READY or RUNNING, with a fresh read: the completion
   that got the lock second sees the first one's commit (READ COMMITTED, the default of
   PostgreSQL and of Django on MySQL);
3. if none is, sets ``finished_at``/``then_job_id`` guarded by ``finished_at IS NULL``
   and, only if that update took, inserts the ``then`` job in the same transaction.

Hazard: with MySQL's REPEATABLE READ (not Django's default) a ``transactional`` task
that read the job table earlier in its transaction could see a stale snapshot in step 2;
keep Django's default isolation level for the job database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from ..compat import DEFAULT_TASK_BACKEND_ALIAS, DEFAULT_TASK_QUEUE_NAME
from ..ids import new_job_id
from .enqueue import Enqueueing
from .rows import NewJob


class Batches(Enqueueing):
    def create_batch(self, batch_id: uuid.UUID, task_path: str, children: Sequence[NewJob],
                     then: NewJob | None) -> None:
        """Store the batch and all its children in one transaction: all exist, or none."""
        with self.atomic():
            self.run("insert_batch", {
                "id": self.id_param(batch_id), "task_path": task_path, "total": len(children),
                "then_task_path": then.task_path if then is not None else None,
                "then_job": json.dumps(then.as_template()) if then is not None else None,
            })
            self.insert(children)
            if not children:
                self.finish_batches({batch_id})

    def finish_batches(self, batch_ids: Iterable[uuid.UUID]) -> None:
        """Finish each of these batches whose children have all finished (see above)."""
        # Normally inside the transaction that ended the children; atomic() opens one on
        # this connection otherwise, so the lock lasts until the insert.
        with self.atomic(), self.cursor() as cursor:
            # A fixed lock order: two transactions finishing children of the same batches
            # never wait for each other in a circle.
            for batch_id in sorted(batch_ids):
                key = {"id": self.id_param(batch_id)}
                self.execute(cursor, "lock_batch", key)
                row = cursor.fetchone()
                if row is None or row[2] is not None:
                    continue  # Deleted, or already finished (then already enqueued).
                self.execute(cursor, "batch_has_active_children", key)
                if cursor.fetchone() is not None:
                    continue
                then = _then_job(row[0], self.json_from_db(row[1]), batch_id)
                finished = self.execute(cursor, "finish_batch", {
                    **key, "then_job_id": self.optional_id_param(then.id if then else None),
                })
                # Guarded: only the transaction that finished the batch enqueues ``then``.
                if then is not None and finished == 1:
                    self.insert([then])


def _then_job(task_path: str | None, template: dict[str, Any] | None,
              batch_id: uuid.UUID) -> NewJob | None:
    if task_path is None:
        return None
    if template is not None:
        return NewJob.from_template(template, id=new_job_id())
    # A batch stored before ``then_job`` existed (migration 0005): the task's path only.
    return NewJob(
        id=new_job_id(), backend=DEFAULT_TASK_BACKEND_ALIAS, task_path=task_path,
        queue_name=DEFAULT_TASK_QUEUE_NAME, priority=0, args_json=json.dumps([str(batch_id)]),
        kwargs_json="{}", run_after=None, max_attempts=1, retry_backoff=0.0,
        timeout=None,
    )
