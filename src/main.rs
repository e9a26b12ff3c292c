//! The `warren` command: parse the command line, read the configuration file (if any), start
//! logging, run the server until SIGINT or SIGTERM, reloading the file on SIGHUP; or, as
//! `warren check-config FILE`, only check a file; or, as `warren ctl ...`, hand over to the
//! management API's command-line client ([`ctl`]). Nothing else lives here.

mod ctl;

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// mimalloc instead of glibc's malloc: the hot path allocates a message (and frees it on another
/// thread) per publish, where glibc spent ~14% of the broker's instructions (consolidating its
/// fast bins on every 64 KiB read buffer). The `system-allocator` feature leaves it out, so that
/// heaptrack or massif (which hook malloc) can see where the memory goes.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives the memory the allocator holds free back to the OS, once, after the start-up recovery:
/// mimalloc keeps freed pages for reuse, and what recovery allocated for a moment (the
/// definitions read back, the logs' scans: tens of MB at 100,000 durable queues) would
/// otherwise stay in the RSS until reused.
#[cfg(not(feature = "system-allocator"))]
fn release_free_memory() {
    // SAFETY: `mi_collect` takes no pointers and only walks mimalloc's own heaps (this
    // thread's, on which recovery ran, and abandoned ones); it may be called at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// With the system allocator, nothing to do (heap profiles want the process as it is).
#[cfg(feature = "system-allocator")]
fn release_free_memory() {}
use tracing::{error, info, warn};
use warren::config::apply::{apply_at_start, ApplyError};
use warren::config::reload::Reloader;
use warren::config::settings::Overrides;
use warren::config::{self, Config, LogFormat, Settings};
use warren::Server;

/// The exit code for a configuration that is not valid (or does not fit the data directory).
const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "warren", version, about = "An AMQP 0-9-1 message broker")]
struct Cli {
    /// Address to accept AMQP connections on [default: the file's listeners, else [::]:5672, IPv6 and IPv4].
    #[arg(long)]
    listen: Option<String>,
    /// Directory for the broker's data; created if missing [default: the file's data_dir, else
    /// ./warren-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the management HTTP API, metrics and dashboard, or `off` [default: the file's
    /// management_listeners, else 127.0.0.1:15672].
    #[arg(long, value_name = "ADDR|off")]
    management: Option<String>,
    /// Configuration file (TOML, see config/warren.toml); reloaded on SIGHUP.
    #[arg(long, env = "WARREN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a configuration file: every problem with its line and column (exit 2), or a
    /// one-line summary (exit 0).
    CheckConfig { file: PathBuf },
    /// Manage a running broker through its management HTTP API: status, listings, declare,
    /// delete, purge, users, permissions, vhosts, export and import of definitions.
    Ctl(ctl::CtlArgs),
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    match cli.command.take() {
        Some(Command::CheckConfig { file }) => return check_config(&file),
        Some(Command::Ctl(args)) => return ctl::run(args),
        None => {}
    }
    let config = match &cli.config {
        None => Config::embedded(),
        Some(path) => match config::load(path) {
            Ok(config) => config,
            Err(report) => {
                eprintln!("{report}");
                eprintln!("{}: not starting", path.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let overrides = Overrides {
        listen: cli.listen,
        data_dir: cli.data_dir,
        management: cli.management,
    };
    let mut settings = config.settings.clone();
    settings.override_with(&overrides);
    init_logging(&settings);
    for warning in &config.warnings {
        warn!("{warning}");
    }
    if cli.config.is_some() {
        info!("{}", config.summary());
    }
    // Before the runtime and the store, which size themselves from the limit.
    if let Err(e) = warren::store::fd_limit::raise() {
        warn!(error = %e, "cannot read the open file limit (RLIMIT_NOFILE)");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(cli.config, config, settings, overrides));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.get_ref().and_then(|e| e.downcast_ref::<ApplyError>()) {
                Some(ApplyError::Conflicts(problems)) => {
                    for problem in problems {
                        error!("{problem}");
                    }
                    error!("the configuration does not fit what the data directory holds: not starting");
                    ExitCode::from(EXIT_CONFIG)
                }
                _ => {
                    error!(error = %e, "warren failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `warren check-config FILE`.
fn check_config(file: &Path) -> ExitCode {
    match config::load(file) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            println!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(report) => {
            eprintln!("{report}");
            let count = report.problems.len();
            eprintln!(
                "{}: {count} problem{}",
                file.display(),
                if count == 1 { "" } else { "s" }
            );
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Binds (applying the file's topology once the durable state is recovered), then serves.
async fn serve(
    path: Option<PathBuf>,
    config: Config,
    settings: Settings,
    overrides: Overrides,
) -> io::Result<()> {
    // Taken over before the start, so that a SIGHUP during it does not end the process, and a
    // SIGINT or SIGTERM that comes once the listeners are bound (a client may connect then)
    // stops it cleanly rather than the default way.
    let shutdown = shutdown_signal();
    let hangups = signal(SignalKind::hangup());
    if let Err(e) = &hangups {
        error!(error = %e, "cannot listen for SIGHUP: the configuration will not be reloaded");
    }
    let options = settings.server_options(&config);
    let (mut server, owned) = Server::bind_with(options, |broker| {
        apply_at_start(broker, &config.topology).map_err(io::Error::other)
    })
    .await?;
    // Recovered (on this thread: `bind_with` recovers in place) and the file's topology applied.
    release_free_memory();
    // Account changes made through the API are applied over the file's before any client
    // comes in; the API is served until the broker stops.
    let management = warren::management::start(&mut server)?;
    match (path, hangups) {
        (Some(path), Ok(hangups)) => {
            let reloader = Reloader {
                path,
                overrides,
                settings,
                vhosts: config.vhosts.clone(),
                owned,
                broker: server.broker(),
                users: server.users(),
                thresholds: server.thresholds(),
                tls: server.tls(),
                accounts: Some(Arc::clone(&management.accounts)),
            };
            tokio::spawn(config::reload::on_sighup(reloader, hangups));
        }
        (None, Ok(mut hangups)) => {
            // Nothing to reload, but SIGHUP must not end the broker.
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    info!("SIGHUP: no configuration file to reload (start with --config FILE)");
                }
            });
        }
        (_, Err(_)) => {}
    }
    let result = server.run(shutdown).await;
    drop(management);
    result
}

fn init_logging(settings: &Settings) {
    let mut directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| settings.log_level.clone());
    // openraft logs every vote and append at info: warnings only, unless asked for by name.
    if !directives.contains("openraft") {
        directives.push_str(",openraft=warn");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match settings.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes at SIGINT or SIGTERM; both are taken over when this is called, not when the future
/// is first polled (which is only once the server runs).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let mut interrupt = listen_for(SignalKind::interrupt(), "SIGINT");
    let mut terminate = listen_for(SignalKind::terminate(), "SIGTERM");
    async move {
        tokio::select! {
            _ = recv(&mut interrupt) => {}
            _ = recv(&mut terminate) => {}
        }
    }
}

/// Takes `kind` over now (`None`, logged, if it cannot be).
fn listen_for(kind: SignalKind, name: &str) -> Option<Signal> {
    signal(kind)
        .map_err(|e| error!(error = %e, "cannot listen for {name}"))
        .ok()
}

/// The next signal of `stream`; never, for a signal not taken over.
async fn recv(stream: &mut Option<Signal>) {
    match stream {
        Some(stream) => {
            stream.recv().await;
        }
        None => std::future::pending().await,
    }
}
