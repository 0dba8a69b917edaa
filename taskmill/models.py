"""The job tables. The job table is also the history: finished rows stay until pruned.

Every state change of a job goes through :mod:`taskmill.store`, which guards each
transition with the state (and lease) it expects. These models exist for migrations,
the admin and reporting; application code should not update job rows directly.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Case, F, When
from django.utils.translation import gettext_lazy as _


class JobStatus(models.TextChoices):
    READY = "READY", _("Ready")
    RUNNING = "RUNNING", _("Running")
    SUCCESSFUL = "SUCCESSFUL", _("Successful")
    FAILED = "FAILED", _("Failed")


ACTIVE_STATUSES = (JobStatus.READY, JobStatus.RUNNING)


class Job(models.Model):
    """One enqueued task and its whole life: attempts, outcome, progress."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    backend = models.CharField(max_length=100, default="default")
    task_path = models.CharField(_("task"), max_length=255)
    queue_name = models.CharField(_("queue"), max_length=100, default="default")
    priority = models.SmallIntegerField(default=0)
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.READY)

    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    return_value = models.JSONField(null=True, blank=True)

    enqueued_at = models.DateTimeField()
    #: Earliest start. Equals ``enqueued_at`` for jobs that were not deferred, so
    #: ordering by it is "deferred time, then enqueue order".
    run_after = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    #: Started attempts, a lost one included. Incremented when a worker claims the job.
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    retry_backoff = models.FloatField(default=2.0)
    timeout = models.FloatField(null=True, blank=True)
    transactional = models.BooleanField(default=False)

    #: One worker id per attempt, comma-separated (worker ids never contain commas).
    worker_ids = models.TextField(default="", blank=True)
    #: The worker that holds the job while RUNNING; its heartbeat is the lease.
    lease_owner = models.CharField(max_length=100, null=True, blank=True)

    progress = models.JSONField(null=True, blank=True)
    checkpoint = models.JSONField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_force = models.BooleanField(default=False)

    unique_key = models.CharField(max_length=255, null=True, blank=True)
    #: ``unique_key`` while the job is READY or RUNNING, NULL otherwise; its unique
    #: index (migration 0002; partial on PostgreSQL and SQLite, so jobs without a key
    #: cost it nothing) makes "one active job per key" a database guarantee.
    active_unique_key = models.GeneratedField(
        expression=Case(
            When(status__in=ACTIVE_STATUSES, then=F("unique_key")),
            default=None,
        ),
        output_field=models.CharField(max_length=255, null=True),
        db_persist=True,
    )
    #: ``unique_while="waiting"``: the key is held while READY only (a debounce); the
    #: claim clears ``unique_key``, so a new job may wait while this one runs.
    unique_until_start = models.BooleanField(default=False, db_default=False)
    concurrency_key = models.CharField(max_length=255, null=True, blank=True)
    concurrency_limit = models.PositiveIntegerField(null=True, blank=True)
    #: A READY job set aside while its concurrency key is full, its rate key is full or
    #: its task paused, so that claims do not step over it again and again; a slot of
    #: the key opening, the rate key's room coming back, or the pause lifted, puts it
    #: back (see :mod:`taskmill.store.parking`).
    parked = models.BooleanField(default=False, db_default=False)
    #: Parked for its rate key (its concurrency key, if any, had room): only the rate
    #: key's reopening puts it back, not a slot of its concurrency key.
    parked_for_rate = models.BooleanField(default=False, db_default=False)
    #: Parked until shortly before it is due (a job due later: delayed, retrying,
    #: snoozed): only its due time puts it back (see :mod:`taskmill.store.deferred`).
    parked_for_time = models.BooleanField(default=False, db_default=False)

    #: Flow control (docs/flow-control.md). Columns the store's raw INSERTs do not name
    #: have a database default (``db_default``), not only a Python one.
    #: Times the job said "not now" (``taskmill.Snooze``); capped by ``MAX_SNOOZES``.
    snoozes = models.PositiveIntegerField(default=0, db_default=0)
    #: At most ``rate_limit`` starts per ``rate_period`` seconds for all jobs of the key.
    rate_key = models.CharField(max_length=255, null=True, blank=True)
    rate_limit = models.PositiveIntegerField(null=True, blank=True)
    rate_period = models.FloatField(null=True, blank=True)
    #: Jobs of different keys take turns: ``fair_rank`` is the job's turn, given at
    #: enqueue from its key's counter (see :mod:`taskmill.store.fairness`); 0 without a key.
    fairness_key = models.CharField(max_length=255, null=True, blank=True)
    fair_rank = models.BigIntegerField(default=0, db_default=0)
    #: When ``PRIORITY_AGING`` last raised the job's priority (see taskmill.services.aging).
    aged_at = models.DateTimeField(null=True, blank=True)

    batch = models.ForeignKey(
        "Batch", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs",
        db_constraint=False, db_index=False,  # a partial index instead: see migration 0002
    )

    class Meta:
        verbose_name = _("job")
        ordering = ["-enqueued_at"]
        # The claim, lease, concurrency, finished and batch indexes are partial indexes
        # on PostgreSQL and SQLite (so an enqueue maintains as few as possible) and
        # composite ones on MySQL: see migration 0002.
        indexes = [
            models.Index(fields=["task_path", "status"], name="taskmill_job_task"),
        ]
        # Gate the admin's job actions (see taskmill.admin); migration 0003.
        permissions = [
            ("retry_job", _("Can retry jobs")),
            ("cancel_job", _("Can cancel jobs")),
            ("purge_job", _("Can purge waiting jobs")),
        ]

    def __str__(self) -> str:
        return f"{self.task_path} [{self.status}] {self.id}"

    @property
    def worker_id_list(self) -> list[str]:
        return [w for w in self.worker_ids.split(",") if w]


