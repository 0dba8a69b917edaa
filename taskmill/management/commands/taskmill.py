"""``manage.py taskmill <subcommand>``: the worker and the operations on jobs.

Each subcommand lives in its own module of :mod:`taskmill.cli`.
"""

from __future__ import annotations

import logging
from argparse import SUPPRESS, ArgumentParser
from typing import Any

from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandParser

from ...cli import SUBCOMMANDS, load
from ...cli.common import configure_logging, get_backend
from ...db import wait_for_database

#: The system checks a worker runs at start: taskmill's settings (compatibility) and
#: what its jobs use (caches, files, translations, signals). Not the URL, template,
#: static-files, admin, model or management-command checks: ``check``, ``migrate`` and
#: the web server run those, and they load the project's URLconf, views, templates and
#: every command module, which a worker would then keep in every process for nothing:
#: 1.0 MB of a 2-process worker's 69.5 MB (PSS of the whole tree, idle).
WORKER_CHECKS = [Tags.compatibility, Tags.caches, Tags.files, Tags.translation, Tags.signals,
                 Tags.async_support]


class Command(BaseCommand):
    help = "Run taskmill workers and operate on jobs: " + ", ".join(SUBCOMMANDS) + "."

    def add_arguments(self, parser: CommandParser) -> None:
        subparsers = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND",
                                           required=True)
        for name in SUBCOMMANDS:
            module = load(name)
            sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
            _add_django_options(sub)
            module.add_arguments(sub)

    def execute(self, *args: Any, **options: Any) -> Any:
        if options.get("subcommand") == "worker" and not options.get("help"):
            # System checks may query the database (Django 6 asks PostgreSQL its version);
            # a worker started while the database is down waits here and says so once.
            configure_logging(options.get("verbosity", 1))
            database = get_backend(options.get("backend")).database
            wait_for_database(database, say=logging.getLogger("taskmill.worker").warning)
            self.requires_system_checks = WORKER_CHECKS
        return super().execute(*args, **options)

    def handle(self, *args: Any, **options: Any) -> Any:
        return load(options["subcommand"]).handle(self, options)


def _add_django_options(parser: ArgumentParser) -> None:
    """Accept Django's global options after the subcommand too (``taskmill worker -v 2``)."""
    parser.add_argument("-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=SUPPRESS)
    parser.add_argument("--settings", default=SUPPRESS)
    parser.add_argument("--pythonpath", default=SUPPRESS)
    for flag in ("--traceback", "--no-color", "--force-color", "--skip-checks"):
        parser.add_argument(flag, action="store_true", default=SUPPRESS)
