"""Which queues live in which database, for the testing helpers."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

from ..backend import taskmill_backends
from ..ids import new_worker_id


def queues_by_database(queues: Iterable[str] | None = None) -> dict[str, list[str]]:
    """``{database alias: [queue, ...]}`` for every taskmill backend, narrowed to ``queues``.

    A worker claims by queue name on one database, so backends that share a database
    are served together.
    """
    backends = taskmill_backends()
    if not backends:
        raise RuntimeError(
            "No taskmill backend is configured in settings.TASKS; add "
            '{"BACKEND": "taskmill.backend.TaskmillBackend"} to use taskmill.testing.'
        )
    wanted = None if queues is None else set(_as_list(queues))
    found: dict[str, set[str]] = {}
    for backend in backends.values():
        served = set(backend.queues) or {"default"}
        if wanted is not None:
            served &= wanted
        if served:
            found.setdefault(backend.database, set()).update(served)
    if wanted is not None:
        known = set().union(*found.values()) if found else set()
        unknown = wanted - known
        if unknown:
            every = sorted({q for b in backends.values() for q in (b.queues or {"default"})})
            raise ValueError(f"Unknown queue(s) {sorted(unknown)}: no taskmill backend has them "
                             f"in its QUEUES (configured: {every}).")
    return {database: sorted(names) for database, names in found.items()}


def _as_list(queues: Iterable[str]) -> list[str]:
    if isinstance(queues, str):  # A common slip: queues="reports".
        return [queues]
    return list(queues)


def worker_id_for(kind: str) -> str:
    return new_worker_id(f"{socket.gethostname()}-{kind}", os.getpid())
