"""The job list and job page, with retry, cancel and purge actions."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..api import cancel, purge, retry
from ..exceptions import TaskmillError
from ..flow import waiting_reason
from ..models import Job, JobError, JobStatus
from .filters import QueueFilter, TaskFilter
from .paginator import CappedPaginator
from .readonly import ReadOnlyAdmin, job_database, jobs_of
from .rendering import change_link, json_block, progress_bar

#: Most jobs one action touches; "select all" over a million rows stops here.
ACTION_LIMIT = 1000


class JobErrorInline(admin.StackedInline):
    """Every failed attempt of the job, with its traceback."""

    model = JobError
    extra = 0
    can_delete = False
    fields = ("attempt", "exception_class_path", "worker_id", "created_at", "traceback_text")
    readonly_fields = fields
    ordering = ("attempt", "id")
    verbose_name = _("error")
    verbose_name_plural = _("errors, one per failed attempt")

    @admin.display(description=_("traceback"))
    def traceback_text(self, error: JobError) -> SafeString:
        return format_html('<pre class="taskmill-traceback">{}</pre>', error.traceback)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).using(job_database())

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Whoever may see the job may see why it failed.
        return request.user.has_perm("taskmill.view_job")


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ("short_id", "task_path", "queue_name", "status", "progress_display",
                    "attempts_display", "enqueued_at", "finished_at")
    list_display_links = ("short_id",)
    list_filter = ("status", QueueFilter, TaskFilter)
    search_fields = ("task_path",)
    search_help_text = _("A job id, or part of a task path (e.g. myapp.tasks.send).")
    # Newest first through the primary key index (ids are time-ordered UUIDv7), never a
    # sort of the whole table.
    ordering = ("-id",)
    sortable_by = ()
    paginator = CappedPaginator
    show_full_result_count = False
    # Facet counts would group the whole history by every filter on each page view.
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
    inlines = [JobErrorInline]
    actions = ["retry_jobs", "cancel_jobs", "force_cancel_jobs", "purge_waiting_jobs"]
    fieldsets = (
        (None, {"fields": ("id", "task_path", "queue_name", "status", "progress_display",
                           "priority", "backend", "batch_link")}),
        (_("Arguments and result"), {"fields": ("args_display", "kwargs_display",
                                                "return_value_display", "checkpoint_display")}),
        (_("Attempts"), {"fields": ("attempts_display", "retry_backoff", "timeout",
                                    "transactional", "worker_ids", "lease_owner")}),
        (_("Times"), {"fields": ("enqueued_at", "run_after", "started_at", "last_attempted_at",
                                 "finished_at")}),
        (_("Flow control"), {"fields": ("waiting_for", "snoozes", "rate_key", "rate_limit",
                                         "rate_period", "fairness_key", "fair_rank")}),
        (_("Cancel, uniqueness, concurrency"), {
            "classes": ("collapse",),
            "fields": ("cancel_requested_at", "cancel_force", "unique_key", "concurrency_key",
                       "concurrency_limit")}),
    )

    class Media:
        css = {"all": ("taskmill/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and match.url_name == "taskmill_job_changelist":
            # The list never shows payloads; a million rows' arguments stay on disk.
            queryset = queryset.defer("args", "kwargs", "return_value", "checkpoint")
        return queryset

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [str(name) for _title, options in self.fieldsets for name in options["fields"]]


    @admin.display(description=_("waiting for"))
    def waiting_for(self, job: Job) -> str:
        """Why a READY job is not running yet: a pause, its rate limit, its due time."""
        if job.status != JobStatus.READY:
            return "-"
        return waiting_reason(job) or str(_("a free worker"))

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("taskmill.retry_job")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("taskmill.cancel_job")

    def has_purge_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("taskmill.purge_job")

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        # The batch page links to its children by state.
        if lookup == "batch__id__exact":
            return True
        return super().lookup_allowed(lookup, value, request)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet,
                           search_term: str) -> tuple[QuerySet, bool]:
        """A job id finds that job; anything else matches part of the task path."""
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(id=uuid.UUID(term)), False
        except ValueError:
            return queryset.filter(task_path__contains=term), False

    # -- columns ----------------------------------------------------------------------

    @admin.display(description=_("id"), ordering="id")
    def short_id(self, job: Job) -> SafeString:
        """The id's random tail (its head is the enqueue time, shared by neighbours)."""
        return format_html('<span title="{}">…{}</span>', job.id, job.id.hex[-12:])

    @admin.display(description=_("progress"))
    def progress_display(self, job: Job) -> SafeString | str:
        return progress_bar(job.progress)

    @admin.display(description=_("attempts"))
    def attempts_display(self, job: Job) -> str:
        return f"{job.attempts} / {job.max_attempts}"

    @admin.display(description=_("args"))
    def args_display(self, job: Job) -> SafeString:
        return json_block(job.args)

    @admin.display(description=_("kwargs"))
    def kwargs_display(self, job: Job) -> SafeString:
        return json_block(job.kwargs)

    @admin.display(description=_("return value"))
    def return_value_display(self, job: Job) -> SafeString:
        return json_block(job.return_value)

    @admin.display(description=_("checkpoint"))
    def checkpoint_display(self, job: Job) -> SafeString:
        return json_block(job.checkpoint)

    @admin.display(description=_("batch"))
    def batch_link(self, job: Job) -> SafeString | str:
        return change_link("taskmill_batch_change", job.batch_id)

    # -- actions ----------------------------------------------------------------------

    def _selected_ids(self, request: HttpRequest, queryset: QuerySet) -> list[uuid.UUID]:
        ids = list(queryset.order_by("-id").values_list("id", flat=True)[:ACTION_LIMIT + 1])
        if len(ids) > ACTION_LIMIT:
            self.message_user(request, _("Only the first %(n)d selected jobs were handled; "
                                         "run the action again for the rest.")
                              % {"n": ACTION_LIMIT}, messages.WARNING)
            ids = ids[:ACTION_LIMIT]
        return ids

    def _report_failures(self, request: HttpRequest, failures: list[str]) -> None:
        if failures:
            shown = "; ".join(failures[:5]) + (" …" if len(failures) > 5 else "")
            self.message_user(request, ngettext("%(n)d job was left as it was: %(why)s",
                                                "%(n)d jobs were left as they were: %(why)s",
                                                len(failures))
                              % {"n": len(failures), "why": shown}, messages.WARNING)

    @admin.action(description=_("Retry selected failed jobs"), permissions=["retry"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        retried, failures = 0, []
        for job_id in self._selected_ids(request, queryset):
            try:
                retry(str(job_id))
            except (TaskmillError, ValueError, ObjectDoesNotExist) as exc:
                failures.append(f"{job_id}: {exc}")
            else:
                retried += 1
        if retried:
            self.message_user(request, ngettext("Queued %(n)d job to run again.",
                                                "Queued %(n)d jobs to run again.", retried)
                              % {"n": retried}, messages.SUCCESS)
        self._report_failures(request, failures)

    def _cancel(self, request: HttpRequest, queryset: QuerySet, force: bool) -> None:
        ids = self._selected_ids(request, queryset)
        statuses = dict(jobs_of(Job).filter(id__in=ids).values_list("id", "status"))
        waiting = running = 0
        failures = []
        for job_id in ids:
            if statuses.get(job_id) not in (JobStatus.READY, JobStatus.RUNNING):
                failures.append(f"{job_id}: already finished")
                continue
            try:
                cancel(str(job_id), force=force)
            except (TaskmillError, ValueError, ObjectDoesNotExist) as exc:
                failures.append(f"{job_id}: {exc}")
                continue
            if statuses.get(job_id) == JobStatus.RUNNING:
                running += 1
            else:
                waiting += 1
        if waiting:
            self.message_user(request, ngettext(
                "Cancelled %(n)d waiting job; it will not run.",
                "Cancelled %(n)d waiting jobs; they will not run.", waiting) % {"n": waiting},
                messages.SUCCESS)
        if running:
            self.message_user(request, (ngettext(
                "Asked %(n)d running job to stop",
                "Asked %(n)d running jobs to stop", running) % {"n": running})
                + (str(_("; it is stopped after a grace period if it does not.")) if force
                   else str(_(" (it sees cancel_requested)."))), messages.SUCCESS)
        self._report_failures(request, failures)

    @admin.action(description=_("Cancel selected jobs"), permissions=["cancel"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._cancel(request, queryset, force=False)

    @admin.action(description=_("Cancel selected jobs, forcing running ones to stop"),
                  permissions=["cancel"])
    def force_cancel_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._cancel(request, queryset, force=True)

    @admin.action(description=_("Purge waiting jobs of the selected jobs' queues and tasks"),
                  permissions=["purge"])
    def purge_waiting_jobs(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        """Purge is broad (every READY job of a queue and task), so it asks first."""
        ids = self._selected_ids(request, queryset)
        pairs = sorted(set(jobs_of(Job).filter(id__in=ids).order_by()
                           .values_list("queue_name", "task_path")))
        if request.POST.get("post") == "yes":
            removed = sum(purge(queue=queue, task=task) for queue, task in pairs)
            self.message_user(request, ngettext(
                "Purged %(n)d waiting job of %(what)s.",
                "Purged %(n)d waiting jobs of %(what)s.", removed)
                % {"n": removed, "what": ", ".join(f"{t} on {q}" for q, t in pairs)},
                messages.SUCCESS)
            return None
        rows: list[dict[str, Any]] = []
        for queue, task in pairs:
            waiting = jobs_of(Job).filter(status=JobStatus.READY, queue_name=queue,
                                         task_path=task).count()
            rows.append({"queue": queue, "task": task, "waiting": waiting})
        context = {
            **self.admin_site.each_context(request),
            "title": _("Purge waiting jobs?"),
            "opts": self.model._meta,
            "rows": rows,
            "total": sum(r["waiting"] for r in rows),
            "selected_ids": ids,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "action": "purge_waiting_jobs",
        }
        return TemplateResponse(request, "taskmill/admin/purge_confirmation.html", context)
