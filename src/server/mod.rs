//! The network side of the broker: the TCP listener, one task per connection, and shutdown.
//!
//! [`Server::bind`] opens the listeners; [`Server::run`] accepts on all of them until the shutdown
//! future completes, then tells every connection (through a `watch` channel) to close with
//! 320 CONNECTION_FORCED and waits, bounded, for them to finish. Connection tasks share only the
//! read-only [`Context`]. With `max_connections`, each connection task holds a permit of a
//! semaphore; a connection accepted when none is left is refused at `connection.open` with 530
//! NOT_ALLOWED, as RabbitMQ does (at most 64 such at a time; beyond, the socket is closed).

mod accepting;
pub mod access;
mod accounts;
pub mod alarms;
mod auth;
mod channel;
mod connection;
mod handshake;
mod outbox;
mod permissions;
pub mod registry;
mod tally;
mod throttle;
pub mod tls;
mod transport;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

pub use auth::{Password, Permission, TopicPermission, User, Users};
use channel::ChannelSettings;

use crate::broker::vhost::VhostLimits;
use crate::broker::Broker;
use crate::store::files::Files;
use crate::store::sync::Syncer;
use crate::store::Store;
use accepting::Accepting;
pub use handshake::Tuning;
pub use tls::{TlsError, TlsFiles, TlsSetup};

/// Connections over `max_connections` that may be in their handshake (to be refused with 530)
/// at once.
const MAX_REFUSALS: usize = 64;

/// The embedded default listener: every address, IPv6 and IPv4 (dual-stack), as RabbitMQ's.
pub const DEFAULT_LISTENER: &str = "[::]:5672";

/// How long shutdown waits for connections to finish their close handshake.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the server needs to run.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub listen: String,
    /// More addresses to accept connections on, beside `listen`.
    pub extra_listeners: Vec<String>,
    /// At most this many client connections at once (`None`: no limit); one more is closed as
    /// soon as it is accepted.
    pub max_connections: Option<usize>,
    /// At most this many connections still in their handshake (before `connection.open`); one
    /// more is closed as soon as it is accepted.
    pub max_handshakes: usize,
    pub data_dir: PathBuf,
    pub tuning: Tuning,
    pub handshake_timeout: Duration,
    pub users: Users,
    pub vhosts: Vec<String>,
    /// Limits of vhosts (connections, queues), by name; others have none.
    pub vhost_limits: Vec<(String, VhostLimits)>,
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
    /// Addresses to accept AMQP over TLS on (they need `tls`).
    pub tls_listeners: Vec<String>,
    /// The TLS listeners' certificate, key and CA.
    pub tls: Option<TlsFiles>,
    /// Addresses to serve the management HTTP API, metrics and dashboard on (none by default
    /// here; the configuration's default is 127.0.0.1:15672).
    pub management_listeners: Vec<String>,
    /// `[cluster]`: this node joins a cluster (quorum queues are replicated over it).
    pub cluster: Option<crate::broker::quorum::ClusterConfig>,
}

/// What the broker does with a delivery left unacknowledged past its timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnackedTimeoutAction {
    /// Take it back and redeliver it (`redelivered=true`) to a consumer on another channel,
    /// never to the channel that still holds it (it waits for one); a late ack or reject of the
    /// old delivery tag settles it if no one else took it meanwhile. Warren's default.
    Redeliver,
    /// RabbitMQ's behaviour: close the channel with 406 PRECONDITION_FAILED, which requeues
    /// everything it held.
    CloseChannel,
    /// RabbitMQ 4.3's for quorum queues: cancel the consumer (`basic.cancel` to a client that
    /// advertises `consumer_cancel_notify`; a channel close with 406 to one that does not) and
    /// take back every delivery it holds, as `Redeliver` does.
    Cancel,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            listen: DEFAULT_LISTENER.into(),
            extra_listeners: Vec::new(),
            max_connections: None,
            max_handshakes: 1024,
            data_dir: PathBuf::from("./warren-data"),
            tuning: Tuning::default(),
            handshake_timeout: Duration::from_secs(10),
            users: Users::default(),
            vhosts: vec!["/".into()],
            vhost_limits: Vec::new(),
            unacked_timeout: Duration::from_secs(30 * 60),
            unacked_timeout_action: UnackedTimeoutAction::Redeliver,
            max_message_size: 16 * 1024 * 1024,
            segment_size: 8 * 1024 * 1024,
            queue_memory_window: 8 * 1024 * 1024,
            memory_high_watermark: alarms::default_memory_high_watermark(),
            disk_free_limit: 50 * 1000 * 1000,
            alarm_interval: Duration::from_secs(1),
            compaction_interval: Duration::from_secs(5),
            tls_listeners: Vec::new(),
            tls: None,
            management_listeners: Vec::new(),
            cluster: None,
        }
    }
}

