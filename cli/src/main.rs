//! `turnstone`: the Turnstone API from the command line — every resource as noun then verb,
//! `chat` with an agent, `sessions watch` to tail a session's events.
//!
//! Thin: parses the command line (clap exits 2 on a usage error), resolves the settings, runs the
//! command and maps its [`Failure`] to the exit code: 0 ok, 1 API error, 2 usage error, 3 cannot
//! connect. The crate must not reach the API except through the client `build.rs` generates from
//! `openapi/openapi.json`, nor know the server's internals: it is a client like any other.
//!
//! # Layout
//! - `args.rs` — the command line (clap derive).
//! - `config.rs` — flags, environment, profile file; `login.rs` writes a profile.
//! - `api.rs` — the generated client and how it is built; `failure.rs` — errors and exit codes.
//! - `resources.rs` — the noun-verb commands; `storage.rs` — `files` and `kv` (raw bytes in and
//!   out); `mcp.rs` — the MCP server catalog; `output.rs` — `-o table|json|id`.
//! - `stream.rs` — the resuming SSE reader; `chat.rs` and `watch.rs` use it.
//! - `waiting.rs` — answering a waiting turn (tool results, approvals); `chat.rs` uses it.

mod api;
mod args;
mod chat;
mod config;
mod failure;
mod login;
mod mcp;
mod output;
mod resources;
mod storage;
mod stream;
mod waiting;
mod watch;

use clap::Parser;

use crate::api::Credential;
use crate::args::{Cli, Command};
use crate::failure::Failure;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let code = match run(cli).await {
        Ok(()) => 0,
        Err(failure) => {
            if !matches!(failure, Failure::Quiet(_)) {
                eprintln!("{failure}");
            }
            failure.exit_code()
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let o = cli.output;
    if let Command::Login(login) = cli.command {
        return login::run(cli.url, cli.key, cli.operator_token, cli.profile, !login.no_verify).await;
    }
    let settings = config::resolve(cli.url, cli.key, cli.operator_token, cli.profile.as_deref())?;
    let token = match resources::credential(&cli.command) {
        Credential::ApiKey => settings.api_key.ok_or_else(|| {
            Failure::usage("no API key: pass --key, set TURNSTONE_API_KEY, or run `turnstone login --url … --key …`")
        })?,
        Credential::Operator => settings
            .operator_token
            .ok_or_else(|| Failure::usage("no operator token: pass --operator-token or set TURNSTONE_OPERATOR_TOKEN"))?,
    };
    let c = api::client(&settings.url, &token)?;
    match cli.command {
        Command::Login(_) => unreachable!("handled above"),
        Command::Chat(chat) => chat::run(&c, o, chat.target).await,
        Command::Agents(verb) => resources::agents(&c, o, verb).await,
        Command::Sessions(verb) => resources::sessions(&c, o, verb).await,
        Command::Messages(verb) => resources::messages(&c, o, verb).await,
        Command::Events(verb) => resources::events(&c, o, verb).await,
        Command::Providers(verb) => resources::providers(&c, o, verb).await,
        Command::Models(verb) => resources::models(&c, o, verb).await,
        Command::Keys(verb) => resources::keys(&c, o, verb).await,
        Command::Capabilities(verb) => resources::capabilities(&c, o, verb).await,
        Command::Orgs(verb) => resources::orgs(&c, o, verb).await,
        Command::Files(verb) => storage::files(&c, o, verb).await,
        Command::Kv(verb) => storage::kv(&c, o, verb).await,
        Command::Mcp(verb) => mcp::mcp(&c, o, verb).await,
    }
}
