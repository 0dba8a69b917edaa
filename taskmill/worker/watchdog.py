"""Stops attempts that overrun their ``timeout`` or are force-cancelled.

A Python thread cannot be killed. The watchdog first raises the exception (``JobTimeout``
or ``Cancelled``) inside the executor thread, which stops ordinary Python code at its
next bytecode and unwinds its ``with`` blocks and transactions. Code blocked in C (a
long ``time.sleep``, a socket read, a C extension) does not see it; if the thread has
not let go of the job after ``grace`` seconds, the watchdog records the failure itself
and asks the process to recycle: it stops claiming, lets its other jobs finish, and
exits, and the supervisor starts a fresh process in its place.

Hazards, and how they are closed:

* An exception raised into a thread lands at its next bytecode, which may come after the
  task body returned. So the executor calls :meth:`Watchdog.release` as the body ends:
  under the lock the watchdog raises with, it drops the deadline, takes back an
  exception raised but not yet landed, and refuses any later deadline for that attempt
  (a forced cancel that comes too late). Nothing lands outside the task body after that.
* An exception can also land right after a lock was taken in Python code, inside
  ``threading.Condition.__enter__`` say, so that the lock is never let go. The lock
  :meth:`release` takes is therefore a plain ``threading.Lock``, whose ``with`` has no
  such gap; the watchdog sleeps on an event of its own that only it waits on. Code of
  the task's own is not so protected: a timeout landing in the middle of its locking can
  leave that lock held (the process should then be recycled; ``--max-tasks-per-child``).
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger("taskmill.worker")


@dataclass(order=True)
class _Deadline:
    at: float
    seq: int
    token: object = field(compare=False)
    thread_id: int = field(compare=False)
    exc_type: type[BaseException] = field(compare=False)
    stage: int = field(default=0, compare=False)  # 0: raise in thread, 1: grace expired


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc


def raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Schedule ``exc_type`` to be raised in another thread at its next bytecode."""
    done = _set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))
    return int(done) == 1


class Watchdog(threading.Thread):
    """One per worker process; cheap when no job has a deadline."""

    def __init__(self, on_stuck: Callable[[object, type[BaseException]], None],
                 grace: float = 5.0) -> None:
        super().__init__(name="taskmill-watchdog", daemon=True)
        self.on_stuck = on_stuck
        self.grace = grace
        self._heap: list[_Deadline] = []
        self._active: dict[int, _Deadline] = {}
        #: Attempts whose body has ended: no deadline is armed for them any more.
        self._closed: set[int] = set()
        #: The thread of each attempt something was raised into.
        self._raised: dict[int, int] = {}
        self._seq = itertools.count()
        #: Guards the dicts and the heap. A C lock: see the module's hazards.
        self._lock = threading.Lock()
        #: Wakes the watchdog early (a nearer deadline, a stop); only it waits on it.
        self._wakeup = threading.Event()
        self._stopped = False

    def watch(self, token: object, thread_id: int, seconds: float,
              exc_type: type[BaseException]) -> None:
        """Raise ``exc_type`` in ``thread_id`` unless :meth:`release` is called within ``seconds``."""
        with self._lock:
            if id(token) in self._closed:
                return  # The body already ended: too late to stop it.
            deadline = _Deadline(time.monotonic() + seconds, next(self._seq), token, thread_id,
                                 exc_type)
            self._active[id(token)] = deadline
            heapq.heappush(self._heap, deadline)
        self._wakeup.set()

    def release(self, token: object) -> None:
        """The attempt's body ended (called from its thread): forget its deadline, take
        back an exception raised into the thread but not landed, arm no more."""
        with self._lock:
            self._closed.add(id(token))
            self._active.pop(id(token), None)
            thread_id = self._raised.pop(id(token), None)
            if thread_id is not None:
                _set_async_exc(ctypes.c_ulong(thread_id), None)  # Inline: no Python frame.

    def forget(self, token: object) -> None:
        """The attempt is over for good: drop what :meth:`release` kept of it."""
        with self._lock:
            self._closed.discard(id(token))
            self._raised.pop(id(token), None)
            self._active.pop(id(token), None)

    def stop(self) -> None:
        self._stopped = True
        self._wakeup.set()

    def run(self) -> None:
        while True:
            with self._lock:
                due_in = self._heap[0].at - time.monotonic() if self._heap else None
            if self._stopped:
                return
            if due_in is None or due_in > 0:
                self._wakeup.wait(due_in)
                self._wakeup.clear()
                continue
            with self._lock:
                if not self._heap or self._heap[0].at > time.monotonic():
                    continue
                deadline = heapq.heappop(self._heap)
                if self._active.get(id(deadline.token)) is not deadline:
                    continue  # Released, or replaced by a newer deadline.
                if deadline.stage == 0:
                    raise_in_thread(deadline.thread_id, deadline.exc_type)
                    self._raised[id(deadline.token)] = deadline.thread_id
                    deadline.stage, deadline.at = 1, time.monotonic() + self.grace
                    heapq.heappush(self._heap, deadline)
                    continue
                self._active.pop(id(deadline.token), None)
            logger.error("A job did not stop within %.0fs of its %s; recycling this process.",
                         self.grace, deadline.exc_type.__name__)
            try:
                self.on_stuck(deadline.token, deadline.exc_type)
            except Exception:  # The watchdog must outlive it: other jobs have deadlines.
                logger.exception("Giving up on a stuck job failed.")
