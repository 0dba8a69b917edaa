"""``taskmill purge [--queue Q] [--task PATH]``: delete waiting jobs."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

HELP = "Delete waiting (READY) jobs, of a queue and/or a task; running jobs go on."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--queue", help="Only jobs of this queue.")
    parser.add_argument("--task", metavar="PATH", help="Only jobs of this task (dotted path).")


def handle(command: Any, options: dict[str, Any]) -> None:
    from ..api import purge

    count = purge(queue=options.get("queue"), task=options.get("task"))
    scope = [f"queue {options['queue']!r}"] if options.get("queue") else []
    if options.get("task"):
        scope.append(f"task {options['task']}")
    where = f" ({', '.join(scope)})" if scope else ""
    command.stdout.write(f"Purged {count} waiting job(s){where}; running jobs go on.")
