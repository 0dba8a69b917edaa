"""Stops attempts that overrun their ``timeout`` or are force-cancelled.

A Python thread cannot be killed. The watchdog first raises the exception (``JobTimeout``
or ``Cancelled``) inside the executor thread, which stops ordinary Python code at its
next bytecode and unwinds its ``with`` blocks and transactions. Code blocked in C (a
long ``time.sleep``, a socket read, a C extension) does not see it; if the thread has
not let go of the job after ``grace`` seconds, the watchdog records the failure itself
and asks the process to recycle: it stops claiming, lets its other jobs finish, and
exits, and the supervisor starts a fresh process in its place.
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


def raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Schedule ``exc_type`` to be raised in another thread at its next bytecode."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )
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
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False

    def watch(self, token: object, thread_id: int, seconds: float,
              exc_type: type[BaseException]) -> None:
        """Raise ``exc_type`` in ``thread_id`` unless :meth:`release` is called within ``seconds``."""
        with self._cond:
            deadline = _Deadline(time.monotonic() + seconds, next(self._seq), token, thread_id,
                                 exc_type)
            self._active[id(token)] = deadline
            heapq.heappush(self._heap, deadline)
            self._cond.notify()

    def release(self, token: object) -> None:
        """The attempt ended; forget its deadline."""
        with self._cond:
            self._active.pop(id(token), None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0].at > time.monotonic()):
                    timeout = self._heap[0].at - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                deadline = heapq.heappop(self._heap)
                if self._active.get(id(deadline.token)) is not deadline:
                    continue  # Released, or replaced by a newer deadline.
                if deadline.stage == 0:
                    raise_in_thread(deadline.thread_id, deadline.exc_type)
                    deadline.stage, deadline.at = 1, time.monotonic() + self.grace
                    heapq.heappush(self._heap, deadline)
                    continue
                self._active.pop(id(deadline.token), None)
            logger.error("A job did not stop within %.0fs of its %s; recycling this process.",
                         self.grace, deadline.exc_type.__name__)
            self.on_stuck(deadline.token, deadline.exc_type)
