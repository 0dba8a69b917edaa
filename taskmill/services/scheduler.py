"""The periodic scheduler (``TASKMILL_SCHEDULE``); runs in every worker's heartbeat."""

from __future__ import annotations

from typing import Any

from django.conf import settings


def run_due(store: Any) -> int:
    """Enqueue every schedule tick that is due; returns how many were enqueued."""
    if not getattr(settings, "TASKMILL_SCHEDULE", None):
        return 0
    raise NotImplementedError("periodic tasks arrive with the coordination work")
