-- Turns that wait for people (issue 20): client-side tools and tool approvals.
--
-- A waiting turn holds no worker, lease or connection: its status is `waiting`,
-- what it waits for are rows of `pending_calls`, and its deadline is one
-- `task_queue` row whose `run_at` is the earliest unresolved deadline
-- (`turns.wait_task`). The transaction that resolves the last pending call
-- makes that task due at once: the resume is enqueued with the resolution.

ALTER TABLE agents
    ADD COLUMN client_tools jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(client_tools) = 'array'),
    ADD COLUMN tool_policies jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(tool_policies) = 'object'),
    ADD COLUMN approval_timeout_secs integer NOT NULL DEFAULT 900 CHECK (approval_timeout_secs > 0);
-- Tools a session adds to its agent's client tools at creation.
ALTER TABLE sessions
    ADD COLUMN client_tools jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(client_tools) = 'array');

ALTER TABLE sessions DROP CONSTRAINT sessions_status_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_status_check
    CHECK (status IN ('idle', 'queued', 'running', 'cancelling', 'waiting'));
ALTER TABLE turns DROP CONSTRAINT turns_status_check;
ALTER TABLE turns ADD CONSTRAINT turns_status_check
    CHECK (status IN ('pending', 'queued', 'running', 'waiting', 'completed', 'failed', 'cancelled'));

-- The queue row that is a waiting turn's deadline timer (and, made due, its resume).
ALTER TABLE turns ADD COLUMN wait_task bigint;
-- A session's waiting turn (at most one: one turn per session at a time).
CREATE INDEX turns_session_waiting ON turns (session_id) WHERE status = 'waiting';

-- What waiting turns wait for: one row per client tool call or approval.
-- Resolution is a conditional update (`resolved_at IS NULL`): the first writer
-- wins, a second one finds the row resolved (409 `already_resolved`).
CREATE TABLE pending_calls (
    -- For an approval, its `approval_id`.
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL,
    session_id       uuid NOT NULL,
    turn_id          uuid NOT NULL REFERENCES turns(id),
    kind             text NOT NULL CHECK (kind IN ('client_tool', 'approval')),
    -- The model call (`output.message.completed`) the call belongs to.
    iteration        integer NOT NULL,
    tool_call_id     text NOT NULL,
    name             text NOT NULL,
    -- As the model sent them; the approved call runs with exactly these.
    arguments        text NOT NULL,
    -- SHA-256 of the canonical JSON (sorted keys) of `arguments`, hex.
    arguments_sha256 text NOT NULL,
    deadline_at      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at      timestamptz,
    -- result | approved | denied | timeout | superseded | cancelled
    resolution       text CHECK (resolution IN ('result', 'approved', 'denied', 'timeout', 'superseded', 'cancelled')),
    CHECK ((resolved_at IS NULL) = (resolution IS NULL)),
    UNIQUE (turn_id, iteration, tool_call_id),
    FOREIGN KEY (session_id, org_id) REFERENCES sessions (id, org_id)
);
CREATE INDEX pending_calls_session ON pending_calls (session_id, tool_call_id);
CREATE INDEX pending_calls_open ON pending_calls (turn_id, deadline_at) WHERE resolved_at IS NULL;

ALTER TABLE pending_calls ENABLE ROW LEVEL SECURITY;
ALTER TABLE pending_calls FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON pending_calls USING (org_id = turnstone_org()) WITH CHECK (org_id = turnstone_org());

-- The control plane resolves calls (results, decisions, cancel, a superseding
-- message) and makes the waiting turn's task due: it moves `run_at` and drops
-- the timer mark from the payload, nothing else.
GRANT SELECT, UPDATE ON pending_calls TO turnstone_api;
GRANT UPDATE (run_at, payload) ON task_queue TO turnstone_api;
-- Workers park turns (insert the calls) and expire them at their deadline.
GRANT SELECT, INSERT, UPDATE ON pending_calls TO turnstone_worker;

-- A turn's wall-clock cap (`agents.max_turn_secs`) counts running time only:
-- time spent waiting is added up here on each resume.
ALTER TABLE turns ADD COLUMN waiting_since timestamptz;
ALTER TABLE turns ADD COLUMN waited interval NOT NULL DEFAULT '0';

-- Operators see waiting turns among the open ones (with their deadline timer's task).
CREATE OR REPLACE VIEW turnstone_ops.running_turns WITH (security_barrier) AS
SELECT t.org_id,
       t.session_id,
       t.id AS turn_id,
       t.status,
       t.attempt,
       t.iterations,
       t.cancel_requested_at IS NOT NULL AS cancel_requested,
       now() - t.created_at AS age,
       now() - t.started_at AS running_for,
       q.id AS task_id,
       q.status AS task_status,
       q.attempts AS task_attempts,
       q.lock_by,
       now() - q.locked_at AS locked_for
  FROM turns t
  LEFT JOIN task_queue q ON q.payload->>'turn_id' = t.id::text
 WHERE t.status IN ('pending', 'queued', 'running', 'waiting')
 ORDER BY t.created_at, t.id;
