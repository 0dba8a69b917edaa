"""Tasks that fail outside their own body: the poison jobs of the hardening tests."""

import os
import time

from django.db import IntegrityError, transaction

from taskmill import task

from .models import Execution


@task(max_attempts=2, retry_backoff=0)
def refused_at_start(label: str) -> None:
    """A ``task_started`` receiver (tests/project/apps.py) raises before this runs."""
    Execution.objects.create(label=label, pid=os.getpid())


@task(transactional=True, max_attempts=2, retry_backoff=0)
def breaks_its_transaction(label: str) -> str:
    """Writes, then swallows an error of a block without savepoint: the transaction the
    job's completion would commit in can no longer be used."""
    Execution.objects.create(label=label, pid=os.getpid())
    try:
        with transaction.atomic(savepoint=False):
            raise IntegrityError("a duplicate, caught and ignored")
    except IntegrityError:
        pass
    return "done"


@task(max_attempts=2, retry_backoff=0)
def unstorable_result(label: str) -> str:
    """Returns text PostgreSQL's jsonb refuses (a NUL character)."""
    Execution.objects.create(label=label, pid=os.getpid())
    return "before\u0000after"


@task(max_attempts=1)
def busy_until(label: str, seconds: float) -> str:
    """Spins for ``seconds`` (no sleep: Python code a timeout can stop at any bytecode)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return label


@task(max_attempts=1)
def started_then_busy(label: str, seconds: float) -> str:
    """Records that it started (a claimed job may not have yet), then spins."""
    Execution.objects.create(label=f"{label}-started", pid=os.getpid())
    return busy_until.call(label, seconds)
