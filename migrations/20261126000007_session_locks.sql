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
