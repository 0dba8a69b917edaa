"""``taskmill status`` as a table and as JSON; ``taskmill prune`` reporting its progress."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from taskmill.cli import prune
from taskmill.models import Job, JobError, JobStatus
from tests.jobrows import make_error, make_job, make_jobs, make_worker


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("taskmill", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_status_prints_an_aligned_table_of_queues_and_workers_by_host():
    make_jobs(3, ago=90)
    make_jobs(2, status=JobStatus.SUCCESSFUL, queue_name="a-much-longer-queue-name")
    make_job(JobStatus.FAILED)
    make_worker("host-a:10:aa", hostname="host-a")
    make_worker("host-b:11:bb", hostname="host-b", age=500)

    out, _ = run("status")
    lines = out.splitlines()

    header = next(line for line in lines if line.startswith("QUEUE"))
    queue_rows = lines[lines.index(header) + 1:lines.index(header) + 4]
    assert [row.split()[0] for row in queue_rows] == ["a-much-longer-queue-name", "default",
                                                     "(all)"]
    # Right-aligned numbers end in the same column as their header.
    ready_end = header.index("READY") + len("READY")
    assert all(row[ready_end - 1].isdigit() for row in queue_rows)
    default = queue_rows[1].split()
    assert default[1:5] == ["3", "0", "0", "1"]
    assert default[5].endswith("s")  # oldest waiting: ~90 s, printed as an age
    assert float(default[5][:-1]) >= 89
    assert "host-a:10:aa" in out and "host-b:11:bb" in out
    assert "(stale: past its lease)" in next(line for line in lines if "host-b" in line)
    assert "2 worker process(es) on 2 host(s)." in out


@pytest.mark.django_db
def test_status_json_is_for_scripts():
    make_jobs(2)
    make_worker("host-a:10:aa", hostname="host-a")
    out, _ = run("status", "--json")
    report = json.loads(out)
    (queue,) = report["queues"]
    assert queue["queue"] == "default" and queue["counts"]["READY"] == 2
    assert report["workers"][0]["hostname"] == "host-a"


@pytest.mark.django_db
def test_status_says_so_when_there_is_nothing():
    out, _ = run("status")
    assert "No jobs waiting or running, and none finished in the last 60 minutes." in out
    assert "No live workers." in out


@pytest.mark.django_db
def test_a_big_prune_reports_progress_and_keeps_recent_and_active_jobs(monkeypatch):
    monkeypatch.setattr(prune, "PROGRESS_MIN_ROWS", 50)
    monkeypatch.setattr(prune, "SLICE_ROWS", 40)
    old = make_jobs(90, status=JobStatus.SUCCESSFUL, ago=3 * 86400)
    old += make_jobs(30, status=JobStatus.FAILED, ago=2 * 86400)
    make_error(old[-1])
    recent = make_jobs(5, status=JobStatus.SUCCESSFUL, ago=60)
    waiting = make_job(ago=5 * 86400)

    out, err = run("prune", "--older-than", "86400")

    assert out.strip() == "Pruned 120 finished job(s) older than 86400s."
    progress = err.strip().splitlines()
    assert len(progress) == 3
    assert progress[-1] == "Pruning: 120 of 120 (100%)"
    assert set(Job.objects.values_list("id", flat=True)) == {j.id for j in recent} | {waiting.id}
    assert not JobError.objects.exists()


@pytest.mark.django_db
def test_a_small_prune_prints_one_line():
    make_jobs(3, status=JobStatus.SUCCESSFUL, ago=3 * 86400)
    out, err = run("prune", "--older-than", "86400")
    assert out.strip() == "Pruned 3 finished job(s) older than 86400s."
    assert err == ""


@pytest.mark.django_db
def test_a_big_purge_reports_progress_and_spares_running_jobs_and_other_queues(monkeypatch):
    from taskmill.cli import purge

    monkeypatch.setattr(purge, "PROGRESS_MIN_ROWS", 20)
    for hours in range(10):
        make_jobs(3, ago=hours * 3600)
    running = make_jobs(2, status=JobStatus.RUNNING)
    other = make_jobs(3, queue_name="other")

    out, err = run("purge", "--queue", "default")

    assert out.strip() == "Purged 30 waiting job(s) (queue 'default'); running jobs go on."
    progress = err.strip().splitlines()
    assert len(progress) == purge.SLICES
    assert progress[0] != progress[-1] == "Purging: 30 of 30 (100%)"
    assert set(Job.objects.values_list("id", flat=True)) == {j.id for j in running + other}
