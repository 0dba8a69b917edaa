"""Helpers shared by the subcommands: picking the backend, setting up logging."""

from __future__ import annotations

import logging
import sys
from argparse import ArgumentParser

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError

from ..backend import TaskmillBackend, taskmill_backend


def get_backend(alias: str | None) -> TaskmillBackend:
    """The backend named ``alias``, or the only/default taskmill backend."""
    try:
        return taskmill_backend(alias)
    except ImproperlyConfigured as exc:
        raise CommandError(str(exc)) from None


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


def add_scope_arguments(parser: ArgumentParser, verb: str) -> None:
    """``--queue`` and ``--task``: what a pause or a resume applies to (neither: all)."""
    parser.add_argument("--queue", help=f"{verb} this queue.")
    parser.add_argument("--task", metavar="PATH", help=f"{verb} this task (dotted path).")