class JobError(models.Model):
    """The exception of one failed attempt (a lost worker included), kept with its traceback."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="errors", db_constraint=False)
    attempt = models.PositiveIntegerField()
    worker_id = models.CharField(max_length=100, blank=True, default="")
    exception_class_path = models.CharField(max_length=255)
    traceback = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()

    class Meta:
        verbose_name = _("job error")
        ordering = ["job", "attempt", "id"]
        indexes = [models.Index(fields=["job", "attempt"], name="taskmill_error_job")]

    def __str__(self) -> str:
        return f"{self.exception_class_path} (attempt {self.attempt})"


class Worker(models.Model):
    """A live worker process. Its ``last_heartbeat`` is the lease on every job it holds."""

    #: ``host:pid:random`` — unique per process start, so a restarted container that
    #: reuses its hostname and pid is never mistaken for the worker it replaced.
    id = models.CharField(max_length=100, primary_key=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list)
    threads = models.PositiveIntegerField(default=1)
    started_at = models.DateTimeField()
    last_heartbeat = models.DateTimeField()

    class Meta:
        verbose_name = _("worker")
        ordering = ["hostname", "started_at"]

    def __str__(self) -> str:
        return self.id


class Batch(models.Model):
    """A fan-out of one job per item; ``then_task_path`` runs once when all have finished."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task_path = models.CharField(max_length=255)
    total = models.PositiveIntegerField()
    then_task_path = models.CharField(max_length=255, null=True, blank=True)
    #: The ``then`` job as it was asked for (every option, ``.using()`` ones included),
    #: inserted as it is when the last child finishes: see :mod:`taskmill.store.batches`.
    then_job = models.JSONField(null=True, blank=True)
    #: Set exactly once, in the transaction that enqueues the ``then`` job.
    then_job_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("batch")
        verbose_name_plural = _("batches")
        ordering = ["-created_at"]
        # Pruning deletes finished batches by age.
        indexes = [models.Index(fields=["finished_at"], name="taskmill_batch_finished")]

    def __str__(self) -> str:
        return f"{self.task_path} ×{self.total} ({self.id})"


class ScheduleState(models.Model):
    """The last tick enqueued for each periodic task; guarded updates make ticks exactly-once."""

    name = models.CharField(max_length=200, primary_key=True)
    last_tick = models.DateTimeField()
    last_job_id = models.UUIDField(null=True, blank=True)

    class Meta:
        verbose_name = _("schedule state")

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_tick.isoformat()}"


class Service(models.Model):
    """A maintenance service (recovery, pruning, ...) and the worker running it until when.

    One worker at a time runs each service, across every host; another takes it over once
    ``expires_at`` (by the database's clock) has passed. See :mod:`taskmill.services`.
    """

    name = models.CharField(max_length=100, primary_key=True)
    holder = models.CharField(max_length=100, blank=True, default="")
    expires_at = models.DateTimeField()

    class Meta:
        verbose_name = _("maintenance service")

    def __str__(self) -> str:
        return f"{self.name} ({self.holder or 'nobody'} until {self.expires_at.isoformat()})"


