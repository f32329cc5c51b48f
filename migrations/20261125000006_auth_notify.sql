-- API processes cache successful key checks for a few seconds (TURNSTONE_AUTH_CACHE_SECS).
-- Anything that can turn a good key bad announces itself on the `turnstone_auth`
-- channel when it commits, so every process drops its cache at once — whether the
-- change came through the API or from an operator's SQL session.
-- `last_used_at` is not among the columns: marking a key used changes nothing here.
CREATE FUNCTION turnstone_auth_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('turnstone_auth', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_auth_changed
    AFTER UPDATE OF org_id, lookup_id, secret_hash, expires_at, revoked_at OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION turnstone_auth_changed();

CREATE TRIGGER orgs_auth_changed
    AFTER UPDATE OF disabled, rate_limit_per_minute OR DELETE ON orgs
    FOR EACH STATEMENT EXECUTE FUNCTION turnstone_auth_changed();
