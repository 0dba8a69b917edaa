"""Tasks the tests enqueue. Each records what it did in ``Execution`` rows."""

import asyncio
import os
import time

from taskmill import task

from .models import Execution


@task()
def noop() -> None:
    return None


@task()
def record(label: str, sleep: float = 0.0) -> int:
    started = time.time()
    if sleep:
        time.sleep(sleep)
    Execution.objects.create(label=label, pid=os.getpid(), started=started, finished=time.time())
    return os.getpid()


@task()
def add(a: int, b: int) -> int:
    return a + b


@task(max_attempts=3, retry_backoff=0.1)
def flaky(label: str, failures: int) -> str:
    """Fail ``failures`` times, then succeed; each attempt leaves a row."""
    Execution.objects.create(label=label, pid=os.getpid(), started=time.time())
    if Execution.objects.filter(label=label).count() <= failures:
        raise RuntimeError(f"attempt failed on purpose ({label})")
    return "ok"


@task(max_attempts=1)
def always_fails() -> None:
    raise ValueError("this task always fails")


@task(timeout=1.0, max_attempts=1)
def too_slow(label: str, seconds: float) -> None:
    Execution.objects.create(label=label, pid=os.getpid(), started=time.time())
    deadline = time.time() + seconds
    while time.time() < deadline:  # Python code: the injected JobTimeout stops it.
        time.sleep(0.01)
    Execution.objects.filter(label=label).update(finished=time.time())


@task(timeout=1.0, max_attempts=1)
def stuck_in_c(label: str, seconds: float) -> None:
    Execution.objects.create(label=label, pid=os.getpid(), started=time.time())
    time.sleep(seconds)  # One long C call: only recycling the process stops it.
    Execution.objects.filter(label=label).update(finished=time.time())


@task(max_attempts=2)
def slow(label: str, seconds: float) -> int:
    """Sleeps in small steps, writing a start row and, at the end, a finish time."""
    row = Execution.objects.create(label=label, pid=os.getpid(), started=time.time())
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(0.02)
    Execution.objects.filter(pk=row.pk).update(finished=time.time())
    return os.getpid()


@task()
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a + b


@task(takes_context=True)
def with_context(context, label: str) -> int:
    context.set_progress(1, 2, "half way")
    Execution.objects.create(label=label, pid=os.getpid(), value={"attempt": context.attempt})
    return context.attempt


def not_a_task() -> None:
    """A plain function: a job row naming it must fail, never run it."""
    Execution.objects.create(label="not_a_task ran", pid=os.getpid())


@task(max_attempts=1)
def read_then_write(label: str) -> int:
    """What a real app's task does (Wagtail's reference index, say): read, then write, in
    one transaction; on SQLite the write has to upgrade a reader's snapshot."""
    from django.db import transaction

    with transaction.atomic():
        seen = Execution.objects.filter(label__startswith="rw-").count()
        time.sleep(0.01)
        Execution.objects.create(label=label, pid=os.getpid(), value={"seen": seen})
    return seen


@task()
def read_then_write_in_children(label: str, children: int) -> int:
    """The same, split over child processes by ``parallel_map``: the children's
    transactions must take SQLite's write lock up front as the worker thread's do."""
    from taskmill import parallel_map

    labels = [f"{label}-{i}" for i in range(children)]
    return sum(parallel_map(read_then_write.func, labels, processes=children))


def _count_executions(item: int) -> int:
    return Execution.objects.count() + item


@task()
def fork_rounds(rounds: int) -> int:
    """Round after round of parallel_map children that query SQLite at once, forked while
    the worker's other threads query the same file."""
    from taskmill import parallel_map

    total = 0
    for _ in range(rounds):
        total += sum(parallel_map(_count_executions, [0, 1], processes=2))
        Execution.objects.create(label="fork-round", pid=os.getpid())  # Wakes the producer.
    return total


@task()
def query_for(seconds: float) -> int:
    """Keeps a thread of the worker inside SQLite, statement after statement."""
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        count += Execution.objects.filter(label="fork-round").count() >= 0
    return count
