-- PostgreSQL (the claim is common.sql's, with SKIP LOCKED): COPY for bulk enqueues,
-- one-statement batched completion, NOTIFY to wake idle workers, advisory locks for concurrency keys.

-- name: complete_jobs
-- Record a round's successful attempts in one statement (parallel arrays, one per column).
-- expects: RUNNING, leased to %(worker)s for each job's attempt
UPDATE taskmill_job AS j SET status = 'SUCCESSFUL', return_value = v.return_value,
    finished_at = v.finished_at, lease_owner = NULL
FROM unnest(%(ids)s::uuid[], %(attempts)s::integer[], %(return_values)s::jsonb[],
            %(finished_ats)s::timestamptz[]) AS v(id, attempt, return_value, finished_at)
WHERE j.id = v.id AND j.status = 'RUNNING' AND j.lease_owner = %(worker)s
  AND j.attempts = v.attempt
RETURNING j.id

-- name: insert_unique_job
-- Enqueue a unique job unless an active job holds its key; the id comes back if inserted.
-- expects: no READY or RUNNING job with this unique key (else nothing is inserted)
${insert_job}
ON CONFLICT (active_unique_key) WHERE active_unique_key IS NOT NULL DO NOTHING
RETURNING id

-- name: copy_jobs
-- Bulk enqueue: rows streamed in COPY text format, in the insert's column order.
-- expects: new ids
COPY taskmill_job (id, backend, task_path, queue_name, priority, status, args, kwargs,
    enqueued_at, run_after, attempts, max_attempts, retry_backoff, timeout, transactional,
    worker_ids, cancel_force, unique_key, concurrency_key, concurrency_limit, batch_id)
FROM STDIN

-- name: notify
-- Wake idle workers of a queue whose jobs an update made READY (inserts need none:
-- the insert trigger of migration 0002 sends it).
-- expects: nothing
SELECT pg_notify(%(channel)s, %(queue)s)

-- name: lock_concurrency_key
-- Hold a concurrency key's lock until the claiming transaction ends.
-- expects: inside a transaction
SELECT pg_advisory_xact_lock(%(lock_class)s, hashtext(%(key)s))

-- name: worker_commit_mode
-- The worker's own bookkeeping connection commits without waiting for the WAL flush.
-- expects: the worker's private connection
SET synchronous_commit TO off
