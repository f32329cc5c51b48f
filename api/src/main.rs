//! `turnstone-api`: serve the control plane, or `turnstone-api openapi` to print the contract
//! (`turnstone-api problems`: the catalogue of problem codes, `docs/problems.md`).
//!
//! Key management (run as the schema owner, `TURNSTONE_MIGRATE_DATABASE_URL` or `DATABASE_URL`):
//! - `turnstone-api keys rotate-master`: re-wrap every org data key under the first
//!   `TURNSTONE_MASTER_KEY` entry (list the old key second while this runs).
//! - `turnstone-api keys rotate-org <org_…>`: new data key for one org, secrets re-sealed.

use turnstone_api::{Application, Config};
use turnstone_core::ids::{OrgId, TypedId};

const USAGE: &str = "usage: turnstone-api [openapi | problems | keys rotate-master | keys rotate-org <org_id>]";

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["openapi"] => {
            println!("{}", turnstone_api::openapi_json());
            std::process::ExitCode::SUCCESS
        }
        ["problems"] => {
            print!("{}", turnstone_api::error::problems_markdown());
            std::process::ExitCode::SUCCESS
        }
        [] => tokio::runtime::Runtime::new().expect("tokio runtime").block_on(run()),
        ["keys", rest @ ..] => tokio::runtime::Runtime::new().expect("tokio runtime").block_on(keys(rest)),
        _ => {
            eprintln!("{USAGE}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The key rotation commands; both are online and safe to re-run.
async fn keys(args: &[&str]) -> std::process::ExitCode {
    use turnstone_core::{db, keychain};
    let result = async {
        let config = Config::from_env()?;
        let url = config.migrate_database_url.as_deref().unwrap_or(&config.database_url);
        let pool = db::connect(url, 2).await?;
        let done = match args {
            ["rotate-master"] => keychain::rotate_master_key(&pool, &config.keys).await?,
            ["rotate-org", org] => keychain::rotate_org_key(&pool, &config.keys, OrgId::parse(org)?).await?,
            _ => return Err(USAGE.into()),
        };
        println!("rotated: {} org(s), {} data key(s), {} secret(s) re-sealed", done.orgs, done.keys, done.secrets);
        Ok::<(), Box<dyn std::error::Error>>(())
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turnstone-api keys: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::process::ExitCode {
    let _telemetry = turnstone_core::telemetry::init("turnstone-api");
    match serve().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let addr = std::env::var("TURNSTONE_API_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = turnstone_api::listener::bind(&addr).await?;
    let app = Application::build(config, listener, shutdown_signal()).await?;
    if let Some(key) = &app.generated_key {
        // Shown once; only its hash is stored.
        eprintln!("\n  Generated API key for the default org (shown once): {}\n", key.expose_secret());
    }
    tracing::info!(addr = %app.local_addr, docs = %format!("http://{}/docs", app.local_addr), "turnstone-api listening");
    app.wait().await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
