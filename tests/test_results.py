"""Results are readable whatever became of the task, and reading one imports nothing."""

from __future__ import annotations

import sys
from io import StringIO

import pytest
from django.core.management import call_command

from taskmill.compat import TaskResultStatus, default_task_backend
from taskmill.models import JobStatus
from tests.jobrows import make_job

pytestmark = pytest.mark.django_db

LONELY = "tests.project.imported_only_by_workers.lonely"


def test_the_result_of_a_job_whose_task_was_renamed_can_be_read_and_cancelled():
    job = make_job(JobStatus.FAILED, task_path="tests.project.tasks.renamed_long_ago")
    result = default_task_backend.get_result(str(job.id))
    assert result.status == TaskResultStatus.FAILED
    assert result.task.module_path == "tests.project.tasks.renamed_long_ago"
    out = StringIO()
    call_command("taskmill", "cancel", str(job.id), stdout=out)
    assert "had already finished (FAILED); nothing to cancel" in out.getvalue()


def test_reading_a_result_never_imports_the_module_its_row_names():
    assert "tests.project.imported_only_by_workers" not in sys.modules
    job = make_job(JobStatus.SUCCESSFUL, task_path=LONELY, return_value="ran")
    result = default_task_backend.get_result(str(job.id))
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, "ran")
    assert result.task.module_path == LONELY
    assert "tests.project.imported_only_by_workers" not in sys.modules


def test_a_job_of_a_queue_no_longer_configured_is_still_readable():
    from tests.project.tasks import add

    job = make_job(JobStatus.SUCCESSFUL, task_path=add.module_path, queue_name="retired",
                   return_value=3)
    result = add.get_result(str(job.id))
    assert (result.task.queue_name, result.return_value) == ("retired", 3)
