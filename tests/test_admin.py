"""The job admin: fast lists over big tables, errors and progress, permission-gated actions."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from taskmill.admin import CappedPaginator
from taskmill.models import Batch, Job, JobStatus
from tests.jobrows import TASK, make_error, make_job, make_jobs, make_worker

JOBS = "/admin/taskmill/job/"
XSS = "<script>window.__pwned = 1</script>"


@pytest.fixture
def login(client, django_user_model):
    """``login("view_job", "retry_job")`` → the test client, as staff with those permissions."""

    def login_as(*codenames: str) -> Client:
        name = "ops-" + "-".join(codenames)
        user = django_user_model.objects.create_user(name, password="pw", is_staff=True)
        user.user_permissions.add(*Permission.objects.filter(content_type__app_label="taskmill",
                                                             codename__in=codenames))
        client.force_login(user)
        return client

    return login_as


def act(client: Client, action: str, jobs: list[Job], **extra: str):
    data = {"action": action, "_selected_action": [str(j.id) for j in jobs], **extra}
    return client.post(JOBS, data, follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def status_of(job: Job) -> str:
    return Job.objects.values_list("status", flat=True).get(id=job.id)


def offered_actions(client: Client) -> set[str]:
    html = client.get(JOBS).content.decode()
    return set(re.findall(r'<option value="(\w+)">', html)) - {""}


# -- the list ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_job_list_costs_the_same_queries_with_2000_rows_as_with_5(login):
    client = login("view_job")
    make_jobs(5)

    def changelist_queries(query: str = "") -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(JOBS + query)
        assert response.status_code == 200
        return [q["sql"] for q in captured.captured_queries]

    few = changelist_queries()
    make_jobs(1000, status=JobStatus.SUCCESSFUL, ago=600,
              progress={"current": 1, "total": 1, "message": "done"})
    make_jobs(500, status=JobStatus.FAILED, ago=600)
    make_jobs(495, status=JobStatus.RUNNING, queue_name="other")
    many = changelist_queries()
    filtered = changelist_queries("?status__exact=FAILED&queue=default&q=record")

    assert len(many) == len(few) <= 10, "\n".join(many)
    assert len(filtered) == len(few)
    for sql in many + filtered:
        # Counting is capped: every COUNT of the job table wraps a LIMITed subquery.
        if "COUNT(" in sql.upper() and "taskmill_job" in sql:
            assert "LIMIT" in sql.upper(), sql


@pytest.mark.django_db
def test_past_the_cap_the_list_says_it_estimates_instead_of_counting(login, monkeypatch):
    monkeypatch.setattr(CappedPaginator, "cap", 100)
    client = login("view_job")
    make_jobs(130)
    html = client.get(JOBS).content.decode()
    assert "More than 100 jobs match" in html
    assert client.get(JOBS + "?p=2").status_code == 200
    make_jobs(1, status=JobStatus.FAILED)
    assert "More than 100" not in client.get(JOBS + "?status__exact=FAILED").content.decode()


@pytest.mark.django_db
def test_filters_by_status_queue_and_task_and_search_by_id_or_task(login):
    client = login("view_job")
    failed = make_job(JobStatus.FAILED, task_path="app.tasks.broken")
    ready = make_job(queue_name="reports", task_path="app.tasks.report")
    make_jobs(3)

    def listed(query: str) -> set[str]:
        response = client.get(JOBS + query)
        assert response.status_code == 200
        return {str(job.id) for job in response.context["cl"].result_list}

    assert listed("?status__exact=FAILED") == {str(failed.id)}
    assert listed("?queue=reports") == {str(ready.id)}
    assert listed("?task=app.tasks.broken") == {str(failed.id)}
    assert listed(f"?q={ready.id}") == {str(ready.id)}
    assert listed("?q=tasks.rep") == {str(ready.id)}
    assert listed("?q=not-a-uuid-nor-a-task") == set()
    html = client.get(JOBS).content.decode()
    assert "?queue=reports" in html and "?task=app.tasks.broken" in html
    assert "Show counts" not in html  # facets would group the whole history
    assert f'<span title="{ready.id}">…{ready.id.hex[-12:]}</span>' in html


@pytest.mark.django_db
def test_the_list_shows_progress_as_a_bar(login):
    client = login("view_job")
    make_job(JobStatus.RUNNING, progress={"current": 30, "total": 120, "message": "rows"})
    html = client.get(JOBS).content.decode()
    assert '<progress class="taskmill-progress" value="0.2500" max="1"' in html
    assert "25%" in html


@pytest.mark.django_db
def test_a_job_page_shows_each_failed_attempt_with_its_traceback(login):
    client = login("view_job")
    job = make_job(JobStatus.FAILED, attempts=2)
    make_error(job, 1, "Traceback (most recent call last):\nRuntimeError: first try\n",
               "builtins.RuntimeError")
    make_error(job, 2, "Traceback (most recent call last):\nValueError: second try\n")
    html = client.get(f"{JOBS}{job.id}/change/").content.decode()
    assert "builtins.RuntimeError" in html and "RuntimeError: first try" in html
    assert "ValueError: second try" in html
    assert html.count('<pre class="taskmill-traceback">') == 2


@pytest.mark.django_db
def test_job_arguments_and_messages_are_escaped_never_rendered_as_html(login):
    client = login("view_job")
    job = make_job(JobStatus.FAILED, task_path=XSS, args=[XSS], kwargs={"k": XSS},
                   progress={"current": 1, "total": 2, "message": XSS})
    make_error(job, 1, traceback=XSS, exception=XSS)
    pages = [client.get(JOBS).content.decode(),
             client.get(f"{JOBS}{job.id}/change/").content.decode()]
    for html in pages:
        assert "<script>window" not in html
        assert "&lt;script&gt;" in html


@pytest.mark.django_db
def test_jobs_cannot_be_added_edited_or_deleted_by_hand(login):
    client = login("view_job", "add_job", "change_job", "delete_job")
    job = make_job()
    assert client.get(f"{JOBS}add/").status_code == 403
    assert client.post(f"{JOBS}{job.id}/change/", {"status": "FAILED"}).status_code == 403
    assert client.post(f"{JOBS}{job.id}/delete/", {"post": "yes"}).status_code == 403
    assert status_of(job) == JobStatus.READY
    assert "delete_selected" not in offered_actions(client)


@pytest.mark.django_db
def test_a_batch_page_counts_its_children_by_state_and_links_to_them(login):
    client = login("view_job", "view_batch", "view_worker")
    batch = Batch.objects.create(task_path=TASK, total=3, created_at=timezone.now())
    children = make_jobs(2, batch=batch) + make_jobs(1, status=JobStatus.FAILED, batch=batch)
    make_jobs(4)  # not in the batch

    html = client.get(f"/admin/taskmill/batch/{batch.id}/change/").content.decode()
    assert ">Ready: 2</a>" in html and ">Failed: 1</a>" in html
    link = re.search(r'href="([^"]+status__exact=READY)"', html).group(1).replace("&amp;", "&")
    listed = client.get(link).context["cl"].result_list
    assert {job.id for job in listed} == {job.id for job in children[:2]}
    assert client.get("/admin/taskmill/batch/").status_code == 200


@pytest.mark.django_db
def test_the_worker_list_shows_live_workers_read_only(login):
    client = login("view_worker")
    make_worker("host-a:1:aa", hostname="host-a")
    html = client.get("/admin/taskmill/worker/").content.decode()
    assert "host-a:1:aa" in html
    assert client.post("/admin/taskmill/worker/host-a:1:aa/delete/",
                       {"post": "yes"}).status_code == 403


# -- actions -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_each_action_is_offered_only_with_its_permission(login):
    assert offered_actions(login("view_job")) == set()
    client = login("view_job", "retry_job")
    assert offered_actions(client) == {"retry_jobs"}


@pytest.mark.django_db
@pytest.mark.parametrize("codename", ["cancel_job", "purge_job"])
def test_other_permissions_offer_their_actions(client, django_user_model, codename):
    user = django_user_model.objects.create_user("u", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_job", codename]))
    client.force_login(user)
    expected = {"cancel_job": {"cancel_jobs", "force_cancel_jobs"},
                "purge_job": {"purge_waiting_jobs"}}[codename]
    assert offered_actions(client) == expected


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["retry_jobs", "cancel_jobs", "force_cancel_jobs",
                                    "purge_waiting_jobs"])
def test_posting_an_action_without_its_permission_changes_nothing(login, action):
    client = login("view_job")
    ready = make_job()
    failed = make_job(JobStatus.FAILED)
    response = act(client, action, [ready, failed], post="yes")
    assert response.status_code == 200
    assert status_of(ready) == JobStatus.READY
    assert status_of(failed) == JobStatus.FAILED


@pytest.mark.django_db
def test_actions_need_the_csrf_token(django_user_model):
    user = django_user_model.objects.create_superuser("root", password="pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    job = make_job()
    response = client.post(JOBS, {"action": "cancel_jobs", "_selected_action": [str(job.id)]})
    assert response.status_code == 403
    assert status_of(job) == JobStatus.READY


@pytest.mark.django_db
def test_retry_queues_failed_jobs_again_and_says_so(login):
    client = login("view_job", "retry_job")
    failed = make_jobs(2, status=JobStatus.FAILED)
    response = act(client, "retry_jobs", failed)
    assert [status_of(job) for job in failed] == [JobStatus.READY, JobStatus.READY]
    assert "Queued 2 jobs to run again." in messages_of(response)


@pytest.mark.django_db
def test_cancel_stops_waiting_jobs_and_flags_running_ones(login):
    client = login("view_job", "cancel_job")
    waiting = make_job()
    running = make_job(JobStatus.RUNNING, lease_owner="w:1:aa")
    make_worker("w:1:aa")
    response = act(client, "force_cancel_jobs", [waiting, running])
    assert status_of(waiting) == JobStatus.FAILED
    row = Job.objects.get(id=running.id)
    assert row.status == JobStatus.RUNNING
    assert row.cancel_requested_at is not None and row.cancel_force
    text = " ".join(messages_of(response))
    assert "Cancelled 1 waiting job; it will not run." in text
    assert "Asked 1 running job to stop" in text


@pytest.mark.django_db
def test_purge_asks_first_then_removes_waiting_jobs_of_those_queues_and_tasks(login):
    client = login("view_job", "purge_job")
    selected = make_job(task_path="app.tasks.mail")
    same_kind = make_jobs(2, task_path="app.tasks.mail")
    running = make_job(JobStatus.RUNNING, task_path="app.tasks.mail")
    other_task = make_job(task_path="app.tasks.other")

    confirm = act(client, "purge_waiting_jobs", [selected])
    html = confirm.content.decode()
    assert "This removes 3 waiting (READY) jobs" in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert Job.objects.count() == 5  # nothing removed before confirming

    done = act(client, "purge_waiting_jobs", [selected], post="yes")
    assert "Purged 3 waiting jobs of app.tasks.mail on default." in messages_of(done)
    remaining = set(Job.objects.values_list("id", flat=True))
    assert remaining == {running.id, other_task.id}
    assert not remaining & {j.id for j in same_kind}


@pytest.mark.django_db
def test_actions_say_which_jobs_they_left_alone_and_why(login):
    client = login("view_job", "retry_job", "cancel_job")
    waiting = make_job()
    done = make_job(JobStatus.SUCCESSFUL)

    retried = act(client, "retry_jobs", [waiting])
    (warning,) = messages_of(retried)
    assert warning.startswith("1 job was left as it was: ")
    assert f"Job {waiting.id} is READY; only FAILED jobs can be retried." in warning

    cancelled = act(client, "cancel_jobs", [done])
    assert messages_of(cancelled) == [f"1 job was left as it was: {done.id}: already finished"]
    assert status_of(waiting) == JobStatus.READY
    assert status_of(done) == JobStatus.SUCCESSFUL
