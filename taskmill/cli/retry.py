"""``taskmill retry ID``: run a FAILED job again."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from ..api import InvalidJobState, retry
from ..compat import TaskResultDoesNotExist

HELP = "Run a FAILED job again (same id; it resumes from its checkpoint)."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("id", help="The job's result id.")


def handle(command: Any, options: dict[str, Any]) -> None:
    try:
        result = retry(options["id"])
    except TaskResultDoesNotExist:
        raise CommandError(f"No job with id {options['id']!r}.") from None
    except InvalidJobState as exc:
        raise CommandError(str(exc)) from None
    command.stdout.write(f"Job {result.id} ({result.task.module_path}) is waiting to run again.")
