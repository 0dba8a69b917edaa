"""Processes a test started, found through /proc: to stop a whole group, or to make
each print its threads' stacks before it dies (a hang that says where it is)."""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from pathlib import Path


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every process, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) "
            found[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return found


def in_group(pgid: int) -> list[int]:
    return [pid for pid, (_, group) in _processes().items() if group == pgid]


def descendants(pid: int, *, below: int = 1) -> list[int]:
    """Processes ``below`` or more generations under ``pid``."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in _processes().items():
        children.setdefault(parent, []).append(child)
    found, level = [], [pid]
    for depth in range(1, 10):
        level = [child for parent in level for child in children.get(parent, [])]
        if depth >= below:
            found += level
    return found


def abort_for_stacks(pids: list[int]) -> None:
    """SIGABRT: with PYTHONFAULTHANDLER each prints its threads' stacks to stderr, then dies."""
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGABRT)
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a zombie does not (it runs nothing, holds nothing)."""
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                     if line.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return "zombie" not in state
