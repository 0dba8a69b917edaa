"""``RETENTION``: finished jobs kept per queue and per state, the first matching rule
deciding, ``RESULT_TTL`` for the rest (issue 13).

Every test sets the rules, prunes (the worker's service or ``taskmill prune``) and
reads back which rows are still in the job table.
"""

from __future__ import annotations

import io
import json
from argparse import ArgumentParser
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from taskmill.backend import taskmill_backend
from taskmill.checks import check_backends
from taskmill.cli import prune as prune_command
from taskmill.conf import BackendOptions, RetentionRule
from taskmill.models import Batch, Job, JobError, JobStatus
from taskmill.services import pruning
from taskmill.store import get_store
from tests.jobrows import make_error, make_jobs

pytestmark = pytest.mark.django_db

S, F = JobStatus.SUCCESSFUL, JobStatus.FAILED
HOUR, DAY = 3600, 86400
QUEUES = ["default", "other", "emails"]


@pytest.fixture
def configure(settings: Any) -> Callable[..., BackendOptions]:
    """``configure(RETENTION=[...], RESULT_TTL=...)``: the test backend with these options
    (and an ``emails`` queue); returns its validated options."""

    def apply(**options: Any) -> BackendOptions:
        default = settings.TASKS["default"]
        settings.TASKS = {**settings.TASKS, "default": {
            **default, "QUEUES": QUEUES, "OPTIONS": {**default["OPTIONS"], **options}}}
        return taskmill_backend().config

    return apply


def prune(config: BackendOptions, budget: float = 30.0) -> int:
    """What a worker's pruning service does on its turn."""
    return pruning.prune_finished(get_store("default"), config.result_ttl, budget,
                                  config.retention)


def jobs(count: int, status: str, age: float, queue: str = "default") -> set[Any]:
    """``count`` jobs of ``queue`` that finished (in ``status``) ``age`` seconds ago."""
    return {job.id for job in make_jobs(count, status, queue_name=queue, ago=age + 1)}


def remaining() -> set[Any]:
    return set(Job.objects.values_list("id", flat=True))


def test_each_state_keeps_its_own_ttl(configure):
    config = configure(RESULT_TTL=7 * DAY, RETENTION=[
        {"status": "FAILED", "ttl": 30 * DAY},
        {"status": "SUCCESSFUL", "ttl": DAY},
    ])
    recent_successes = jobs(3, S, HOUR)
    jobs(4, S, 2 * DAY)
    failures_kept_past_result_ttl = jobs(2, F, 10 * DAY)  # RESULT_TTL alone: deleted
    jobs(5, F, 40 * DAY)

    assert prune(config) == 9
    assert remaining() == recent_successes | failures_kept_past_result_ttl


def test_one_queue_keeps_its_successes_shorter(configure):
    config = configure(RESULT_TTL=7 * DAY, RETENTION=[
        {"queue": "emails", "status": "SUCCESSFUL", "ttl": HOUR},
        {"status": "SUCCESSFUL", "ttl": DAY},
    ])
    jobs(3, S, 2 * HOUR, queue="emails")
    fresh_emails = jobs(2, S, 10 * 60, queue="emails")
    other_successes = jobs(2, S, 2 * HOUR)
    jobs(2, S, 2 * DAY, queue="other")
    email_failures = jobs(2, F, 2 * DAY, queue="emails")  # no rule: RESULT_TTL
    jobs(1, F, 8 * DAY, queue="emails")

    assert prune(config) == 6
    assert remaining() == fresh_emails | other_successes | email_failures


