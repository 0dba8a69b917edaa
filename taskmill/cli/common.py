"""Helpers shared by the subcommands: picking the backend, setting up logging."""

from __future__ import annotations

import logging
import sys

from django.core.management.base import CommandError

from ..backend import TaskmillBackend, taskmill_backends


def get_backend(alias: str | None) -> TaskmillBackend:
    """The backend named ``alias``, or the only/default taskmill backend."""
    backends = taskmill_backends()
    if not backends:
        raise CommandError(
            "No taskmill backend is configured. Add to settings.py:\n"
            '  TASKS = {"default": {"BACKEND": "taskmill.backend.TaskmillBackend"}}'
        )
    if alias is None:
        alias = "default" if "default" in backends else next(iter(backends))
    if alias not in backends:
        raise CommandError(f"{alias!r} is not a taskmill backend; choose from {sorted(backends)}.")
    return backends[alias]


def configure_logging(verbosity: int) -> None:
    """INFO lines from taskmill on stderr, unless the project configured its own logging."""
    logger = logging.getLogger("taskmill")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(processName)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))
    logger.propagate = False
