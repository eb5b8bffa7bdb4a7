//! `chat-server`: parses the configuration and runs the server until
//! SIGINT or SIGTERM, or (`chat-server admin ...`) runs one operator's
//! command against the running server.

use std::time::Duration;

use anyhow::Context;
use chat_server::admin::cli::AdminArgs;
use chat_server::config::{Command, LogFormat};
use chat_server::{Config, Server};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// How long open connections get to close after a shutdown signal.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Some(Command::Admin(AdminArgs { socket, command })) = config.command.clone() {
        let socket = socket.or_else(|| config.admin_socket.path(&config.db));
        match chat_server::admin::cli::run(socket, command).await {
            Ok(said) => {
                println!("{said}");
                return Ok(());
            }
            // An operator's command: the server's words, not a backtrace.
            Err(error) => {
                eprintln!("{error}");
                std::process::exit(1);
            }
        }
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }

    let server = Server::bind(&config).await?;
    let addr = server.local_addr().context("reading the bound address")?;
    tracing::info!(%addr, web_dir = %config.web_dir.display(), "chat server listening");
    println!("Chat is running: open http://{addr}/ in your browser (Ctrl-C stops it)");

    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = server.serve(async move {
        shutdown_signal().await;
        let _ = signalled_tx.send(());
    });
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => return result.context("serving"),
        _ = signalled_rx => {}
    }
    match tokio::time::timeout(DRAIN_LIMIT, serving).await {
        Ok(result) => result.context("serving"),
        Err(_) => {
            tracing::warn!("connections still open after {DRAIN_LIMIT:?}; exiting anyway");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
