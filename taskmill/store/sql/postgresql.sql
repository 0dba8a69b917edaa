-- PostgreSQL: COPY for bulk enqueues, one-statement batched completion, NOTIFY to wake
-- idle workers, advisory locks for concurrency keys. The claim adds one setting to
-- common.sql's.

-- name: claim
-- Lease up to %(limit)s due jobs of the worker's queues to %(worker)s, best first, passing
-- over jobs another claim holds. The transaction commits without waiting for the WAL
-- flush: set_config(..., true) is this transaction's only, so nothing leaks to the next
-- client of a pooled server connection (PgBouncer). See PostgreSQLJobStore.
-- expects: READY, due, may start
WITH commit_mode AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true))
${lease_claimable}

-- name: lease_claimable
-- The claim's UPDATE (a fragment, after a commit_mode CTE). Each queue is read on its
-- own, in the order of its claim index (migration 0011: the unparked jobs), so a claim
-- reads about LIMIT rows per queue whatever waits elsewhere.
-- expects: READY, due, may start
UPDATE taskmill_job SET ${lease_to_worker}
WHERE id IN (
    SELECT c.id FROM unnest(%(queues)s::text[]) AS q(name) CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.fair_rank, j.run_after FROM taskmill_job j
        WHERE j.status = 'READY' AND j.queue_name = q.name AND j.parked = FALSE
          AND j.run_after <= ${now} AND ${may_start_in_queue}
        ORDER BY j.priority DESC, j.fair_rank, j.run_after, j.id
        LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY c.priority DESC, c.fair_rank, c.run_after, c.id
    LIMIT %(limit)s
) AND EXISTS (SELECT FROM commit_mode)
RETURNING ${claim_columns}

-- name: claim_past_starts
-- The claim while an open transaction holds back vacuum (taskmill/store/starts.py): as
-- claim, but each range of the claim index (migration 0011) read on its own, in claim
-- order, from where the range starts: one queue's jobs from a point in claim order on,
-- bounded so that the index is entered at that point: priorities %(top)s down to
-- %(bottom)s, and at %(top)s from fairness turn and due time (%(turn)s, %(due)s) on.
-- Its own statement: the claim from the front pays nothing for the ranges' arrays.
-- expects: READY, due, may start
WITH commit_mode AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true))
UPDATE taskmill_job SET ${lease_to_worker}
WHERE id IN (
    SELECT c.id FROM ${claim_ranges} CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.fair_rank, j.run_after FROM taskmill_job j
        WHERE ${due_in_range} AND ${may_start_in_queue}
        ORDER BY j.priority DESC, j.fair_rank, j.run_after, j.id
        LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY c.priority DESC, c.fair_rank, c.run_after, c.id
    LIMIT %(limit)s
) AND EXISTS (SELECT FROM commit_mode)
RETURNING ${claim_columns}

-- name: next_wake_past_starts
-- next_wake while claims start past the jobs claimed last (claim_past_starts): the due
-- jobs in line read from where each range starts; the rest as next_wake reads it (read
-- again for each range of a queue: two index probes).
-- expects: READY, may start
SELECT MIN(due.seconds) FROM (
    SELECT ${seconds_until:MIN(LEAST(d.run_after, w.run_after, t.run_after))} AS seconds
    FROM ${claim_ranges}
    LEFT JOIN LATERAL (
        SELECT j.run_after FROM taskmill_job j
        WHERE ${due_in_range} AND ${may_start}
        ORDER BY j.priority DESC, j.fair_rank, j.run_after, j.id
        LIMIT 1
    ) AS d ON TRUE
    ${later_in_line}
) due

-- name: may_start_in_queue
-- may_start for the claims, which read queue q on its own (a fragment): the queue's
-- pause is checked once per queue (it names q, not j), the rest per row.
-- expects: j is a READY job of queue q
${room_for_key} AND ${room_for_rate} AND ${task_not_paused}
AND NOT EXISTS (SELECT 1 FROM taskmill_pause qp
                WHERE qp.task_path = '' AND qp.queue_name IN ('', q.name))

-- name: claim_ranges
-- The ranges of the claim index a claim and an idle worker's look read (a FROM item, q):
-- parallel arrays, an element per range (taskmill/store/starts.py builds them).
-- expects: nothing
unnest(%(range_queues)s::text[], %(top)s::smallint[], %(bottom)s::smallint[],
       %(turn)s::bigint[], %(due)s::timestamptz[]) AS q(name, top, bottom, turn, due)

-- name: due_in_range
-- A due job of range q, unparked (a fragment). Every bound is one the claim index can
-- enter at: the priority's two, then (turn, due time) from where the range starts (the
-- index's priority is DESC, so "at or after" in claim order is "at or below" it).
-- expects: j is a job
j.status = 'READY' AND j.queue_name = q.name AND j.parked = FALSE
  AND j.priority <= q.top AND j.priority >= q.bottom
  AND (j.fair_rank, j.run_after) >= (q.turn, q.due)
  AND j.run_after <= ${now}

-- name: next_wake
-- As common.sql's next_wake_in_queue for every queue, and next_rate_room, in one
-- statement: each queue read on its own, as the claim reads it (an IN list of queues
-- would read every job of them): the claim index in claim order, the index of deferred
-- jobs in line in due order, each stopping at the first job that may start, and the
-- first job parked for its due time.
-- expects: READY, may start
SELECT MIN(due.seconds) FROM (
    SELECT ${seconds_until:MIN(LEAST(d.run_after, w.run_after, t.run_after))} AS seconds
    FROM unnest(%(queues)s::text[]) AS q(name)
    LEFT JOIN LATERAL (
        SELECT j.run_after FROM taskmill_job j
        WHERE j.status = 'READY' AND j.queue_name = q.name AND j.parked = FALSE
          AND j.run_after <= ${now} AND ${may_start}
        ORDER BY j.priority DESC, j.fair_rank, j.run_after, j.id
        LIMIT 1
    ) AS d ON TRUE
    ${later_in_line}
) due

