-- Session storage: a filesystem and a key-value store, each isolated per
-- session (and walled per org by row-level security). Writes are guarded
-- statements in schema `turnstone` (core/src/storage), which take the
-- session's row lock first, as every writer of a session does; a tool's write
-- commits in the transaction of its step (core::turns::StepTx).

-- Limits, per org (the operator changes them with PATCH /v1/orgs/{id}).
ALTER TABLE orgs
    ADD COLUMN max_file_bytes bigint NOT NULL DEFAULT 10485760 CHECK (max_file_bytes >= 0),
    ADD COLUMN max_session_bytes bigint NOT NULL DEFAULT 104857600 CHECK (max_session_bytes >= 0),
    ADD COLUMN max_session_files integer NOT NULL DEFAULT 10000 CHECK (max_session_files >= 0),
    ADD COLUMN max_session_keys integer NOT NULL DEFAULT 10000 CHECK (max_session_keys >= 0),
    ADD COLUMN max_storage_bytes bigint NOT NULL DEFAULT 10737418240 CHECK (max_storage_bytes >= 0);

-- Files. `path` sorts bytewise (COLLATE "C"), so a directory's files are one
-- index range and listings page by path.
CREATE TABLE files (
    org_id        uuid NOT NULL,
    session_id    uuid NOT NULL,
    path          text COLLATE "C" NOT NULL,
    content       bytea NOT NULL,
    size          bigint NOT NULL,
    etag          text NOT NULL,
    content_type  text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, path),
    FOREIGN KEY (session_id, org_id) REFERENCES sessions (id, org_id)
);

-- Each session's file count and bytes, kept by the statements that write
-- files, so a write checks its limits without summing the session's files;
-- the org's storage is the sum of these rows.
CREATE TABLE session_storage (
    session_id  uuid PRIMARY KEY,
    org_id      uuid NOT NULL,
    files       integer NOT NULL DEFAULT 0,
    bytes       bigint NOT NULL DEFAULT 0,
    FOREIGN KEY (session_id, org_id) REFERENCES sessions (id, org_id)
);
CREATE INDEX session_storage_org ON session_storage (org_id);

-- Keys. An expired key (`expires_at` passed) reads as absent and is removed
-- by the next write of a new key to its session.
CREATE TABLE kv (
    org_id      uuid NOT NULL,
    session_id  uuid NOT NULL,
    key         text COLLATE "C" NOT NULL,
    value       jsonb NOT NULL,
    version     bigint NOT NULL,
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, key),
    FOREIGN KEY (session_id, org_id) REFERENCES sessions (id, org_id)
);
CREATE INDEX kv_expiry ON kv (session_id, expires_at) WHERE expires_at IS NOT NULL;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['files', 'session_storage', 'kv']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON %I USING (org_id = turnstone_org()) WITH CHECK (org_id = turnstone_org())', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON files, session_storage, kv TO turnstone_api, turnstone_worker;
-- A tool's write checks the org's storage limits; the worker reads nothing else of the org.
GRANT SELECT (id, max_file_bytes, max_session_bytes, max_session_files, max_session_keys, max_storage_bytes)
    ON orgs TO turnstone_worker;
