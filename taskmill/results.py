"""What ``get_result`` returns: Django's TaskResult with taskmill's progress."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .compat import TaskResult


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a running job says it is (``context.set_progress``)."""

    current: float
    total: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float | None:
        """0..1 when a total is known."""
        if not self.total:
            return None
        return max(0.0, min(1.0, self.current / self.total))

    def as_json(self) -> dict[str, Any]:
        return {"current": self.current, "total": self.total, "message": self.message}

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> Progress | None:
        if not value:
            return None
        return cls(current=value.get("current", 0), total=value.get("total"),
                   message=value.get("message", ""))


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult(TaskResult):
    """Django's TaskResult plus what taskmill knows of the job."""

    progress: Progress | None = None
    cancel_requested: bool = False

    def refresh(self) -> None:
        """Reload the result from the job table (progress included)."""
        fresh = self.task.get_backend().get_result(self.id)
        for name in ("status", "enqueued_at", "started_at", "finished_at", "last_attempted_at",
                     "errors", "worker_ids", "_return_value", "progress", "cancel_requested"):
            object.__setattr__(self, name, getattr(fresh, name))

    async def arefresh(self) -> None:
        from asgiref.sync import sync_to_async

        await sync_to_async(self.refresh)()


#: Every attribute a JobResult holds (its slots across the class hierarchy), with the
#: slot's setter: bulk enqueues fill results without running a dataclass __init__ each.
_SLOT_SETTERS = {
    name: klass.__dict__[name].__set__
    for klass in JobResult.__mro__ for name in getattr(klass, "__slots__", ())
    if name != "__weakref__"
}
