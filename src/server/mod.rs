//! The network side of the broker: the TCP listener, one task per connection, and shutdown.
//!
//! [`Server::bind`] opens the listener; [`Server::run`] accepts until the shutdown future
//! completes, then tells every connection (through a `watch` channel) to close with
//! 320 CONNECTION_FORCED and waits, bounded, for them to finish. Connection tasks share only the
//! read-only [`Context`].

pub mod alarms;
mod auth;
mod channel;
mod connection;
mod handshake;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

pub use auth::{User, Users};
use channel::Limits;

use crate::broker::Broker;
use crate::store::sync::Syncer;
use crate::store::Store;
pub use handshake::Tuning;

/// How long shutdown waits for connections to finish their close handshake.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the server needs to run.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub listen: String,
    pub data_dir: PathBuf,
    pub tuning: Tuning,
    pub handshake_timeout: Duration,
    pub users: Users,
    pub vhosts: Vec<String>,
    /// How long a delivery may stay unacknowledged before the broker takes it back, unless the
    /// queue says otherwise (`x-consumer-timeout`, in ms).
    pub unacked_timeout: Duration,
    /// What happens when a delivery passes its unacked timeout.
    pub unacked_timeout_action: UnackedTimeoutAction,
    /// The largest message body accepted from a publisher (bytes).
    pub max_message_size: u64,
    /// The size of a durable queue's log segment files (bytes).
    pub segment_size: u64,
    /// Bytes of ready messages a queue keeps in memory; the rest of its backlog lives only on
    /// disk and is read back as consumers reach it.
    pub queue_memory_window: u64,
    /// Publishers are blocked while the broker's RSS is above this (bytes; default 40% of RAM).
    pub memory_high_watermark: u64,
    /// Publishers are blocked while the data directory's disk has less free space (bytes).
    pub disk_free_limit: u64,
    /// How often memory and disk are sampled for the alarms.
    pub alarm_interval: Duration,
    /// How often queue logs give back the disk space of mostly-acked segments.
    pub compaction_interval: Duration,
}

/// What the broker does with a delivery left unacknowledged past its timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnackedTimeoutAction {
    /// Take it back and redeliver it (`redelivered=true`) to a consumer that can take it; a late
    /// ack of the old delivery tag is ignored. Warren's default.
    Redeliver,
    /// RabbitMQ's behaviour: close the channel with 406 PRECONDITION_FAILED, which requeues
    /// everything it held.
    CloseChannel,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            listen: "0.0.0.0:5672".into(),
            data_dir: PathBuf::from("./warren-data"),
            tuning: Tuning::default(),
            handshake_timeout: Duration::from_secs(10),
            users: Users::default(),
            vhosts: vec!["/".into()],
            unacked_timeout: Duration::from_secs(30 * 60),
            unacked_timeout_action: UnackedTimeoutAction::Redeliver,
            max_message_size: 128 * 1024 * 1024,
            segment_size: 8 * 1024 * 1024,
            queue_memory_window: 16 * 1024 * 1024,
            memory_high_watermark: alarms::default_memory_high_watermark(),
            disk_free_limit: 50 * 1000 * 1000,
            alarm_interval: Duration::from_secs(1),
            compaction_interval: Duration::from_secs(5),
        }
    }
}

/// Read-only state shared by all connection tasks.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) tuning: Tuning,
    pub(crate) handshake_timeout: Duration,
    pub(crate) users: Users,
    pub(crate) broker: Broker,
    pub(crate) limits: Limits,
    /// The resource alarm in effect, if any.
    pub(crate) alarms: watch::Receiver<Option<String>>,
}

/// A bound, not yet running, broker.
pub struct Server {
    listener: TcpListener,
    context: Arc<Context>,
    thresholds: Arc<alarms::Thresholds>,
}

impl Server {
    /// Creates the data directory if needed and binds the listener.
    pub async fn bind(options: ServerOptions) -> io::Result<Server> {
        std::fs::create_dir_all(&options.data_dir)?;
        let store = Arc::new(Store {
            data_dir: options.data_dir.clone(),
            segment_size: options.segment_size,
            memory_window: usize::try_from(options.queue_memory_window).unwrap_or(usize::MAX),
            syncer: Syncer::start()?,
            next_spill: Default::default(),
        });
        match std::fs::remove_dir_all(store.spill_root()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let broker = Broker::open(&options.vhosts, &store)?;
        broker.spawn_compaction(options.compaction_interval);
        broker.spawn_expiry(Duration::from_millis(100));
        let listener = TcpListener::bind(&options.listen).await?;
        let thresholds =
            alarms::Thresholds::new(options.memory_high_watermark, options.disk_free_limit);
        let alarms = alarms::start(
            Arc::clone(&thresholds),
            options.data_dir.clone(),
            options.alarm_interval,
        );
        let context = Arc::new(Context {
            tuning: options.tuning,
            handshake_timeout: options.handshake_timeout,
            users: options.users,
            broker,
            alarms,
            limits: Limits {
                max_message_size: options.max_message_size,
                unacked_timeout: options.unacked_timeout,
                unacked_timeout_action: options.unacked_timeout_action,
            },
        });
        Ok(Server {
            listener,
            context,
            thresholds,
        })
    }

    /// The resource-alarm thresholds, changeable while the server runs.
    pub fn thresholds(&self) -> Arc<alarms::Thresholds> {
        Arc::clone(&self.thresholds)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves clients until `shutdown` completes, then closes every connection gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let addr = self.local_addr()?;
        info!(%addr, "listening for AMQP 0-9-1");
        let (stop, stopping) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let context = Arc::clone(&self.context);
                        connections.spawn(connection::serve(stream, peer, context, stopping.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = connections.join_next(), if !connections.is_empty() => log_task_end(done),
            }
        }
        drop(self.listener);
        info!(
            open = connections.len(),
            "shutting down: closing connections"
        );
        let _ = stop.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(done) = connections.join_next().await {
                log_task_end(done);
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                open = connections.len(),
                "connections did not close in time; dropping them"
            );
            connections.abort_all();
        }
        info!("shutdown complete");
        Ok(())
    }
}

/// A connection task that panicked is a bug: say so loudly (its socket is already dropped).
fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            error!(error = %e, "connection task panicked");
        }
    }
}
