"""The job store: every job-state transition, per database vendor."""

from __future__ import annotations

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from ..db import private_connection
from .base import JobStore
from .mysql import MySQLJobStore
from .postgresql import PostgreSQLJobStore
from .rows import ClaimedJob, NewJob, Outcome
from .sqlite import SQLiteJobStore

__all__ = ["ClaimedJob", "JobStore", "NewJob", "Outcome", "close_store", "get_store",
           "private_store"]

_STORES: dict[str, type[JobStore]] = {
    "postgresql": PostgreSQLJobStore,
    "mysql": MySQLJobStore,
    "sqlite": SQLiteJobStore,
}


def get_store(connection: BaseDatabaseWrapper | str) -> JobStore:
    """The store for a connection (or for this thread's connection to an alias)."""
    if isinstance(connection, str):
        connection = connections[connection]
    try:
        store_class = _STORES[connection.vendor]
    except KeyError:
        raise NotImplementedError(
            f"taskmill supports PostgreSQL, MySQL/MariaDB and SQLite, not {connection.vendor!r}."
        ) from None
    return store_class(connection)


def private_store(database: str, *, vanish_after: float | None = None) -> JobStore:
    """A store on a connection of its own (:func:`taskmill.db.private_connection`).

    For the worker's bookkeeping and for progress writes: they must not join (or be
    closed with) the connection a task uses, nor take one from its pool. ``vanish_after``:
    see :func:`taskmill.db.private_connection` (a worker passes its lease).
    """
    connection = private_connection(database, vanish_after=vanish_after)
    if connection.vendor == "postgresql":  # Its own connection: it may prepare statements.
        return PostgreSQLJobStore(connection, prepare=True)
    return get_store(connection)


def close_store(store: JobStore | None) -> None:
    """Close a private store's connection; a connection that is already broken is fine."""
    if store is not None:
        try:
            store.connection.close()
        except Exception:
            pass