-- name: later_in_line
-- The rest of an idle worker's look, after the due jobs of queue q (a fragment: two
-- LATERAL items, then the rate keys' part): the first deferred job in line that may
-- start, in due order through its own index; the first job parked for its due time;
-- and, united, the moment a full rate key gets room (common.sql's next_rate_room).
-- expects: READY, may start
LEFT JOIN LATERAL (
        SELECT j.run_after FROM taskmill_job j
        WHERE j.status = 'READY' AND j.run_after > j.enqueued_at AND j.queue_name = q.name
          AND j.parked = FALSE AND j.run_after > ${now} AND ${may_start}
        ORDER BY j.run_after LIMIT 1
    ) AS w ON TRUE
    LEFT JOIN LATERAL (
        SELECT j.run_after FROM taskmill_job j
        WHERE j.status = 'READY' AND j.parked_for_time = TRUE AND j.queue_name = q.name
        ORDER BY j.run_after LIMIT 1
    ) AS t ON TRUE
    UNION ALL
    ${next_rate_room}

-- name: complete_jobs
-- Record a round's successful attempts in one statement (parallel arrays, one per column).
-- Each job is found by its id: no partial index of RUNNING jobs may serve the statement
-- (unindexed: see taskmill/store/sql/__init__.py).
-- expects: RUNNING, leased to %(worker)s for each job's attempt
UPDATE taskmill_job AS j SET status = 'SUCCESSFUL', return_value = v.return_value,
    finished_at = ${now}, lease_owner = NULL
FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[], %(return_values)s::jsonb[])
    AS v(id, attempt, return_value)
WHERE j.id = v.id AND ${unindexed:j.status} = 'RUNNING' AND j.lease_owner = %(worker)s
  AND j.attempts = v.attempt
RETURNING j.id

-- name: insert_unique_job
-- Enqueue a unique job unless an active job holds its key; the id comes back if inserted.
-- expects: no READY or RUNNING job with this unique key (else nothing is inserted)
${insert_job}
ON CONFLICT (active_unique_key) WHERE active_unique_key IS NOT NULL DO NOTHING
RETURNING id

-- name: copy_jobs
-- Bulk enqueue of jobs due at once: rows streamed in COPY text format; enqueued_at and
-- run_after are left to their column defaults, the database's clock (migration 0006).
-- expects: new ids
COPY taskmill_job (id, backend, task_path, queue_name, priority, status, args, kwargs,
    attempts, max_attempts, retry_backoff, timeout, transactional,
    worker_ids, cancel_force, unique_key, concurrency_key, concurrency_limit, batch_id,
    rate_key, rate_limit, rate_period, fairness_key, fair_rank, unique_until_start)
FROM STDIN

-- name: copy_deferred_jobs
-- Bulk enqueue of deferred jobs: as copy_jobs, with run_after given.
-- expects: new ids
COPY taskmill_job (id, backend, task_path, queue_name, priority, status, args, kwargs,
    attempts, max_attempts, retry_backoff, timeout, transactional,
    worker_ids, cancel_force, unique_key, concurrency_key, concurrency_limit, batch_id,
    rate_key, rate_limit, rate_period, fairness_key, fair_rank, unique_until_start, run_after)
FROM STDIN

-- name: notify
-- Wake idle workers of a queue whose jobs an update made READY (inserts need none:
-- the insert trigger of migration 0002 sends it).
-- expects: nothing
SELECT pg_notify(%(channel)s, %(queue)s)

-- name: horizon_held
-- For how long (seconds) the oldest open transaction that holds back the cleanup of the
-- job tables has been open: a session of this database with a snapshot or a transaction
-- id, or one of any database with a transaction id (since PostgreSQL 14 a snapshot holds
-- back its own database's cleanup only; a transaction id, every database's). NULL: none.
-- Sessions of other roles are seen only with pg_read_all_stats (or as superuser);
-- replication slots and standbys' feedback are not seen. See taskmill/store/starts.py.
-- expects: nothing
SELECT EXTRACT(EPOCH FROM clock_timestamp() - MIN(a.xact_start)) FROM pg_stat_activity a
WHERE a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
  AND a.xact_start IS NOT NULL
  AND ((a.datname = current_database() AND a.backend_xmin IS NOT NULL)
       OR a.backend_xid IS NOT NULL)

-- name: lock_concurrency_key
-- Hold a concurrency key's lock until the claiming transaction ends.
-- expects: inside a transaction
SELECT pg_advisory_xact_lock(%(lock_class)s, hashtext(%(key)s))

-- name: oldest_snapshot
-- The open transaction of this database that holds back vacuum the longest (the oldest
-- snapshot or transaction id; since PostgreSQL 14 only this database's sessions count
-- for its tables), and how long it has been open. Sessions of other roles are seen only
-- with pg_read_all_stats (or as superuser); the server's own processes are left out.
-- expects: nothing
SELECT a.pid, EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start), a.application_name, a.state
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND a.backend_type = 'client backend' AND a.xact_start IS NOT NULL
  AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
ORDER BY GREATEST(age(a.backend_xmin), age(a.backend_xid)) DESC, a.xact_start
LIMIT 1
