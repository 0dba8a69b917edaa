"""What the fork gate costs a worker's SQLite statement, side by side in one run.

    .venv/bin/python bench/forkgate.py                 # 21 interleaved rounds
    .venv/bin/python bench/forkgate.py --rounds 5 --statements 5000

Three cursors run the same statement (``SELECT ... WHERE id = ? LIMIT 21`` and its
``fetchall``, on an in-memory database, so the figures are the Python around SQLite and
not the disk): plain ``sqlite3``; every call gated, as before writes with ``RETURNING``
were read at once; and the cursor a worker uses now (:mod:`taskmill.forkgate`). Rounds
alternate; the medians and their ratios are printed last. In-memory statements are the
worst case: on a file, each statement costs more and the gate's share less.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure()
django.setup()

from taskmill import forkgate  # noqa: E402

SQL = 'SELECT "id", "v" FROM "t" WHERE "id" = ? LIMIT 21'


def cursors() -> dict[str, type[sqlite3.Cursor]]:
    every_call_gated = type("EveryCallGated", (sqlite3.Cursor,), {
        name: forkgate._gated(getattr(sqlite3.Cursor, name)) for name in forkgate._CURSOR_CALLS})
    return {"plain sqlite3": sqlite3.Cursor, "every call gated": every_call_gated,
            "worker's cursor now": forkgate._gated_cursor(sqlite3.Cursor)}


def per_statement(connection: sqlite3.Connection, cursor_class: type[sqlite3.Cursor],
                  statements: int) -> float:
    cursor = connection.cursor(cursor_class)
    started = time.perf_counter()
    for i in range(statements):
        cursor.execute(SQL, (i,))
        cursor.fetchall()
    return (time.perf_counter() - started) / statements * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--statements", type=int, default=10_000)
    options = parser.parse_args()
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    connection.executemany("INSERT INTO t (v) VALUES (?)", [("x",)] * 100)
    kinds = cursors()
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(options.rounds):
        for name, cursor_class in kinds.items():
            times[name].append(per_statement(connection, cursor_class, options.statements))
    medians = {name: statistics.median(values) for name, values in times.items()}
    plain = medians["plain sqlite3"]
    for name, value in medians.items():
        print(f"{name}: {value:.2f} us per statement, {value / plain:.2f}x plain")
    now, before = medians["worker's cursor now"], medians["every call gated"]
    print(f"worker's cursor now / every call gated: {now / before:.3f}")


if __name__ == "__main__":
    main()
