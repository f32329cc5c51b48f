-- Which providers the operator configured (`OPENAI_BASE_URL`, the default org's `default`
-- provider, set at every API start): the outbound guard trusts their base_url. An org that
-- points such a provider elsewhere (PATCH base_url) clears the mark: its URL is then checked
-- like every other org-supplied URL.
ALTER TABLE providers ADD COLUMN operator_managed boolean NOT NULL DEFAULT false;
