-- Turnstone schema, version 1.
-- Every tenant table carries org_id; every query in core/ filters by it.
-- Event log: per-session gap-free sequence allocated from session_sequences
-- under its row lock, so a rolled-back append leaves no hole.

CREATE TABLE orgs (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    disabled    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored only as a SHA-256 hash of the secret part.
-- lookup_id is the short public part of the key (ts_<lookup>_<secret>) used to find the row.
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES orgs(id),
    lookup_id     text NOT NULL UNIQUE,
    secret_hash   bytea NOT NULL,
    display_prefix text NOT NULL DEFAULT '',  -- the key's first characters, to recognise it in lists
    name          text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX api_keys_org ON api_keys (org_id, id);

-- LLM providers: an OpenAI-compatible endpoint. api_key_ciphertext is
-- XChaCha20-Poly1305 under the master key, bound to (org_id, id) as associated data.
CREATE TABLE providers (
    id                  uuid PRIMARY KEY,
    org_id              uuid NOT NULL REFERENCES orgs(id),
    name                text NOT NULL,
    base_url            text NOT NULL,
    api_key_ciphertext  bytea,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

CREATE TABLE models (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES orgs(id),
    provider_id  uuid NOT NULL REFERENCES providers(id),
    name         text NOT NULL,          -- the upstream model string sent to the provider
    is_default   boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX models_org ON models (org_id, id);
-- At most one default model per org.
CREATE UNIQUE INDEX models_one_default ON models (org_id) WHERE is_default;

CREATE TABLE agents (
    id             uuid PRIMARY KEY,
    org_id         uuid NOT NULL REFERENCES orgs(id),
    name           text NOT NULL,
    system_prompt  text NOT NULL DEFAULT '',
    model_id       uuid REFERENCES models(id),
    capabilities   text[] NOT NULL DEFAULT '{}',
    tags           text[] NOT NULL DEFAULT '{}',
    max_iterations integer NOT NULL DEFAULT 10,
    max_turn_secs  integer NOT NULL DEFAULT 600,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    archived_at    timestamptz
);
CREATE INDEX agents_org ON agents (org_id, id);

-- status: idle | queued | running | cancelling  (one turn per session at a time)
CREATE TABLE sessions (
    id             uuid PRIMARY KEY,
    org_id         uuid NOT NULL REFERENCES orgs(id),
    agent_id       uuid NOT NULL REFERENCES agents(id),
    model_id       uuid REFERENCES models(id),
    title          text,
    tags           text[] NOT NULL DEFAULT '{}',
    status         text NOT NULL DEFAULT 'idle' CHECK (status IN ('idle', 'queued', 'running', 'cancelling')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- Target of the (session, org) foreign keys below: one check proves both
    -- that the session exists and that it belongs to the row's org.
    UNIQUE (id, org_id)
);
CREATE INDEX sessions_org ON sessions (org_id, id);

-- Each session's event counter, apart from the session row: appends update it
-- several times per turn, and keeping those updates off `sessions` spares
-- PostgreSQL re-checking the session's foreign keys within a transaction.
CREATE TABLE session_sequences (
    session_id     uuid PRIMARY KEY,
    org_id         uuid NOT NULL,
    last_sequence  bigint NOT NULL DEFAULT 0,
    FOREIGN KEY (session_id, org_id) REFERENCES sessions (id, org_id)
);

-- The append-only event log. step_key makes a turn step's result unique:
-- a second commit of the same step violates the constraint and rolls back.
CREATE TABLE events (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL,
    session_id  uuid NOT NULL,
    sequence    bigint NOT NULL CHECK (sequence > 0),
    type        text NOT NULL,
    turn_id     uuid,
    step_key    text,
    data        jsonb NOT NULL,
    ts          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (session_id, sequence),
    UNIQUE (turn_id, step_key)
    -- No foreign key to sessions: the only writer, core::events::append, inserts
    -- in the statement that bumps the (session, org) counter row, which proves
    -- both; a per-row check on every event costs more than it guards.
);
CREATE INDEX events_session_type ON events (session_id, type, sequence);

-- Turns: one per input message, run strictly in input order per session.
-- status: pending (waiting behind another turn, no task yet) | queued (task enqueued)
--       | running | completed | failed | cancelled
-- attempt is the fencing token: every step commit checks it, so a stale
-- owner whose lease was reclaimed cannot write. steps_seen/stalled_starts are
-- the forward-progress guard: starts that find no new committed step count up.
-- cancel_requested_at is the durable cancellation flag (NOTIFY only wakes).
CREATE TABLE turns (
    id              uuid PRIMARY KEY,
    org_id          uuid NOT NULL,
    session_id      uuid NOT NULL,
    input_event_id  uuid NOT NULL REFERENCES events(id),
    input_sequence  bigint NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'queued', 'running', 'completed', 'failed', 'cancelled')),
    attempt         integer NOT NULL DEFAULT 0,
    model_id        uuid REFERENCES models(id),
    iterations      integer NOT NULL DEFAULT 0,
    input_tokens    bigint NOT NULL DEFAULT 0,
    output_tokens   bigint NOT NULL DEFAULT 0,
    error_code      text,
    steps_seen      integer NOT NULL DEFAULT 0,
    stalled_starts  integer NOT NULL DEFAULT 0,
    cancel_requested_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    FOREIGN KEY (session_id, org_id) REFERENCES sessions (id, org_id)
);
CREATE INDEX turns_session_open ON turns (session_id, input_sequence) WHERE status IN ('pending', 'queued', 'running');

-- Idempotency-Key records: the first response to a keyed POST, replayed for retries.
CREATE TABLE idempotency_keys (
    org_id       uuid NOT NULL REFERENCES orgs(id),
    key          text NOT NULL,
    fingerprint  text NOT NULL,
    status       integer NOT NULL,
    response     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, key)
);
