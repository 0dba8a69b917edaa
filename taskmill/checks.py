"""System checks: configuration mistakes surface at start-up, not at 3 a.m."""

from __future__ import annotations

from typing import Any

from django.core import checks


@checks.register(checks.Tags.compatibility)
def check_backends(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from .conf import BackendOptions

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
