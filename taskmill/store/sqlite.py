"""SQLite: writers are serialized by the database, so a claim is one UPDATE ... RETURNING.

Needs SQLite 3.35+ and WAL mode (set by the worker) so readers never block the writer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db.backends.utils import CursorWrapper

from .base import JobStore


class SQLiteJobStore(JobStore):
    vendor = "sqlite"

    def list_param(self, values: Sequence[Any]) -> Any:
        return json.dumps(list(values))  # read back with json_each()

    @contextmanager
    def begin_writing(self) -> Iterator[None]:
        """Make the next BEGIN an ``IMMEDIATE`` one, which takes the write lock up front
        (waiting its turn): a deferred transaction that reads and then writes fails at
        once with "database is locked" when another process wrote in between."""
        connection = self.connection
        if connection.in_atomic_block:
            yield
            return
        connection.ensure_connection()
        previous = connection.transaction_mode  # type: ignore[attr-defined]
        connection.transaction_mode = "IMMEDIATE"  # type: ignore[attr-defined]
        try:
            yield
        finally:
            connection.transaction_mode = previous  # type: ignore[attr-defined]

    def lock_key(self, cursor: CursorWrapper, key: str) -> None:
        """The write lock of the enclosing ``BEGIN IMMEDIATE`` covers every key."""

    def prepare_for_worker(self) -> None:
        self.run("write_ahead_log")
