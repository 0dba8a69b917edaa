"""taskmill: the backend and worker for Django's Tasks framework, jobs in your own database.

Public API (see the README and docs/):

    from taskmill import task, enqueue_many, enqueue_batch, get_batch, parallel_map
    from taskmill import cancel, retry, purge, pause, resume, paused, Snooze
"""

from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

#: name -> module that defines it; imported on first use so that importing taskmill
#: (it is in INSTALLED_APPS) never loads models before Django is set up.
_EXPORTS = {
    "task": "taskmill.compat",
    "enqueue_many": "taskmill.api",
    "cancel": "taskmill.api",
    "retry": "taskmill.api",
    "purge": "taskmill.api",
    "pause": "taskmill.flow",
    "resume": "taskmill.flow",
    "paused": "taskmill.flow",
    "Snooze": "taskmill.exceptions",
    "parallel_map": "taskmill.parallel",
    "enqueue_batch": "taskmill.parallel",
    "get_batch": "taskmill.parallel",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("taskmill", globals(), _EXPORTS)
