-- Operator views: a read-only SQL surface across orgs, in schema `turnstone_ops`.
--
-- What an operator asks of a running deployment — how deep is the queue, which
-- workers are alive, which turns are running or waiting and who holds them,
-- how many sessions each org has in which state, what failed lately — as views,
-- so the answers do not depend on knowing the tables, and the columns are
-- chosen: no key hashes, no ciphertexts, no event data beyond a failure's code
-- and message, no message contents, no task payloads beyond their ids.
--
-- One group role, `turnstone_ops` (NOLOGIN; give a login role membership with
-- `GRANT turnstone_ops TO alice;`), may read these views and nothing else: it
-- gets USAGE on this schema and SELECT on the views, no grant on any table.
--
-- The views keep PostgreSQL's default of running with their owner's rights
-- (not `security_invoker`): that owner is the role that ran this migration,
-- which owns the schema and the tables. It reads across orgs in both of the
-- documented setups:
-- - a superuser owner (scripts/dev, compose.yaml, the tests) skips row-level
--   security altogether;
-- - a non-superuser owner (docs/security.md, "Production setup") is held by
--   FORCE ROW LEVEL SECURITY like every other role, so the tenant tables the
--   views read get a second SELECT policy, `operator_views`, for that owner
--   only, which lets a row through when the user reading the view has the
--   privileges of `turnstone_ops` (inside a view `current_user` is still the
--   reader). The owner's own queries keep the tenant wall: the owner is not
--   an operator. Writes are unaffected (the policy is SELECT-only, and an
--   UPDATE or DELETE must also pass the `tenant` policy). The application
--   roles are not members of the owner, so the policy never applies to them.
--
-- The views are `security_barrier`: a reader's own functions in a WHERE
-- clause cannot be evaluated on rows a view filters out.

-- Roles are cluster-wide (see migration 0002). Looking first lets an owner
-- without CREATEROLE migrate once a superuser has created the role.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'turnstone_ops') THEN
        BEGIN
            CREATE ROLE turnstone_ops NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

CREATE SCHEMA turnstone_ops;
GRANT USAGE ON SCHEMA turnstone_ops TO turnstone_ops;

-- Pass rows of every org to the views for a non-superuser owner (see above).
-- The sub-select is evaluated once per statement, not once per row.
CREATE POLICY operator_views ON sessions FOR SELECT TO CURRENT_USER
    USING ((SELECT pg_has_role('turnstone_ops', 'USAGE')));
CREATE POLICY operator_views ON turns FOR SELECT TO CURRENT_USER
    USING ((SELECT pg_has_role('turnstone_ops', 'USAGE')));
CREATE POLICY operator_views ON events FOR SELECT TO CURRENT_USER
    USING ((SELECT pg_has_role('turnstone_ops', 'USAGE')));

-- `recent_failures` finds a day of failed turns without reading every turn
-- ever run. Only failed turns enter it; the seal sets status and finished_at
-- together, an update that is not HOT already (`turns_session_open`).
CREATE INDEX turns_failed ON turns (finished_at) WHERE status = 'failed';

-- The task queue by queue and status. Finished tasks are deleted, so an
-- empty result is an empty queue. `due`: pending tasks whose run_at has come
-- (the rest wait out a retry delay); a due task that grows old means no
-- worker is claiming.
CREATE VIEW turnstone_ops.queue WITH (security_barrier) AS
SELECT q.queue,
       q.status,
       count(*) AS tasks,
       count(*) FILTER (WHERE q.status = 'pending' AND q.run_at <= now()) AS due,
       now() - min(q.created_at) AS oldest_age,
       max(q.attempts) AS most_attempts
  FROM task_queue q
 GROUP BY q.queue, q.status
 ORDER BY q.queue, q.status;

-- Registered workers. `live` is the rule enqueues wake workers by
-- (`turnstone_wake_channel`): seen within three of its heartbeats. A dead
-- worker's row stays until another worker reclaims its tasks.
-- `in_flight`: the tasks it holds.
CREATE VIEW turnstone_ops.workers WITH (security_barrier) AS
SELECT w.name,
       w.queue,
       w.last_seen > now() - make_interval(secs => 3 * w.heartbeat_secs) AS live,
       w.accepting,
       w.listener_pid,
       now() - w.last_seen AS last_seen_age,
       now() - w.started_at AS uptime,
       (SELECT count(*) FROM task_queue t WHERE t.status = 'running' AND t.lock_by = w.name) AS in_flight
  FROM queue_workers w
 ORDER BY w.queue, w.name;

-- Open turns, oldest first: `running`, `queued` (its task waits for a worker)
-- and `pending` (waiting behind its session's open turn, no task yet).
-- `attempt` counts starts (the fencing token); the task columns show who
-- holds it (`lock_by`, a worker's name) and since when.
CREATE VIEW turnstone_ops.running_turns WITH (security_barrier) AS
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
 WHERE t.status IN ('pending', 'queued', 'running')
 ORDER BY t.created_at, t.id;

-- Sessions per org and status (idle, queued, running, cancelling).
CREATE VIEW turnstone_ops.sessions_by_status WITH (security_barrier) AS
SELECT s.org_id,
       o.name AS org_name,
       s.status,
       count(*) AS sessions,
       now() - max(s.updated_at) AS last_change_age
  FROM sessions s
  JOIN orgs o ON o.id = s.org_id
 GROUP BY s.org_id, o.name, s.status
 ORDER BY o.name, s.org_id, s.status;

-- Turns failed in the last 24 hours, with the code and message of their
-- `turn.failed` event, and every failed task (out of attempts) with its
-- last error. A task records no failure time and stays until an operator
-- resets or deletes it, so all of them are listed (`failed_at` NULL, first).
CREATE VIEW turnstone_ops.recent_failures WITH (security_barrier) AS
SELECT f.kind, f.failed_at, f.org_id, f.session_id, f.turn_id, f.task_id, f.attempts, f.code, f.message
  FROM (SELECT 'turn'::text AS kind,
               t.finished_at AS failed_at,
               t.org_id,
               t.session_id,
               t.id AS turn_id,
               NULL::bigint AS task_id,
               t.attempt AS attempts,
               coalesce(t.error_code, e.data->>'error_code') AS code,
               e.data->>'message' AS message
          FROM turns t
          LEFT JOIN LATERAL (SELECT ev.data FROM events ev
                              WHERE ev.turn_id = t.id AND ev.type = 'turn.failed'
                              ORDER BY ev.sequence DESC LIMIT 1) e ON true
         WHERE t.status = 'failed' AND t.finished_at > now() - interval '24 hours'
        UNION ALL
        SELECT 'task',
               NULL,
               (q.payload->>'org_id')::uuid,
               t.session_id,
               (q.payload->>'turn_id')::uuid,
               q.id,
               q.attempts,
               NULL,
               q.last_error
          FROM task_queue q
          LEFT JOIN turns t ON t.id = (q.payload->>'turn_id')::uuid
         WHERE q.status = 'failed') f
 ORDER BY f.failed_at DESC NULLS FIRST, f.task_id, f.turn_id;

GRANT SELECT ON turnstone_ops.queue, turnstone_ops.workers, turnstone_ops.running_turns,
    turnstone_ops.sessions_by_status, turnstone_ops.recent_failures TO turnstone_ops;
