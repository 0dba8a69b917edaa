-- SQLite: writers are serialized by the database, so a claim is common.sql's one
-- UPDATE ... RETURNING, and a write transaction begins IMMEDIATE. Needs SQLite 3.35+ and
-- WAL mode (set by the worker) so readers never block the writer.

-- name: insert_unique_job
-- Enqueue a unique job unless an active job holds its key; the id comes back if inserted.
-- expects: no READY or RUNNING job with this unique key (else nothing is inserted)
${insert_job}
ON CONFLICT DO NOTHING
RETURNING id

-- name: lock_batch
-- A batch row (SQLite has no row locks: the writer's lock already serialises completions).
-- expects: any batch (a finished one has finished_at set)
SELECT then_task_path, then_job, finished_at FROM taskmill_batch WHERE id = %(id)s

-- name: write_ahead_log
-- Readers never block the writer (set by every worker when it starts).
-- expects: nothing
PRAGMA journal_mode=WAL

-- name: ready_jobs
-- As common.sql's, through the claim index (migration 0011) whatever the statistics
-- say: with statistics taken while one queue held every job (an ANALYZE, a PRAGMA
-- optimize), SQLite scanned the whole table instead, parked jobs and all: 15 ms a claim
-- and an idle wait beside 100,000 of them, against 0.03 ms (bench/backlog.py).
-- expects: nothing
taskmill_job AS j INDEXED BY taskmill_job_ready

-- name: deferred_jobs_in_line
-- As common.sql's, through their index (migration 0016), for the same reason.
-- expects: nothing
taskmill_job AS j INDEXED BY taskmill_job_deferred_in_line
