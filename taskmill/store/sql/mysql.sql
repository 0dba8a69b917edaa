-- MySQL and MariaDB: no UPDATE ... RETURNING, so a claim is three statements in one
-- transaction; the SELECT's row locks keep other workers off the jobs until the commit.
-- Needs MySQL 8.0.1+ or MariaDB 10.8+ (SKIP LOCKED, DESC indexes). common.sql's
-- one-statement claim is not used here: MySQL cannot UPDATE a table it selects from in
-- a subquery.

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
worker_ids = IF(worker_ids = '', %(worker)s, CONCAT(worker_ids, ',', %(worker)s))

-- name: claimable_in_queue
-- One queue's part of a claim (MySQLJobStore.claimable unites one per queue): lock its
-- best %(limit)s due jobs, in claim order, passing over those another claim holds. Read
-- queue by queue, as PostgreSQL's claim is: with all of a worker's queues in one IN list,
-- MySQL read every due job of them and sorted them, 175 ms a claim beside 100,000.
-- expects: READY, due, may start
(SELECT j.id, j.priority, j.fair_rank, j.run_after FROM taskmill_job j
 WHERE j.status = 'READY' AND j.queue_name = %(queue)s AND j.parked = FALSE
   AND j.run_after <= ${now} AND ${may_start}
 ORDER BY j.priority DESC, j.fair_rank, j.run_after, j.id
 LIMIT %(limit)s FOR UPDATE SKIP LOCKED)

-- name: claimable_in_range
-- One range's part of a claim while claims start past the jobs claimed last
-- (taskmill/store/starts.py; MySQLJobStore.claimable unites one per range): as
-- claimable_in_queue, read from where the range starts (in_range), and locking no more
-- than %(limit)s: as many as available_in_range counted there.
-- expects: READY, due, may start
(SELECT j.id, j.priority, j.fair_rank, j.run_after FROM ${jobs_in_range}
 WHERE ${in_range} AND j.run_after <= ${now} AND ${may_start}
 ORDER BY j.priority DESC, j.fair_rank, j.run_after, j.id
 LIMIT %(limit)s FOR UPDATE SKIP LOCKED)

-- name: available_in_range
-- How many jobs claimable_in_range would lock, up to %(limit)s: a consistent read, which
-- locks nothing and passes cheaply over the delete-marked entries a held read view
-- keeps (see MySQLJobStore.claimable: the locking read is then limited to this many).
-- expects: READY, due, may start
SELECT COUNT(*) FROM (
    SELECT 1 FROM ${jobs_in_range}
    WHERE ${in_range} AND j.run_after <= ${now} AND ${may_start}
    LIMIT %(limit)s
) available

-- name: in_range
-- A job in line in a range of queue %(queue)s's claim index (a fragment): priorities
-- %(top)s down to %(bottom)s, from fairness turn and due time (%(turn)s, %(due)s) on.
-- The bounds follow the index's columns (taskmill_job_ready_my, migration 0013: status,
-- queue, parked, priority DESC, fair_rank, run_after, id), so that the range is entered
-- at its start, not at the front of the queue, past InnoDB's delete-marked entries of
-- the jobs claimed since the oldest read view began. The turn and due time are written
-- out: MySQL's range optimizer enters no index at a row constructor's >=. A range from
-- the front of its priorities has no due time (NULL): its turn, the first, lets in all.
-- expects: j is a job
j.status = 'READY' AND j.queue_name = %(queue)s AND j.parked = FALSE
  AND j.priority <= %(top)s AND j.priority >= %(bottom)s
  AND (j.fair_rank > %(turn)s OR (j.fair_rank = %(turn)s AND j.run_after >= %(due)s))

-- name: jobs_in_range
-- The jobs a range's statements read (a FROM item, j): through the claim index, named.
-- Otherwise MariaDB read the queue's whole part of it (a ref on status, queue, parked),
-- from the front: its cost model put that below the range from the start, whose count
-- of entries includes the delete-marked ones it is there to pass over (40,170 pages
-- against 5,414 beside 20,000 claimed jobs). Named, the longer range is taken.
-- expects: nothing
taskmill_job j FORCE INDEX (taskmill_job_ready_my)

