"""The dashboard: who may see it, what its first paint and its JSON say, what they cost."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from taskmill.models import JobStatus
from tests.jobrows import make_error, make_job, make_jobs, make_worker

PAGE = "/taskmill/"
DATA = "/taskmill/dashboard.json"
XSS = "<script>window.__pwned = 1</script>"


@pytest.fixture
def staff(django_user_model):
    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    return user


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def test_the_dashboard_urls_are_the_ones_projects_include():
    assert reverse("taskmill:dashboard") == PAGE
    assert reverse("taskmill:dashboard-data") == DATA


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_login_and_the_json_refuses_them(client):
    page = client.get(PAGE)
    assert page.status_code == 302
    assert page["Location"].startswith(reverse("admin:login"))
    data = client.get(DATA)
    assert data.status_code == 403
    assert data.json() == {"error": "staff login required"}


@pytest.mark.django_db
def test_users_who_are_not_staff_get_nothing_even_with_the_permission(client, django_user_model):
    user = django_user_model.objects.create_user("visitor", password="pw")
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(user)
    assert client.get(PAGE).status_code == 302
    assert client.get(DATA).status_code == 403


@pytest.mark.django_db
def test_staff_without_the_view_job_permission_are_refused(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("clerk", is_staff=True))
    assert client.get(PAGE).status_code == 403
    assert client.get(DATA).status_code == 403


@pytest.mark.django_db
def test_staff_with_view_job_see_the_numbers_without_javascript(staff_client):
    make_jobs(3, queue_name="emails")
    make_jobs(2, status=JobStatus.SUCCESSFUL, ago=60)
    make_job(JobStatus.FAILED, ago=30)
    make_job(JobStatus.RUNNING, progress={"current": 3, "total": 4, "message": "step three"},
             lease_owner="web-1:1:aa")
    make_worker("web-1:1:aa", hostname="web-1")

    response = staff_client.get(PAGE)

    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    html = response.content.decode()
    assert '<span class="tm-value" data-total="waiting">3</span>' in html
    assert '<span class="tm-value" data-total="succeeded">2</span>' in html
    assert '<span class="tm-value" data-total="failed">1</span>' in html
    assert '<span class="tm-value" data-total="failure_rate">33.3%</span>' in html
    assert "<td>emails</td>" in html
    assert 'value="0.7500"' in html and "step three" in html
    assert "<td>web-1</td><td>web-1:1:aa</td>" in html
    assert html.count('<rect class="tm-bar-ok"') == 60  # one bar per minute, server-drawn


@pytest.mark.django_db
def test_task_text_is_escaped_never_rendered_as_html(staff_client):
    make_job(JobStatus.RUNNING, task_path=XSS, queue_name=XSS, args=[XSS],
             progress={"current": 1, "total": 2, "message": XSS})
    make_job(JobStatus.FAILED, task_path=XSS, ago=10)

    html = staff_client.get(PAGE).content.decode()

    assert "<script>window" not in html
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html


@pytest.mark.django_db
def test_the_polled_json_reports_queues_throughput_running_workers_and_tasks(staff_client):
    now = timezone.now()
    make_jobs(2)                                                        # waiting
    make_job(run_after=now + dt.timedelta(hours=1))                    # scheduled
    make_jobs(4, status=JobStatus.SUCCESSFUL, ago=120, ran=0.5)
    make_job(JobStatus.SUCCESSFUL, task_path="app.tasks.slow", ago=300, ran=20)
    failed = make_job(JobStatus.FAILED, task_path="app.tasks.broken", ago=200)
    make_error(failed)
    make_job(JobStatus.SUCCESSFUL, ago=3 * 3600)                       # outside the hour
    make_job(JobStatus.RUNNING, queue_name="other", lease_owner="w:2:bb",
             progress={"current": 5, "total": 10, "message": "half"})
    make_worker("w:1:aa", hostname="host-a")
    make_worker("w:2:bb", hostname="host-b", age=999)                  # past its lease

    data = staff_client.get(DATA).json()

    assert data["totals"] == {"waiting": 2, "scheduled": 1, "running": 1, "succeeded": 5,
                              "failed": 1, "failure_rate": pytest.approx(1 / 6),
                              "capped": False}
    queues = {q["queue"]: q for q in data["queues"]}
    assert queues["default"]["waiting"] == 2 and queues["default"]["scheduled"] == 1
    assert queues["default"]["oldest_waiting_age"] >= 0
    assert queues["other"]["running"] == 1
    assert len(data["throughput"]) == 60
    assert sum(p["succeeded"] for p in data["throughput"]) == 5
    assert sum(p["failed"] for p in data["throughput"]) == 1
    (running,) = data["running"]
    assert running["progress"] == {"current": 5, "total": 10, "message": "half",
                                   "fraction": 0.5}
    assert running["worker"] == "w:2:bb"
    hosts = {h["hostname"]: h["workers"] for h in data["hosts"]}
    assert hosts["host-a"][0]["alive"] is True
    assert hosts["host-b"][0]["alive"] is False
    assert data["slowest"][0]["task"] == "app.tasks.slow"
    assert data["slowest"][0]["max_seconds"] == pytest.approx(20, abs=0.01)
    assert data["failing"] == [{"task": "app.tasks.broken", "succeeded": 0, "failed": 1,
                                "failure_rate": 1.0}]


@pytest.mark.django_db
def test_a_poll_costs_the_same_few_queries_however_many_jobs_there_are(staff_client):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get(DATA).status_code == 200
        return len(captured)

    make_jobs(2, status=JobStatus.RUNNING)
    make_jobs(1)  # Waiting jobs cost a query per queue that has any, however many.
    few = queries()
    make_jobs(300, status=JobStatus.SUCCESSFUL, ago=100)
    make_jobs(30, status=JobStatus.RUNNING, progress={"current": 1, "total": 2, "message": ""})
    make_jobs(100)
    make_worker("w:1:aa")
    make_worker("w:2:bb", hostname="other")
    assert queries() == few <= 14


@pytest.mark.django_db
def test_the_dashboard_only_answers_reads(staff_client):
    assert staff_client.post(PAGE).status_code == 405
    assert staff_client.post(DATA).status_code == 405
