"""The subcommands of ``manage.py taskmill``, one module each.

A module provides ``HELP``, ``add_arguments(parser)`` and ``handle(command, options)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SUBCOMMANDS = ["worker", "status", "prune", "purge", "cancel", "retry", "pause", "resume",
               "health"]


def load(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")
