-- Turnstone's own task queue, driven by the worker's apalis backend (worker/src/queue.rs).
-- It replaces apalis-postgres' `apalis.jobs`: claims are batched, completions are batched,
-- heartbeats touch one row per worker, and a finished task is deleted (its outcome lives
-- in the domain tables, e.g. `turns.status`). No tenant data: payloads hold ids only.

CREATE TABLE task_queue (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL CHECK (queue <> '' AND length(queue) <= 64),
    payload jsonb NOT NULL,
    -- pending: claimable once run_at passes; running: held by lock_by;
    -- failed: out of attempts, kept for an operator to inspect (or reset to pending).
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'failed')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts integer NOT NULL DEFAULT 25 CHECK (max_attempts > 0),
    run_at timestamptz NOT NULL DEFAULT now(),
    lock_by text,
    locked_at timestamptz,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'running') = (lock_by IS NOT NULL))
);

-- The claim: oldest due pending task of a queue first.
CREATE INDEX task_queue_claim ON task_queue (queue, run_at, id) WHERE status = 'pending';
-- Hand-backs and reclaims: the tasks one worker holds.
CREATE INDEX task_queue_lock_by ON task_queue (lock_by) WHERE status = 'running';

-- Live workers. A worker upserts its row every heartbeat; a worker whose row is older than
-- the reclaim time is dead, and its running tasks go back to pending.
CREATE TABLE queue_workers (
    name text PRIMARY KEY CHECK (name <> '' AND length(name) <= 200),
    queue text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_workers_last_seen ON queue_workers (queue, last_seen);

-- The API enqueues (in the request's transaction); workers claim, complete, retry and reclaim.
GRANT SELECT, INSERT ON task_queue TO turnstone_api;
-- Workers also enqueue: finishing a turn queues the session's next one.
GRANT SELECT, INSERT, UPDATE, DELETE ON task_queue TO turnstone_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON queue_workers TO turnstone_worker;
