-- One way into an org's rows. Row-level security shows and accepts only the rows of the org
-- named by the transaction-local setting `turnstone.org_id`; this function is the only writer
-- of that setting: `db::begin_org` calls it in the BEGIN, each routine in its prelude. It is
-- transaction-local (`is_local`), so a transaction-mode pooler never carries it to another client.
CREATE FUNCTION turnstone.enter_org(org_id uuid) RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE
AS $$ SELECT set_config('turnstone.org_id', org_id::text, true) $$;

COMMENT ON FUNCTION turnstone.enter_org(uuid) IS
  'Scopes the current transaction to one org (row-level security); the only writer of turnstone.org_id.';

GRANT EXECUTE ON FUNCTION turnstone.enter_org(uuid) TO turnstone_api, turnstone_worker;
