"""The batch list and page: children by state, and the ``then`` job."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import Batch, Job, JobStatus
from .paginator import CappedPaginator
from .readonly import ReadOnlyAdmin, jobs_of
from .rendering import change_link


@admin.register(Batch)
class BatchAdmin(ReadOnlyAdmin):
    list_display = ("id", "task_path", "total", "then_task_path", "created_at", "finished_at")
    search_fields = ("task_path",)
    ordering = ("-created_at",)
    paginator = CappedPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    readonly_fields = ("id", "task_path", "total", "then_task_path", "then_job_link",
                       "created_at", "finished_at", "children")
    fields = readonly_fields


    @admin.display(description=_("then job"))
    def then_job_link(self, batch: Batch) -> SafeString | str:
        return change_link("taskmill_job_change", batch.then_job_id)

    @admin.display(description=_("children by state"))
    def children(self, batch: Batch) -> SafeString:
        """One grouped query on the (batch, status) index."""
        counts = dict(jobs_of(Job).filter(batch=batch).order_by().values_list("status")
                      .annotate(n=Count("id")))
        url = reverse("admin:taskmill_job_changelist")
        parts = [format_html('<a href="{}?batch__id__exact={}&status__exact={}">{}: {}</a>',
                             url, batch.id, status.value, status.label, counts.get(status, 0))
                 for status in JobStatus]
        return format_html("{}", SafeString(" · ".join(parts)))
