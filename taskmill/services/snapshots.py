"""Say so when an open transaction holds back the cleanup of the job tables.

Every job leaves old row versions behind (READY, then RUNNING), and vacuum may remove
them only once no open transaction can still see them. One analytics query, or one web
request idle in its transaction, open for ten minutes keeps every job row replaced in
those ten minutes: the table and its indexes grow, and every read that starts at the
front of a queue steps over the entries of all the jobs claimed since. Claims start
past them meanwhile (:mod:`taskmill.store.starts`), but read from the front about once
a second, and so does each idle worker's park of the jobs it stepped over. The queue
cannot end that transaction; a worker can name it, so whoever runs the database can.
"""

from __future__ import annotations

import logging
import time

from ..store import JobStore
from ..store.rows import HeldSnapshot

logger = logging.getLogger("taskmill.worker")

#: A transaction open this long (seconds) is worth a warning.
WARN_AFTER = 120.0
#: While the same one stays open, the warning is repeated this often (seconds).
REPEAT_EVERY = 600.0


class SnapshotWatch:
    """Warns once per held transaction, and again every ``repeat_every`` seconds."""

    def __init__(self, warn_after: float = WARN_AFTER,
                 repeat_every: float = REPEAT_EVERY) -> None:
        self.warn_after = warn_after
        self.repeat_every = repeat_every
        self._warned: tuple[int, float] | None = None  # (pid, when, on time.monotonic())

    def check(self, store: JobStore) -> HeldSnapshot | None:
        """Look once; returns the held transaction warned about, if any."""
        held = store.oldest_snapshot()
        if held is None or held.age < self.warn_after:
            return None
        now = time.monotonic()
        if self._warned is not None and self._warned[0] == held.pid \
                and now - self._warned[1] < self.repeat_every:
            return None
        self._warned = (held.pid, now)
        logger.warning(
            "A transaction has been open for %.0f s on the job database (%s). Until it "
            "ends, vacuum cannot remove the job rows replaced since it began: the job "
            "table grows, and the reads that step over them cost more the longer it "
            "stays open. End it, or give the jobs a database of their own "
            "(docs/scaling.md).",
            held.age, held.describe())
        return held
