"""taskmill's client side of ``bench/compare.py``: one measurement per process.

Run by compare.py with the taskmill virtualenv's python, ``DJANGO_SETTINGS_MODULE=bench.settings``
and ``BENCH_PG_NAME`` naming the round's database. Each command prints one JSON object on
stdout. It is a process of its own, like a web server's, so that what it measures includes
nothing of the worker's and nothing of compare.py's.

    tm_driver.py single N              N x noop.enqueue(), autocommit      -> {"seconds": ...}
    tm_driver.py bulk N                one taskmill.enqueue_many of N       -> {"seconds": ...}
    tm_driver.py fill N                N noop jobs, untimed (before a drain)
    tm_driver.py insert_sql            the INSERT one noop.enqueue() sends, values in place
                                       (a new id each time), for pgbench -> {"sql": ...}
    tm_driver.py single_psycopg N      that INSERT N times through psycopg alone (no Django,
                                       no taskmill), autocommit        -> {"seconds": ...}
    tm_driver.py single_libpq N        the same through libpq's blocking PQexec, under
                                       psycopg's Python layer          -> {"seconds": ...}
    tm_driver.py latency N GAP WAIT    N stamp jobs GAP s apart; each job's start minus the
                                       clock just before / just after its enqueue, in ms
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import django


def single(count: int) -> dict[str, float]:
    """One INSERT and one synchronous commit per job, as a view enqueuing outside a transaction."""
    from django.db import connection

    from bench.tasks import noop

    # The outside harness's conditions; a settings change must not silently alter them.
    assert connection.settings_dict["CONN_MAX_AGE"] == 0, "CONN_MAX_AGE must be 0"
    noop.enqueue()  # connect and warm up outside the timing
    assert connection.get_autocommit(), "the enqueues must run in autocommit"
    return repeated(noop.enqueue, count)


def repeated(call: Callable[[], object], count: int) -> dict[str, float]:
    """Seconds ``count`` calls of ``call`` take, one after another."""
    start = time.perf_counter()
    for _ in range(count):
        call()
    return {"seconds": time.perf_counter() - start}


def bulk(count: int) -> dict[str, float]:
    """The whole of one ``enqueue_many`` call (rows built, COPY sent, results returned)."""
    import taskmill
    from bench.tasks import noop

    items = [()] * count
    start = time.perf_counter()
    taskmill.enqueue_many(noop, items)
    return {"seconds": time.perf_counter() - start}


def insert_sql() -> dict[str, str]:
    """The statement of a single enqueue as the server receives it (Django binds values
    client side), the id left to the server so that pgbench can repeat it."""
    import psycopg
    from django.db import connection

    from bench.tasks import noop
    from taskmill.jobs import job_factory
    from taskmill.store import get_store

    store = get_store(connection)
    job = job_factory(noop, noop.get_backend())((), {})
    params = {**store.insert_params(job), "id": "@id@"}
    connection.ensure_connection()
    sql = psycopg.ClientCursor(connection.connection).mogrify(store.sql["insert_job"], params)
    return {"sql": sql.replace("'@id@'", "gen_random_uuid()")}


def raw_connection() -> Any:
    """The psycopg connection under Django's, in autocommit, for the floors below."""
    from django.db import connection

    connection.ensure_connection()
    assert connection.connection.autocommit, "the inserts must run in autocommit"
    return connection.connection


def single_psycopg(count: int) -> dict[str, float]:
    """A floor under :func:`single`: its statement, one commit each, through psycopg
    alone (client-side binding, non-blocking libpq calls, its Python wait loop), without
    Django's cursor or taskmill."""
    sql, raw = insert_sql()["sql"], raw_connection()
    raw.execute(sql)  # warm up outside the timing, as single() does
    return repeated(lambda: raw.execute(sql), count)


def single_libpq(count: int) -> dict[str, float]:
    """The floor under :func:`single_psycopg`: the same through libpq's blocking
    ``PQexec``, which psycopg wraps."""
    query, raw = insert_sql()["sql"].encode(), raw_connection()
    raw.pgconn.exec_(query)
    return repeated(lambda: raw.pgconn.exec_(query), count)


def fill(count: int) -> dict[str, float]:
    """Jobs for a drain, in chunks as bench/drain.py enqueues them."""
    import taskmill
    from bench.tasks import noop

    for offset in range(0, count, 10_000):
        taskmill.enqueue_many(noop, [()] * min(10_000, count - offset))
    return {}


def latency(count: int, gap: float, wait: float) -> dict[str, list[float]]:
    """Enqueue on a fixed cadence without waiting for the jobs, then read their start times."""
    from bench.tasks import stamp
    from taskmill.models import Job

    enqueued: list[tuple[str, float, float]] = []
    origin = time.perf_counter()
    for index in range(count):
        delay = origin + index * gap - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        before = time.time()
        result = stamp.enqueue()
        after = time.time()
        enqueued.append((str(result.id), before, after))
    ids = [job_id for job_id, _, _ in enqueued]
    deadline = time.monotonic() + wait
    while True:
        started = dict(Job.objects.filter(id__in=ids, status="SUCCESSFUL")
                       .values_list("id", "return_value"))
        if len(started) == count:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(started)} of {count} stamp jobs finished in {wait} s")
        time.sleep(0.05)
    stamps = {str(job_id): value for job_id, value in started.items()}
    return {
        "before_ms": [(stamps[job_id] - before) * 1000 for job_id, before, _ in enqueued],
        "after_ms": [(stamps[job_id] - after) * 1000 for job_id, _, after in enqueued],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["single", "single_psycopg", "single_libpq", "bulk",
                                            "fill", "latency", "insert_sql"])
    parser.add_argument("count", type=int, nargs="?", default=0)
    parser.add_argument("gap", type=float, nargs="?", default=0.02)
    parser.add_argument("wait", type=float, nargs="?", default=30.0)
    args = parser.parse_args()
    django.setup()
    if args.command == "latency":
        result: object = latency(args.count, args.gap, args.wait)
    elif args.command == "insert_sql":
        result = insert_sql()
    else:
        result = {"single": single, "single_psycopg": single_psycopg,
                  "single_libpq": single_libpq, "bulk": bulk,
                  "fill": fill}[args.command](args.count)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
