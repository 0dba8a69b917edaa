"""Tasks for the coordination tests: unique, concurrency limits, transactional, cancel."""

import os
import signal
import time
from pathlib import Path

from taskmill import task

from .models import Execution


@task(unique=True)
def unique_job(name: str) -> str:
    Execution.objects.create(label=f"unique-{name}", pid=os.getpid())
    return name


@task(concurrency_limit=1, max_attempts=1)
def limited(label: str, seconds: float) -> None:
    started = time.time()
    time.sleep(seconds)
    Execution.objects.create(label=label, pid=os.getpid(), started=started, finished=time.time())


@task(concurrency_limit=2, concurrency_key="pair", max_attempts=1)
def paired(label: str, seconds: float) -> None:
    started = time.time()
    time.sleep(seconds)
    Execution.objects.create(label=label, pid=os.getpid(), started=started, finished=time.time())


def _hang_first_attempt(context, label: str, marker: str) -> None:
    """Write, then (first attempt only) tell the test our pid and wait to be killed."""
    Execution.objects.create(label=label, pid=os.getpid(), value={"attempt": context.attempt})
    if context.attempt == 1:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(60)


@task(takes_context=True, transactional=True, max_attempts=3)
def transactional_write(context, label: str, marker: str) -> int:
    _hang_first_attempt(context, label, marker)
    return context.attempt


@task(takes_context=True, max_attempts=3)
def plain_write(context, label: str, marker: str) -> int:
    _hang_first_attempt(context, label, marker)
    return context.attempt


@task(takes_context=True, transactional=True, max_attempts=2, retry_backoff=0)
def transactional_fails_once(context, label: str) -> int:
    Execution.objects.create(label=label, pid=os.getpid(), value={"attempt": context.attempt})
    if context.attempt == 1:
        raise RuntimeError("first attempt fails after its write")
    return context.attempt


@task(takes_context=True, max_attempts=3)
def resumable(context, label: str, total: int, crash_at: int) -> int:
    """One row per item; saves a checkpoint after each; the first attempt dies at crash_at."""
    start = 0 if context.checkpoint is None else context.checkpoint + 1
    for item in range(start, total):
        Execution.objects.create(label=f"{label}-{item}", pid=os.getpid(),
                                 value={"attempt": context.attempt})
        context.save_checkpoint(item)
        context.set_progress(item + 1, total)
        if context.attempt == 1 and item == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return context.attempt


@task(takes_context=True, transactional=True)
def progress_then_wait(context, label: str, release: str) -> None:
    context.set_progress(3, 10, "three of ten")
    deadline = time.time() + 30
    while not os.path.exists(release) and time.time() < deadline:
        time.sleep(0.02)
    Execution.objects.create(label=label, pid=os.getpid())


@task(takes_context=True, max_attempts=3)
def cooperative(context, label: str) -> None:
    Execution.objects.create(label=label, pid=os.getpid(), started=time.time())
    deadline = time.time() + 30
    while time.time() < deadline:
        context.raise_if_cancelled()
        time.sleep(0.02)
    Execution.objects.create(label=f"{label}-finished", pid=os.getpid())


@task(max_attempts=3)
def stubborn(label: str) -> None:
    """Ignores cancel requests: only a forced cancel stops it."""
    Execution.objects.create(label=label, pid=os.getpid(), started=time.time())
    deadline = time.time() + 30
    while time.time() < deadline:
        time.sleep(0.02)
    Execution.objects.create(label=f"{label}-finished", pid=os.getpid())


@task()
def tick() -> None:
    Execution.objects.create(label="tick", pid=os.getpid(), started=time.time())


@task(unique_key="tick-key")
def unique_tick() -> None:
    """A periodic task whose key another session can hold, to keep its enqueue waiting."""
    Execution.objects.create(label="unique-tick", pid=os.getpid())
