-- Statements every database runs alike; the vendor files hold what differs. ${...} is
-- filled in when loaded (see taskmill/store/sql/__init__.py).
--
-- One clock: every time written or compared here is the database's (${now}), never a
-- host's, so hosts whose clocks disagree still agree on leases, due times and ages.


-- ---------------------------------------------------------------------------------
-- Enqueue
-- ---------------------------------------------------------------------------------

-- name: insert_job
-- Enqueue one job, due at %(run_after)s or (NULL) at once; the caller's transaction
-- decides when workers see it.
-- expects: a new id
INSERT INTO taskmill_job (
    id, backend, task_path, queue_name, priority, status, args, kwargs,
    enqueued_at, run_after, attempts, max_attempts, retry_backoff, timeout, transactional,
    worker_ids, cancel_force, unique_key, concurrency_key, concurrency_limit, batch_id,
    rate_key, rate_limit, rate_period, fairness_key, fair_rank, unique_until_start
) VALUES (
    %(id)s, %(backend)s, %(task_path)s, %(queue_name)s, %(priority)s, 'READY', %(args)s, %(kwargs)s,
    ${now}, COALESCE(%(run_after)s, ${now}), 0, %(max_attempts)s, %(retry_backoff)s, %(timeout)s,
    %(transactional)s, '', FALSE, %(unique_key)s, %(concurrency_key)s, %(concurrency_limit)s,
    %(batch_id)s, %(rate_key)s, %(rate_limit)s, %(rate_period)s, %(fairness_key)s, %(fair_rank)s,
    %(unique_until_start)s
)

-- name: unique_key_recent
-- The newest job with a unique key enqueued within the last %(period)s seconds, in any
-- state (unique_period: "at most once per period", finished jobs included).
-- expects: any state
SELECT id FROM taskmill_job
WHERE unique_key = %(key)s AND enqueued_at > ${now_minus:period}
ORDER BY enqueued_at DESC LIMIT 1

-- name: unique_key_holder
-- The job that holds a unique key.
-- expects: READY or RUNNING (active_unique_key is NULL otherwise)
SELECT id FROM taskmill_job WHERE active_unique_key = %(key)s


-- ---------------------------------------------------------------------------------
-- Claim
-- ---------------------------------------------------------------------------------

-- name: room_for_key
-- Claim filter (a fragment): a job without a concurrency key, or whose key has a free
-- slot. Keyless jobs pass on the first operand, so only keyed ones pay for the count
-- (one probe of the index of RUNNING jobs by key). It keeps a saturated key's jobs from
-- being claimed over and over; the limit itself is enforced after the claim, under a
-- per-key lock (taskmill/store/limits.py).
-- expects: j is a READY job
(j.concurrency_key IS NULL OR (
    SELECT COUNT(*) FROM taskmill_job r
    WHERE r.status = 'RUNNING' AND r.concurrency_key = j.concurrency_key
) < j.concurrency_limit)

-- name: room_for_rate
-- Claim filter (a fragment): a job without a rate limit, or whose key's window is not
-- full (taskmill_ratekey.full_until, kept by the claims that fill it: one row probed,
-- not the window counted). Like room_for_key, it keeps a full key's jobs from being
-- claimed over and over; the limit itself is enforced after the claim, under the key's
-- lock (taskmill/store/rates.py).
-- expects: j is a READY job
(j.rate_key IS NULL OR NOT EXISTS (
    SELECT 1 FROM taskmill_ratekey k WHERE k.rate_key = j.rate_key AND k.full_until > ${now}
))

-- name: task_not_paused
-- Claim filter (a fragment): no pause covers the job's task, on every queue or on the
-- job's own. Both subqueries are uncorrelated: read once per statement, then probed per
-- row in memory (a hashed subplan on PostgreSQL), whatever the claim walks.
-- expects: j is a READY job
j.task_path NOT IN (SELECT tp.task_path FROM taskmill_pause tp
                    WHERE tp.task_path <> '' AND tp.queue_name = '')
AND (j.task_path, j.queue_name) NOT IN (SELECT tq.task_path, tq.queue_name FROM taskmill_pause tq
                                        WHERE tq.task_path <> '' AND tq.queue_name <> '')

-- name: may_start
-- Every claim filter but the due time (a fragment): room under its concurrency key and
-- its rate limit; no pause of its queue, of everything (taskmill.pause: a blank column
-- means "any"), or of its task.
-- expects: j is a READY job
${room_for_key} AND ${room_for_rate} AND ${task_not_paused}
  AND j.queue_name NOT IN (SELECT qp.queue_name FROM taskmill_pause qp WHERE qp.task_path = '')
  AND NOT EXISTS (SELECT 1 FROM taskmill_pause ap WHERE ap.task_path = '' AND ap.queue_name = '')

-- name: ready_jobs
-- The waiting jobs, as the claims read them: a FROM item, j (a fragment). SQLite is
-- told to read them through the claim index (see sqlite.sql).
-- expects: nothing
taskmill_job j

-- name: deferred_jobs_in_line
-- The jobs due later that are still in line, as an idle worker's look reads them: a FROM
-- item, j (a fragment). Named, through their index (migration 0016), on SQLite and
-- MySQL, whatever the statistics say (see their files).
-- expects: nothing
taskmill_job j

