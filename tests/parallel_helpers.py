"""Module-level functions and tasks for the parallel-work tests (children import them)."""

from __future__ import annotations

import os
import time

from django.db import connection, connections

from taskmill import task
from tests.project.models import Execution


def square(x: int) -> int:
    return x * x


def record_row(label: str) -> int:
    """Write a row on this process's own connection; return the pid that wrote it."""
    Execution.objects.create(label=label, pid=os.getpid(), started=time.time())
    return os.getpid()


def read_then_record_later(label: str) -> int:
    """Open this process's connection with a read, write a while later: the window in
    which the parent may close its last connection to an SQLite file."""
    Execution.objects.count()
    time.sleep(0.6)
    return record_row(label)


def backend_pid(_: object = None) -> tuple[int, int]:
    """(os pid, database session id): proves each child has its own connection."""
    return os.getpid(), session_id()


def session_id() -> int:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_backend_pid()")
        elif connection.vendor == "mysql":
            cursor.execute("SELECT CONNECTION_ID()")
        else:
            return id(connection.connection)
        return cursor.fetchone()[0]


def fail_on(x: int) -> int:
    if x == 3:
        raise ValueError(f"item {x} is bad")
    return x


def die_on(x: int) -> int:
    if x == 2:
        os._exit(7)
    return x


def count_rows(label: str) -> int:
    return Execution.objects.filter(label=label).count()


def close_then_record(label: str) -> int:
    """What a careless child does: close 'its' connection first. Must not hurt the parent."""
    for wrapper in connections.all():
        wrapper.close()
    return record_row(label)


def cpu_work(n: int) -> int:
    """A pure-Python CPU-bound loop."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


@task()
def fan_out_in_task(label: str, count: int) -> list[int]:
    """A task that splits its own work over processes (from a worker's executor thread)."""
    from taskmill import parallel_map

    pids = parallel_map(record_row, [label] * count, processes=2)
    Execution.objects.create(label=f"{label}-parent", pid=os.getpid())
    return pids


@task()
def batch_child(item: int) -> int:
    Execution.objects.create(label=f"batch-child-{item}", pid=os.getpid(), value=item)
    return item * 2


@task(max_attempts=1)
def batch_child_fails_on_odd(item: int) -> int:
    if item % 2:
        raise ValueError(f"odd item {item}")
    return item


@task(max_attempts=1)
def batch_child_slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task()
def batch_done(batch_id: str) -> str:
    Execution.objects.create(label=f"then-{batch_id}", pid=os.getpid())
    return batch_id


# -- what people do with raw multiprocessing (the naive way) -----------------------------


def naive_close_inherited() -> None:
    """The common advice: "close the connection in the child". On an inherited one."""
    connection.close()


def naive_rollback_inherited() -> None:
    """A child that just uses the connection it inherited (here: ends 'its' transaction)."""
    with connection.cursor() as cursor:
        cursor.execute("ROLLBACK")


def taskmill_child_then_close(label: str) -> None:
    """The same child, done right: drop the inherited connections first."""
    from taskmill.db import close_inherited_connections

    close_inherited_connections()
    record_row(label)
    connection.close()


def rollback_own(label: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("ROLLBACK")
    return record_row(label)


@task()
def db_label_slow(label: str) -> int:
    """Record the session this executor thread used, slowly enough for threads to overlap."""
    started = time.time()
    session = session_id()
    time.sleep(0.05)
    Execution.objects.create(label=label, pid=os.getpid(), value={"session": session},
                             started=started, finished=time.time())
    return os.getpid()


@task()
def holds_a_connection(label: str, seconds: float) -> None:
    """Queries, then keeps its (pooled) connection while it works on."""
    Execution.objects.create(label=label, pid=os.getpid(), started=time.time())
    time.sleep(seconds)


def pool_initializer() -> None:
    """The documented way to use taskmill with your own multiprocessing.Pool."""
    from taskmill.db import close_inherited_connections

    close_inherited_connections()
