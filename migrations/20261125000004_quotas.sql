-- Per-org quotas and a per-key request rate limit, all state in PostgreSQL.
ALTER TABLE orgs
    ADD COLUMN max_agents integer NOT NULL DEFAULT 1000 CHECK (max_agents >= 0),
    ADD COLUMN max_sessions integer NOT NULL DEFAULT 100000 CHECK (max_sessions >= 0),
    ADD COLUMN max_concurrent_turns integer NOT NULL DEFAULT 100 CHECK (max_concurrent_turns >= 0),
    -- Requests per minute per API key; 0 means unlimited.
    ADD COLUMN rate_limit_per_minute integer NOT NULL DEFAULT 6000 CHECK (rate_limit_per_minute >= 0);

-- One fixed one-minute window per API key.
CREATE TABLE rate_limits (
    key_id        uuid PRIMARY KEY REFERENCES api_keys(id),
    org_id        uuid NOT NULL REFERENCES orgs(id),
    window_start  timestamptz NOT NULL,
    count         integer NOT NULL
);
ALTER TABLE rate_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE rate_limits FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON rate_limits USING (org_id = turnstone_org()) WITH CHECK (org_id = turnstone_org());
GRANT SELECT, INSERT, UPDATE ON rate_limits TO turnstone_api;