-- name: claimable
-- The best due jobs of the worker's queues, in claim order (a fragment of the claims).
-- Claim order: priority, then the job's turn among fairness keys (0 without a key),
-- then due time, then id (enqueue order). Parked jobs (their key is full) are left out:
-- the claim index keeps them apart (migration 0011).
-- expects: READY, due, may start
SELECT j.id FROM ${ready_jobs}
WHERE j.status = 'READY' AND j.queue_name ${in:queues} AND j.parked = FALSE
  AND j.run_after <= ${now} AND ${may_start}
ORDER BY j.priority DESC, j.fair_rank, j.run_after, j.id
LIMIT %(limit)s

-- name: lease_to_worker
-- The columns a claim sets (a fragment): RUNNING, one more attempt, leased to %(worker)s;
-- a job unique only while waiting lets go of its key (unique_key first: MySQL evaluates
-- SET left to right, and the unique index reads the new status).
-- expects: READY
unique_key = CASE WHEN unique_until_start THEN NULL ELSE unique_key END,
status = 'RUNNING',
attempts = attempts + 1,
lease_owner = %(worker)s,
started_at = COALESCE(started_at, ${now}),
last_attempted_at = ${now},
worker_ids = CASE WHEN worker_ids = '' THEN %(worker)s ELSE worker_ids || ',' || %(worker)s END

-- name: claim
-- Lease up to %(limit)s due jobs of the worker's queues to %(worker)s, best first, in one
-- statement (${skip_locked}: jobs another claim holds are passed over, not waited for).
-- expects: READY, due, may start
UPDATE taskmill_job SET ${lease_to_worker}
WHERE id IN (${claimable} ${skip_locked})
RETURNING ${claim_columns}

-- name: next_wake_in_queue
-- One queue's part of an idle worker's "when should I look again?" (Claiming.next_wake),
-- in seconds (0 or less: now). The store unites one per queue and next_rate_room, as
-- PostgreSQL's next_wake reads each queue on its own: an IN list of queues would read
-- every job of them. The first of: a due job in line that may start (in claim order, up
-- to the first: what the claim that came back short may have missed, a rate key's room
-- reopening meanwhile, say); a deferred job in line that may start (due later than
-- enqueued, in due order: the deferred index of migration 0016, MySQL's claim index);
-- a job parked until shortly before it is due (their own index, 0016).
-- expects: READY, may start
SELECT ${seconds_until:MIN(d.run_after)} AS seconds FROM (
    SELECT j.run_after FROM ${ready_jobs}
    WHERE ${in_queue} AND j.run_after <= ${now} AND ${may_start}
    ORDER BY j.priority DESC, j.fair_rank, j.run_after, j.id
    LIMIT 1
) d
UNION ALL
SELECT ${seconds_until:MIN(w.run_after)} FROM (
    SELECT j.run_after FROM ${deferred_jobs_in_line}
    WHERE ${in_queue} AND j.run_after > j.enqueued_at AND j.run_after > ${now}
      AND ${may_start}
    ORDER BY j.run_after
    LIMIT 1
) w
UNION ALL
${next_parked_for_time}

-- name: in_queue
-- A job in line in queue %(queue)s (a fragment): READY and not parked. MySQL's
-- next_wake_in_range reads next_wake_in_queue with in_range in its place.
-- expects: j is a job
j.status = 'READY' AND j.queue_name = %(queue)s AND j.parked = FALSE

-- name: next_parked_for_time
-- The last part of a queue's look (next_wake_in_queue, MySQL's next_wake_in_range), a
-- fragment: the first job of queue %(queue)s parked until shortly before it is due, in
-- due order through their own index (migration 0016).
-- expects: READY, parked for its due time
SELECT ${seconds_until:MIN(t.run_after)} FROM (
    SELECT j.run_after FROM taskmill_job j
    WHERE j.parked_for_time = TRUE AND j.queue_name = %(queue)s AND j.status = 'READY'
    ORDER BY j.run_after
    LIMIT 1
) t

-- name: next_rate_room
-- The last part of an idle worker's "when should I look again?": the moment a full
-- rate key gets room.
-- expects: nothing
SELECT ${seconds_until:MIN(k.full_until)} AS seconds FROM taskmill_ratekey k
WHERE k.full_until > ${now}

-- name: blocked_jobs
-- Due jobs of these queues, not parked, whose concurrency key is full, whose task is
-- paused, or whose rate key is full, and whether that last is all that holds them (an
-- idle worker parks them: taskmill/store/parking.py).
-- expects: READY, due, key full or task paused or rate key full
SELECT j.id, j.concurrency_key, j.concurrency_limit, j.rate_key, ${held_by_rate_alone}
FROM ${ready_jobs}
WHERE j.status = 'READY' AND j.queue_name ${in:queues} AND j.parked = FALSE
  AND j.run_after <= ${now}
  AND ((j.concurrency_key IS NOT NULL AND NOT ${room_for_key}) OR NOT (${task_not_paused})
       OR ${held_by_rate_alone})
LIMIT %(limit)s

-- name: held_by_rate_alone
-- Park filter (a fragment): a job whose rate key is full, and nothing else holds back:
-- its concurrency key (if any) has room and its task is not paused. It is parked for the
-- rate key.
-- expects: j is a READY job
(j.rate_key IS NOT NULL AND NOT ${room_for_rate} AND ${room_for_key} AND ${task_not_paused})

