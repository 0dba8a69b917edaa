"""The jobs the benchmarks run."""

import time

from taskmill import task


@task()
def noop() -> None:
    """Does nothing: what is measured is taskmill's own cost per job."""


@task()
def stamp() -> float:
    """Return when the job started (wall clock), for pickup latency."""
    return time.time()


@task()
def held() -> None:
    """Kept paused by bench/hotpath.py: its due jobs wait on the served queue."""
