"""Prometheus metrics read from the job tables, and log lines a log system can parse."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from taskmill.logging import JSONFormatter, LogfmtFormatter
from taskmill.models import JobStatus
from tests.jobrows import make_job, make_jobs, make_worker
from tests.project.tasks import add, always_fails

METRICS = "/taskmill/metrics"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(name, sorted labels): value}`` from the Prometheus text format."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def scrape(client, settings):
    settings.TASKMILL_METRICS_TOKEN = "s3cret"

    def get() -> dict:
        response = client.get(METRICS, headers={"Authorization": "Bearer s3cret"})
        assert response.status_code == 200, response.content
        assert response["Content-Type"].startswith("text/plain; version=")
        return samples(response.content.decode())

    return get


@pytest.mark.django_db
def test_metrics_give_queue_depth_outcomes_durations_and_worker_liveness(scrape):
    make_jobs(3, queue_name="emails")
    make_jobs(2, status=JobStatus.RUNNING, queue_name="emails")
    make_jobs(4, status=JobStatus.SUCCESSFUL, ago=60, ran=2.0, task_path="app.tasks.resize")
    make_job(JobStatus.SUCCESSFUL, ago=60, ran=10.0, task_path="app.tasks.resize")
    make_job(JobStatus.FAILED, ago=30, task_path="app.tasks.resize")
    make_job(JobStatus.SUCCESSFUL, ago=3600, task_path="app.tasks.resize")  # before the window
    make_worker("a:1:x", hostname="host-a")
    make_worker("a:2:y", hostname="host-a", age=600)

    m = scrape()

    assert m[("taskmill_queue_jobs", (("queue", "emails"), ("state", "waiting")))] == 3
    assert m[("taskmill_queue_jobs", (("queue", "emails"), ("state", "running")))] == 2
    assert m[("taskmill_queue_oldest_waiting_seconds", (("queue", "emails"),))] >= 0
    finished = (("outcome", "successful"), ("queue", "default"), ("task", "app.tasks.resize"))
    assert m[("taskmill_recent_jobs_finished", finished)] == 5
    failed = (("outcome", "failed"), ("queue", "default"), ("task", "app.tasks.resize"))
    assert m[("taskmill_recent_jobs_finished", failed)] == 1
    median = (("quantile", "0.5"), ("task", "app.tasks.resize"))
    assert m[("taskmill_recent_job_duration_seconds", median)] == pytest.approx(2.0, abs=0.01)
    p99 = (("quantile", "0.99"), ("task", "app.tasks.resize"))
    assert m[("taskmill_recent_job_duration_seconds", p99)] == pytest.approx(10.0, abs=0.01)
    assert m[("taskmill_worker_up", (("host", "host-a"), ("worker", "a:1:x")))] == 1
    assert m[("taskmill_worker_up", (("host", "host-a"), ("worker", "a:2:y")))] == 0
    # Measured on the database's clock (SQLite's has milliseconds).
    assert m[("taskmill_worker_heartbeat_age_seconds",
              (("host", "host-a"), ("worker", "a:2:y")))] == pytest.approx(600, abs=1)
    assert m[("taskmill_workers", (("host", "host-a"),))] == 1
    assert m[("taskmill_window_seconds", ())] == 300


@pytest.mark.django_db
def test_metrics_need_the_token_or_a_staff_session(client, settings, django_user_model):
    settings.TASKMILL_METRICS_TOKEN = "s3cret"
    assert client.get(METRICS).status_code == 403
    assert client.get(METRICS, headers={"Authorization": "Bearer wrong"}).status_code == 403
    user = django_user_model.objects.create_user("viewer", is_staff=True)
    client.force_login(user)
    assert client.get(METRICS).status_code == 403  # staff, but without view_job
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    assert client.get(METRICS).status_code == 200
    settings.TASKMILL_METRICS_TOKEN = None
    client.logout()
    assert client.get(METRICS, headers={"Authorization": "Bearer "}).status_code == 403


@pytest.mark.django_db
def test_a_scrape_costs_the_same_few_queries_however_many_jobs(client, settings):
    settings.TASKMILL_METRICS_TOKEN = "t"

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            client.get(METRICS, headers={"Authorization": "Bearer t"})
        return len(captured)

    few = queries()
    make_jobs(200, status=JobStatus.SUCCESSFUL, ago=10)
    make_jobs(50, status=JobStatus.RUNNING)
    make_worker("w:1:a")
    # PostgreSQL's one more: the oldest open transaction; and one per queue with waiting jobs.
    assert queries() == few <= 8


# -- structured logs -----------------------------------------------------------------------


def log_record(**extra) -> logging.LogRecord:
    logger = logging.getLogger("taskmill.test")
    return logger.makeRecord("taskmill.test", logging.ERROR, __file__, 1,
                             "Job %s failed", ("abc",), None, extra=extra)


def test_json_lines_carry_the_message_and_the_extra_fields():
    line = JSONFormatter().format(log_record(job_id="abc", attempt=2, data={"k": [1]}))
    fields = json.loads(line)
    assert fields["message"] == "Job abc failed"
    assert fields["level"] == "ERROR" and fields["logger"] == "taskmill.test"
    assert fields["job_id"] == "abc" and fields["attempt"] == 2 and fields["data"] == {"k": [1]}
    assert fields["time"].endswith("+00:00")
    assert "\n" not in line


def test_json_lines_include_the_traceback_of_an_exception():
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = log_record()
        record.exc_info = sys.exc_info()
    line = JSONFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_logfmt_quotes_values_with_spaces_and_quotes():
    line = LogfmtFormatter().format(log_record(job_id="abc", note='say "hi"', ok=True))
    assert ' message="Job abc failed" ' in line
    assert " job_id=abc " in line
    assert ' note="say \\"hi\\""' in line
    assert line.endswith(" ok=true")


@pytest.mark.django_db(transaction=True)
def test_a_worker_logs_json_lines_with_the_job_fields(start_worker, monkeypatch):
    monkeypatch.setenv("TASKMILL_TEST_LOG_FORMAT", "json")
    failing = always_fails.enqueue()
    add.enqueue(1, 2)
    worker = start_worker("--burst", "--processes", "1")
    assert worker.wait(timeout=60) == 0, worker.output

    records = [json.loads(line) for line in worker.output.splitlines()
               if line.startswith("{")]
    assert records, worker.output
    worker_lines = [r["message"] for r in records if r["logger"] == "taskmill.worker"]
    assert any(m.startswith("taskmill supervisor") for m in worker_lines), worker.output
    assert any(" started: queues " in m for m in worker_lines), worker.output
    assert not [line for line in worker.output.splitlines()  # no plain-text taskmill lines
                if not line.startswith("{") and ("Worker " in line or "supervisor" in line)]
    (failure,) = [r for r in records if r.get("event") == "job_failed"]
    assert failure["job_id"] == failing.id
    assert failure["task"] == "tests.project.tasks.always_fails"
    assert failure["queue"] == "default" and failure["attempt"] == 1
    assert failure["exception"] == "builtins.ValueError"
    assert failure["worker_id"] and failure["level"] == "ERROR"