-- name: park_jobs
-- Set jobs aside from the claims while their concurrency key is full or their task
-- paused. Only unparked ones: the rows the unparks lock are parked ones, so the two
-- never wait for each other's rows (each locks its rows in its own order: waiting could
-- deadlock).
-- expects: READY, not parked
UPDATE taskmill_job SET parked = TRUE, parked_for_rate = FALSE
WHERE id ${in:ids} AND status = 'READY' AND parked = FALSE

-- name: park_jobs_for_rate
-- The same, for jobs that only their full rate key holds back.
-- expects: READY, not parked
UPDATE taskmill_job SET parked = TRUE, parked_for_rate = TRUE
WHERE id ${in:ids} AND status = 'READY' AND parked = FALSE

-- name: unpark_jobs
-- Put the best %(count)s jobs parked for a key back in line (their index, in claim
-- order): %(count)s of its slots opened. Jobs of a paused task stay parked: a slot
-- given to one would go unused; so do those parked for their rate key (their own index).
-- expects: READY, parked
UPDATE taskmill_job SET parked = FALSE WHERE id IN (
    SELECT j.id FROM taskmill_job j
    WHERE j.status = 'READY' AND j.parked AND NOT j.parked_for_rate
      AND NOT j.parked_for_time AND j.concurrency_key = %(key)s AND ${task_not_paused}
    ORDER BY j.priority DESC, j.fair_rank, j.run_after, j.id
    LIMIT %(count)s
)

-- name: parked_startable
-- Parked jobs that may start now: their task not paused, their key (if any) with room
-- (a fragment of the unparks below); not those parked for their due time.
-- expects: READY, parked
SELECT j.id FROM taskmill_job j
WHERE j.status = 'READY' AND j.parked AND NOT j.parked_for_time AND ${task_not_paused}
  AND ${room_for_key}

-- name: unpark_startable
-- Put every parked job that may start now back in line (after a resume).
-- expects: READY, parked
UPDATE taskmill_job SET parked = FALSE WHERE id IN (${parked_startable})

-- name: unpark_startable_of
-- The same, among these jobs, their rate key's room too (after a park that may have
-- crossed a resume: a job parked for its full rate key stays parked).
-- expects: READY, parked
UPDATE taskmill_job SET parked = FALSE
WHERE id IN (${parked_startable} AND j.id ${in:ids} AND ${room_for_rate})

-- name: flag_rate_keys
-- These rate keys have parked jobs (in the park's transaction, after the jobs are
-- parked: job rows first, as a claim locks them).
-- expects: the keys' rows exist (a full key has one)
UPDATE taskmill_ratekey SET parked = TRUE WHERE rate_key ${in:keys}

-- name: flag_parked_rate_keys
-- Flag every rate key with room and parked jobs (the recovery service's backstop: the
-- jobs unparked at its last reopening were cancelled, say, so it never filled again).
-- Keys a claim holds are passed over, not waited for (that claim is using the key).
-- expects: READY, parked
UPDATE taskmill_ratekey SET parked = TRUE WHERE rate_key IN (
    SELECT k.rate_key FROM taskmill_ratekey k
    WHERE k.parked = FALSE AND (k.full_until IS NULL OR k.full_until <= ${now}) AND EXISTS (
        SELECT 1 FROM taskmill_job j
        WHERE j.status = 'READY' AND j.parked AND j.rate_key = k.rate_key
          AND j.parked_for_rate)
    ${skip_locked}
)

-- name: reopened_rate_keys
-- Flagged rate keys with room again (through the index of flagged keys).
-- expects: nothing
SELECT k.rate_key FROM taskmill_ratekey k
WHERE k.parked AND (k.full_until IS NULL OR k.full_until <= ${now})

-- name: parked_rate_limit
-- The rate limit and period of a key's best parked job (none: nothing of it is parked).
-- expects: READY, parked for its rate key
SELECT j.rate_limit, j.rate_period FROM taskmill_job j
WHERE j.status = 'READY' AND j.parked AND j.parked_for_rate AND j.rate_key = %(key)s
ORDER BY j.priority DESC, j.fair_rank, j.run_after, j.id
LIMIT 1

-- name: take_rate_key_unpark
-- Take the unpark of one reopened key: clears its flag, so one worker unparks it (see
-- Parking.unpark_reopened_rates).
-- expects: flagged, room again
UPDATE taskmill_ratekey SET parked = FALSE
WHERE rate_key = %(key)s AND parked AND (full_until IS NULL OR full_until <= ${now})

-- name: unpark_rate_jobs
-- Put the best %(count)s parked jobs of a rate key back in line (through the parked rate
-- index, in claim order), and name their queues; jobs of a paused task stay parked.
-- Rows another statement holds are passed over (${skip_locked}): they are being unparked
-- already, and waiting for them in claim order could deadlock with an unpark in id order.
-- expects: READY, parked for its rate key
UPDATE taskmill_job SET parked = FALSE WHERE id IN (
    SELECT j.id FROM taskmill_job j
    WHERE j.status = 'READY' AND j.parked AND j.rate_key = %(key)s
      AND j.parked_for_rate AND ${task_not_paused}
    ORDER BY j.priority DESC, j.fair_rank, j.run_after, j.id
    LIMIT %(count)s ${skip_locked}
)
RETURNING queue_name

