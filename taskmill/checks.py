"""System checks: configuration mistakes surface at start-up, not at 3 a.m."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

# Imported with the app (ready() imports this module): from then on every connection is
# tracked (taskmill.db), so a fork never closes another thread's connection on the
# parent's socket.
from .capabilities import database_problems
from .conf import BackendOptions
from .db import describe_database, explain_connection_error
from .services.scheduler import check_entry, parse_schedule


@checks.register(checks.Tags.compatibility)
def check_backends(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for alias, params in getattr(settings, "TASKS", {}).items():
        if not str(params.get("BACKEND", "")).startswith("taskmill."):
            continue
        try:
            options = BackendOptions.from_params(alias, params.get("OPTIONS", {}),
                                                params.get("QUEUES", ["default"]))
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), id="taskmill.E001"))
            continue
        if options.database not in settings.DATABASES:
            errors.append(
                checks.Error(
                    f"TASKS[{alias!r}]['OPTIONS']['DATABASE'] is {options.database!r}, "
                    "which is not in DATABASES.",
                    id="taskmill.E002",
                )
            )
    return errors


@checks.register(checks.Tags.compatibility)
def check_time_zone_support(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The store compares times with the database's clock, in UTC: Django must store UTC."""
    if not _taskmill_databases() or getattr(settings, "USE_TZ", True):
        return []
    return [checks.Error(
        "taskmill compares the times of jobs with the database's own clock, in UTC, and "
        "needs Django to store times in UTC.", hint="Set USE_TZ = True in settings.",
        id="taskmill.E003")]


@checks.register(checks.Tags.database)
def check_job_database_capabilities(app_configs: Any = None, databases: Any = None,
                                    **kwargs: Any) -> list[checks.CheckMessage]:
    """What each database must offer (when checks run against databases: ``migrate``,
    ``check --database``, and ``taskmill worker`` for its own)."""
    messages: list[checks.CheckMessage] = []
    for alias in _taskmill_databases():
        if alias not in (databases or ()):
            continue
        try:
            messages += database_problems(alias)
        except Exception:  # Unreachable: check_job_database_reachable says so.
            continue
    return messages


def _taskmill_databases() -> list[str]:
    found: list[str] = []
    for params in getattr(settings, "TASKS", {}).values():
        if str(params.get("BACKEND", "")).startswith("taskmill."):
            database = params.get("OPTIONS", {}).get("DATABASE", "default")
            if database in settings.DATABASES and database not in found:
                found.append(database)
    return found


@checks.register(checks.Tags.database)
def check_job_database_reachable(app_configs: Any = None, databases: Any = None,
                                 **kwargs: Any) -> list[checks.CheckMessage]:
    """When checks run against databases (``migrate``, ``check --database``): can the job
    database be reached? A refused or failed connection is explained in plain words
    instead of surfacing later as a driver's traceback."""
    errors: list[checks.CheckMessage] = []
    for alias in databases or ():
        if alias not in connections.settings:
            continue
        try:
            connections[alias].ensure_connection()
        except Exception as exc:
            errors.append(
                checks.Error(
                    f"Cannot reach database {describe_database(alias)}: "
                    f"{explain_connection_error(exc)}.",
                    hint="`manage.py wait_for_db --database ALIAS --timeout S` waits for it "
                         "in start-up scripts.",
                    id="taskmill.E010",
                )
            )
    return errors


@checks.register(checks.Tags.compatibility)
def check_schedule(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Each ``TASKMILL_SCHEDULE`` entry: well formed, and naming a task that can be enqueued."""
    try:
        entries = parse_schedule(getattr(settings, "TASKMILL_SCHEDULE", None))
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="taskmill.E020")]
    errors: list[checks.CheckMessage] = []
    for entry in entries:
        try:
            check_entry(entry)
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), id="taskmill.E021"))
    return errors
