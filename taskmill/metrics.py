"""Prometheus metrics, read from the job tables at scrape time.

Needs the optional ``prometheus`` extra (``pip install django-taskmill[prometheus]``).
Workers keep no metric state of their own: every figure comes from the database when
Prometheus scrapes, so it is the same whichever process answers, and nothing is lost
when a worker restarts. Each scrape costs a few indexed queries (see
:mod:`taskmill.reporting`).

Figures about finished jobs cover a sliding window (``taskmill_window_seconds``, the
last five minutes by default): the job table is pruned, so totals since the beginning
of time cannot be counted honestly. They are gauges; divide by the window for rates.

Serve it with the URL in ``taskmill.urls`` (``/taskmill/metrics``), or register
:class:`TaskmillCollector` in your own registry.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from .backend import taskmill_backend
from .backlogs import BACKLOG_COUNT_CAP, REPORT_COUNT_CAP
from .flow import paused
from .reporting import (
    database_now,
    finished_counts,
    live_workers,
    queue_depths,
    recent_durations,
)
from .store import get_store

try:  # The optional "prometheus" extra; without it the view says how to install it.
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    HAVE_PROMETHEUS = True
except ImportError:  # pragma: no cover - depends on the installation
    HAVE_PROMETHEUS = False

#: Seconds of history the finished-job figures cover.
DEFAULT_WINDOW = 300.0
#: Most recent finished jobs read for the duration quantiles.
DURATION_SAMPLE = 5000
QUANTILES = (0.5, 0.9, 0.99)

class TaskmillCollector:
    """A ``prometheus_client`` collector over one taskmill backend's tables."""

    def __init__(self, database: str = "default", lease_seconds: float = 30.0,
                 window: float = DEFAULT_WINDOW) -> None:
        self.database = database
        self.lease_seconds = lease_seconds
        self.window = window

    @classmethod
    def for_backend(cls, alias: str | None = None, window: float = DEFAULT_WINDOW
                    ) -> TaskmillCollector:
        backend = taskmill_backend(alias)
        return cls(backend.database, backend.config.lease_seconds, window)

    def describe(self) -> list[Any]:
        # Empty: the registry must not call collect() (and query the database) on register.
        return []

    def collect(self) -> Iterator[Any]:
        now = database_now(self.database)
        since = now - dt.timedelta(seconds=self.window)
        yield GaugeMetricFamily("taskmill_window_seconds",
                                "Seconds of history the taskmill_recent_* figures cover.",
                                value=self.window)

        jobs = GaugeMetricFamily("taskmill_queue_jobs",
                                 "Jobs waiting (READY and due), scheduled (READY, later) "
                                 "or running, per queue.", labels=["queue", "state"])
        oldest = GaugeMetricFamily("taskmill_queue_oldest_waiting_seconds",
                                   "Age of the oldest due job that waits, per queue.",
                                   labels=["queue"])
        capped = GaugeMetricFamily(
            "taskmill_queue_jobs_capped",
            "1 when more of a queue's READY jobs wait than counted (its waiting and scheduled "
            f"figures are then lower bounds): a scrape counts up to {REPORT_COUNT_CAP + 1:,}, "
            f"past that a worker's count of the last minute, up to {BACKLOG_COUNT_CAP + 1:,}.",
            labels=["queue"])
        finished = finished_counts(self.database, since)
        for depth in queue_depths(self.database, now, since, finished):
            jobs.add_metric([depth.queue, "waiting"], depth.waiting)
            jobs.add_metric([depth.queue, "scheduled"], depth.scheduled)
            jobs.add_metric([depth.queue, "running"], depth.running)
            oldest.add_metric([depth.queue], depth.oldest_waiting_age or 0.0)
            capped.add_metric([depth.queue], 1.0 if depth.capped else 0.0)
        yield jobs
        yield oldest
        yield capped

        yield from self._finished(since, finished)
        yield from self._workers(now)
        yield self._paused()
        held = get_store(self.database).oldest_snapshot()
        yield GaugeMetricFamily(
            "taskmill_oldest_transaction_seconds",
            "Age of the oldest open transaction on the job database (PostgreSQL; 0 when "
            "none): until it ends, vacuum cannot remove the job rows replaced since.",
            value=0.0 if held is None else held.age)

    def _paused(self) -> Any:
        gauge = GaugeMetricFamily(
            "taskmill_paused", "1 for each pause in force (taskmill.pause); a blank queue or "
            "task means every one.", labels=["queue", "task"])
        for held in paused():
            if held.database == self.database:
                gauge.add_metric([held.queue_name, held.task_path], 1.0)
        return gauge

    def _finished(self, since: dt.datetime, finished: Sequence[Mapping[str, Any]]
                  ) -> Iterator[Any]:
        outcomes = GaugeMetricFamily(
            "taskmill_recent_jobs_finished",
            "Jobs that finished inside the window, by queue, task and outcome.",
            labels=["queue", "task", "outcome"])
        for row in finished:
            outcomes.add_metric([row["queue_name"], row["task_path"], row["status"].lower()],
                                row["n"])
        yield outcomes

        durations = GaugeMetricFamily(
            "taskmill_recent_job_duration_seconds",
            "Run time of the last attempt of jobs that succeeded inside the window, "
            "as quantiles per task.", labels=["task", "quantile"])
        samples = recent_durations(self.database, since, DURATION_SAMPLE)
        for task_path, values in sorted(samples.items()):
            for q in QUANTILES:
                durations.add_metric([task_path, f"{q:g}"],
                                     values[min(len(values) - 1, int(q * len(values)))])
        yield durations

    def _workers(self, now: dt.datetime) -> Iterator[Any]:
        up = GaugeMetricFamily("taskmill_worker_up",
                               "1 while the worker heartbeats within its lease, else 0.",
                               labels=["host", "worker"])
        age = GaugeMetricFamily("taskmill_worker_heartbeat_age_seconds",
                                "Seconds since the worker's last heartbeat.",
                                labels=["host", "worker"])
        per_host: dict[str, int] = {}
        for worker in live_workers(self.database, now):
            alive = worker.heartbeat_age <= self.lease_seconds
            up.add_metric([worker.hostname, worker.id], 1.0 if alive else 0.0)
            age.add_metric([worker.hostname, worker.id], worker.heartbeat_age)
            per_host[worker.hostname] = per_host.get(worker.hostname, 0) + int(alive)
        hosts = GaugeMetricFamily("taskmill_workers", "Live worker processes per host.",
                                  labels=["host"])
        for host, count in sorted(per_host.items()):
            hosts.add_metric([host], count)
        yield up
        yield age
        yield hosts


def _authorized(request: HttpRequest) -> bool:
    """A bearer token (``TASKMILL_METRICS_TOKEN``) for Prometheus, or a staff session."""
    token = getattr(settings, "TASKMILL_METRICS_TOKEN", None)
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header[len("Bearer "):].encode(), str(token).encode())
    user = request.user if hasattr(request, "user") else None
    return bool(user and user.is_authenticated and user.is_active and user.is_staff
                and user.has_perm("taskmill.view_job"))


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of :class:`TaskmillCollector` (``?backend=alias``)."""
    if not _authorized(request):
        return HttpResponse("Forbidden: send 'Authorization: Bearer <TASKMILL_METRICS_TOKEN>' "
                            "or log in as staff.\n", status=403, content_type="text/plain")
    if not HAVE_PROMETHEUS:
        return HttpResponse("prometheus_client is not installed: "
                            "pip install 'django-taskmill[prometheus]'\n",
                            status=501, content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TaskmillCollector.for_backend(request.GET.get("backend")))
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