/// Read-only state shared by all connection tasks.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) tuning: Tuning,
    pub(crate) handshake_timeout: Duration,
    pub(crate) users: Users,
    /// Open connections per user and per vhost, for their limits.
    pub(crate) tally: Arc<tally::Tally>,
    /// Failed logins per peer address, to slow password guessing.
    pub(crate) logins: throttle::LoginThrottle,
    pub(crate) broker: Arc<Broker>,
    pub(crate) limits: ChannelSettings,
    /// The resource alarm in effect, if any.
    pub(crate) alarms: watch::Receiver<Option<String>>,
    /// Every open connection, for the management API.
    pub(crate) registry: Arc<registry::Registry>,
}

/// A bound, not yet running, broker.
pub struct Server {
    /// The plain listeners, then the TLS ones.
    listeners: Vec<TcpListener>,
    /// How many of `listeners` are plain TCP.
    plain_listeners: usize,
    /// What the TLS listeners accept with (`None`: there are none).
    tls: Option<TlsSetup>,
    context: Arc<Context>,
    thresholds: Arc<alarms::Thresholds>,
    /// `max_connections` and its permits, when the number of connections is limited.
    connection_limit: Option<(usize, Arc<Semaphore>)>,
    /// Connections over the limit being refused at once (each handshakes to its 530).
    refusals: Arc<Semaphore>,
    /// Connections not yet past `connection.open` (each holds one until then): beyond
    /// `max_handshakes` a new socket is closed at once, so a client opening connections in a
    /// loop cannot make the broker hold an unbounded number of them.
    handshakes: Arc<Semaphore>,
    /// The management API's listeners.
    management: Vec<TcpListener>,
    data_dir: PathBuf,
    /// The broker's background tasks: they stop when the server is dropped (after `run`).
    _background: crate::broker::Background,
}

impl Server {
    /// Creates the data directory if needed, opens the broker (recovering what is durable) and
    /// binds the listeners.
    pub async fn bind(options: ServerOptions) -> io::Result<Server> {
        Ok(Server::bind_with(options, |_| Ok(())).await?.0)
    }

