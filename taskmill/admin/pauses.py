"""Pauses in the admin: add one to pause, delete it to resume (both through
:mod:`taskmill.flow`, so every worker sees it and bad input is refused in the form)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from ..flow import check_scope, pause
from ..models import Pause
from ..store import get_store
from .readonly import job_database


class PauseForm(forms.ModelForm):
    class Meta:
        model = Pause
        fields = ("queue_name", "task_path")
        help_texts = {"queue_name": _("Blank: every queue."),
                      "task_path": _("Dotted path of a task. Blank: every task.")}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            check_scope(data.get("queue_name") or None, data.get("task_path") or None)
        except (ValueError, TypeError) as exc:
            raise forms.ValidationError(str(exc)) from None
        return data

    def validate_unique(self) -> None:
        """Pausing twice is not an error: :func:`taskmill.pause` keeps the first."""


@admin.register(Pause)
class PauseAdmin(admin.ModelAdmin):
    form = PauseForm
    list_display = ("__str__", "queue_name", "task_path", "paused_at")
    actions = ["resume_selected"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).using(job_database())

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # A pause is added or lifted, never edited.

    def save_model(self, request: HttpRequest, obj: Pause, form: Any, change: bool) -> None:
        pause(queue=obj.queue_name or None, task=obj.task_path or None)
        stored = Pause.objects.using(job_database()).filter(queue_name=obj.queue_name,
                                                             task_path=obj.task_path)
        obj.pk = stored.values_list("pk", flat=True).first()

    def delete_model(self, request: HttpRequest, obj: Pause) -> None:
        self._lift([obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._lift(list(queryset))

    @admin.action(description=_("Resume (lift the selected pauses)"), permissions=["delete"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = self._lift(list(queryset))
        self.message_user(request, _("Lifted %(count)d pause(s).") % {"count": count})

    @staticmethod
    def _lift(pauses: list[Pause]) -> int:
        """Lift exactly these pauses (not every pause of their queue or task)."""
        store = get_store(job_database())
        return sum(store.lift_pause(p.queue_name, p.task_path) for p in pauses)
