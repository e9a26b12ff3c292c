//! The `warren` command: parse the command line, start logging, run the server until SIGINT or
//! SIGTERM. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the hot path allocates a message (and frees it on another
/// thread) per publish, where glibc spent ~14% of the broker's instructions (consolidating its
/// fast bins on every 64 KiB read buffer).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tracing::error;
use warren::{Server, ServerOptions};

#[derive(Debug, Parser)]
#[command(name = "warren", version, about = "An AMQP 0-9-1 message broker")]
struct Cli {
    /// Address to accept AMQP connections on.
    #[arg(long, default_value = "0.0.0.0:5672")]
    listen: String,
    /// Directory for the broker's data; created if missing.
    #[arg(long, default_value = "./warren-data")]
    data_dir: PathBuf,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let cli = Cli::parse();
    let options = ServerOptions {
        listen: cli.listen,
        data_dir: cli.data_dir,
        ..ServerOptions::default()
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let server = Server::bind(options).await?;
        server.run(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "warren failed");
            ExitCode::FAILURE
        }
    }
}