    /// [`Server::bind`], calling `configure` on the broker once it is recovered and before any
    /// listener is bound (the configuration file's topology is applied there); its error stops
    /// the start.
    pub async fn bind_with<T>(
        options: ServerOptions,
        configure: impl FnOnce(&Broker) -> io::Result<T>,
    ) -> io::Result<(Server, T)> {
        std::fs::create_dir_all(&options.data_dir)?;
        let store = Arc::new(Store {
            data_dir: options.data_dir.clone(),
            segment_size: options.segment_size,
            memory_window: usize::try_from(options.queue_memory_window).unwrap_or(usize::MAX),
            syncer: Syncer::start()?,
            files: Files::new(Files::limit_for_process())?,
            next_spill: Default::default(),
        });
        info!(
            limit = store.files.limit(),
            "queue log files: at most this many kept open (idle ones are closed)"
        );
        match std::fs::remove_dir_all(store.spill_root()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let broker = Arc::new(Broker::open(&options.vhosts, &store)?);
        for (name, limits) in &options.vhost_limits {
            if let Some(vhost) = broker.vhost(name) {
                vhost.set_limits(*limits);
            }
        }
        // Joined before the configuration's topology is applied, so that its quorum queues
        // are the cluster's; the cluster's changes are applied once the broker follows it.
        if let Some(cluster) = options.cluster.clone() {
            broker.join_cluster(cluster, &options.data_dir).await?;
        }
        let configured = configure(&broker)?;
        let background =
            broker.start_background(Duration::from_millis(100), options.compaction_interval);
        let tls = tls_setup(&options)?;
        let mut listeners = Vec::new();
        let plain = std::iter::once(&options.listen).chain(&options.extra_listeners);
        for address in plain.chain(&options.tls_listeners) {
            let listener = listen(address).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {address}: {e}"))
            })?;
            listeners.push(listener);
        }
        let management = bind_management(&options.management_listeners).await?;
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
            tally: Arc::default(),
            logins: Default::default(),
            broker,
            alarms,
            registry: Arc::default(),
            limits: ChannelSettings {
                max_message_size: options.max_message_size,
                unacked_timeout: options.unacked_timeout,
                unacked_timeout_action: options.unacked_timeout_action,
            },
        });
        let server = Server {
            plain_listeners: listeners.len() - options.tls_listeners.len(),
            listeners,
            tls,
            context,
            thresholds,
            connection_limit: options
                .max_connections
                .map(|n| (n, Arc::new(Semaphore::new(n)))),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
            handshakes: Arc::new(Semaphore::new(options.max_handshakes)),
            management,
            data_dir: options.data_dir.clone(),
            _background: background,
        };
        Ok((server, configured))
    }

    /// The broker (shared with the connections), for the configuration's reloads.
    pub fn broker(&self) -> Arc<Broker> {
        Arc::clone(&self.context.broker)
    }

    /// The users: a shared handle, so that replacing them reaches every new login.
    pub fn users(&self) -> Users {
        self.context.users.clone()
    }

    /// The connection registry (the management API's view of connections).
    pub fn registry(&self) -> Arc<registry::Registry> {
        Arc::clone(&self.context.registry)
    }

    /// The resource alarm in effect (a receiver of its announcements).
    pub fn alarms(&self) -> watch::Receiver<Option<String>> {
        self.context.alarms.clone()
    }

    /// The resource-alarm thresholds, changeable while the server runs.
    pub fn thresholds(&self) -> Arc<alarms::Thresholds> {
        Arc::clone(&self.thresholds)
    }

    /// The TLS configuration (a shared handle: reloading it reaches every new TLS connection);
    /// `None` without TLS listeners.
    pub fn tls(&self) -> Option<TlsSetup> {
        self.tls.clone()
    }

    /// The addresses of the TLS listeners.
    pub fn tls_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        let tls = self
            .listeners
            .get(self.plain_listeners..)
            .unwrap_or_default();
        tls.iter().map(TcpListener::local_addr).collect()
    }

    /// The addresses of the management API's listeners.
    pub fn management_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.management
            .iter()
            .map(TcpListener::local_addr)
            .collect()
    }

    /// The management API's listeners, taken (once) by whoever serves the API on them.
    pub fn take_management_listeners(&mut self) -> Vec<TcpListener> {
        std::mem::take(&mut self.management)
    }

    /// Every AMQP listener's address, and whether it is a TLS one.
    pub fn listeners(&self) -> io::Result<Vec<(SocketAddr, bool)>> {
        let plain = self.plain_listeners;
        let addrs = self.local_addrs()?;
        Ok(addrs
            .into_iter()
            .enumerate()
            .map(|(i, a)| (a, i >= plain))
            .collect())
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The server's unacked timeout (a consumer's or its queue's `x-consumer-timeout` wins).
    pub fn unacked_timeout(&self) -> Duration {
        self.context.limits.unacked_timeout
    }

    /// The address of the first listener.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.listeners.first() {
            Some(listener) => listener.local_addr(),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no listener")),
        }
    }

    /// The addresses of every listener, in the order they were given (plain ones, then TLS).
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners.iter().map(TcpListener::local_addr).collect()
    }

    /// The next connection on any listener, as [`Server::accept_once`]; a failed accept (out of
    /// file descriptors and the like) is retried every 100 ms instead of spinning, and logged once
    /// per burst of failures ([`Accepting`]).
    async fn accept(&self, accepting: &mut Accepting) -> (TcpStream, SocketAddr, bool) {
        loop {
            match self.accept_once(&mut accepting.turn).await {
                Ok(accepted) => {
                    accepting.succeeded();
                    return accepted;
                }
                Err(e) => {
                    accepting.failed(&e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// The next connection on any listener (each wake-up starts with a different listener, so
    /// that a busy one cannot starve the others), and whether it came to a TLS listener.
    async fn accept_once(&self, turn: &mut usize) -> io::Result<(TcpStream, SocketAddr, bool)> {
        let count = self.listeners.len();
        std::future::poll_fn(|cx| {
            for i in 0..count {
                let index = (*turn + i) % count;
                let listener = &self.listeners[index];
                if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                    *turn = (*turn + i + 1) % count;
                    // An IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d: it is
                    // known by its IPv4 address (loopback checks, logs).
                    let accepted = accepted.map(|(stream, peer)| {
                        (
                            stream,
                            SocketAddr::new(peer.ip().to_canonical(), peer.port()),
                            index >= self.plain_listeners,
                        )
                    });
                    return Poll::Ready(accepted);
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Serves clients until `shutdown` completes, then closes every connection gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        for (i, addr) in self.local_addrs()?.into_iter().enumerate() {
            match i < self.plain_listeners {
                true => info!(%addr, "listening for AMQP 0-9-1"),
                false => info!(%addr, "listening for AMQP 0-9-1 over TLS"),
            }
        }
        let mut accepting = Accepting::default();
        let (stop, stopping) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                (stream, peer, over_tls) = self.accept(&mut accepting) => {
                        let (permit, refuse) = match &self.connection_limit {
                            None => (None, None),
                            Some((limit, permits)) => match Arc::clone(permits).try_acquire_owned() {
                                Ok(permit) => (Some(permit), None),
                                // Over the limit: the handshake goes on to a 530 at
                                // connection.open, as in RabbitMQ, for a bounded number of
                                // refusals at a time; beyond them the socket is just closed.
                                Err(_) => match Arc::clone(&self.refusals).try_acquire_owned() {
                                    Ok(permit) => {
                                        warn!(%peer, limit, "connection refused: max_connections reached");
                                        (Some(permit), Some(*limit))
                                    }
                                    Err(_) => {
                                        warn!(%peer, limit, "connection dropped: max_connections reached");
                                        drop(stream);
                                        continue;
                                    }
                                },
                            },
                        };
                        let Ok(handshake) = Arc::clone(&self.handshakes).try_acquire_owned() else {
                            warn!(%peer, "connection dropped: too many connections in their handshake");
                            drop(stream);
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let context = Arc::clone(&self.context);
                        let tls = self.tls.as_ref().filter(|_| over_tls).map(TlsSetup::current);
                        // The task is the future itself: wrapped in an `async` block, the
                        // connection's state would be stored twice (the captured future and
                        // the awaited one), doubling every idle connection's task.
                        let admission = connection::Admission { permit, refuse, handshake };
                        connections.spawn(connection::serve(stream, peer, context, stopping.clone(), admission, tls));
                },
                Some(done) = connections.join_next(), if !connections.is_empty() => log_task_end(done),
            }
        }
        drop(self.listeners);
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

/// What the TLS listeners accept with (`None` without TLS listeners).
fn tls_setup(options: &ServerOptions) -> io::Result<Option<TlsSetup>> {
    Ok(match (&options.tls, options.tls_listeners.is_empty()) {
        (_, true) => None,
        (None, false) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "tls_listeners need tls_cert and tls_key",
            ))
        }
        (Some(files), false) => Some(
            TlsSetup::load(files)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
        ),
    })
}

/// Binds the management API's listeners (the management module serves them).
async fn bind_management(addresses: &[String]) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for address in addresses {
        let listener = TcpListener::bind(address).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {address} for the management API: {e} (--management off disables it)"),
            )
        })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Binds one listener. `[::]:port` (IPv6's every address) is bound dual-stack, accepting IPv4
/// clients too (as RabbitMQ's default listener), whatever the system's `bindv6only`; where IPv6
/// is off, it falls back to `0.0.0.0:port`. Any other address is bound as written.
async fn listen(address: &str) -> io::Result<TcpListener> {
    let every_v6 = address
        .parse::<SocketAddr>()
        .ok()
        .filter(|a| a.is_ipv6() && a.ip().is_unspecified());
    let Some(v6) = every_v6 else {
        return TcpListener::bind(address).await;
    };
    match bind_dual_stack(v6) {
        Ok(listener) => Ok(listener),
        Err(e) if ipv6_unavailable(&e) => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], v6.port()));
            warn!(address = %v6, error = %e, fallback = %v4, "IPv6 is not available; listening on IPv4 only");
            TcpListener::bind(v4).await
        }
        Err(e) => Err(e),
    }
}

fn bind_dual_stack(address: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Errors that mean the system has no IPv6 (module off, or disabled by sysctl).
fn ipv6_unavailable(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}