-- name: next_wake_in_range
-- One range's part of an idle worker's look while claims start past the jobs claimed
-- last (MySQLJobStore.next_wake_query unites one per range and next_rate_room): common.sql's
-- next_wake_in_queue, its due jobs and the deferred ones in line read from where the
-- range starts (in_range, both through the claim index here: see deferred_jobs_in_line);
-- the jobs parked for their due time as there (read again for each range of a queue).
-- The hazard: a deferred job that sorts before the start, as a due one does, is seen at
-- the next read from the front, not at its due time.
-- expects: READY, may start
${next_wake_in_queue|ready_jobs=jobs_in_range,in_queue=in_range}

-- name: mark_claimed
-- Lease the locked jobs to %(worker)s.
-- expects: READY (locked by this transaction's claimable_in_queue or claimable_in_range)
UPDATE taskmill_job SET ${lease_to_worker}
WHERE id ${in:ids} AND status = 'READY'

-- name: claimed_jobs
-- Read back what this transaction's mark_claimed took (the rows are locked by it).
-- expects: RUNNING, leased to %(worker)s
SELECT ${claim_columns} FROM taskmill_job
WHERE id ${in:ids} AND status = 'RUNNING' AND lease_owner = %(worker)s

-- name: insert_unique_job
-- Enqueue a unique job (the store first reads whether its key is held, so that an
-- existing holder is never locked by this insert; a duplicate-key error means another
-- enqueue won the key meanwhile).
-- expects: no READY or RUNNING job with this unique key (else a duplicate-key error)
${insert_job}

-- name: lock_concurrency_key
-- Hold a concurrency key's lock (a row of taskmill_concurrency_lock, migration 0004)
-- until the claiming transaction ends.
-- expects: inside a transaction
INSERT INTO taskmill_concurrency_lock (lock_key) VALUES (%(key)s)
ON DUPLICATE KEY UPDATE lock_key = lock_key

-- name: idle_concurrency_locks
-- The lock rows of keys no job waits for or runs (one row per key ever seen otherwise),
-- read without locking anything (see MySQLJobStore.prune_concurrency_locks).
-- expects: nothing
SELECT l.lock_key FROM taskmill_concurrency_lock l
WHERE NOT EXISTS (SELECT 1 FROM taskmill_job j WHERE j.concurrency_key = l.lock_key
                  AND j.status IN ('READY', 'RUNNING'))

-- name: delete_concurrency_locks
-- Forget these lock rows; a claim that needs one again inserts it.
-- expects: no READY or RUNNING job with the keys, as read a moment before
DELETE FROM taskmill_concurrency_lock WHERE lock_key ${in:keys}

-- name: insert_schedule_state
-- A new periodic task: its first tick is the next one.
-- expects: no row for the entry yet (another worker's insert wins)
INSERT INTO taskmill_schedulestate (name, last_tick) VALUES (%(name)s, %(tick)s)
ON DUPLICATE KEY UPDATE name = name

-- name: add_service
-- A service seen for the first time, free to take.
-- expects: no row for the service yet (another worker's insert wins)
INSERT INTO taskmill_service (name, holder, expires_at) VALUES (%(name)s, '', ${now_minus:ttl})
ON DUPLICATE KEY UPDATE name = name

-- name: add_pause
-- Pause a queue, a task, or (both blank) everything; pausing twice changes nothing.
-- expects: nothing (an existing pause of the same scope is kept)
INSERT INTO taskmill_pause (queue_name, task_path, paused_at)
VALUES (%(queue)s, %(task)s, ${now})
ON DUPLICATE KEY UPDATE queue_name = queue_name

-- name: add_fairness_clock
-- A fairness key (or, blank, a queue's clock) seen for the first time.
-- expects: nothing (another enqueue's insert wins)
INSERT INTO taskmill_fairnessclock (queue_name, fairness_key, next_rank)
VALUES (%(queue)s, %(key)s, 0)
ON DUPLICATE KEY UPDATE queue_name = queue_name

-- name: add_rate_key
-- A rate key seen for the first time.
-- expects: nothing (another claim's insert wins)
INSERT INTO taskmill_ratekey (rate_key, full_until) VALUES (%(key)s, NULL)
ON DUPLICATE KEY UPDATE rate_key = rate_key

-- name: set_rate_key_full
-- As common.sql's, whether jobs of the key are parked read a moment before
-- (%(has_parked)s, rate_key_has_parked): a subquery of an UPDATE takes shared locks on
-- the job rows it reads, and a park holds those rows while it waits for this key's row.
-- expects: the key's lock is held
UPDATE taskmill_ratekey SET full_until = %(until)s, parked = (parked OR %(has_parked)s)
WHERE rate_key = %(key)s

-- name: rate_key_has_parked
-- Whether jobs are parked for this rate key (a consistent read: locks nothing).
-- expects: nothing
SELECT EXISTS (SELECT 1 FROM taskmill_job j
               WHERE j.rate_key = %(key)s AND j.parked AND j.parked_for_rate
                 AND j.status = 'READY')

-- name: add_rate_slice
-- A rate key's slice, before its first start is counted.
-- expects: the key's lock is held (else: another claim's insert wins)
INSERT INTO taskmill_rateslice (rate_key, slice, starts) VALUES (%(key)s, %(slice)s, 0)
ON DUPLICATE KEY UPDATE rate_key = rate_key

-- name: unpark_jobs
-- As common.sql's, in MySQL's words: an IN subquery may neither read the table being
-- updated nor take a LIMIT, so one table's UPDATE walks the key's parked jobs in claim
-- order (taskmill_job_key_my, migration 0013) and stops at %(count)s.
-- expects: READY, parked
UPDATE taskmill_job j SET j.parked = FALSE
WHERE j.status = 'READY' AND j.parked AND NOT j.parked_for_rate AND NOT j.parked_for_time
  AND j.concurrency_key = %(key)s
  AND ${task_not_paused}
ORDER BY j.priority DESC, j.fair_rank, j.run_after, j.id
LIMIT %(count)s

-- name: unpark_startable
-- As common.sql's, the jobs read through a derived table that is materialized first
-- (DISTINCT keeps MySQL from merging it): an UPDATE's subquery may not read its table.
-- expects: READY, parked
UPDATE taskmill_job SET parked = FALSE
WHERE id IN (SELECT s.id FROM (SELECT DISTINCT p.id FROM (${parked_startable}) p) s)

-- name: unpark_startable_of
-- As common.sql's, through a materialized derived table (see unpark_startable).
-- expects: READY, parked
UPDATE taskmill_job SET parked = FALSE
WHERE id IN (SELECT s.id FROM (SELECT DISTINCT p.id FROM (
    ${parked_startable} AND j.id ${in:ids} AND ${room_for_rate}) p) s)

-- name: rate_keys_to_flag
-- The rate keys with room and parked jobs whose flag is off (the recovery service's
-- backstop; see common.sql's flag_parked_rate_keys), read without locking: the flag is
-- then set by key.
-- expects: nothing
SELECT k.rate_key FROM taskmill_ratekey k
WHERE k.parked = FALSE AND (k.full_until IS NULL OR k.full_until <= ${now}) AND EXISTS (
    SELECT 1 FROM taskmill_job j
    WHERE j.rate_key = k.rate_key AND j.parked AND j.parked_for_rate AND j.status = 'READY')

-- name: flag_rate_keys_with_room
-- Flag these keys, unless one filled up since it was read.
-- expects: the keys had room and parked jobs a moment before
UPDATE taskmill_ratekey SET parked = TRUE
WHERE rate_key ${in:keys} AND (full_until IS NULL OR full_until <= ${now})

-- name: lock_parked_rate_jobs
-- The best %(count)s jobs parked for a rate key, locked, passing over those another
-- statement holds, and their queues (MySQL's UPDATE returns no rows: see
-- MySQLJobStore.unpark_rate_jobs). Through taskmill_job_parked_rate_my (0015).
-- expects: READY, parked for its rate key
SELECT j.id, j.queue_name FROM taskmill_job j
WHERE j.rate_key = %(key)s AND j.parked AND j.parked_for_rate AND j.status = 'READY'
  AND ${task_not_paused}
ORDER BY j.priority DESC, j.fair_rank, j.run_after, j.id
LIMIT %(count)s FOR UPDATE SKIP LOCKED

-- name: unpark_locked_jobs
-- Put back in line the jobs this transaction locked.
-- expects: READY, parked (locked by lock_parked_rate_jobs)
UPDATE taskmill_job SET parked = FALSE WHERE id ${in:ids} AND status = 'READY' AND parked

-- name: deferred_jobs_in_line
-- As common.sql's, through the claim index (the jobs in line lead it: status, queue,
-- parked), whatever the statistics say: right after a park, before InnoDB's purge has
-- removed the old entries, MariaDB took the claim index's range for as big as it was
-- and read every READY job through the lease index instead, parked ones and all.
-- expects: nothing
taskmill_job j FORCE INDEX (taskmill_job_ready_my)

-- name: first_ready_queue
-- The first queue, by name, that has READY jobs (None: none has). MySQLJobStore's
-- ready_queues asks these two statements in turn instead of common.sql's recursive
-- one: MariaDB ran its correlated step as a walk of every READY job of the later
-- queues (200 ms beside a backlog of 1,000,000), and each of these is one index probe.
-- expects: READY
SELECT MIN(queue_name) FROM taskmill_job WHERE status = 'READY'

-- name: next_ready_queue
-- The next queue after %(after)s, by name, that has READY jobs (None: none has).
-- expects: READY
SELECT MIN(queue_name) FROM taskmill_job WHERE status = 'READY' AND queue_name > %(after)s

-- name: oldest_snapshot
-- The open transaction with the oldest read view on the server, and how long it has
-- been open: InnoDB's purge of the row versions (and delete-marked index entries) that
-- jobs leave behind waits for the oldest read view of the whole server, whatever
-- database it reads. Needs the PROCESS privilege (MySQLJobStore.oldest_snapshot).
-- innodb_trx is a copy the server refreshes at most every 0.1 s. It lists every open
-- transaction: one under READ COMMITTED (or READ UNCOMMITTED) reads each statement from
-- a read view of its own, so idle (no statement running) it holds none and is passed
-- over; running one, its age is the transaction's, an upper bound of the statement's.
-- expects: nothing
SELECT t.trx_mysql_thread_id, TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW(6)) / 1000000,
       TRIM(CONCAT(COALESCE(p.USER, ''), '@', COALESCE(p.HOST, ''), ' ', COALESCE(p.DB, ''))),
       CASE WHEN p.COMMAND = 'Sleep' THEN 'idle in transaction' ELSE 'active' END
FROM information_schema.innodb_trx t
LEFT JOIN information_schema.processlist p ON p.ID = t.trx_mysql_thread_id
WHERE t.trx_mysql_thread_id <> CONNECTION_ID()
  AND NOT (t.trx_isolation_level IN ('READ COMMITTED', 'READ UNCOMMITTED')
           AND t.trx_query IS NULL)
ORDER BY t.trx_started, t.trx_mysql_thread_id
LIMIT 1

-- name: purge_backlog
-- InnoDB's history list length: the committed transactions whose undo purge has yet to
-- process (each claim and each completion is one). It grows while a read view is held
-- and shrinks as purge catches up after it (MySQLJobStore.cleanup_backlog). Needs the
-- PROCESS privilege; the counter is on by default on MySQL 8 and MariaDB.
-- expects: nothing
SELECT count FROM information_schema.INNODB_METRICS WHERE name = 'trx_rseg_history_len'
