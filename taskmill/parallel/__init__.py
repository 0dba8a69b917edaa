"""Parallel work: ``parallel_map`` on this machine, batches across every worker."""

from __future__ import annotations

from .batch import BatchStatus, enqueue_batch, get_batch
from .map import ChildDied, ParallelError, RemoteTraceback, parallel_map

__all__ = ["BatchStatus", "ChildDied", "ParallelError", "RemoteTraceback", "enqueue_batch",
           "get_batch", "parallel_map"]
