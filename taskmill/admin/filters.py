"""List filters whose choices never come from a DISTINCT over the job history."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from ..backend import taskmill_backends
from ..models import Job
from .readonly import jobs_of

#: Rows the filters sample (newest first) to offer queues and tasks to pick from.
FILTER_SAMPLE = 500


def _sampled_values(request: HttpRequest, field: str) -> set[str]:
    """Distinct values of ``field`` among the newest jobs, one query per request."""
    cache = getattr(request, "_taskmill_filter_sample", None)
    if cache is None:
        # Newest first by the primary key: job ids are UUIDv7, so the PK index is
        # already in enqueue order and this reads FILTER_SAMPLE index entries.
        cache = list(jobs_of(Job).order_by("-id").values_list("queue_name", "task_path")
                     [:FILTER_SAMPLE])
        request._taskmill_filter_sample = cache  # type: ignore[attr-defined]
    index = 0 if field == "queue_name" else 1
    return {row[index] for row in cache}


def _configured_queues() -> set[str]:
    queues: set[str] = set()
    for backend in taskmill_backends().values():
        queues.update(getattr(backend, "queues", ()) or ())
    return queues


class _RecentValuesFilter(admin.SimpleListFilter):
    """Choices from recent jobs (and the one selected): no DISTINCT over the history."""

    column = ""

    def known_values(self) -> set[str]:
        return set()

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = self.known_values() | _sampled_values(request, self.column)
        selected = self.value()
        if selected:
            names.add(selected)
        return [(name, name) for name in sorted(names)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(**{self.column: self.value()}) if self.value() else queryset


class QueueFilter(_RecentValuesFilter):
    """Queues from TASKS settings plus those of recent jobs."""

    title = _("queue")
    parameter_name = "queue"
    column = "queue_name"

    def known_values(self) -> set[str]:
        return _configured_queues()


class TaskFilter(_RecentValuesFilter):
    """Tasks of recent jobs (and the one selected); any task is reachable by search."""

    title = _("task")
    parameter_name = "task"
    column = "task_path"
