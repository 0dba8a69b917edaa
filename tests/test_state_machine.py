"""Every transition of a job, in random interleavings, by several workers and callers.

Hypothesis drives real workers' stores (each on a connection of its own) and the public
API against the real database: claims, completions, failures, hand-backs, deaths and
recoveries, cancels, purges, prunes, retries and batches, in whatever order it finds.
After every step the invariants River and Oban keep are checked on the rows themselves.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import taskmill
from taskmill.api import InvalidJobState
from taskmill.models import Batch, Job, JobError, JobStatus, Worker
from taskmill.store import ClaimedJob, JobStore, Outcome, get_store, private_store
from taskmill.worker.executor import failure_outcome
from tests import parallel_helpers as helpers
from tests.project.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)

ACTIVE = (JobStatus.READY, JobStatus.RUNNING)


class WorkerModel:
    """A worker process as the store sees it: a connection, an id, the jobs it holds."""

    def __init__(self, number: int) -> None:
        self.id = f"host-{number}:{number}:{uuid.uuid4().hex[:6]}"
        self.store: JobStore = private_store("default")
        self.held: dict[uuid.UUID, ClaimedJob] = {}
        self.store.register_worker(self.id, "host", number, ["default"], 1)

    def close(self) -> None:
        self.store.connection.close()


class JobLifecycle(RuleBasedStateMachine):
    workers = Bundle("workers")

    def __init__(self) -> None:
        super().__init__()
        for model in (JobError, Job, Batch, Worker):
            model.objects.all().delete()
        self.count = 0
        self.live: list[WorkerModel] = []
        #: Workers that died and whose jobs no recovery has looked at since.
        self.dead_unrecovered: set[str] = set()
        #: Jobs cancelled while waiting, and how often: their error stands for no attempt.
        self.cancelled_waiting: Counter[uuid.UUID] = Counter()
        self.api: JobStore = get_store("default")

    def teardown(self) -> None:
        for worker in self.live:
            worker.close()

    # -- callers ---------------------------------------------------------------------

    @initialize(target=workers)
    def first_worker(self) -> WorkerModel:
        return self._start()

    @rule(target=workers)
    def start_worker(self) -> WorkerModel:
        return self._start()

    def _start(self) -> WorkerModel:
        self.count += 1
        worker = WorkerModel(self.count)
        self.live.append(worker)
        return worker

    @rule(n=st.integers(1, 3), max_attempts=st.integers(1, 3))
    def enqueue(self, n: int, max_attempts: int) -> None:
        taskmill.enqueue_many(add.using(max_attempts=max_attempts), [(i, i) for i in range(n)])

    @rule(n=st.integers(0, 3))
    def enqueue_batch(self, n: int) -> None:
        taskmill.enqueue_batch(helpers.batch_child, range(n), then=helpers.batch_done)

    @rule(pick=st.integers(0, 10_000))
    def cancel(self, pick: int) -> None:
        job = self._pick(pick, *ACTIVE)
        if job is not None and self.api.cancel(job.id, force=False) == JobStatus.READY:
            self.cancelled_waiting[job.id] += 1

    @rule()
    def purge(self) -> None:
        taskmill.purge()

    @rule()
    def prune(self) -> None:
        self.api.prune(self.api.database_now() + dt.timedelta(seconds=1))

    @rule(pick=st.integers(0, 10_000))
    def retry(self, pick: int) -> None:
        job = self._pick(pick, JobStatus.FAILED)
        if job is not None:
            try:
                taskmill.retry(str(job.id))
            except InvalidJobState:
                pass

    # -- workers ----------------------------------------------------------------------

    @rule(worker=workers, limit=st.integers(1, 3))
    def claim(self, worker: WorkerModel, limit: int) -> None:
        if worker in self.live:
            for job in worker.store.claim(["default"], limit, worker.id):
                worker.held[job.id] = job

    @rule(worker=workers, succeeded=st.booleans(), retried=st.booleans())
    def finish_one(self, worker: WorkerModel, succeeded: bool, retried: bool) -> None:
        if worker not in self.live or not worker.held:
            return
        job = worker.held.pop(next(iter(worker.held)))
        if succeeded:
            outcome = Outcome(job=job, finished_at=job.enqueued_at, succeeded=True,
                              return_json="1")
        else:
            outcome = failure_outcome(job, RuntimeError("boom"), final=not retried)
            outcome.retry_delay = 0.0 if retried else None
        worker.store.complete([outcome], worker.id)

    @rule(worker=workers, started=st.booleans())
    def hand_back(self, worker: WorkerModel, started: bool) -> None:
        if worker in self.live and worker.held:
            worker.store.hand_back(list(worker.held.values()), worker.id, started=started)
            worker.held.clear()

    @rule(worker=consumes(workers), seen_by_supervisor=st.booleans())
    def die(self, worker: WorkerModel, seen_by_supervisor: bool) -> None:
        if worker not in self.live:
            return
        self.live.remove(worker)
        worker.close()
        if seen_by_supervisor:  # Its supervisor saw it die and recovers at once.
            self.api.unregister_worker(worker.id)
            self.api.recover_orphans(worker_id=worker.id)
        else:
            self.dead_unrecovered.add(worker.id)

    @precondition(lambda self: self.dead_unrecovered)
    @rule()
    def lease_runs_out(self) -> None:
        """Every silent worker is declared dead (the lives ones renew first)."""
        for worker in self.live:
            worker.store.heartbeat(worker.id)
        expired = set(self.api.expire_workers(lease_seconds=0.0))
        assert expired >= self.dead_unrecovered - set(self._registered()), expired
        for worker in self.live:  # A live worker declared dead too? It was too slow.
            if worker.id in expired:
                worker.store.register_worker(worker.id, "host", 0, ["default"], 1)
                worker.held.clear()  # Its jobs are recovered: its results would be refused.
        self.api.recover_orphans()
        self.dead_unrecovered.clear()

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def a_job_is_leased_exactly_while_it_runs(self) -> None:
        assert not Job.objects.filter(status=JobStatus.RUNNING, lease_owner__isnull=True).exists()
        assert not Job.objects.exclude(status=JobStatus.RUNNING).filter(
            lease_owner__isnull=False).exists()

    @invariant()
    def attempts_never_exceed_the_budget_but_in_failed_jobs(self) -> None:
        for job in Job.objects.exclude(status=JobStatus.FAILED):
            assert job.attempts <= job.max_attempts, job

    @invariant()
    def running_jobs_belong_to_live_or_not_yet_recovered_workers(self) -> None:
        allowed = set(self._registered()) | self.dead_unrecovered
        owners = set(Job.objects.filter(status=JobStatus.RUNNING)
                     .values_list("lease_owner", flat=True))
        assert owners <= allowed, owners - allowed

    @invariant()
    def every_finished_batch_has_its_then_job_once(self) -> None:
        then = helpers.batch_done.module_path
        for batch in Batch.objects.all():
            thens = list(Job.objects.filter(task_path=then, args=[str(batch.id)]))
            active = Job.objects.filter(batch_id=batch.id, status__in=ACTIVE).exists()
            if batch.finished_at is None:
                assert active and thens == [], batch
            else:
                assert not active, batch
                assert [j.id for j in thens] == [batch.then_job_id] or (
                    thens == [] and batch.then_job_id is not None  # pruned since
                    and not Job.objects.filter(id=batch.then_job_id).exists()), batch

    @invariant()
    def no_error_is_lost(self) -> None:
        errors: dict[uuid.UUID, int] = {}
        for job_id in JobError.objects.values_list("job_id", flat=True):
            errors[job_id] = errors.get(job_id, 0) + 1
        for job in Job.objects.all():
            ended_attempts = job.attempts - (1 if job.status in (JobStatus.SUCCESSFUL,
                                                                  JobStatus.RUNNING) else 0)
            extra = self.cancelled_waiting[job.id]
            assert errors.get(job.id, 0) == ended_attempts + extra, (job, errors.get(job.id))

    # -- helpers ----------------------------------------------------------------------

    def _registered(self) -> list[str]:
        return list(Worker.objects.values_list("id", flat=True))

    def _pick(self, pick: int, *statuses: str) -> Job | None:
        jobs = list(Job.objects.filter(status__in=statuses).order_by("id"))
        return jobs[pick % len(jobs)] if jobs else None


def test_every_interleaving_keeps_the_invariants():
    # A deeper search on demand: TASKMILL_STATE_EXAMPLES=500 bash scripts/test -k interleaving
    examples = int(os.environ.get("TASKMILL_STATE_EXAMPLES", "60"))
    run_state_machine_as_test(JobLifecycle, settings=settings(
        max_examples=examples, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
