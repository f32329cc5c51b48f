-- Hot-path support: session locks that keep their plans, and an index of active sessions.
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
-- with 20,000 idle sessions and 5 active; 0.08 ms with this index, whose size
-- follows the active sessions only.
CREATE INDEX sessions_active ON sessions (org_id) WHERE status <> 'idle';