def test_the_first_rule_that_matches_decides(configure):
    config = configure(RESULT_TTL=7 * DAY, RETENTION=[
        {"queue": "emails", "ttl": None},
        {"status": "FAILED", "ttl": 60},
    ])
    email_failures = jobs(2, F, DAY, queue="emails")  # the second rule would delete them
    jobs(3, F, DAY)
    assert prune(config) == 3
    assert remaining() == email_failures

    Job.objects.all().delete()
    config = configure(RESULT_TTL=7 * DAY, RETENTION=[
        {"status": "FAILED", "ttl": 60},
        {"queue": "emails", "ttl": None},
    ])
    jobs(2, F, DAY, queue="emails")
    email_successes = jobs(2, S, 365 * DAY, queue="emails")
    assert prune(config) == 2
    assert remaining() == email_successes


def test_a_ttl_of_none_keeps_for_ever_and_the_rest_falls_back_to_result_ttl(configure):
    config = configure(RESULT_TTL=60, RETENTION=[{"queue": "emails", "ttl": None}])
    kept = jobs(3, S, 365 * DAY, queue="emails") | jobs(2, F, 365 * DAY, queue="emails")
    jobs(4, S, HOUR)
    jobs(1, F, HOUR, queue="other")
    waiting = {job.id for job in make_jobs(2, queue_name="emails", ago=365 * DAY)}
    old_failure = next(iter(jobs(1, F, HOUR)))
    make_error(Job.objects.get(id=old_failure))
    kept_failure = Job.objects.get(id=next(iter(kept)))
    make_error(kept_failure)

    assert prune(config) == 6
    assert remaining() == kept | waiting
    assert list(JobError.objects.values_list("job_id", flat=True)) == [kept_failure.id]


def test_without_rules_result_ttl_decides_as_before(configure):
    config = configure(RESULT_TTL=DAY)
    recent = jobs(2, S, HOUR) | jobs(2, F, HOUR, queue="emails")
    jobs(3, S, 2 * DAY)
    jobs(1, F, 2 * DAY, queue="other")
    assert prune(config) == 4
    assert remaining() == recent


def test_kept_rows_between_chunks_are_passed_over_and_the_rest_deleted(configure, monkeypatch):
    monkeypatch.setattr(pruning, "CHUNK", 3)
    config = configure(RESULT_TTL=HOUR, RETENTION=[
        {"queue": "emails", "status": "FAILED", "ttl": None},
        {"queue": "other", "ttl": 30 * DAY},
    ])
    kept = set()
    for day in range(1, 11):  # kept and deletable jobs interleaved in finished_at order
        kept |= jobs(2, F, day * DAY, queue="emails") | jobs(1, S, day * DAY, queue="other")
        jobs(2, S, day * DAY + 60, queue="emails")
        jobs(1, F, day * DAY + 60)
    assert prune(config) == 30
    assert remaining() == kept


def test_a_prune_stops_at_its_budget_and_the_next_goes_on(configure, monkeypatch):
    monkeypatch.setattr(pruning, "CHUNK", 5)
    config = configure(RESULT_TTL=HOUR, RETENTION=[{"status": "FAILED", "ttl": DAY}])
    kept = jobs(3, F, 2 * HOUR)
    jobs(12, F, 2 * DAY)
    jobs(8, S, 2 * HOUR)

    assert prune(config, budget=0) == 5  # one chunk, then out of time
    assert Job.objects.count() == 23 - 5
    assert prune(config) == 15
    assert remaining() == kept


def test_finished_batches_stay_as_long_as_the_longest_ttl(configure):
    config = configure(RESULT_TTL=DAY, RETENTION=[{"status": "FAILED", "ttl": 30 * DAY},
                                                  {"queue": "emails", "ttl": None}])
    now = timezone.now()
    ages = {"recent": 10 * DAY, "old": 40 * DAY}
    batches = {name: Batch.objects.create(task_path="x.y", total=1,
                                          created_at=now - timedelta(seconds=age),
                                          finished_at=now - timedelta(seconds=age))
               for name, age in ages.items()}
    prune(config)
    assert list(Batch.objects.values_list("id", flat=True)) == [batches["recent"].id]


