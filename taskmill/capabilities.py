"""What each database must offer taskmill, as system-check messages.

Run by the database checks (``migrate``, ``check --database``) and by ``taskmill worker``
for its own database, which refuses to start on an error.
"""

from __future__ import annotations

import sqlite3

from django.core import checks
from django.db import connections


def database_problems(alias: str) -> list[checks.CheckMessage]:
    """What stands in the way of taskmill on the database ``alias`` (it connects)."""
    connection = connections[alias]
    if connection.vendor == "sqlite":
        return sqlite_problems(alias, sqlite3.sqlite_version_info,
                               connection.settings_dict.get("OPTIONS", {}).get("transaction_mode"))
    if connection.vendor == "mysql":
        connection.ensure_connection()
        isolation = str(connection.settings_dict.get("OPTIONS", {}).get(
            "isolation_level", "read committed"))
        return mysql_problems(alias, tuple(connection.mysql_version),  # type: ignore[attr-defined]
                              bool(connection.mysql_is_mariadb),  # type: ignore[attr-defined]
                              isolation, connection.settings_dict.get("TIME_ZONE"))
    return []


def sqlite_problems(alias: str, version: tuple[int, ...],
                    transaction_mode: str | None = "IMMEDIATE") -> list[checks.CheckMessage]:
    found: list[checks.CheckMessage] = []
    if version < (3, 35):
        found.append(checks.Error(
            f"DATABASES[{alias!r}] is SQLite {'.'.join(map(str, version))}; taskmill needs "
            "3.35 or later (UPDATE ... RETURNING claims a job in one statement).",
            hint="Use a Python built against a newer SQLite, or PostgreSQL.", id="taskmill.E011"))
    if transaction_mode is None:
        found.append(checks.Warning(
            f"DATABASES[{alias!r}] is SQLite with deferred transactions. taskmill's workers "
            "write to it while your site does: a transaction of the site's that reads and "
            "then writes (ATOMIC_REQUESTS, transaction.atomic() in a view) fails at once with "
            '"database is locked" when a worker wrote in between. (Tasks themselves are '
            "run with BEGIN IMMEDIATE.)",
            hint=f'Take the write lock up front: DATABASES[{alias!r}]["OPTIONS"]'
                 '["transaction_mode"] = "IMMEDIATE"', id="taskmill.W016"))
    return found


def mysql_problems(alias: str, version: tuple[int, ...], mariadb: bool, isolation: str,
                   time_zone: str | None) -> list[checks.CheckMessage]:
    name = f"{'MariaDB' if mariadb else 'MySQL'} {'.'.join(map(str, version[:3]))}"
    found: list[checks.CheckMessage] = []
    if (mariadb and version < (10, 6)) or (not mariadb and version < (8, 0, 1)):
        found.append(checks.Error(
            f"DATABASES[{alias!r}] is {name}; taskmill needs SKIP LOCKED (MySQL 8.0.1+, "
            "MariaDB 10.6+): without it, every worker would wait on the others' claims.",
            id="taskmill.E012"))
    elif mariadb and version < (10, 8):
        found.append(checks.Error(
            f"DATABASES[{alias!r}] is {name}, which ignores DESC in indexes: each claim "
            "would sort every due job and lock them all. taskmill needs MariaDB 10.8+.",
            id="taskmill.E013"))
    if isolation.lower().replace("-", " ") == "repeatable read":
        found.append(checks.Warning(
            f"DATABASES[{alias!r}] reads at REPEATABLE READ. taskmill's own connections "
            "read at READ COMMITTED whatever is set; a transactional task does not, and "
            "when it is the last child of a batch its completion can miss a sibling "
            "finishing at the same moment.",
            hint='Keep Django\'s default: "OPTIONS": {"isolation_level": "read committed"}.',
            id="taskmill.W014"))
    if time_zone not in (None, "UTC"):
        found.append(checks.Warning(
            f"DATABASES[{alias!r}]['TIME_ZONE'] is {time_zone!r}: taskmill compares job "
            "times with the database's UTC clock, and would be off by the zone's offset.",
            hint="Leave TIME_ZONE unset for the job database.", id="taskmill.W015"))
    return found
