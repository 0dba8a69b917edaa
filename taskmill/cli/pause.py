"""``taskmill pause [--queue Q] [--task PATH]``: nothing new of that starts anywhere."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management import CommandError

from ..flow import pause
from ..models import describe_pause
from .common import add_scope_arguments

HELP = ("Pause a queue, a task, or (neither) everything on every worker and host: running "
        "jobs finish, nothing new starts, enqueues are still taken. Survives restarts.")


def add_arguments(parser: ArgumentParser) -> None:
    add_scope_arguments(parser, "Pause")


def handle(command: Any, options: dict[str, Any]) -> None:
    queue, task = options.get("queue"), options.get("task")
    try:
        changed = pause(queue=queue, task=task)
    except (ValueError, TypeError) as exc:
        raise CommandError(str(exc)) from None
    scope = describe_pause(queue or "", task or "")
    if changed:
        command.stdout.write(f"Paused {scope}: running jobs finish, nothing new starts "
                             "until `taskmill resume`.")
    else:
        command.stdout.write(f"{scope[0].upper()}{scope[1:]} was already paused.")
