import pytest

from taskmill.models import Job, JobStatus
from tests.project.models import Execution
from tests.project.tasks import add, record


@pytest.mark.django_db(transaction=True)
def test_burst_worker_runs_every_job_once(start_worker):
    results = [record.enqueue(f"job-{i}") for i in range(20)]
    added = add.enqueue(2, 3)
    worker = start_worker("--burst", "--processes", "2")
    assert worker.wait(timeout=60) == 0, worker.output
    assert Execution.objects.count() == 20
    assert Execution.objects.values("label").distinct().count() == 20
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.SUCCESSFUL}
    assert add.get_result(added.id).return_value == 5
    assert all(r.id for r in results)
