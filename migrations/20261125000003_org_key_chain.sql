-- Envelope encryption: each org has data keys (DEKs), stored only wrapped
-- (XChaCha20-Poly1305) under a master key named by master_key_id. Secrets
-- are sealed under their org's active DEK; the sealed bytes name the DEK.
-- Rotating the master key re-wraps these rows; rotating an org's key makes a
-- new DEK, re-seals the org's secrets under it and retires the old one.
CREATE TABLE org_keys (
    id             uuid PRIMARY KEY,
    org_id         uuid NOT NULL REFERENCES orgs(id),
    master_key_id  text NOT NULL,
    wrapped_key    bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    retired_at     timestamptz
);
-- At most one active data key per org.
CREATE UNIQUE INDEX org_keys_one_active ON org_keys (org_id) WHERE retired_at IS NULL;

ALTER TABLE org_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE org_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON org_keys USING (org_id = turnstone_org()) WITH CHECK (org_id = turnstone_org());

GRANT SELECT, INSERT, UPDATE ON org_keys TO turnstone_api;
GRANT SELECT ON org_keys TO turnstone_worker;
