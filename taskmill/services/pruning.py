"""Pruning: finished jobs are deleted once past their retention, a little at a time.

Retention is ``RESULT_TTL``, unless a ``RETENTION`` rule (:class:`taskmill.conf.RetentionRule`)
names the job's queue or state: the first that matches decides. Each rule is one *pass*
over a range of the ``finished_at`` index (its jobs older than its ttl, minus those an
earlier rule decides), then ``RESULT_TTL`` makes one over the jobs no rule matches.
Each run deletes in chunks of :data:`CHUNK` rows, each in a short transaction, and stops
once its time budget is spent: a history of millions of rows is worked off over several
runs, and no run holds locks or a connection for long.

Hazard: a pass walks past the rows in its range that an earlier rule keeps longer
(``ttl`` None: for ever) on every run; the more such rows, the more each run reads.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..conf import FINISHED_STATES, RetentionRule
from ..store import JobStore
from ..store.operations import FinishedScope

logger = logging.getLogger("taskmill.worker")

CHUNK = 500


@dataclass(frozen=True, slots=True)
class RetentionPass:
    """The finished jobs one rule decides (``RESULT_TTL``: those no rule matches), and
    how long they stay (None: for ever). No ``scope.statuses``: earlier rules took all."""

    name: str
    ttl: float | None
    scope: FinishedScope

    @property
    def deletes(self) -> bool:
        return self.ttl is not None and bool(self.scope.statuses)


def retention_passes(rules: Sequence[RetentionRule], result_ttl: float) -> list[RetentionPass]:
    """One pass per rule, in order, then ``RESULT_TTL``'s: each excludes what earlier
    rules match, so a job is only ever deleted by the rule that decides it."""
    taken: set[str] = set()  # states a rule of every queue decides
    kept: dict[str, list[str]] = {status: [] for status in FINISHED_STATES}
    passes = []
    for i, rule in enumerate(rules):
        statuses = tuple(s for s in FINISHED_STATES if rule.status in (None, s)
                         and s not in taken and rule.queue not in kept[s])
        if rule.queue is not None:  # one queue: what others keep does not concern it
            scope = FinishedScope(statuses, rule.queue)
        else:
            scope = FinishedScope(statuses, None, tuple(kept["SUCCESSFUL"]),
                                  tuple(kept["FAILED"]))
        passes.append(RetentionPass(f"RETENTION[{i}] ({rule.describe()})", rule.ttl, scope))
        for status in FINISHED_STATES:
            if rule.status in (None, status):
                if rule.queue is None:
                    taken.add(status)
                elif rule.queue not in kept[status]:
                    kept[status].append(rule.queue)
    rest = tuple(s for s in FINISHED_STATES if s not in taken)
    passes.append(RetentionPass("RESULT_TTL (every other finished job)", result_ttl,
                                FinishedScope(rest, None, tuple(kept["SUCCESSFUL"]),
                                              tuple(kept["FAILED"]))))
    return passes


def batch_ttl(rules: Sequence[RetentionRule], result_ttl: float) -> float:
    """Seconds finished batches are kept: the longest finite retention, so a kept job's
    batch stays as long as it does (a ttl of None does not keep batches for ever)."""
    return max([result_ttl, *(rule.ttl for rule in rules if rule.ttl is not None)])


def prune_finished(store: JobStore, result_ttl: float, budget: float,
                   retention: Sequence[RetentionRule] = ()) -> int:
    """Delete finished jobs past their retention, for at most about ``budget`` seconds;
    returns how many. Passes run in order: one with a backlog bigger than a budget
    holds back the later ones until it has caught up."""
    deadline = time.monotonic() + budget
    now = store.database_now()
    count = 0
    for retention_pass in retention_passes(retention, result_ttl):
        if not retention_pass.deletes:
            continue
        assert retention_pass.ttl is not None
        deleted = store.prune(now - dt.timedelta(seconds=retention_pass.ttl), chunk=CHUNK,
                              deadline=deadline, scope=retention_pass.scope)
        if deleted:
            logger.info("Pruned %d finished job(s) of %s, older than %gs.", deleted,
                        retention_pass.name, retention_pass.ttl)
        count += deleted
        if time.monotonic() > deadline:
            break
    store.prune_batches(now - dt.timedelta(seconds=batch_ttl(retention, result_ttl)))
    store.prune_concurrency_locks()
    return count