-- name: parked_keys_with_room
-- Every key with parked jobs and free slots, and how many (the recovery service's look).
-- expects: READY, parked
SELECT k.concurrency_key, k.room FROM (
    SELECT p.concurrency_key, MIN(p.concurrency_limit) - (
        SELECT COUNT(*) FROM taskmill_job r
        WHERE r.status = 'RUNNING' AND r.concurrency_key = p.concurrency_key
    ) AS room
    FROM taskmill_job p WHERE p.status = 'READY' AND p.parked AND NOT p.parked_for_rate
      AND NOT p.parked_for_time
    GROUP BY p.concurrency_key
) k WHERE k.room > 0

-- name: deferred_in_line
-- Jobs of these queues due more than %(ahead)s seconds from now and still in line (an
-- idle worker parks them: taskmill/store/deferred.py), through the index of deferred
-- jobs in line (migration 0016; MySQL: the claim index, which holds only the jobs in
-- line once they are parked).
-- expects: READY, not parked, due later
SELECT j.id FROM ${deferred_jobs_in_line}
WHERE j.status = 'READY' AND j.run_after > j.enqueued_at AND j.queue_name ${in:queues}
  AND j.parked = FALSE AND j.run_after > ${now_plus:ahead}
LIMIT %(limit)s

-- name: park_jobs_for_time
-- Set jobs due later aside from the claims until shortly before they are due.
-- expects: READY, not parked, due later
UPDATE taskmill_job SET parked = TRUE, parked_for_time = TRUE
WHERE id ${in:ids} AND status = 'READY' AND parked = FALSE AND run_after > ${now_plus:ahead}

-- name: due_parked_for_time
-- Jobs of these queues parked for their due time and due within %(ahead)s seconds,
-- soonest first: through their own index (migration 0016), only those.
-- expects: READY, parked for time
SELECT j.id FROM taskmill_job j
WHERE j.parked_for_time = TRUE AND j.queue_name ${in:queues} AND j.status = 'READY'
  AND j.run_after <= ${now_plus:ahead}
ORDER BY j.run_after
LIMIT %(limit)s

-- name: unpark_jobs_for_time
-- Put jobs parked for their due time back in line.
-- expects: READY, parked for time
UPDATE taskmill_job SET parked = FALSE, parked_for_time = FALSE
WHERE id ${in:ids} AND status = 'READY' AND parked_for_time = TRUE

-- name: ready_queues
-- The queues that have READY jobs, in name order: one probe of the claim index per queue
-- (a loose index scan, each step the next name after the last), not a read of every
-- READY job.
-- expects: READY
WITH RECURSIVE ready_queue(name) AS (
    SELECT MIN(queue_name) FROM taskmill_job WHERE status = 'READY'
    UNION ALL
    SELECT (SELECT MIN(j.queue_name) FROM taskmill_job j
            WHERE j.status = 'READY' AND j.queue_name > r.name)
    FROM ready_queue r WHERE r.name IS NOT NULL
)
SELECT name FROM ready_queue WHERE name IS NOT NULL

-- name: waiting_jobs
-- How many jobs of these queues wait, and in how many seconds the first is due.
-- expects: READY
SELECT COUNT(*), ${seconds_until:MIN(run_after)} FROM taskmill_job
WHERE status = 'READY' AND queue_name ${in:queues}

-- name: claimed_limits
-- The concurrency limit of each job a claim just took that has a key.
-- expects: any state (the rows were just claimed by this worker)
SELECT id, concurrency_limit FROM taskmill_job WHERE id ${in:ids}

-- name: running_for_key
-- How many jobs of one concurrency key are running, under that key's lock (READ
-- COMMITTED: a fresh read, see taskmill.db.private_connection).
-- expects: RUNNING
SELECT COUNT(*) FROM taskmill_job WHERE status = 'RUNNING' AND concurrency_key = %(key)s

-- name: refund_claim
-- Undo a claim that never started: READY again, attempt refunded, place in line kept.
-- (started_at and last_attempted_at come first: MySQL evaluates SET left to right.)
-- expects: RUNNING, leased to %(worker)s for attempt %(attempt)s
UPDATE taskmill_job SET
    started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END,
    last_attempted_at = CASE WHEN attempts = 1 THEN NULL ELSE last_attempted_at END,
    status = 'READY', lease_owner = NULL, attempts = attempts - 1, worker_ids = %(worker_ids)s
WHERE id = %(id)s AND status = 'RUNNING' AND lease_owner = %(worker)s AND attempts = %(attempt)s


-- ---------------------------------------------------------------------------------
-- Outcomes of attempts
-- ---------------------------------------------------------------------------------

-- name: complete_job
-- Record a successful attempt and its return value.
-- expects: RUNNING, leased to %(worker)s for attempt %(attempt)s
UPDATE taskmill_job SET status = 'SUCCESSFUL', return_value = %(return_value)s,
    finished_at = ${now}, lease_owner = NULL
WHERE id = %(id)s AND status = 'RUNNING' AND lease_owner = %(worker)s AND attempts = %(attempt)s

-- name: retry_job
-- Put a failed attempt's job back in line, due in %(delay)s seconds. A job with no
-- attempts left, or that someone cancelled, is not retried (it falls through to FAILED).
-- expects: RUNNING, leased to %(worker)s for attempt %(attempt)s, attempts left, not cancelled
UPDATE taskmill_job SET status = 'READY', run_after = ${now_plus:delay}, lease_owner = NULL
WHERE id = %(id)s AND status = 'RUNNING' AND lease_owner = %(worker)s AND attempts = %(attempt)s
  AND attempts < max_attempts AND cancel_requested_at IS NULL

