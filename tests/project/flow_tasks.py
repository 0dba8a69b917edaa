"""Tasks for the flow-control tests: rate limits, snoozes, fairness, pauses."""

import os
import time

from taskmill import Snooze, task

from .models import Execution


def _log(label: str, **value: object) -> None:
    now = time.time()
    Execution.objects.create(label=label, pid=os.getpid(), started=now, finished=now,
                             value=value or None)


@task(rate_limit="10/s", max_attempts=1)
def rated(label: str) -> None:
    _log(label)


@task(takes_context=True, max_attempts=1)
def snoozes_then_runs(context, label: str, times: int) -> int:
    """Snoozes ``times`` times (counted in its own rows), then succeeds."""
    before = Execution.objects.filter(label=label).count()
    _log(label, attempt=context.attempt)
    if before < times:
        raise Snooze(0.05)
    return before


@task(max_attempts=2)
def always_snoozes(label: str) -> None:
    _log(label)
    raise Snooze(0)


@task()
def tenant_job(label: str) -> None:
    _log(label)


@task(queue_name="other")
def other_queue_job(label: str) -> None:
    _log(label)


@task(unique_while="waiting")
def debounced(label: str) -> None:
    _log(label)


@task(unique_period=3600)
def hourly_report(label: str) -> None:
    _log(label)


@task()
def busy_for(label: str, seconds: float) -> None:
    time.sleep(seconds)
    _log(label)


@task(rate_limit="5/s", concurrency_limit=1, max_attempts=1)
def rated_and_limited(label: str) -> None:
    started = time.time()
    time.sleep(0.05)
    Execution.objects.create(label=label, pid=os.getpid(), started=started, finished=time.time())


@task(rate_limit="5/s", rate_key="partner-api", max_attempts=1)
def partner_lookup(label: str) -> None:
    _log(label)


@task(rate_limit="5/s", rate_key="partner-api", max_attempts=1)
def partner_update(label: str) -> None:
    _log(label)
