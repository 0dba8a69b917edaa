"""Functions and tasks for ``bench/parallel.py`` (importable by its child processes)."""

import os

from taskmill import task


def tiny(x: int) -> int:
    return x + 1


def cpu_work(n: int) -> int:
    """Pure-Python arithmetic: holds the GIL, so only processes can run it in parallel."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def pid(_: object) -> int:
    return os.getpid()


@task()
def child(item: int) -> int:
    """A batch child that does nothing but exist: what is measured is the fan-out."""
    return item


@task()
def finished(batch_id: str) -> str:
    return batch_id
