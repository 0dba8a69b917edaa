-- MySQL and MariaDB: no UPDATE ... RETURNING, so a claim is three statements in one
-- transaction; the SELECT's row locks keep other workers off the jobs until the commit.
-- Needs MySQL 8.0.1+ or MariaDB 10.6+ (SKIP LOCKED). (common.sql's one-statement claim is
-- not used here: MySQL cannot UPDATE a table it selects from in a subquery.)

-- name: lease_to_worker
-- The columns a claim sets (a fragment): RUNNING, one more attempt, leased to %(worker)s.
-- expects: READY
status = 'RUNNING',
attempts = attempts + 1,
lease_owner = %(worker)s,
started_at = COALESCE(started_at, %(now)s),
last_attempted_at = %(now)s,
worker_ids = IF(worker_ids = '', %(worker)s, CONCAT(worker_ids, ',', %(worker)s))

-- name: claimable_jobs
-- Lock up to %(limit)s due jobs of the worker's queues, best first, skipping locked ones.
-- expects: READY, due, with room under its concurrency key
${claimable} FOR UPDATE SKIP LOCKED

-- name: mark_claimed
-- Lease the locked jobs to %(worker)s.
-- expects: READY (locked by this transaction's claimable_jobs)
UPDATE taskmill_job SET ${lease_to_worker}
WHERE id ${in:ids} AND status = 'READY'

-- name: claimed_jobs
-- Read back what this transaction's mark_claimed took.
-- expects: RUNNING, leased to %(worker)s from %(now)s
SELECT ${claim_columns} FROM taskmill_job
WHERE id ${in:ids} AND status = 'RUNNING' AND lease_owner = %(worker)s
  AND last_attempted_at = %(now)s

-- name: insert_unique_job
-- Enqueue a unique job unless an active job holds its key (a no-op update rather than
-- INSERT IGNORE, which would also swallow bad data).
-- expects: no READY or RUNNING job with this unique key (else nothing is inserted)
${insert_job}
ON DUPLICATE KEY UPDATE id = id

-- name: lock_concurrency_key
-- Hold a concurrency key's lock (a row of taskmill_concurrency_lock, migration 0004)
-- until the claiming transaction ends.
-- expects: inside a transaction
INSERT INTO taskmill_concurrency_lock (lock_key) VALUES (%(key)s)
ON DUPLICATE KEY UPDATE lock_key = lock_key

-- name: insert_schedule_state
-- A new periodic task: its first tick is the next one.
-- expects: no row for the entry yet (another worker's insert wins)
INSERT INTO taskmill_schedulestate (name, last_tick) VALUES (%(name)s, %(tick)s)
ON DUPLICATE KEY UPDATE name = name
