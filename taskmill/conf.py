"""Backend options from ``TASKS[alias]["OPTIONS"]``, validated once with clear errors."""

from __future__ import annotations

from collections.abc import Collection
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
    #: Rules that keep finished jobs of some queues or states longer or shorter than
    #: ``RESULT_TTL``: see :class:`RetentionRule`.
    "RETENTION": ((), (list, tuple)),
}

#: The states a retention rule may name: the finished ones.
FINISHED_STATES: tuple[str, ...] = ("SUCCESSFUL", "FAILED")
_RULE_KEYS = ("queue", "status", "ttl")


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """One ``RETENTION`` rule: finished jobs of ``queue`` (None: any queue) in ``status``
    (None: SUCCESSFUL or FAILED) are kept ``ttl`` seconds after they finished (None: for
    ever). The first rule that matches a job decides; a job none matches keeps
    ``RESULT_TTL``."""

    queue: str | None
    status: str | None
    ttl: float | None

    def matches(self, queue: str, status: str) -> bool:
        return self.queue in (None, queue) and self.status in (None, status)

    def describe(self) -> str:
        scope = [f"queue {self.queue!r}"] if self.queue is not None else []
        return ", ".join(scope + ([self.status] if self.status else []))


@dataclass(frozen=True, slots=True)
class BackendOptions:
    database: str
    max_attempts: int
    retry_backoff: float
    lease_seconds: float
    result_ttl: float
    max_snoozes: int
    priority_aging: float | None
    retention: tuple[RetentionRule, ...]

    @classmethod
    def from_params(cls, alias: str, options: dict[str, Any],
                    queues: Collection[str] = ()) -> BackendOptions:
        """``queues``: the backend's ``QUEUES`` (empty: any), which rules must name."""
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
        values["retention"] = _retention(alias, values["retention"], queues)
        return cls(**values)


def _retention(alias: str, rules: list[Any] | tuple[Any, ...],
               queues: Collection[str]) -> tuple[RetentionRule, ...]:
    """The rules, checked one by one: a mistake here deletes history too early, or keeps
    it for ever, without a word; so it is refused when Django starts, naming the rule."""
    parsed: list[RetentionRule] = []
    for i, rule in enumerate(rules):
        where = f"TASKS[{alias!r}]['OPTIONS']['RETENTION'][{i}]"
        if not isinstance(rule, dict):
            raise ImproperlyConfigured(
                f"{where} must be a dict with 'ttl' and 'queue' and/or 'status', "
                f"not {rule!r}.")
        unknown = set(rule) - set(_RULE_KEYS)
        if unknown:
            raise ImproperlyConfigured(f"{where} has unknown keys {sorted(map(str, unknown))}; "
                                       f"a rule has {list(_RULE_KEYS)}.")
        queue, status = rule.get("queue"), rule.get("status")
        if "ttl" not in rule:
            raise ImproperlyConfigured(f"{where} needs a 'ttl' (seconds, or None: for ever).")
        ttl = rule["ttl"]
        if queue is None and status is None:
            raise ImproperlyConfigured(
                f"{where} names neither a 'queue' nor a 'status'; RESULT_TTL is the rule "
                "for every other finished job.")
        if queue is not None and not isinstance(queue, str):
            raise ImproperlyConfigured(f"{where}['queue'] must be a queue name (str), "
                                       f"not {queue!r}.")
        if queue is not None and queues and queue not in queues:
            raise ImproperlyConfigured(
                f"{where}['queue'] is {queue!r}, which is not in the backend's QUEUES "
                f"{sorted(queues)}: the rule would never match.")
        if status is not None and status not in FINISHED_STATES:
            raise ImproperlyConfigured(f"{where}['status'] must be 'SUCCESSFUL' or 'FAILED', "
                                       f"not {status!r}.")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))
                                or not ttl > 0):
            raise ImproperlyConfigured(f"{where}['ttl'] must be a positive number of seconds "
                                       f"or None (for ever), not {ttl!r}.")
        new = RetentionRule(queue, str(status) if status else None, ttl)
        shadow = _shadowed_by(parsed, new)
        if shadow is not None:
            raise ImproperlyConfigured(
                f"{where} can never match: every job it names is matched first by "
                f"{', '.join(f'RETENTION[{j}]' for j in shadow)}.")
        parsed.append(new)
    return tuple(parsed)


def _shadowed_by(earlier: list[RetentionRule], rule: RetentionRule) -> list[int] | None:
    """The indexes of the earlier rules that match every job ``rule`` does (None: some
    job is left to it). Queues are open-ended: only a rule of any queue covers one of
    any queue."""
    by: list[int] = []
    for status in [rule.status] if rule.status else FINISHED_STATES:
        first = next((i for i, e in enumerate(earlier)
                      if e.status in (None, status) and e.queue in (None, rule.queue)), None)
        if first is None:
            return None
        by.append(first)
    return sorted(set(by))


def _describe(kind: type | tuple[type, ...]) -> str:
    if kind is str:
        return "a database alias (str)"
    if kind is int:
        return "a whole number"
    if kind == (list, tuple):
        return "a list of rules"
    return "a number"
