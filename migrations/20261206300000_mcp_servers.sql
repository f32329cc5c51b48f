-- The MCP catalog: the Model Context Protocol servers an org trusts, and their
-- cached tool lists.
--
-- headers_ciphertext is one sealed JSON object {name: value} (org key chain,
-- purpose 'mcp_server.headers', bound to the row id); header_names lists the
-- names alone, which is all a response ever shows.
--
-- The tool list cache (tools, tools_fetched_at) is shared by every process:
-- one refresh at a time claims refresh_until (a lease in the row, taken and
-- released by single statements, so no transaction spans the network call and
-- a transaction-mode pooler never notices).
CREATE TABLE mcp_servers (
    id                 uuid PRIMARY KEY,
    org_id             uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name               text NOT NULL,
    url                text NOT NULL,
    header_names       text[] NOT NULL DEFAULT '{}',
    headers_ciphertext bytea,
    allowed_tools      text[],
    status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    tools              jsonb NOT NULL DEFAULT '[]',
    tools_fetched_at   timestamptz,
    refresh_until      timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

CREATE INDEX mcp_servers_org ON mcp_servers (org_id, id DESC);

ALTER TABLE mcp_servers ENABLE ROW LEVEL SECURITY;
ALTER TABLE mcp_servers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON mcp_servers USING (org_id = turnstone_org()) WITH CHECK (org_id = turnstone_org());

GRANT SELECT, INSERT, UPDATE, DELETE ON mcp_servers TO turnstone_api;
-- Workers read servers and write the tool-list cache (a stale list is refreshed by whoever needs it).
GRANT SELECT ON mcp_servers TO turnstone_worker;
GRANT UPDATE (tools, tools_fetched_at, refresh_until) ON mcp_servers TO turnstone_worker;