class Pause(models.Model):
    """Nothing new of a queue, of a task, or (both blank) of anything starts while it exists.

    Read by every claim (``not_paused`` in ``store/sql/common.sql``), so a pause holds on
    every worker and host at once and survives restarts. Blank means "any".
    """

    queue_name = models.CharField(_("queue"), max_length=100, blank=True, default="")
    task_path = models.CharField(_("task"), max_length=255, blank=True, default="")
    paused_at = models.DateTimeField()

    class Meta:
        verbose_name = _("pause")
        ordering = ["queue_name", "task_path"]
        constraints = [models.UniqueConstraint(fields=["queue_name", "task_path"],
                                               name="taskmill_pause_scope")]

    def __str__(self) -> str:
        return describe_pause(self.queue_name, self.task_path)


def describe_pause(queue_name: str, task_path: str) -> str:
    if queue_name and task_path:
        return f"task {task_path} on queue {queue_name}"
    if queue_name:
        return f"queue {queue_name}"
    return f"task {task_path}" if task_path else "everything"


class RateSlice(models.Model):
    """How many jobs of a rate key started in one slice of time (a fiftieth of its period).

    A key's window is the sum of its last slices (:mod:`taskmill.store.rates`); rows are
    written and pruned under the key's lock.
    """

    rate_key = models.CharField(max_length=255)
    #: Which slice: seconds since the epoch (database clock) divided by the slice width.
    slice = models.BigIntegerField()
    starts = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = _("rate slice")
        constraints = [models.UniqueConstraint(fields=["rate_key", "slice"],
                                               name="taskmill_rate_slice")]


class RateKey(models.Model):
    """A rate key's window, summed up for the claim: full until ``full_until`` (NULL or
    past: it has room). Claims probe this one row instead of counting the window."""

    rate_key = models.CharField(max_length=255, primary_key=True)
    full_until = models.DateTimeField(null=True, blank=True)
    #: Some of its jobs are parked: the next worker to see its room come back puts the
    #: best of them back in line (taskmill.store.parking).
    parked = models.BooleanField(default=False, db_default=False)

    class Meta:
        verbose_name = _("rate key")

    def __str__(self) -> str:
        return self.rate_key


class FairnessClock(models.Model):
    """The next turn of a fairness key in a queue; ``fairness_key`` blank: the queue's
    clock, the turn its last claim reached (a newcomer starts there, not at 0)."""

    queue_name = models.CharField(max_length=100)
    fairness_key = models.CharField(max_length=255, blank=True, default="")
    next_rank = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = _("fairness clock")
        constraints = [models.UniqueConstraint(fields=["queue_name", "fairness_key"],
                                               name="taskmill_fairness_key")]


class FinishedMinute(models.Model):
    """Jobs that finished in one minute of the recent past, per queue, task and outcome:
    the hour the dashboard and ``taskmill status`` show, counted once per minute by a
    worker (the ``minutes`` maintenance service) instead of by every report.

    A row with a blank ``status`` marks its minute as counted (``jobs``: all of them), so
    a minute in which nothing finished is known to be empty. See :mod:`taskmill.minutes`.
    """

    #: The minute: its start in minutes since 1970-01-01 UTC. A number, not a time: a
    #: report reads an hour of these rows, and Django's time conversion of each cost
    #: more than the statement on PostgreSQL.
    minute = models.IntegerField()
    queue_name = models.CharField(max_length=100, blank=True, default="")
    task_path = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=10, blank=True, default="")
    jobs = models.PositiveIntegerField()

    class Meta:
        verbose_name = _("finished minute")
        constraints = [models.UniqueConstraint(
            fields=["minute", "queue_name", "task_path", "status"],
            name="taskmill_finished_minute")]


class QueueBacklog(models.Model):
    """A queue's READY jobs as a worker last counted them (the ``backlogs`` maintenance
    service), up to ``taskmill.backlogs.BACKLOG_COUNT_CAP`` and one: the figure reports
    show for a backlog deeper than they count themselves. See :mod:`taskmill.backlogs`.
    """

    queue_name = models.CharField(max_length=100, primary_key=True)
    #: The database's clock when it was counted.
    counted_at = models.DateTimeField()
    #: READY jobs counted, and of them those due at ``counted_at``.
    ready = models.PositiveIntegerField()
    due = models.PositiveIntegerField()

    class Meta:
        verbose_name = _("queue backlog")

    def __str__(self) -> str:
        return self.queue_name
