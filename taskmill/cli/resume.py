"""``taskmill resume [--queue Q] [--task PATH]``: lift pauses (neither: every pause)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management import CommandError

from ..flow import paused, resume
from ..models import describe_pause
from .common import add_scope_arguments

HELP = ("Lift the pauses of a queue and/or a task, or (neither) every pause. Lifting a "
        "queue's pause does not lift a pause of everything.")


def add_arguments(parser: ArgumentParser) -> None:
    add_scope_arguments(parser, "Resume")


def handle(command: Any, options: dict[str, Any]) -> None:
    queue, task = options.get("queue"), options.get("task")
    try:
        lifted = resume(queue=queue, task=task)
    except (ValueError, TypeError) as exc:
        raise CommandError(str(exc)) from None
    scope = describe_pause(queue or "", task or "") if queue or task else "everything"
    if not lifted:
        command.stdout.write(f"Nothing was paused ({scope}).")
    else:
        command.stdout.write(f"Resumed {scope} ({lifted} pause{'s' if lifted > 1 else ''} "
                             "lifted).")
    left = paused()
    if left:
        command.stdout.write("Still paused: " + ", ".join(str(p) for p in left) + ".")
