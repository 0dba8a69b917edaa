"""``taskmill cancel ID [--force]``: cancel a waiting or running job."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from ..api import cancel, locate
from ..compat import TaskResultDoesNotExist

HELP = "Cancel a job: a waiting one never runs; a running one is asked to stop."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("id", help="The job's result id.")
    parser.add_argument("--force", action="store_true",
                        help="Stop a running job that ignores the request after a grace period.")


def handle(command: Any, options: dict[str, Any]) -> None:
    try:
        backend, _, job_id = locate(options["id"])
        before = backend.get_result(str(job_id)).status
        result = cancel(str(job_id), force=options["force"])
    except TaskResultDoesNotExist:
        raise CommandError(f"No job with id {options['id']!r}.") from None
    task = result.task.module_path
    if before == "READY":
        command.stdout.write(f"Cancelled waiting job {result.id} ({task}): it will not run.")
    elif before == "RUNNING":
        how = ("it is stopped if still running after the grace period" if options["force"]
               else "it stops when it checks context.cancel_requested")
        command.stdout.write(f"Asked running job {result.id} ({task}) to stop; {how}.")
    else:
        command.stdout.write(f"Job {result.id} ({task}) had already finished ({before}); "
                             "nothing to cancel.")
