-- Row-level security: the second wall between tenants.
--
-- Every tenant table only shows and accepts rows of the org named by the
-- transaction-local setting `turnstone.org_id` (set with set_config(..., true)
-- by core::db::begin_org). A query that forgets its org filter therefore sees
-- nothing. FORCE applies the policies to the table owner too; only superusers
-- and BYPASSRLS roles skip them.
--
-- Two group roles get least privilege: turnstone_api (the control plane) and
-- turnstone_worker (no access to API keys or idempotency records). Login roles
-- are made members of them (scripts/dev does; see docs/security.md).

-- Roles are cluster-wide: databases migrating at the same time (tests, several
-- deployments on one server) race to create them, so "already exists" is fine.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['turnstone_api', 'turnstone_worker']
    LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END LOOP;
END
$$;

-- The org of the current transaction, or NULL when none is set.
CREATE FUNCTION turnstone_org() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('turnstone.org_id', true), '')::uuid $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_keys', 'providers', 'models', 'agents', 'sessions', 'session_sequences', 'events', 'turns', 'idempotency_keys']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON %I USING (org_id = turnstone_org()) WITH CHECK (org_id = turnstone_org())', t);
    END LOOP;
END
$$;

-- Authentication looks a key up before its org is known: a transaction that
-- names one lookup id (turnstone.key_lookup) may read that one row.
CREATE POLICY key_lookup ON api_keys FOR SELECT
    USING (lookup_id = current_setting('turnstone.key_lookup', true));

GRANT USAGE ON SCHEMA public TO turnstone_api, turnstone_worker;
GRANT SELECT ON _sqlx_migrations TO turnstone_api, turnstone_worker;
GRANT EXECUTE ON FUNCTION turnstone_org() TO turnstone_api, turnstone_worker;

-- The control plane: everything tenant-facing, plus the org registry.
GRANT SELECT, INSERT, UPDATE, DELETE ON orgs, api_keys, providers, models, agents, sessions, session_sequences, events, turns,
    idempotency_keys TO turnstone_api;

-- Workers: read what a turn needs, append events, move turns and sessions along.
-- No API keys, no idempotency records, no org registry.
GRANT SELECT ON providers, models, agents TO turnstone_worker;
GRANT SELECT, UPDATE ON sessions, session_sequences, turns TO turnstone_worker;
GRANT SELECT, INSERT ON events TO turnstone_worker;

-- The task queue has its own grants (migration 0005).