-- name: fail_job
-- End a job whose attempt failed for good (no attempts left, a final error, cancelled).
-- expects: RUNNING, leased to %(worker)s for attempt %(attempt)s
UPDATE taskmill_job SET status = 'FAILED', finished_at = ${now}, lease_owner = NULL
WHERE id = %(id)s AND status = 'RUNNING' AND lease_owner = %(worker)s AND attempts = %(attempt)s

-- name: fail_cancelled_job
-- End a held job that someone cancelled, instead of handing it back to run again.
-- expects: RUNNING, leased to %(worker)s for attempt %(attempt)s, cancel requested
UPDATE taskmill_job SET status = 'FAILED', finished_at = ${now}, lease_owner = NULL
WHERE id = %(id)s AND status = 'RUNNING' AND lease_owner = %(worker)s AND attempts = %(attempt)s
  AND cancel_requested_at IS NOT NULL

-- name: hand_back_job
-- Return a started job to READY at shutdown; its attempt stays counted, so a job with
-- no attempts left is not handed back (fail_job ends it instead).
-- expects: RUNNING, leased to %(worker)s for attempt %(attempt)s, attempts left
UPDATE taskmill_job SET status = 'READY', lease_owner = NULL
WHERE id = %(id)s AND status = 'RUNNING' AND lease_owner = %(worker)s AND attempts = %(attempt)s
  AND attempts < max_attempts

-- name: insert_error
-- Keep the exception and traceback of one failed attempt.
-- expects: the job's row exists (same transaction as its transition)
INSERT INTO taskmill_joberror (job_id, attempt, worker_id, exception_class_path, traceback, created_at)
VALUES (%(job_id)s, %(attempt)s, %(worker)s, %(exception)s, %(traceback)s, ${now})


-- ---------------------------------------------------------------------------------
-- Inside a running job
-- ---------------------------------------------------------------------------------

-- name: set_progress
-- Record how far a running attempt says it is.
-- expects: RUNNING, leased to %(worker)s for attempt %(attempt)s
UPDATE taskmill_job SET progress = %(value)s
WHERE id = %(id)s AND status = 'RUNNING' AND lease_owner = %(worker)s AND attempts = %(attempt)s

-- name: save_checkpoint
-- Keep a running attempt's checkpoint for the attempts after it.
-- expects: RUNNING, leased to %(worker)s for attempt %(attempt)s
UPDATE taskmill_job SET checkpoint = %(value)s
WHERE id = %(id)s AND status = 'RUNNING' AND lease_owner = %(worker)s AND attempts = %(attempt)s

-- name: cancel_requests
-- Which of the jobs a worker runs someone asked to cancel. Found by id, as the worker
-- knows what it runs (each heartbeat asks), never through an index of RUNNING jobs.
-- expects: RUNNING, leased to %(worker)s, cancel requested
SELECT id, cancel_force FROM taskmill_job
WHERE id ${in:ids} AND ${unindexed:status} = 'RUNNING' AND lease_owner = %(worker)s
  AND cancel_requested_at IS NOT NULL


-- ---------------------------------------------------------------------------------
-- Workers and leases
-- ---------------------------------------------------------------------------------

-- name: register_worker
-- A worker process starts: its row's heartbeat is the lease on every job it claims.
-- expects: a new worker id
INSERT INTO taskmill_worker (id, hostname, pid, queues, threads, started_at, last_heartbeat)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s, %(threads)s, ${now}, ${now})

-- name: renew_lease
-- Heartbeat. No row updated: the worker was declared dead and its jobs recovered.
-- expects: the worker's row exists
UPDATE taskmill_worker SET last_heartbeat = ${now} WHERE id = %(id)s

-- name: unregister_worker
-- A worker process stops (after handing back what it held).
-- expects: nothing
DELETE FROM taskmill_worker WHERE id = %(id)s

-- name: stale_workers
-- Workers silent for longer than their lease.
-- expects: last heartbeat more than %(lease)s seconds ago
SELECT id FROM taskmill_worker WHERE last_heartbeat < ${now_minus:lease}

-- name: expire_worker
-- Declare one silent worker dead; a heartbeat that landed since keeps it alive.
-- expects: last heartbeat still more than %(lease)s seconds ago
DELETE FROM taskmill_worker WHERE id = %(id)s AND last_heartbeat < ${now_minus:lease}

-- name: orphans
-- Running jobs whose worker is gone.
-- expects: RUNNING, lease owner without a worker row
SELECT j.id, j.attempts, j.max_attempts, j.lease_owner, j.queue_name, j.cancel_requested_at,
       j.batch_id
FROM taskmill_job j
WHERE j.status = 'RUNNING'
  AND NOT EXISTS (SELECT 1 FROM taskmill_worker w WHERE w.id = j.lease_owner)

-- name: orphans_of_worker
-- Running jobs of one worker known to be dead (its supervisor saw it die).
-- expects: RUNNING, leased to %(owner)s, which has no worker row
SELECT j.id, j.attempts, j.max_attempts, j.lease_owner, j.queue_name, j.cancel_requested_at,
       j.batch_id
FROM taskmill_job j
WHERE j.status = 'RUNNING' AND j.lease_owner = %(owner)s
  AND NOT EXISTS (SELECT 1 FROM taskmill_worker w WHERE w.id = j.lease_owner)