# -- taskmill prune ---------------------------------------------------------------------


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("taskmill", "prune", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_applies_the_rules_and_says_what_each_deleted(configure):
    configure(RESULT_TTL=7 * DAY, RETENTION=[
        {"queue": "emails", "status": "SUCCESSFUL", "ttl": HOUR},
        {"status": "FAILED", "ttl": 30 * DAY},
        {"queue": "other", "ttl": None},
    ])
    jobs(3, S, 2 * HOUR, queue="emails")
    kept = jobs(2, F, 10 * DAY) | jobs(2, S, 100 * DAY, queue="other")
    jobs(1, F, 40 * DAY, queue="emails")
    jobs(4, S, 8 * DAY)

    out, err = run()

    assert out.splitlines() == [
        "Pruned 3 finished job(s) of RETENTION[0] (queue 'emails', SUCCESSFUL) older than "
        "3600s.",
        "Pruned 1 finished job(s) of RETENTION[1] (FAILED) older than 2592000s.",
        "Kept the finished jobs of RETENTION[2] (queue 'other'): for ever.",
        "Pruned 4 finished job(s) of RESULT_TTL (every other finished job) older than "
        "604800s.",
        "Pruned 8 finished job(s) in all.",
    ]
    assert err == ""
    assert remaining() == kept


def test_the_command_reports_progress_per_rule(configure, monkeypatch):
    monkeypatch.setattr(prune_command, "PROGRESS_MIN_ROWS", 20)
    monkeypatch.setattr(prune_command, "SLICE_ROWS", 15)
    configure(RESULT_TTL=7 * DAY, RETENTION=[{"queue": "emails", "ttl": HOUR}])
    for day in range(1, 6):
        jobs(6, S, day * DAY, queue="emails")
    kept = jobs(3, S, 2 * DAY)

    out, err = run()

    assert "Pruned 30 finished job(s) of RETENTION[0] (queue 'emails') older than 3600s." in out
    progress = err.splitlines()
    assert len(progress) == 2
    assert progress[-1] == "Pruning RETENTION[0] (queue 'emails'): 30 of 30 (100%)"
    assert remaining() == kept


def test_the_command_says_when_rules_leave_nothing_to_result_ttl(configure):
    configure(RETENTION=[{"status": "FAILED", "ttl": None}, {"status": "SUCCESSFUL", "ttl": 60}])
    failures = jobs(2, F, 365 * DAY)
    jobs(2, S, HOUR)
    out, _ = run()
    assert ("RESULT_TTL (every other finished job): every finished job is decided by a rule "
            "above.") in out
    assert out.splitlines()[-1] == "Pruned 2 finished job(s) in all."
    assert remaining() == failures


def test_older_than_is_one_cut_off_for_every_finished_job(configure):
    configure(RETENTION=[{"queue": "emails", "ttl": None}, {"status": "FAILED", "ttl": 30 * DAY}])
    jobs(2, F, 2 * DAY, queue="emails")
    jobs(2, F, 2 * DAY)
    recent = jobs(1, S, HOUR, queue="emails")
    out, _ = run("--older-than", str(DAY))
    assert out.strip() == "Pruned 4 finished job(s) older than 86400s."
    assert remaining() == recent


def test_the_help_says_older_than_ignores_the_rules():
    parser = ArgumentParser()
    prune_command.add_arguments(parser)
    assert "RETENTION rules and RESULT_TTL are not applied" in " ".join(
        parser.format_help().split())


# -- configuration ---------------------------------------------------------------------


def rules(*given: Any) -> tuple[RetentionRule, ...]:
    return BackendOptions.from_params("default", {"RETENTION": list(given)}, QUEUES).retention


def test_rules_are_read_in_order():
    assert rules({"queue": "emails", "status": "SUCCESSFUL", "ttl": 3600},
                 {"status": "FAILED", "ttl": None}, {"queue": "other", "ttl": 1.5}) == (
        RetentionRule("emails", "SUCCESSFUL", 3600), RetentionRule(None, "FAILED", None),
        RetentionRule("other", None, 1.5))
    assert BackendOptions.from_params("default", {}).retention == ()


@pytest.mark.parametrize(("given", "message"), [
    ([{"status": "FAILED", "ttl": 60, "queues": ["x"]}],
     r"\['RETENTION'\]\[0\] has unknown keys \['queues'\]"),
    ([{"status": "FAILED", "ttl": 60}, {"status": "READY", "ttl": 60}],
     r"\['RETENTION'\]\[1\]\['status'\] must be 'SUCCESSFUL' or 'FAILED', not 'READY'"),
    ([{"queue": "emails", "ttl": 0}], r"\['RETENTION'\]\[0\]\['ttl'\] must be a positive"),
    ([{"queue": "emails", "ttl": -5}], r"\['RETENTION'\]\[0\]\['ttl'\] must be a positive"),
    ([{"queue": "emails", "ttl": "1h"}], r"\['RETENTION'\]\[0\]\['ttl'\] must be a positive"),
    ([{"queue": "emails", "ttl": True}], r"\['RETENTION'\]\[0\]\['ttl'\] must be a positive"),
    ([{"queue": "emails"}], r"\['RETENTION'\]\[0\] needs a 'ttl'"),
    ([{"queue": "emails", "ttl": 1}, {"ttl": 60}],
     r"\['RETENTION'\]\[1\] names neither a 'queue' nor a 'status'"),
    ([{"queue": 3, "ttl": 60}], r"\['RETENTION'\]\[0\]\['queue'\] must be a queue name"),
    ([{"queue": "email", "ttl": 60}], r"\['RETENTION'\]\[0\]\['queue'\] is 'email', which is "
                                      r"not in the backend's QUEUES"),
    (["FAILED"], r"\['RETENTION'\]\[0\] must be a dict"),
    ({"status": "FAILED", "ttl": 60}, r"\['RETENTION'\] must be a list of rules"),
    ([{"status": "FAILED", "ttl": 60}, {"queue": "emails", "status": "FAILED", "ttl": 1}],
     r"\['RETENTION'\]\[1\] can never match: every job it names is matched first by "
     r"RETENTION\[0\]"),
    ([{"queue": "emails", "status": "SUCCESSFUL", "ttl": 1}, {"status": "FAILED", "ttl": 9},
      {"queue": "emails", "ttl": 60}],
     r"\['RETENTION'\]\[2\] can never match: .* by RETENTION\[0\], RETENTION\[1\]"),
    ([{"queue": "emails", "ttl": 1}, {"queue": "emails", "status": "SUCCESSFUL", "ttl": 9}],
     r"\['RETENTION'\]\[1\] can never match"),
])
def test_a_bad_rule_is_refused_naming_it(given, message):
    with pytest.raises(ImproperlyConfigured, match=r"^TASKS\['default'\]\['OPTIONS'\]" + message):
        BackendOptions.from_params("default", {"RETENTION": given}, QUEUES)


def test_rules_that_only_overlap_are_fine():
    rules({"queue": "emails", "status": "SUCCESSFUL", "ttl": 1}, {"status": "SUCCESSFUL", "ttl": 9},
          {"queue": "emails", "ttl": 60})  # emails' failures are left to the third
    rules({"queue": "emails", "ttl": 60}, {"status": "FAILED", "ttl": 9})


def test_a_bad_rule_stops_django_at_start_up(configure, settings):
    with pytest.raises(ImproperlyConfigured, match=r"\['RETENTION'\]\[0\]\['ttl'\]"):
        configure(RETENTION=[{"queue": "emails", "ttl": 0}])
    (error,) = check_backends()
    assert error.id == "taskmill.E001" and "['RETENTION'][0]['ttl']" in error.msg


# -- plans -----------------------------------------------------------------------------

HISTORY_SQL = """
INSERT INTO taskmill_job (id, backend, task_path, queue_name, priority, status, args, kwargs,
    enqueued_at, run_after, started_at, last_attempted_at, finished_at, attempts,
    max_attempts, retry_backoff, transactional, worker_ids, cancel_force)
SELECT gen_random_uuid(), 'default', 'tests.project.tasks.record',
    (ARRAY['default', 'emails', 'other'])[1 + g %% 3], 0,
    CASE WHEN g %% 50 = 0 THEN 'FAILED' ELSE 'SUCCESSFUL' END, '[]', '{}', t, t, t, t,
    t + interval '1 second', 1, 3, 2.0, false, 'old:1:w', false
FROM generate_series(1, %s) AS g,
     LATERAL (SELECT now() - interval '30 minutes' - g * interval '1 second' AS t) AS at
"""


def finished_index_plan(sql: str) -> list[str]:
    """How the statement reads taskmill_job: SQLite's lines; PostgreSQL's scans of the
    table and its indexes (``Seq Scan``, ``Index Scan taskmill_job_finished range``:
    the index with a condition on finished_at, ...)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql)
            return [str(row[-1]) for row in cursor.fetchall() if "taskmill_job" in str(row[-1])]
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
        (plan,) = cursor.fetchone()
        nodes, found = [(json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]], []
        while nodes:
            node = nodes.pop()
            nodes.extend(node.get("Plans", []))
            if node.get("Relation Name") == "taskmill_job" or "Index Name" in node:
                ranged = "finished_at <" in node.get("Index Cond", "")
                found.append(" ".join(filter(None, [node["Node Type"], node.get("Index Name"),
                                                    "range" if ranged else None])))
        return sorted(found)


@pytest.mark.django_db(transaction=True)
def test_every_pass_reads_a_range_of_the_finished_index(configure):
    if connection.vendor == "mysql":
        pytest.skip("MySQL's optimizer picks full scans of small tables whatever the "
                    "indexes (tests/test_reporting_plans.py)")
    config = configure(RESULT_TTL=3 * HOUR, RETENTION=[
        {"queue": "other", "ttl": None},
        {"queue": "emails", "status": "SUCCESSFUL", "ttl": HOUR},
        {"status": "FAILED", "ttl": 30 * DAY},
    ])
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # 14 hours of history, a job a second
            cursor.execute(HISTORY_SQL, [50_000])
            cursor.execute("ANALYZE taskmill_job")
    else:
        for queue in QUEUES:
            jobs(100, S, 5 * HOUR, queue=queue)
            jobs(2, F, 5 * HOUR, queue=queue)
    before = dict(Job.objects.values_list("queue_name").annotate(n=Count("id")))
    failures = Job.objects.filter(status=F).count()

    # The history holds a job a second: the cut-off is the prune's "an hour ago", so a
    # later clock would count the job that finished in the second it took (seen in CI).
    pruned_at = timezone.now()
    with CaptureQueriesContext(connection) as captured:
        deleted = prune(config)

    selects = [q["sql"] for q in captured.captured_queries
               if "ORDER BY finished_at" in q["sql"]]
    assert len(selects) >= 3  # a pass per rule that deletes, and RESULT_TTL's
    plans = {tuple(finished_index_plan(sql)) for sql in selects}
    if connection.vendor == "postgresql":
        assert plans <= {("Index Scan taskmill_job_finished range",),
                         ("Bitmap Heap Scan", "Bitmap Index Scan taskmill_job_finished range")}
    else:
        assert plans == {("SEARCH taskmill_job USING INDEX taskmill_job_finished "
                          "(finished_at>? AND finished_at<?)",)}
    left = dict(Job.objects.values_list("queue_name").annotate(n=Count("id")))
    assert left["other"] == before["other"]  # kept for ever
    assert Job.objects.filter(queue_name="emails", status=S,
                              finished_at__lt=pruned_at - timedelta(hours=1)).count() == 0
    assert Job.objects.filter(status=F).count() == failures
    assert deleted == sum(before.values()) - sum(left.values())
