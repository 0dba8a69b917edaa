"""A worker's maintenance service run once, as its thread runs it, from a test."""

from __future__ import annotations

from django.db import connections

from taskmill.store import close_store
from taskmill.worker.config import WorkerConfig
from taskmill.worker.process import WorkerProcess


def run_service(name: str) -> None:
    """Run the maintenance service ``name`` of a worker of queue ``default`` once, on the
    connection of its own that its thread uses, and check that this thread's connection
    is neither used nor replaced."""
    worker = WorkerProcess(WorkerConfig(database="default", queues=["default"]), "m:1:w")
    maintenance = worker.maintenance
    assert maintenance is not None
    service = next(service for service in maintenance.services if service.name == name)
    own = connections["default"]
    try:
        service.run()
        assert maintenance.store.connection is not own
    finally:
        close_store(maintenance.store)
    assert connections["default"] is own  # This thread's connection is its own again.
