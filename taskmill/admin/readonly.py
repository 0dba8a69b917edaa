"""The base of every taskmill admin: rows change only through the store, and are read
from the database that holds them (the backend's ``DATABASE``, not always "default")."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from ..backend import taskmill_backend


def job_database() -> str:
    """The alias of the database the admin's job tables are read from."""
    return taskmill_backend().database


def jobs_of(model: type[Model]) -> QuerySet[Any]:
    """``model.objects`` on the job database."""
    return model._default_manager.using(job_database())


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that change only through the store: jobs, batches and workers (a worker row is
    its lease; deleting it would hand its jobs to recovery). The admin reads them and
    acts through the API."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).using(job_database())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
