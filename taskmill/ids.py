"""Job ids: UUIDs whose leading bits are the enqueue time.

Time-ordered ids keep the primary-key index append-only and give "enqueue order" as
the claim's last tie-breaker. Within one process, ids made in the same millisecond
still sort in the order they were made (a 12-bit counter in ``rand_a``, RFC 9562 §6.2).
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_job_id() -> uuid.UUID:
    """Return a UUIDv7 that sorts after every id this process made before."""
    global _last_ms, _counter
    entropy = int.from_bytes(os.urandom(10), "big")
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _counter = ms, entropy >> 71  # a random 9-bit start
        else:  # Same millisecond (or the clock stepped back): keep counting.
            _counter += 1
            if _counter > 0xFFF:
                _last_ms, _counter = _last_ms + 1, 0
            ms = _last_ms
        counter = _counter
    rand_b = entropy & ((1 << 62) - 1)
    return _uuid_from_int((ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b)


def _uuid_from_int(value: int) -> uuid.UUID:
    """``uuid.UUID(int=value)`` without its argument checks (the value is well-formed)."""
    result = object.__new__(uuid.UUID)
    object.__setattr__(result, "int", value)
    object.__setattr__(result, "is_safe", uuid.SafeUUID.unknown)
    return result


def new_worker_id(hostname: str, pid: int) -> str:
    """``host:pid:random`` — unique per process start (containers reuse hosts and pids)."""
    return f"{hostname.replace(',', '_')[:60]}:{pid}:{os.urandom(4).hex()}"
