"""``manage.py taskmill status`` and ``prune``."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

import taskmill
from taskmill.models import Batch, Job, JobError, JobStatus, Worker
from tests.project.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("taskmill", *args, stdout=out)
    return out.getvalue()


def test_status_reports_queues_states_and_workers():
    taskmill.enqueue_many(add, [(1, 1)] * 3)
    add.using(queue_name="other").enqueue(1, 2)
    first = Job.objects.filter(queue_name="default").first()
    Job.objects.filter(id=first.id).update(status=JobStatus.FAILED, finished_at=timezone.now())
    now = timezone.now()
    Worker.objects.create(id="web-1:42:abcd", hostname="web-1", pid=42, queues=["default"],
                          threads=2, started_at=now, last_heartbeat=now)
    report = json.loads(run("status", "--json"))
    queues = {q["queue"]: q for q in report["queues"]}
    assert queues["default"]["counts"] == {"READY": 2, "RUNNING": 0, "SUCCESSFUL": 0, "FAILED": 1}
    assert queues["other"]["counts"]["READY"] == 1
    assert queues["default"]["oldest_waiting_age"] >= 0
    assert [w["hostname"] for w in report["workers"]] == ["web-1"]
    table = run("status")
    assert "default" in table and "web-1" in table


def test_prune_deletes_only_finished_jobs_older_than_the_cutoff():
    old, recent, waiting = (add.enqueue(i, i) for i in range(3))
    long_ago = timezone.now() - timedelta(days=30)
    Job.objects.filter(id=old.id).update(status=JobStatus.SUCCESSFUL, finished_at=long_ago)
    JobError.objects.create(job_id=old.id, attempt=1, exception_class_path="x.Y",
                            created_at=long_ago)
    Job.objects.filter(id=recent.id).update(status=JobStatus.FAILED, finished_at=timezone.now())
    assert "Pruned 1 finished job" in run("prune")
    assert set(Job.objects.values_list("id", flat=True)) == {
        Job.objects.get(id=recent.id).id, Job.objects.get(id=waiting.id).id}
    assert JobError.objects.count() == 0
    assert "Pruned 1 finished job" in run("prune", "--older-than", "0")


def test_prune_removes_finished_batches_and_keeps_running_ones():
    now = timezone.now()
    Batch.objects.create(task_path="x.y", total=1, created_at=now - timedelta(days=30),
                         finished_at=now - timedelta(days=30))
    running = Batch.objects.create(task_path="x.y", total=1, created_at=now - timedelta(days=30))
    run("prune")
    assert list(Batch.objects.values_list("id", flat=True)) == [running.id]


def test_worker_command_rejects_bad_options_clearly():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Unknown queue"):
        call_command("taskmill", "worker", "--queues", "nope", "--burst")
    with pytest.raises(CommandError, match="--threads must be at least 1"):
        call_command("taskmill", "worker", "--threads", "0", "--burst")
