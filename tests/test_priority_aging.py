"""PRIORITY_AGING: under steady higher-priority load a low-priority job still runs.

Measured both ways in one test: the same load without aging leaves the low-priority job
for last; with aging it runs while most of the load still waits.
"""

from __future__ import annotations

import pytest

from taskmill.models import Job, JobStatus
from tests.conftest import wait_until
from tests.project.flow_tasks import busy_for
from tests.project.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

LOAD = 150  # Jobs of priority 10, 30 ms each: about 4.5 s of work for one thread.
#: Without aging the low job waits for all of any load: a short one shows it.
SHORT_LOAD = 30


def low_job_position(start_worker, env: dict[str, str], load: int = LOAD) -> tuple[int, Job]:
    """Where the low-priority job ran among all the jobs (0: first), and its row."""
    Execution.objects.all().delete()
    Job.objects.all().delete()
    low = busy_for.using(priority=6).enqueue("low", 0.03)
    for i in range(load):
        busy_for.using(priority=10).enqueue(f"high-{i}", 0.03)
    worker = start_worker("--processes", "1", "--threads", "1", env=env)
    wait_until(lambda: not Job.objects.filter(status__in=[JobStatus.READY, JobStatus.RUNNING])
               .exists(), timeout=90, message="the load to drain")
    worker.kill()
    order = list(Execution.objects.order_by("id").values_list("label", flat=True))
    assert len(order) == load + 1
    return order.index("low"), Job.objects.get(id=low.id)


def test_a_low_priority_job_is_not_starved_when_aging_is_on(start_worker):
    without, _ = low_job_position(start_worker, {}, load=SHORT_LOAD)
    with_aging, low = low_job_position(start_worker, {"TASKMILL_TEST_PRIORITY_AGING": "0.5"})
    assert without == SHORT_LOAD  # Starved: it ran only once the load was gone.
    # 4 steps of 0.5 s (priority 6 to 10; the service looks twice a second) is about
    # 2.5 s of the load's 4.5 s.
    assert with_aging < LOAD * 0.8, with_aging
    assert low.priority == 10 and low.aged_at is not None  # Raised, never past the top.
