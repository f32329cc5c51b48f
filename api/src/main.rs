//! `turnstone-api`: serve the control plane, or `turnstone-api openapi` to print the contract.

use turnstone_api::{Application, Config};

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("openapi") {
        println!("{}", turnstone_api::openapi_json());
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run())
}

async fn run() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()))
        .with_writer(std::io::stderr)
        .init();
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
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let app = Application::build(config, listener, shutdown_signal()).await?;
    if let Some(key) = &app.generated_key {
        // Shown once; only its hash is stored.
        eprintln!("\n  Generated API key for the default org (shown once): {}\n", key.expose());
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
