"""Keep ``fork()`` out of SQLite: no thread may be inside the library when a process forks.

SQLite guards its process-wide state (its memory allocator, each open file's lock and
shared-memory records) with mutexes held for microseconds inside every call. A thread
that forks while another thread holds one of them gives the child a copy of the mutex,
locked, whose owner does not exist there: the child's first query on the same database
waits for ever. In a worker that is the common case, not a rare one: ``parallel_map``
forks from a task thread while the producer, the heartbeat or another task queries the
same SQLite file (each write wakes the producer, so it queries right when a round of
children finished writing and the next round is forked).

The gate is a shared/exclusive lock: every call a worker process's SQLite connections
make into the library (connecting, executing, fetching, committing, closing: see
:class:`GatedConnection`, made the connection class of every SQLite alias by
:func:`gate_every_sqlite_connection`) runs :func:`inside` it, many threads at once,
and a before-fork hook takes it exclusively, waiting for those calls to return and
holding new ones back until the fork is done, a few hundred microseconds. A thread
already inside may re-enter: it cannot be the one forking, since forks happen outside
database calls.

A connection also keeps its turn from BEGIN to COMMIT (between two statements its
transaction holds SQLite's locks, whose in-process records a child would inherit), and a
write that returns rows outside a transaction is read to its end within one turn (until
then it holds the write lock, while the connection says it is in no transaction).

A connection dropped inside a transaction (its thread ended without a COMMIT) is rolled
back by SQLite when the garbage collector frees it, without a call through the gate: a
finalizer lets go of its turn then, and a fork kept waiting collects at once.

Hazard: a fork waits for the calls and transactions in flight, so a statement or a
transaction that runs long, or waits on the busy timeout for another process's write
lock, delays it as long. Every ``FORK_WAIT_WARN`` seconds of waiting, the log says which
threads' transactions it waits for.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import re
import sqlite3
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import connections

__all__ = ["GatedConnection", "gate_every_sqlite_connection", "gated_settings", "inside"]

logger = logging.getLogger("taskmill.worker")

#: Seconds a fork waits for SQLite before it says, in the log, what it waits for (and
#: again each time as long).
FORK_WAIT_WARN = 10.0


@dataclass
class _Hold:
    """A connection's transaction, holding the gate from BEGIN to COMMIT."""

    thread: int
    thread_name: str
    since: float
    finalizer: weakref.finalize[[int], sqlite3.Connection]


