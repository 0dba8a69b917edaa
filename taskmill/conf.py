"""Backend options from ``TASKS[alias]["OPTIONS"]``, validated once with clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

#: Option name -> (default, type the value must have).
_DEFAULTS: dict[str, tuple[Any, type | tuple[type, ...]]] = {
    "DATABASE": ("default", str),
    "MAX_ATTEMPTS": (3, int),
    "RETRY_BACKOFF": (2.0, (int, float)),
    "LEASE_SECONDS": (30, (int, float)),
    "RESULT_TTL": (7 * 24 * 3600, (int, float)),
    #: Snoozes (``taskmill.Snooze``) a job may take before it fails: a task that always
    #: snoozes is a bug, and must not loop for ever.
    "MAX_SNOOZES": (100, int),
    #: Seconds: a due job that waits this long behind higher-priority ones has its
    #: priority raised by one, again every such period (None: never).
    "PRIORITY_AGING": (None, (int, float, type(None))),
}


@dataclass(frozen=True, slots=True)
class BackendOptions:
    database: str
    max_attempts: int
    retry_backoff: float
    lease_seconds: float
    result_ttl: float
    max_snoozes: int
    priority_aging: float | None

    @classmethod
    def from_params(cls, alias: str, options: dict[str, Any]) -> BackendOptions:
        unknown = set(options) - set(_DEFAULTS)
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown keys {sorted(unknown)}; "
                f"taskmill understands {sorted(_DEFAULTS)}."
            )
        values: dict[str, Any] = {}
        for key, (default, kind) in _DEFAULTS.items():
            value: Any = options.get(key, default)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ImproperlyConfigured(
                    f"TASKS[{alias!r}]['OPTIONS'][{key!r}] must be {_describe(kind)}, "
                    f"not {value!r}."
                )
            number = value if isinstance(value, (int, float)) else 1
            if key not in ("DATABASE", "RETRY_BACKOFF") and number <= 0:
                raise ImproperlyConfigured(
                    f"TASKS[{alias!r}]['OPTIONS'][{key!r}] must be positive, not {value!r}."
                )
            if key == "RETRY_BACKOFF" and number < 0:
                raise ImproperlyConfigured(
                    f"TASKS[{alias!r}]['OPTIONS']['RETRY_BACKOFF'] must be >= 0, not {value!r}."
                )
            values[key.lower()] = value
        return cls(**values)


def _describe(kind: type | tuple[type, ...]) -> str:
    if kind is str:
        return "a database alias (str)"
    if kind is int:
        return "a whole number"
    return "a number"
