-- Hot-path support: session locks that keep their plans, and an index of active turns.
--
-- Row locks on sessions, in id order: what every multi-session writer takes
-- first, inside its BEGIN round trip (`db::begin_sessions`,
-- `db::begin_turn_sessions`). That BEGIN is a simple query (it carries
-- several statements, so it takes no parameters), and the same SELECT inlined
-- there was planned again at every transaction: 0.13 ms of planning against
-- 0.02 ms of execution for a turn start's lock (pg_stat_statements,
-- docs/benchmarks.md). A PL/pgSQL function keeps its statement's plan for the
-- connection's life. SECURITY INVOKER (the default): row-level security
-- applies as it does to the caller.
CREATE FUNCTION turnstone_lock_sessions(ids uuid[]) RETURNS void
    LANGUAGE plpgsql VOLATILE
    AS $$ BEGIN PERFORM 1 FROM sessions WHERE id = ANY(ids) ORDER BY id FOR UPDATE; END $$;

CREATE FUNCTION turnstone_lock_turn_sessions(ids uuid[]) RETURNS void
    LANGUAGE plpgsql VOLATILE
    AS $$ BEGIN
        PERFORM 1 FROM sessions WHERE id IN (SELECT session_id FROM turns WHERE id = ANY(ids)) ORDER BY id FOR UPDATE;
    END $$;

GRANT EXECUTE ON FUNCTION turnstone_lock_sessions(uuid[]), turnstone_lock_turn_sessions(uuid[])
    TO turnstone_api, turnstone_worker;

-- The concurrent-turn quota counts an org's active sessions each time a
-- message wakes an idle session (`turns::post_message`). Through
-- `sessions_org` that count read every session of the org: 2.2 ms per message
-- with 20,000 idle sessions and 5 active; 0.08 ms through a partial index.
-- A session is active exactly while one of its turns is queued or running
-- (one at a time; pending turns wait behind it), so the count reads turns.
-- The index is on turns, not on `sessions.status`: a partial index whose
-- predicate names `status` makes every update of that column non-HOT, and a
-- session's status changes three times per turn (measured: 0 of 6 status
-- updates HOT with such an index on sessions, 6 of 6 without); turns'
-- status changes are non-HOT already (`turns_session_open`).
CREATE INDEX turns_active ON turns (org_id) WHERE status IN ('queued', 'running');
