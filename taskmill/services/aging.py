"""Priority aging (``PRIORITY_AGING``): low-priority jobs are not starved for ever.

Under steady load of higher-priority jobs, a due job of lower priority would wait as
long as the load lasts. With aging on, one worker at a time (a maintenance service)
raises by one the priority of every due job that has waited ``PRIORITY_AGING`` seconds
behind a higher one, and again each such period: a job of priority p behind jobs of
priority q runs after about (q - p) periods at most.

It rewrites the stored priority, so the claim index keeps its order and claims stay
O(LIMIT). A job never rises above the highest priority waiting in its queue (ties go to
the job waiting longest), so a queue whose jobs share one priority costs nothing. The
cost: one UPDATE per period and queue, touching only the jobs below the top.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..store import JobStore

logger = logging.getLogger("taskmill.worker")


def age_priorities(store: JobStore, queues: Sequence[str], aging: float) -> int:
    """Raise the priority of jobs of ``queues`` that waited ``aging`` seconds behind
    higher ones; returns how many were raised."""
    raised = 0
    for queue in queues:
        top = store.top_priority(queue)
        if top is not None:
            raised += store.age_waiting(queue, top, aging)
    if raised:
        logger.debug("Priority aging raised %d waiting job(s).", raised)
    return raised
