"""Stop signals, acted on by a thread of the worker's, not inside the signal handler.

Python runs a signal handler on the main thread between two bytecodes, wherever that
thread is: inside ``threading.Event.wait()`` too, holding the event's lock. A handler
that sets an event there waits forever on a lock its own thread holds: the SIGTERM of a
deploy deadlocked the worker it should stop, which then ran on until SIGKILL took its
running jobs with it (seen as a worker that logged "SIGINT received" and nothing more).

So the handler does nothing. CPython's own C-level handler writes the number of each
signal to a pipe (:func:`signal.set_wakeup_fd`), whichever thread the signal lands on,
and a daemon thread of ours reads the pipe and calls back, as an ordinary thread may.

Hazard: a process has one wakeup fd. Installing a relay replaces any other (an asyncio
loop's in the same process, say); the worker's processes have none.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType


def _nothing(signum: int, frame: FrameType | None) -> None:
    """A Python-level handler, so that the signal is caught (and written to the pipe)
    rather than handled by default (which would end the process)."""


class SignalRelay:
    """Calls ``callback(signum)`` on a thread of its own for each of ``signals`` the
    process receives, from :meth:`install` on (which the main thread must call)."""

    def __init__(self, signals: Iterable[int], callback: Callable[[int], None]) -> None:
        self.signals = frozenset(signals)
        self.callback = callback

    def install(self) -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)  # The C handler must never block on a full pipe.
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        for signum in self.signals:
            signal.signal(signum, _nothing)
        threading.Thread(target=self._relay, args=(read_end,), name="taskmill-signals",
                         daemon=True).start()

    def _relay(self, read_end: int) -> None:
        while True:
            received = os.read(read_end, 64)
            if not received:
                return
            for signum in received:
                if signum in self.signals:
                    self.callback(signum)
