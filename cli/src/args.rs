//! The command line, declared with clap's derive API: global settings, then noun, then verb.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

#[derive(Debug, Parser)]
#[command(name = "turnstone", version, about = "The Turnstone API from the command line.", propagate_version = true)]
pub struct Cli {
    /// The API's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, global = true, env = "TURNSTONE_URL")]
    pub url: Option<String>,
    /// An org API key (ts_…).
    #[arg(long, global = true, env = "TURNSTONE_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// The deployment's operator token (for `orgs`).
    #[arg(long, global = true, env = "TURNSTONE_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,
    /// The profile of the profile file to use (default: "default").
    #[arg(long, global = true, env = "TURNSTONE_PROFILE")]
    pub profile: Option<String>,
    /// Output: `table` for people, `json` for scripts (the API's JSON), `id` for shell variables.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save --url and --key (and --operator-token) as a profile, after checking them.
    Login(LoginArgs),
    /// Talk to an agent: each line is a message, the reply streams back.
    Chat(ChatArgs),
    /// Agents: name, system prompt, model, capabilities, tags.
    #[command(subcommand)]
    Agents(Agents),
    /// Sessions with an agent; `watch` tails one's events.
    #[command(subcommand)]
    Sessions(Sessions),
    /// A session's messages; `send` starts (or queues) a turn.
    #[command(subcommand)]
    Messages(Messages),
    /// A session's stored events.
    #[command(subcommand)]
    Events(Events),
    /// LLM providers (OpenAI-compatible endpoints).
    #[command(subcommand)]
    Providers(Providers),
    /// Models of the providers.
    #[command(subcommand)]
    Models(Models),
    /// The org's API keys.
    #[command(subcommand)]
    Keys(Keys),
    /// Capabilities an agent can enable.
    #[command(subcommand)]
    Capabilities(Capabilities),
    /// Organisations (with the operator token).
    #[command(subcommand)]
    Orgs(Orgs),
    /// A session's files: put and get raw bytes, list, move, copy, remove, search.
    #[command(subcommand)]
    Files(Files),
    /// A session's key-value store: JSON values with versions and optional expiry.
    #[command(subcommand)]
    Kv(Kv),
    /// The org's MCP servers: register, list, change, remove; their tools.
    #[command(subcommand)]
    Mcp(Mcp),
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Save without checking the URL and credentials against the API.
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ChatTarget {
    /// Start a new session with this agent (agt_…).
    #[arg(long)]
    pub agent: Option<String>,
    /// Continue this session (ses_…).
    #[arg(long)]
    pub session: Option<String>,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub target: ChatTarget,
}

// Cursor pagination.
#[derive(Debug, Args)]
pub struct Page {
    /// At most this many items.
    #[arg(long)]
    pub limit: Option<std::num::NonZeroU32>,
    /// The `next_cursor` of the previous page.
    #[arg(long)]
    pub after: Option<String>,
}

// A request body: a JSON file, then flags over it.
#[derive(Debug, Args)]
pub struct BodyFile {
    /// A JSON file with the request body (flags override its members); `-` reads stdin.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AgentFields {
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub system_prompt: Option<String>,
    /// Model (mdl_…); default: the org's default model.
    #[arg(long = "model")]
    pub model_id: Option<String>,
    /// A capability to enable (repeat for more).
    #[arg(long = "capability")]
    pub capabilities: Vec<String>,
    /// A tag (repeat for more).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[arg(long)]
    pub max_iterations: Option<i64>,
    #[arg(long)]
    pub max_turn_secs: Option<i64>,
    #[command(flatten)]
    pub body: BodyFile,
}

#[derive(Debug, Subcommand)]
pub enum Agents {
    /// List them (--limit, --after for more).
    List {
        /// Only agents with this tag.
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        include_archived: bool,
        #[command(flatten)]
        page: Page,
    },
    /// Show one.
    Get { id: String },
    /// Create one from flags, or --file body.json (flags win).
    Create {
        #[command(flatten)]
        fields: AgentFields,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Change one: flags, or --file body.json (flags win).
    Update {
        id: String,
        #[command(flatten)]
        fields: AgentFields,
    },
    /// Archive (soft-delete) an agent.
    Archive { id: String },
}

#[derive(Debug, Subcommand)]
pub enum Sessions {
    /// List them (--limit, --after for more).
    List {
        /// Only sessions with this agent.
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// Show one.
    Get { id: String },
    /// Create one from flags, or --file body.json (flags win).
    Create {
        #[arg(long = "agent")]
        agent_id: Option<String>,
        #[arg(long = "model")]
        model_id: Option<String>,
        #[arg(long)]
        title: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        body: BodyFile,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Cancel the running turn (and, with --all, the queued ones).
    Cancel {
        id: String,
        #[arg(long)]
        all: bool,
    },
    /// Tail the session's events, one line each (JSON lines with -o json), across reconnects.
    Watch {
        id: String,
        /// Start after this event (evt_…); default: the first event.
        #[arg(long)]
        since: Option<String>,
        /// Exit after the first event of this type (e.g. turn.completed).
        #[arg(long)]
        until: Option<String>,
    },
    /// What the session's waiting turn waits for: client tool calls and approvals.
    Pending { id: String },
    /// Approve a pending call (approval id apr_… from `pending`); it runs with the arguments shown.
    Approve {
        id: String,
        approval_id: String,
        /// Why (recorded with the decision).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a pending call; the model gets an error (with --reason).
    Deny {
        id: String,
        approval_id: String,
        /// Why (given to the model).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Answer a pending client tool call (its tool_call_id from `pending`) with OUTPUT.
    ToolResult {
        id: String,
        call_id: String,
        #[arg(value_name = "OUTPUT")]
        result: String,
        /// OUTPUT is an error message.
        #[arg(long)]
        error: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum Messages {
    /// List a session's messages in conversation order (--after-sequence, --limit for more).
    List {
        session: String,
        #[arg(long)]
        after_sequence: Option<i64>,
        #[arg(long)]
        limit: Option<std::num::NonZeroU32>,
        /// `conversation` (default) or `arrival`.
        #[arg(long)]
        order: Option<String>,
    },
    /// Post a user message (starts or queues a turn); prints the acceptance.
    Send {
        session: String,
        /// The message text; a body file (--file) may say more.
        text: Option<String>,
        /// Model override for this message (mdl_…).
        #[arg(long = "model")]
        model_id: Option<String>,
        #[command(flatten)]
        body: BodyFile,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Events {
    /// List a session's stored events (--type to filter; --after-sequence, --limit for more).
    List {
        session: String,
        /// Only events of this type (repeat for more).
        #[arg(long = "type")]
        types: Vec<String>,
        #[arg(long)]
        after_sequence: Option<i64>,
        #[arg(long)]
        limit: Option<std::num::NonZeroU32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Providers {
    /// List them (--limit, --after for more).
    List {
        #[command(flatten)]
        page: Page,
    },
    /// Show one.
    Get { id: String },
    /// Create one from flags, or --file body.json (flags win).
    Create {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        base_url: Option<String>,
        #[arg(long)]
        api_key: Option<String>,
        #[command(flatten)]
        body: BodyFile,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Change one: flags, or --file body.json (flags win).
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        base_url: Option<String>,
        #[arg(long)]
        api_key: Option<String>,
        #[command(flatten)]
        body: BodyFile,
    },
    /// Delete one.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
pub enum Models {
    /// List them (--limit, --after for more).
    List {
        #[command(flatten)]
        page: Page,
    },
    /// Show one.
    Get { id: String },
    /// Create one from flags, or --file body.json (flags win).
    Create {
        #[arg(long = "provider")]
        provider_id: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// Make it the org's default model.
        #[arg(long)]
        default: bool,
        #[command(flatten)]
        body: BodyFile,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Delete one.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
pub enum Keys {
    /// List them (--limit, --after for more).
    List {
        #[command(flatten)]
        page: Page,
    },
    /// Create a key; the secret is printed once.
    Create {
        #[arg(long)]
        name: Option<String>,
        /// RFC 3339 time the key stops working.
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        body: BodyFile,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    Revoke {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Capabilities {
    /// List them.
    List,
}

#[derive(Debug, Args)]
pub struct OrgFields {
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub disabled: Option<bool>,
    #[arg(long)]
    pub max_agents: Option<i64>,
    #[arg(long)]
    pub max_sessions: Option<i64>,
    #[arg(long)]
    pub max_concurrent_turns: Option<i64>,
    #[arg(long)]
    pub rate_limit_per_minute: Option<i64>,
    #[command(flatten)]
    pub body: BodyFile,
}

#[derive(Debug, Subcommand)]
pub enum Orgs {
    /// List them (--limit, --after for more).
    List {
        #[command(flatten)]
        page: Page,
    },
    /// Show one.
    Get { id: String },
    /// Create one from flags, or --file body.json (flags win).
    Create {
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        body: BodyFile,
    },
    /// Change one: flags, or --file body.json (flags win).
    Update {
        id: String,
        #[command(flatten)]
        fields: OrgFields,
    },
    /// Issue an API key for an org; the secret is printed once.
    CreateKey {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        body: BodyFile,
    },
}

// A write's precondition: replace only this version, or only create.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct FilePrecondition {
    /// Replace only this version (the `etag` a write or `ls` printed; quotes optional).
    #[arg(long)]
    pub if_match: Option<String>,
    /// Only create: fail with `precondition_failed` if the file exists.
    #[arg(long)]
    pub create_only: bool,
}

#[derive(Debug, Subcommand)]
pub enum Files {
    /// Write a file from --file LOCAL, else from stdin, byte for byte; prints its metadata.
    Put {
        session: String,
        /// The file's absolute path in the session, e.g. /notes/todo.md.
        path: String,
        /// Read the content from this local file (default: stdin).
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        #[command(flatten)]
        precondition: FilePrecondition,
    },
    /// Read a file: its bytes to stdout, unchanged, or to --file LOCAL (then its metadata is printed).
    Get {
        session: String,
        path: String,
        /// Write the content to this local file instead of stdout.
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
    },
    /// List a directory's files and subdirectories (--limit, --after for more).
    Ls {
        session: String,
        /// The directory (default: /).
        #[arg(long)]
        dir: Option<String>,
        /// Everything below the directory, not only its direct children.
        #[arg(long)]
        recursive: bool,
        #[command(flatten)]
        page: Page,
    },
    /// Remove a file (or, with --recursive, a directory and everything in it).
    Rm {
        session: String,
        path: String,
        #[arg(long)]
        recursive: bool,
        /// Remove only this version (an etag; quotes optional).
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Move (rename) a file.
    Mv {
        session: String,
        from: String,
        to: String,
        /// Replace TO if it exists.
        #[arg(long)]
        overwrite: bool,
    },
    /// Copy a file.
    Cp {
        session: String,
        from: String,
        to: String,
        /// Replace TO if it exists.
        #[arg(long)]
        overwrite: bool,
    },
    /// Search the text files' lines with a regular expression.
    Search {
        session: String,
        pattern: String,
        /// Only files whose path (or, without `/`, name) matches, e.g. '*.md' or '/notes/**'.
        #[arg(long)]
        glob: Option<String>,
        /// At most this many matches (default 100).
        #[arg(long)]
        limit: Option<std::num::NonZeroU32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Kv {
    /// Store a JSON value under a key ('-' reads it from stdin); prints the entry.
    Set {
        session: String,
        // Not `key`: that id is the global `--key` (the API key), which clap would overwrite.
        #[arg(value_name = "KEY")]
        name: String,
        /// The value, as JSON: '"text"', 42, '{"a":1}'.
        value: String,
        /// Expire the key after this many seconds.
        #[arg(long)]
        ttl: Option<i64>,
        /// Replace only this version (the entry's `version`).
        #[arg(long, conflicts_with = "create_only")]
        if_version: Option<i64>,
        /// Only create: fail with `precondition_failed` if the key exists.
        #[arg(long)]
        create_only: bool,
    },
    /// Show a key's entry (value, version, expiry).
    Get {
        session: String,
        #[arg(value_name = "KEY")]
        name: String,
    },
    /// Remove a key.
    Rm {
        session: String,
        #[arg(value_name = "KEY")]
        name: String,
        /// Remove only this version.
        #[arg(long)]
        if_version: Option<i64>,
    },
    /// List the keys (--prefix to narrow; --limit, --after for more).
    Ls {
        session: String,
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        page: Page,
    },
}

// `mcp`: flags of a server, for `add` and `update`.
#[derive(Debug, Args)]
pub struct McpFields {
    /// Unique in the org; the model sees tools as `mcp__<name>__<tool>`.
    #[arg(long)]
    pub name: Option<String>,
    /// The server's MCP endpoint (streamable HTTP): the body's `url` (`--url` is the API's).
    #[arg(long, value_name = "URL")]
    pub server_url: Option<String>,
    /// 'Name: value', sent with every request to the server (repeat it). Values are secrets: stored
    /// encrypted, never shown. On `update`, replaces every header.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Offer agents only this tool (repeat it); default: every tool.
    #[arg(long = "allowed-tool", value_name = "TOOL")]
    pub allowed_tools: Vec<String>,
    #[command(flatten)]
    pub body: BodyFile,
}

#[derive(Debug, Subcommand)]
pub enum Mcp {
    /// List them (--limit, --after for more).
    Ls {
        #[command(flatten)]
        page: Page,
    },
    /// Show one (header names only).
    Get { id: String },
    /// Register one: --name, --server-url, or --file server.json (flags win).
    Add {
        #[command(flatten)]
        fields: McpFields,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Change one: flags, or --file body.json (flags win); a new --server-url of a server with headers needs --header too.
    Update {
        id: String,
        #[command(flatten)]
        fields: McpFields,
        /// `active` or `disabled`.
        #[arg(long)]
        status: Option<String>,
    },
    /// Remove one.
    Rm { id: String },
    /// Its cached tools (as last fetched).
    Tools { id: String },
    /// Fetch its tools from the server now, and list them.
    Refresh { id: String },
}
