//! The `turnstone-llmsim` binary: reads the environment, serves until SIGTERM or Ctrl-C.

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();

    let config = turnstone_llmsim::Config::from_env()?;
    let addr = std::env::var("TURNSTONE_LLMSIM_ADDR").unwrap_or_else(|_| "127.0.0.1:8090".to_owned());
    let listener = turnstone_llmsim::bind(&addr).await?;
    tracing::info!(addr = %listener.local_addr()?, ?config, "llm simulator listening");
    turnstone_llmsim::run(listener, config, shutdown_signal()).await?;
    Ok(())
}

/// Completes on Ctrl-C or, on Unix, SIGTERM (what `docker stop` sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
