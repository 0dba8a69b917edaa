"""The job store: every job-state transition, per database vendor."""

from __future__ import annotations

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from .base import ClaimedJob, JobStore, NewJob, Outcome

__all__ = ["ClaimedJob", "JobStore", "NewJob", "Outcome", "get_store"]


def get_store(connection: BaseDatabaseWrapper | str) -> JobStore:
    """The store for a connection (or for this thread's connection to an alias)."""
    if isinstance(connection, str):
        connection = connections[connection]
    vendor = connection.vendor
    if vendor == "postgresql":
        from .postgresql import PostgreSQLJobStore as cls
    elif vendor == "mysql":
        from .mysql import MySQLJobStore as cls
    elif vendor == "sqlite":
        from .sqlite import SQLiteJobStore as cls
    else:
        raise NotImplementedError(
            f"taskmill supports PostgreSQL, MySQL/MariaDB and SQLite, not {vendor!r}."
        )
    return cls(connection)
