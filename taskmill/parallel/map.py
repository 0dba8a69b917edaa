"""``parallel_map``: one function over many items, in child processes of this machine.

Why fork, and not spawn or a forkserver: a forked child starts in about a millisecond
with Django already set up, the caller's settings as they are *now* (a test database
name, ``override_settings``) and the caller's code loaded; a spawned child pays a full
interpreter and ``django.setup()`` start (hundreds of milliseconds, see
``bench/parallel.py``) and sees the settings module as written on disk. What makes fork
dangerous for Django is the inherited database connections; every child drops them with
:func:`taskmill.db.close_inherited_connections` before running anything, so the parent's
sessions, and a transaction it has open, are never touched. Each child then opens its
own connection to whatever alias ``func`` uses, and closes it when it ends.

Work is handed out a chunk at a time over a pipe per child, results come back the same
way and are put in item order. A child that raises sends its exception and traceback;
the caller re-raises it with the child's traceback as its cause. A child that dies
closes its pipe, which the caller sees at once: an error, never a hang.

A new child first reads each SQLite database of the settings, then says it is ready;
one that does not within ``START_TIMEOUT`` is killed and replaced before it was given
anything. Why: SQLite keeps locks per process and per file, and a fork while another
thread of the parent is inside SQLite hands the child a lock nobody will release.
Worker processes keep their threads out of SQLite during a fork (:mod:`taskmill.forkgate`),
but a thread of the project's own, or a cursor freed mid-fork, is beyond that gate.

The import system has the same hazard: a module another thread is importing when the
process forks stays locked in the child, and the child's first import of it waits for
ever. Django imports its SQL compiler on a process's first ORM query, which in a worker
is often a task's, on another thread, just as this one forks; so each database's
compiler module is imported before the first fork (waiting out an import in flight).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sqlite3
import sys
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import import_module
from multiprocessing.connection import Connection, Pipe, wait
from typing import Any, TypeVar

from django.db import connections

from .. import forkgate
from ..db import close_inherited_connections
from ..exceptions import TaskmillError

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["ChildDied", "ParallelError", "RemoteTraceback", "parallel_map"]

logger = logging.getLogger("taskmill.parallel")

#: Seconds a new child may take to read the SQLite databases and say it is ready, and
#: how many children are tried, before parallel_map gives up.
START_TIMEOUT = 10.0
START_ATTEMPTS = 5
_READY = b"ready"

#: A second chunk is sent ahead to a busy child only when it is this small, so that a
#: child writing a large result and a parent writing a large chunk never block each other.
PREFETCH_BYTES = 32 * 1024

# Forking a multi-threaded process (a web server's worker, a task on a taskmill worker)
# is what parallel_map is for: the child runs only ``func``, on fresh connections.
warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks",
                        category=DeprecationWarning, module=__name__)


class ParallelError(TaskmillError):
    """A child's exception that could not be sent back as itself (it does not pickle)."""