class _ForkGate:
    def __init__(self) -> None:
        # Reentrant: a connection dropped unclosed is let go by its finalizer, which the
        # garbage collector may run in any thread, inside any of the sections below.
        self.condition = threading.Condition(threading.RLock())
        self.inside = 0
        self.forking = 0  # Forks under way, from as many threads.
        self.depth = threading.local()
        self.holds: dict[int, _Hold] = {}  # id(connection) -> its open transaction.
        self.holding: Counter[int] = Counter()  # Thread ident -> transactions it holds.

    def acquire(self) -> None:
        depth = getattr(self.depth, "value", 0)
        if depth == 0:
            with self.condition:
                # A thread holding a transaction is already counted inside: were it to wait
                # here, the fork would wait on it for ever.
                while self.forking and not self.holding[threading.get_ident()]:
                    self.condition.wait()
                self.inside += 1
        self.depth.value = depth + 1

    def release(self) -> None:
        depth = self.depth.value - 1
        self.depth.value = depth
        if depth == 0:
            self._leave()

    def _leave(self) -> None:
        with self.condition:
            self.inside -= 1
            # A fork from inside a transaction waits for the count to reach its own.
            if self.inside == 0 or self.forking:
                self.condition.notify_all()

    @contextmanager
    def enter(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def hold(self, connection: sqlite3.Connection) -> None:
        """Count ``connection``'s open transaction inside until :meth:`drop` or, if it
        is dropped unclosed (SQLite then rolls it back), until it is garbage collected."""
        key = id(connection)
        thread = threading.current_thread()
        finalizer = weakref.finalize(connection, self.drop, key)
        finalizer.atexit = False
        with self.condition:
            self.inside += 1
            self.holding[thread.ident or 0] += 1
            self.holds[key] = _Hold(thread.ident or 0, thread.name, time.monotonic(), finalizer)

    def drop(self, key: int) -> None:
        with self.condition:
            held = self.holds.pop(key, None)
            if held is None:
                return
            held.finalizer.detach()
            self.holding[held.thread] -= 1
            if not self.holding[held.thread]:
                del self.holding[held.thread]
        self._leave()

    def before_fork(self) -> None:
        """Hold new calls back and wait for those in flight, then let go of the lock.

        The count of forks under way, not the lock, keeps threads out until every one is
        done (two task threads may fork at once): the hooks that run after this one
        (logging's, the import lock) take locks of their own, and a thread holding one
        of those may need the gate's lock meanwhile (the garbage collector runs
        :meth:`drop` in whichever thread it interrupts). Held across them, the lock
        would deadlock both threads and every later call into SQLite. For the same
        reason, the collecting and the logging here happen outside it.
        """
        with self.condition:
            self.forking += 1
        self.collect_abandoned()
        waited = 0.0
        while True:
            with self.condition:
                # The forking thread's own turns (a fork from inside a transaction) cannot
                # end while it waits.
                mine = self.holding[threading.get_ident()] + (getattr(self.depth, "value", 0) > 0)
                if self.inside <= mine:
                    return
                if self.condition.wait(timeout=FORK_WAIT_WARN):
                    continue
                keeping = self.describe_inside()
            self.collect_abandoned()
            waited += FORK_WAIT_WARN
            logger.warning("A fork has waited %.1f s for SQLite: %s.", waited, keeping)

    def collect_abandoned(self) -> None:
        """Let go of the transactions of threads that have ended: their connections were
        dropped unclosed (or nobody can end them). A SQLite connection is freed by the
        cycle collector only (its statement cache refers back to it), so collect now
        rather than at some later collection."""
        if self.ended_holders():
            gc.collect()

    def ended_holders(self) -> set[int]:
        """The thread idents of held transactions whose thread has ended."""
        alive = {thread.ident for thread in threading.enumerate()}
        return {held.thread for held in list(self.holds.values())} - alive

    def describe_inside(self) -> str:
        """Who keeps a fork waiting, in words (called with the condition held)."""
        now, ended = time.monotonic(), self.ended_holders()
        named = [f"a transaction of thread {held.thread_name!r}, open {now - held.since:.0f} s"
                 + (" (its thread has ended)" if held.thread in ended else "")
                 for held in list(self.holds.values())]
        calls = self.inside - len(self.holds)
        if calls:
            named.append(f"{calls} call(s) in flight (a long statement, or one waiting "
                         "on the busy timeout for another process's write lock)")
        return "; ".join(named) or "nothing"

    def after_fork_in_parent(self) -> None:
        with self.condition:
            # Another thread's fork may still be under way. (Not below zero: a signal
            # can interrupt this fork's before-hook before it counted itself.)
            self.forking = max(0, self.forking - 1)
            if not self.forking:
                self.condition.notify_all()

    def after_fork_in_child(self) -> None:
        for held in list(self.holds.values()):  # Their connections are not this process's.
            held.finalizer.detach()
        self.__init__()  # type: ignore[misc]  # The threads inside are not in this process.


_gate = _ForkGate()
os.register_at_fork(before=_gate.before_fork, after_in_parent=_gate.after_fork_in_parent,
                    after_in_child=_gate.after_fork_in_child)


def inside() -> Any:
    """A context for a call into SQLite that a fork in another thread must wait out."""
    return _gate.enter()


def _gated(method: Callable[..., Any]) -> Callable[..., Any]:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _gate.enter():
            try:
                return method(self, *args, **kwargs)
            finally:
                _hold_while_in_transaction(self if isinstance(self, GatedConnection)
                                           else getattr(self, "connection", None))
    call.__name__ = method.__name__
    return call


def _hold_while_in_transaction(connection: Any) -> None:
    """Keep the gate held from BEGIN to COMMIT: between two statements of a transaction
    the connection still holds SQLite's locks, whose in-process records a child would
    inherit as if they were its own (and wait on them for ever)."""
    if not isinstance(connection, GatedConnection):
        return
    try:
        open_now = connection.in_transaction
    except sqlite3.ProgrammingError:  # Closed.
        open_now = False
    held = connection.__dict__.get("_gate_held", False)
    if open_now and not held:
        _gate.hold(connection)
        connection.__dict__["_gate_held"] = True
    elif held and not open_now:
        connection.__dict__["_gate_held"] = False
        _gate.drop(id(connection))


_CURSOR_CALLS = ("execute", "executemany", "executescript", "fetchone", "fetchmany",
                 "fetchall", "__next__", "close")


@functools.cache
def _gated_cursor(factory: type[sqlite3.Cursor]) -> type[sqlite3.Cursor]:
    """``factory`` (Django's cursor class) with every call into SQLite inside the gate:
    fetching steps the statement, and closing ends its read transaction, both of which
    take the file's shared-memory lock as surely as executing does."""
    calls = {name: _gated(getattr(factory, name)) for name in _CURSOR_CALLS}
    gated = type(f"Gated{factory.__name__}", (factory,), calls)
    return type(f"Gated{factory.__name__}", (_ReturningReadAtOnce, gated), {})


_RETURNING = re.compile(r"\bRETURNING\b", re.IGNORECASE)


@functools.lru_cache(maxsize=512)
def _writes_and_returns(sql: str) -> bool:
    """Whether ``sql`` writes and returns rows (``INSERT ... RETURNING``: Django's
    ``create()`` on SQLite 3.35+, the store's claims). A false match only has a
    statement's rows read at once."""
    return _RETURNING.search(sql) is not None


class _ReturningReadAtOnce(sqlite3.Cursor):
    """A gated cursor that reads a writing statement's returned rows inside its execute.

    Why: outside a transaction, a write that returns rows holds the database's write lock
    from its first step to its last, while the connection says it is in no transaction
    (so the gate is free). A fork in between gives the child the lock's in-process
    record, not the lock: the child's every write then waits on a lock nobody will
    release, until its busy timeout ("database is locked"). Read here, within one turn of
    the gate, the statement has finished (and committed) before any fork can happen;
    ``fetch*`` hand out the rows kept.
    """

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if not _writes_and_returns(sql):  # Most statements: nothing more on their way.
            self._returned = None
            return super().execute(sql, *args, **kwargs)
        with _gate.enter():
            super().execute(sql, *args, **kwargs)
            self._returned = deque(super().fetchall()) if self.description is not None else None
        return self

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        self._returned = None
        return super().executemany(*args, **kwargs)

    def executescript(self, *args: Any, **kwargs: Any) -> Any:
        self._returned = None
        return super().executescript(*args, **kwargs)

    def fetchone(self) -> Any:
        rows = self.__dict__.get("_returned")
        if rows is None:
            return super().fetchone()
        return rows.popleft() if rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        rows = self.__dict__.get("_returned")
        if rows is None:
            return super().fetchmany() if size is None else super().fetchmany(size)
        count = min(self.arraysize if size is None else size, len(rows))
        return [rows.popleft() for _ in range(count)]

    def fetchall(self) -> list[Any]:
        rows = self.__dict__.get("_returned")
        if rows is None:
            return super().fetchall()
        taken = list(rows)
        rows.clear()
        return taken

    def __next__(self) -> Any:
        rows = self.__dict__.get("_returned")
        if rows is None:
            return super().__next__()
        if rows:
            return rows.popleft()
        raise StopIteration


_BASE_LEVEL: Any = sqlite3.Connection.__dict__["isolation_level"]


class GatedConnection(sqlite3.Connection):
    """A SQLite connection whose every call into the library is inside the gate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with _gate.enter():
            super().__init__(*args, **kwargs)

    def cursor(self, factory: Any = sqlite3.Cursor) -> Any:
        return super().cursor(_gated_cursor(factory))

    execute = _gated(sqlite3.Connection.execute)
    executemany = _gated(sqlite3.Connection.executemany)
    executescript = _gated(sqlite3.Connection.executescript)
    commit = _gated(sqlite3.Connection.commit)
    rollback = _gated(sqlite3.Connection.rollback)
    close = _gated(sqlite3.Connection.close)
    # Django registers its SQL functions on every new connection: SQLite allocates for
    # each, under its process-wide memory mutex.
    create_function = _gated(sqlite3.Connection.create_function)
    create_aggregate = _gated(sqlite3.Connection.create_aggregate)
    create_collation = _gated(sqlite3.Connection.create_collation)
    if hasattr(sqlite3.Connection, "create_window_function"):
        create_window_function = _gated(sqlite3.Connection.create_window_function)

    # Setting the isolation level commits an open transaction (Django's set_autocommit).
    isolation_level = property(
        _BASE_LEVEL.__get__, _gated(_BASE_LEVEL.__set__))


def gate_every_sqlite_connection() -> None:
    """Make every SQLite connection this process opens from now on, in any thread, a
    :class:`GatedConnection` (the connections already open become one when they next
    connect). For a worker process: its producer, heartbeat and maintenance threads and
    every task thread query while a task may fork, and Django code any of them runs
    (the scheduler's enqueues, signal receivers) uses that thread's own connections."""
    for alias in connections:
        settings_dict = connections.settings[alias]
        gated = gated_settings(settings_dict)
        if gated is not settings_dict:  # Changed in place: every wrapper shares the dict.
            settings_dict["OPTIONS"] = gated["OPTIONS"]


def gated_settings(settings_dict: dict[str, Any]) -> dict[str, Any]:
    """``settings_dict`` (a ``DATABASES`` entry) with SQLite connections made as
    :class:`GatedConnection`; other databases' settings unchanged. For the connections
    of a worker, whose task threads may fork while its other threads query."""
    if not settings_dict.get("ENGINE", "").endswith("sqlite3"):
        return settings_dict
    options = settings_dict.get("OPTIONS", {})
    if "factory" in options:  # The project's own connection class: leave it be.
        return settings_dict
    return {**settings_dict, "OPTIONS": {**options, "factory": GatedConnection}}
