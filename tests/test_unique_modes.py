"""Unique jobs beyond "one READY or RUNNING job per key": while waiting, and per period."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from taskmill.compat import InvalidTask
from taskmill.models import Job, JobStatus
from taskmill.store import get_store
from taskmill.testing import run_pending
from tests.project.flow_tasks import debounced, hourly_report

pytestmark = pytest.mark.django_db(transaction=True)


def test_unique_while_waiting_drops_a_duplicate_only_while_the_first_waits():
    first = debounced.enqueue("x")
    assert debounced.enqueue("x").id == first.id  # Waiting: the duplicate is dropped.
    (claimed,) = get_store(connection).claim(["default"], 10, "test:1:w")  # Now it runs.
    assert str(claimed.id) == first.id
    second = debounced.enqueue("x")  # It may have read stale data: a new one waits.
    assert second.id != first.id
    assert debounced.enqueue("x").id == second.id
    assert Job.objects.get(id=first.id).status == JobStatus.RUNNING
    assert Job.objects.filter(status=JobStatus.READY).count() == 1
    assert debounced.enqueue("y").id not in (first.id, second.id)  # Another key.


def test_unique_for_a_period_counts_finished_jobs():
    first = hourly_report.enqueue("march")
    assert run_pending() == 1
    assert Job.objects.get(id=first.id).status == JobStatus.SUCCESSFUL
    again = hourly_report.enqueue("march")
    assert again.id == first.id  # Finished, but within the hour: not enqueued again.
    assert Job.objects.count() == 1
    assert hourly_report.enqueue("april").id != first.id


def test_after_the_period_the_key_is_free_again():
    short = hourly_report.using(unique_period=0.5)
    first = short.enqueue("q")
    run_pending()
    assert short.enqueue("q").id == first.id
    time.sleep(0.7)
    assert short.enqueue("q").id != first.id
    assert Job.objects.count() == 2


@pytest.mark.parametrize(("options", "message"), [
    ({"unique_while": "sometimes"}, "unique_while must be 'active' or 'waiting'"),
    ({"unique_period": -1}, "unique_period must be greater than 0"),
    ({"unique_period": "1h"}, "unique_period must be a number"),
    ({"unique_while": "waiting", "unique_period": 60}, "cannot be combined"),
])
def test_bad_unique_options_are_refused_where_the_task_is_defined(options, message):
    with pytest.raises(InvalidTask, match=message):
        debounced.using(unique_while=None).using(**options)
    assert not Job.objects.exists()
