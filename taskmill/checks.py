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
            options = BackendOptions.from_params(alias, params.get("OPTIONS", {}))
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