class ChildDied(TaskmillError, ChildProcessError):
    """A child process of ``parallel_map`` ended without sending back its results."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a child; set as the re-raised one's cause."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\nTraceback in the child process:\n{self.text}"


@dataclass
class _Child:
    pid: int
    conn: Connection
    in_flight: deque[int] = field(default_factory=deque)


def default_processes() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parallel_map(func: Callable[[T], R], items: Iterable[T], *, processes: int | None = None,
                 chunksize: int = 1) -> list[R]:
    """Return ``[func(item) for item in items]``, computed in child processes.

    Every child has its own database connections; the caller's, and a transaction it
    has open, are untouched (children do not see rows the caller has not committed).
    Items and results travel between processes pickled. An exception in a child is
    raised here with the child's traceback; a child that dies raises :class:`ChildDied`.
    """
    items = list(items)
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"chunksize must be a whole number >= 1, not {chunksize!r}.")
    if processes is not None and (isinstance(processes, bool) or not isinstance(processes, int)
                                  or processes < 1):
        raise ValueError(f"processes must be a whole number >= 1, not {processes!r}.")
    if not items:
        return []
    chunks = [items[start:start + chunksize] for start in range(0, len(items), chunksize)]
    payloads = deque(enumerate(pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL) for chunk in chunks))
    count = min(processes or default_processes(), len(chunks))
    # Anything buffered now would be written twice: once here, once by the child.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    _import_query_compilers()
    with _sqlite_files_held_open():
        return _run_children(func, payloads, count, chunksize, len(chunks))


def _run_children(func: Callable[[T], R], payloads: deque[tuple[int, bytes]], count: int,
                  chunksize: int, chunk_count: int) -> list[R]:
    """Start ``count`` children, feed them the chunks, gather the results in order."""
    results: list[list[R] | None] = [None] * chunk_count
    children: dict[Connection, _Child] = {}
    finished = False
    try:
        for _ in range(count):
            child = _start_child(func, [c.conn for c in children.values()])
            children[child.conn] = child
            _feed(child, payloads, chunksize)
        remaining = chunk_count
        while remaining:
            busy = [conn for conn, child in children.items() if child.in_flight]
            for ready in wait(busy):
                assert isinstance(ready, Connection)
                conn = ready
                child = children[conn]
                try:
                    message = conn.recv_bytes()
                except (EOFError, OSError):
                    raise _died(child, chunksize) from None
                kind, index, body = pickle.loads(message)
                child.in_flight.popleft()
                if kind == "error":
                    raise _rebuild_exception(body, child.pid, index * chunksize)
                results[index] = body
                remaining -= 1
                _feed(child, payloads, chunksize)
        finished = True
    finally:
        _stop_children(children.values(), kill=not finished)
    return [value for chunk_results in results for value in chunk_results]  # type: ignore[union-attr]


@contextlib.contextmanager
def _sqlite_files_held_open() -> Iterator[None]:
    """Keep a connection of this process open on each SQLite file until every child ended.

    Why: a child inherits this process's in-process record of each open SQLite file's
    locks, so its own connections believe the process-wide shared lock is held and never
    take it. Were this process then to close its last connection to the file, SQLite,
    seeing no other process on it, would fold the WAL into the database and delete it,
    and the children's commits still to come would be lost without an error. While this
    connection is open, this process holds the lock for real.
    """
    with contextlib.ExitStack() as stack:
        for name in _sqlite_files():
            keeper = stack.enter_context(contextlib.closing(
                sqlite3.connect(name, timeout=30, factory=forkgate.GatedConnection)))
            keeper.execute("SELECT count(*) FROM sqlite_master").fetchone()
        yield


def _sqlite_files() -> list[str]:
    """The SQLite database files the settings name that exist (not in-memory databases)."""
    names = []
    for wrapper in connections.all():
        name = str(wrapper.settings_dict.get("NAME") or "")
        if wrapper.vendor != "sqlite" or not name or name.startswith((":memory:", "file:")):
            continue
        if os.path.exists(name) and name not in names:
            names.append(name)
    return names


def _import_query_compilers() -> None:
    """Import what each database's first ORM query would (see the module's docstring)."""
    for alias in connections:
        import_module(connections[alias].ops.compiler_module)


def _feed(child: _Child, payloads: deque[tuple[int, bytes]], chunksize: int) -> None:
    """Keep a child busy: one chunk in flight, two when the next one is small."""
    while payloads and (not child.in_flight or
                        (len(child.in_flight) < 2 and len(payloads[0][1]) <= PREFETCH_BYTES)):
        index, payload = payloads.popleft()
        child.in_flight.append(index)
        try:
            child.conn.send_bytes(pickle.dumps((index, payload), pickle.HIGHEST_PROTOCOL))
        except OSError:  # It died before its next chunk (BrokenPipeError): as a read says.
            raise _died(child, chunksize) from None


def _start_child(func: Callable[[Any], Any], siblings: list[Connection]) -> _Child:
    """A child that has said it is ready; one stuck before that is replaced."""
    for _ in range(START_ATTEMPTS):
        child = _fork_child(func, siblings)
        if child.conn.poll(START_TIMEOUT):
            try:
                child.conn.recv_bytes()
            except (EOFError, OSError):
                raise _died(child, 1) from None
            return child
        logger.warning("parallel_map: child process %d was not ready within %.0fs (stuck on "
                       "an SQLite lock inherited from another thread?); replacing it.",
                       child.pid, START_TIMEOUT)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        child.conn.close()
        _reap(child.pid, block=True)
    raise ChildDied(f"parallel_map could not start a child process: {START_ATTEMPTS} in a row "
                    f"were not ready within {START_TIMEOUT:.0f}s each.")


def _fork_child(func: Callable[[Any], Any], siblings: list[Connection]) -> _Child:
    parent_end, child_end = Pipe(duplex=True)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
        code = 1
        try:
            parent_end.close()
            for sibling in siblings:
                sibling.close()
            code = _child_main(func, child_end)
        finally:
            os._exit(code)
    child_end.close()
    return _Child(pid=pid, conn=parent_end)


def _child_main(func: Callable[[Any], Any], conn: Connection) -> int:  # pragma: no cover
    """Run chunks until told to stop; never returns to the caller's code."""
    # The parent stops children itself; a Ctrl-C meant for it must not spray tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)  # The worker's signal pipe (taskmill.worker.signals) is not ours.
    close_inherited_connections()
    try:
        _probe_sqlite()
        conn.send_bytes(_READY)
        while True:
            try:
                message = conn.recv_bytes()
            except (EOFError, OSError):
                return 0  # The parent is gone or done.
            request = pickle.loads(message)
            if request is None:
                return 0
            index, payload = request
            try:
                chunk = pickle.loads(payload)
                reply = pickle.dumps(("ok", index, [func(item) for item in chunk]),
                                     pickle.HIGHEST_PROTOCOL)
            except BaseException as exc:  # noqa: BLE001 - everything goes back to the caller
                reply = pickle.dumps(("error", index, _describe_exception(exc)),
                                     pickle.HIGHEST_PROTOCOL)
            _drop_broken_connections()
            conn.send_bytes(reply)
    finally:
        _close_own_connections()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass


def _describe_exception(exc: BaseException) -> tuple[bytes | None, str, str]:
    text = "".join(traceback.format_exception(exc))
    try:
        dumped = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
        pickle.loads(dumped)  # Some exceptions pickle but cannot be rebuilt.
        data: bytes | None = dumped
    except Exception:
        data = None
    return data, f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}", text


def _rebuild_exception(body: tuple[bytes | None, str, str], pid: int,
                       first_item: int) -> BaseException:
    data, summary, text = body
    exc: BaseException = pickle.loads(data) if data is not None else ParallelError(summary)
    exc.__cause__ = RemoteTraceback(text)
    exc.add_note(f"Raised in parallel_map child process {pid}, in the chunk starting at "
                 f"item {first_item}.")
    return exc


def _died(child: _Child, chunksize: int) -> ChildDied:
    status = _reap(child.pid, block=True)
    if status is not None and os.WIFSIGNALED(status):
        how = f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    elif status is not None and os.WIFEXITED(status):
        how = f"exited with status {os.WEXITSTATUS(status)}"
    else:
        how = "ended"
    first = child.in_flight[0] * chunksize if child.in_flight else 0
    return ChildDied(f"parallel_map child process {child.pid} {how} while working on the "
                     f"chunk starting at item {first} (out of memory? os._exit() or a crash "
                     "in C code?).")


def _reap(pid: int, *, block: bool) -> int | None:
    try:
        waited, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return None
    return status if waited == pid else None


def _stop_children(children: Iterable[_Child], *, kill: bool) -> None:
    """Tell children to stop (or kill them after an error) and reap every one."""
    children = list(children)
    for child in children:
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
        else:
            with contextlib.suppress(OSError):
                child.conn.send_bytes(pickle.dumps(None))
    for child in children:
        child.conn.close()
        _reap(child.pid, block=True)


def _probe_sqlite() -> None:  # pragma: no cover - runs in children
    """Read each SQLite database file the settings name, on a connection of its own: a lock
    inherited in a held state hangs the child here, where the parent replaces it, rather
    than inside ``func``."""
    for name in _sqlite_files():
        with contextlib.closing(sqlite3.connect(name, timeout=30)) as probe:
            probe.execute("SELECT count(*) FROM sqlite_master").fetchone()


def _drop_broken_connections() -> None:  # pragma: no cover - runs in children
    """As between two requests: a connection that saw an error and no longer works is closed."""
    for wrapper in connections.all(initialized_only=True):
        if wrapper.errors_occurred and not wrapper.in_atomic_block:
            try:
                if not wrapper.is_usable():
                    wrapper.close()
                else:
                    wrapper.errors_occurred = False
            except Exception:
                pass


def _close_own_connections() -> None:  # pragma: no cover - runs in children
    """Close what the child opened, pools included, so the server sees a clean goodbye."""
    for wrapper in connections.all(initialized_only=True):
        try:
            wrapper.close()
            if getattr(wrapper, "_connection_pools", {}).get(wrapper.alias) is not None:
                wrapper.close_pool()  # type: ignore[attr-defined]  # PostgreSQL's only
        except Exception:
            pass
