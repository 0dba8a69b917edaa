"""Live worker processes and their heartbeats."""

from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from ..models import Worker
from ..store import get_store
from .readonly import ReadOnlyAdmin, job_database


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = ("id", "hostname", "pid", "threads", "queues", "started_at",
                    "last_heartbeat", "heartbeat_age")
    list_filter = ("hostname",)
    ordering = ("hostname", "started_at")
    readonly_fields = ("id", "hostname", "pid", "threads", "queues", "started_at",
                       "last_heartbeat", "heartbeat_age")
    fields = readonly_fields


    @admin.display(description=_("heartbeat age"))
    def heartbeat_age(self, worker: Worker) -> str:
        # On the clock the heartbeat was written with (a host's may be off).
        now = get_store(job_database()).database_now()
        return f"{(now - worker.last_heartbeat).total_seconds():.1f}s"
