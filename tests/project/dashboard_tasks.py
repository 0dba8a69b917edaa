"""Tasks the dashboard tests watch: they report progress while they run."""

import os
import time

from taskmill import task

from .models import Execution


@task(takes_context=True)
def stepping(context, label: str, steps: int, delay: float) -> int:
    """Advance ``steps`` times, ``delay`` seconds apart, saying how far it is each time."""
    for step in range(1, steps + 1):
        context.set_progress(step, steps, f"step {step} of {steps}")
        time.sleep(delay)
    Execution.objects.create(label=label, pid=os.getpid(), finished=time.time())
    return steps