-- name: requeue_orphan
-- Put a dead worker's job back in line for another attempt.
-- expects: RUNNING, still leased to %(worker)s for attempt %(attempt)s, attempts left
UPDATE taskmill_job SET status = 'READY', lease_owner = NULL
WHERE id = %(id)s AND status = 'RUNNING' AND lease_owner = %(worker)s AND attempts = %(attempt)s
  AND attempts < max_attempts

-- name: leased_jobs
-- Jobs leased to a worker whose attempt started more than %(age)s seconds ago.
-- expects: RUNNING, leased to %(worker)s
SELECT ${claim_columns} FROM taskmill_job
WHERE status = 'RUNNING' AND lease_owner = %(worker)s AND last_attempted_at < ${now_minus:age}

-- name: take_service
-- Run a maintenance service (recovery, pruning, ...) for %(ttl)s seconds: of all the
-- workers that try, one gets it; it passes to another once it expires.
-- expects: the service free, expired, or already held by %(worker)s
UPDATE taskmill_service SET holder = %(worker)s, expires_at = ${now_plus:ttl}
WHERE name = %(name)s AND (holder = %(worker)s OR expires_at < ${now})

-- name: add_service
-- A service seen for the first time, free to take.
-- expects: no row for the service yet (another worker's insert wins)
INSERT INTO taskmill_service (name, holder, expires_at) VALUES (%(name)s, '', ${now_minus:ttl})
ON CONFLICT (name) DO NOTHING


-- ---------------------------------------------------------------------------------
-- Batches
-- ---------------------------------------------------------------------------------

-- name: insert_batch
-- A new batch; its children are inserted in the same transaction.
-- expects: a new batch id
INSERT INTO taskmill_batch (id, task_path, total, then_task_path, then_job, created_at)
VALUES (%(id)s, %(task_path)s, %(total)s, %(then_task_path)s, %(then_job)s, ${now})

-- name: lock_batch
-- Lock a batch row, so that completions of its children queue up here.
-- expects: any batch (a finished one has finished_at set)
SELECT then_task_path, then_job, finished_at FROM taskmill_batch WHERE id = %(id)s FOR UPDATE

-- name: batch_has_active_children
-- Whether any child of a locked batch is still waiting or running (READ COMMITTED: the
-- completion that got the batch's lock second sees the first one's commit).
-- expects: READY or RUNNING children
SELECT 1 FROM taskmill_job WHERE batch_id = %(id)s AND status IN ('READY', 'RUNNING') LIMIT 1

-- name: finish_batch
-- Mark a batch finished; only the transaction that does it enqueues its then job.
-- expects: batch not finished yet
UPDATE taskmill_batch SET finished_at = ${now}, then_job_id = %(then_job_id)s
WHERE id = %(id)s AND finished_at IS NULL


-- ---------------------------------------------------------------------------------
-- Operations: cancel, retry, purge
-- ---------------------------------------------------------------------------------

-- name: job_state
-- A job's state, before an operation decides what to do with it.
-- expects: any state
SELECT status, attempts, batch_id, queue_name FROM taskmill_job WHERE id = %(id)s

-- name: cancel_waiting_job
-- Cancel a waiting job: it ends FAILED (Cancelled) and never runs, and no longer parked
-- (MySQL's indexes of parked jobs hold every status: see migrations 0015 and 0016).
-- expects: READY
UPDATE taskmill_job SET status = 'FAILED', finished_at = ${now}, cancel_requested_at = ${now},
    cancel_force = %(force)s, parked = FALSE, parked_for_time = FALSE
WHERE id = %(id)s AND status = 'READY'

-- name: request_cancel
-- Ask a running job to stop; its worker's heartbeat passes the request on.
-- expects: RUNNING
UPDATE taskmill_job SET cancel_requested_at = COALESCE(cancel_requested_at, ${now}),
    cancel_force = (cancel_force OR %(force)s)
WHERE id = %(id)s AND status = 'RUNNING'

-- name: retry_failed_job
-- Run a FAILED job again, now, allowed max_attempts attempts in all. A child of a batch
-- that has finished is not (its then job ran: the batch cannot be unfinished).
-- expects: FAILED, and not the child of a finished batch
UPDATE taskmill_job SET status = 'READY', run_after = ${now}, finished_at = NULL,
    lease_owner = NULL, cancel_requested_at = NULL, cancel_force = FALSE,
    max_attempts = %(max_attempts)s
WHERE id = %(id)s AND status = 'FAILED'
  AND NOT EXISTS (SELECT 1 FROM taskmill_batch b
                  WHERE b.id = taskmill_job.batch_id AND b.finished_at IS NOT NULL)

-- name: database_now
-- The database's clock (the one every comparison in the store uses).
-- expects: nothing
SELECT ${now}

-- name: purgeable_jobs
-- A chunk of waiting jobs to purge (of one queue and/or task, or all).
-- expects: READY, enqueued before the purge began
SELECT id, batch_id FROM taskmill_job
WHERE status = 'READY' AND enqueued_at <= %(before)s
  AND (%(queue)s IS NULL OR queue_name = %(queue)s)
  AND (%(task_path)s IS NULL OR task_path = %(task_path)s)
LIMIT %(chunk)s

-- name: delete_waiting_jobs
-- Purge a chunk; a job claimed since it was selected stays.
-- expects: READY
DELETE FROM taskmill_job WHERE id ${in:ids} AND status = 'READY'


-- ---------------------------------------------------------------------------------
-- Retention
-- ---------------------------------------------------------------------------------

-- name: prunable_jobs
-- A chunk of finished jobs older than the cutoff, oldest first, from where the last
-- chunk stopped (%(after)s): a range of the finished_at index, never the whole history.
-- Each row in it is checked for the states and queue a retention rule names
-- (%(queue)s NULL: any) and against the queues earlier rules keep for each state.
-- expects: SUCCESSFUL or FAILED, finished in [%(after)s, %(before)s)
SELECT id, batch_id, finished_at FROM taskmill_job
WHERE finished_at >= %(after)s AND finished_at < %(before)s
  AND status IN ('SUCCESSFUL', 'FAILED') AND status ${in:statuses}
  AND (%(queue)s IS NULL OR queue_name = %(queue)s)
  AND NOT (status = 'SUCCESSFUL' AND queue_name ${in:kept_successful})
  AND NOT (status = 'FAILED' AND queue_name ${in:kept_failed})
ORDER BY finished_at
LIMIT %(chunk)s

-- name: delete_finished_jobs
-- Prune a chunk of finished jobs.
-- expects: SUCCESSFUL or FAILED
DELETE FROM taskmill_job WHERE id ${in:ids} AND status IN ('SUCCESSFUL', 'FAILED')

-- name: delete_errors_of_deleted_jobs
-- The errors of jobs just purged or pruned.
-- expects: the job row is gone
DELETE FROM taskmill_joberror WHERE job_id ${in:ids}
  AND NOT EXISTS (SELECT 1 FROM taskmill_job j WHERE j.id = taskmill_joberror.job_id)

-- name: prune_batches
-- Finished batches older than the cutoff (the finished_at index of migration 0006).
-- expects: finished before %(before)s
DELETE FROM taskmill_batch WHERE finished_at < %(before)s


-- ---------------------------------------------------------------------------------
-- Periodic tasks
-- ---------------------------------------------------------------------------------

-- name: advance_schedule
-- Claim one tick of a periodic task: of all the workers that try, one moves it forward.
-- expects: the entry's last tick before %(tick)s
UPDATE taskmill_schedulestate SET last_tick = %(tick)s, last_job_id = %(job_id)s
WHERE name = %(name)s AND last_tick < %(tick)s

-- name: set_schedule_job
-- Point a tick at the job that already held its unique key.
-- expects: the entry exists
UPDATE taskmill_schedulestate SET last_job_id = %(job_id)s WHERE name = %(name)s

-- name: insert_schedule_state
-- A new periodic task: its first tick is the next one.
-- expects: no row for the entry yet (another worker's insert wins)
INSERT INTO taskmill_schedulestate (name, last_tick) VALUES (%(name)s, %(tick)s)
ON CONFLICT (name) DO NOTHING


-- ---------------------------------------------------------------------------------
-- Flow control (docs/flow-control.md)
-- ---------------------------------------------------------------------------------

-- name: snooze_job
-- A running attempt said "not now" (taskmill.Snooze): READY again in %(delay)s seconds,
-- its attempt refunded, one more snooze counted. A job at its snooze cap, or cancelled,
-- is not snoozed (the store fails it instead).
-- (started_at comes first: MySQL evaluates SET left to right.)
-- expects: RUNNING, leased to %(worker)s for attempt %(attempt)s, under the cap, not cancelled
UPDATE taskmill_job SET
    started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END,
    status = 'READY', run_after = ${now_plus:delay}, lease_owner = NULL,
    attempts = attempts - 1, snoozes = snoozes + 1
WHERE id = %(id)s AND status = 'RUNNING' AND lease_owner = %(worker)s AND attempts = %(attempt)s
  AND snoozes < %(max_snoozes)s AND cancel_requested_at IS NULL

-- name: add_pause
-- Pause a queue, a task, or (both blank) everything; pausing twice changes nothing.
-- expects: nothing (an existing pause of the same scope is kept)
INSERT INTO taskmill_pause (queue_name, task_path, paused_at)
VALUES (%(queue)s, %(task)s, ${now})
ON CONFLICT (queue_name, task_path) DO NOTHING

-- name: queue_pauses
-- The queues paused as a whole (blank: everything is paused).
-- expects: nothing
SELECT queue_name FROM taskmill_pause WHERE task_path = ''

-- name: pause_exists
-- Whether this very pause is in force.
-- expects: nothing
SELECT 1 FROM taskmill_pause WHERE queue_name = %(queue)s AND task_path = %(task)s

-- name: remove_pauses
-- Lift the pauses of a queue (any task), of a task (any queue), of both, or (NULL and
-- NULL) every pause.
-- expects: nothing
DELETE FROM taskmill_pause
WHERE (%(queue)s IS NULL OR queue_name = %(queue)s) AND (%(task)s IS NULL OR task_path = %(task)s)

-- name: remove_pause
-- Lift exactly one pause (blank and blank: the pause of everything).
-- expects: nothing
DELETE FROM taskmill_pause WHERE queue_name = %(queue)s AND task_path = %(task)s

-- name: pauses
-- Every pause in force (blank: any).
-- expects: nothing
SELECT queue_name, task_path, paused_at FROM taskmill_pause ORDER BY queue_name, task_path

-- name: rate_window_prune
-- Forget a rate key's slices that left its window (under the key's lock).
-- expects: nothing
DELETE FROM taskmill_rateslice WHERE rate_key = %(key)s AND slice < %(first)s

-- name: rate_window
-- How many jobs of a rate key started in its window's slices, and the oldest of those
-- slices (under the key's lock for a claim's count; without it, an unpark's estimate).
-- expects: nothing
SELECT COALESCE(SUM(starts), 0), MIN(slice) FROM taskmill_rateslice
WHERE rate_key = %(key)s AND slice >= %(first)s AND starts > 0

-- name: add_rate_slice
-- A rate key's slice, before its first start is counted.
-- expects: the key's lock is held (else: another claim's insert wins)
INSERT INTO taskmill_rateslice (rate_key, slice, starts) VALUES (%(key)s, %(slice)s, 0)
ON CONFLICT (rate_key, slice) DO NOTHING

-- name: count_rate_starts
-- Count %(count)s starts in a rate key's current slice.
-- expects: the key's lock is held; the slice row exists
UPDATE taskmill_rateslice SET starts = starts + %(count)s
WHERE rate_key = %(key)s AND slice = %(slice)s

-- name: admit_rate_starts
-- Date the attempts a rate key's window just admitted by the moment it counted them
-- (%(now)s, under the key's lock), not by their claim's statement, which ran long
-- before the lock was had (over REDATE_AFTER, taskmill/store/rates.py): so the stored
-- times keep the promise the window kept.
-- started_at moves only if this claim set it (the claim dates both by one ${now}).
-- expects: RUNNING, leased to %(worker)s
UPDATE taskmill_job SET
    started_at = CASE WHEN started_at = last_attempted_at THEN %(now)s ELSE started_at END,
    last_attempted_at = %(now)s
WHERE id ${in:ids} AND status = 'RUNNING' AND lease_owner = %(worker)s

-- name: add_rate_key
-- A rate key seen for the first time.
-- expects: nothing (another claim's insert wins)
INSERT INTO taskmill_ratekey (rate_key, full_until) VALUES (%(key)s, NULL)
ON CONFLICT (rate_key) DO NOTHING

-- name: set_rate_key_full
-- Sum a key's window up for the claims: full until %(until)s, or (NULL) open. A key
-- with jobs parked is flagged, so the next look once it has room (at once, if it is
-- open) unparks as many of them as its window takes (one probe of the parked rate
-- index; see Parking.unpark_reopened_rates).
-- expects: the key's lock is held
UPDATE taskmill_ratekey SET full_until = %(until)s, parked = (parked OR EXISTS (
    SELECT 1 FROM taskmill_job j
    WHERE j.status = 'READY' AND j.parked AND j.rate_key = %(key)s AND j.parked_for_rate))
WHERE rate_key = %(key)s

-- name: queue_turn
-- The turn a queue's claims have reached among fairness keys (no row: 0).
-- expects: nothing
SELECT next_rank FROM taskmill_fairnessclock WHERE queue_name = %(queue)s AND fairness_key = ''

-- name: add_fairness_clock
-- A fairness key (or, blank, a queue's clock) seen for the first time.
-- expects: nothing (another enqueue's insert wins)
INSERT INTO taskmill_fairnessclock (queue_name, fairness_key, next_rank)
VALUES (%(queue)s, %(key)s, 0)
ON CONFLICT (queue_name, fairness_key) DO NOTHING

-- name: take_turns
-- Reserve %(count)s turns for a key: from its own next turn, or from the queue's turn
-- if the key is behind it (a key that has been quiet does not jump the line with turns
-- others used long ago). The row stays locked until the enqueue commits.
-- expects: the key's row exists
UPDATE taskmill_fairnessclock
SET next_rank = CASE WHEN next_rank > %(floor)s THEN next_rank ELSE %(floor)s END + %(count)s
WHERE queue_name = %(queue)s AND fairness_key = %(key)s

-- name: fairness_turn
-- A key's next free turn (read back after take_turns, in the same transaction).
-- expects: the key's row exists
SELECT next_rank FROM taskmill_fairnessclock WHERE queue_name = %(queue)s AND fairness_key = %(key)s

-- name: advance_queue_turn
-- A claim took jobs up to turn %(rank)s: newcomers to the queue start there.
-- expects: the queue's clock row exists; it only moves forward
UPDATE taskmill_fairnessclock SET next_rank = %(rank)s
WHERE queue_name = %(queue)s AND fairness_key = '' AND next_rank < %(rank)s

-- name: worker_queue_lists
-- The queues of every live worker (JSON lists), to wake them.
-- expects: nothing
SELECT queues FROM taskmill_worker

-- name: top_ready_priority
-- The highest priority among a queue's due jobs (first in its claim index).
-- expects: READY, due
SELECT priority FROM taskmill_job
WHERE status = 'READY' AND queue_name = %(queue)s AND run_after <= ${now}
ORDER BY priority DESC LIMIT 1

-- name: age_waiting_jobs
-- PRIORITY_AGING: one step up for a queue's due jobs below the top priority that waited
-- %(aging)s seconds (since due, or since their last step).
-- expects: READY, due for %(aging)s seconds, below %(top)s
UPDATE taskmill_job SET priority = priority + 1, aged_at = ${now}
WHERE status = 'READY' AND queue_name = %(queue)s AND priority < %(top)s
  AND run_after <= ${now_minus:aging}
  AND (aged_at IS NULL OR aged_at <= ${now_minus:aging})
