//! One client connection: a single task that owns the socket, the read and write buffers, the
//! handshake state and the channel table.
//!
//! I/O is batched: each read fills a large buffer and every complete frame in it is handled before
//! the next read; replies are encoded into one output buffer that is written with one syscall per
//! wake-up. When the client does not read (the output buffer passes [`WRITE_HIGH_WATER`]),
//! deliveries wait in the outbox (bounded per consumer by its window) and, past
//! [`WRITE_HARD_LIMIT`], input waits too: back-pressure instead of unbounded memory. Input
//! also waits while a queue this connection published to pushes back (see `broker::flow`).
//!
//! Timers: the handshake must finish within the handshake timeout; once open, a heartbeat is sent
//! every half interval without other output, and the connection is dropped after two intervals
//! without input. After `connection.close` is sent, only `close-ok` is awaited, for at most
//! [`CLOSE_TIMEOUT`]. This task never blocks on anything but its own socket and timers.
//!
//! Here: the I/O loop, reading frames and dispatching them. Beside: `control.rs` (channel 0's
//! methods), `inbox.rs` (deliveries and group-commit reports from other tasks), `timer.rs`
//! (deadlines and heartbeats), `close.rs` (exceptions, closing and teardown).

mod close;
mod control;
mod inbox;
mod timer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::{sleep_until, Instant};
use tracing::info;
use warren_protocol::frame::{
    parse_frame, parse_protocol_header, Frame, FrameType, ProtocolHeader, PROTOCOL_HEADER,
};
use warren_protocol::method::{decode_method, encode_method};
use warren_protocol::spec::{connection, AMQPClass};

use super::channel::Channels;
use super::handshake::{ClientCapabilities, Tuning};
use super::registry::ConnectionEntry;
use super::tls::TlsState;
use super::transport::{accept_tls, TlsPeer, Transport};
use super::Context;
use crate::broker::queue::Queue;
use crate::broker::vhost::Vhost;
use crate::error::{Error, Exception};

use inbox::{recv, Inbox};
use timer::far_future;

/// Bytes reserved for each read: big enough to take many small frames per syscall.
const READ_CHUNK: usize = 64 * 1024;
/// Deliveries stop moving from the outbox into the output buffer while this much output waits
/// for a client that does not read.
pub const WRITE_HIGH_WATER: usize = 4 * 1024 * 1024;
/// Input stops being read while this much output waits (replies to methods the client keeps
/// sending without reading the answers).
pub const WRITE_HARD_LIMIT: usize = 16 * 1024 * 1024;
/// How long to wait for `close-ok` after sending `connection.close`.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a publishing connection's input waits for its queues' pressure to lift.
const THROTTLE_MAX: Duration = Duration::from_millis(100);
/// How many messages a connection's input may put into queues per turn before it lets the
/// consumers' connections run: a publisher fanning out to many queues makes work for many tasks,
/// and a turn of its own must not make more than they take in theirs (the rest of the read
/// waits in the buffer for the next turn).
const ENQUEUE_BUDGET: usize = 1024;
/// How many outbox messages (deliveries) are handled per wake-up before the socket is written.
const OUTBOX_BATCH: usize = 256;

/// Connection ids: the owner identity of exclusive queues.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for `AMQP 0 0 9 1`.
    ProtocolHeader,
    StartOk,
    TuneOk,
    Open,
    /// Handshake done: channels are served.
    Running,
    /// `connection.close` sent; only `close-ok` matters now.
    Closing,
    /// The client closed and got its `close-ok`: its input is read and discarded until it closes
    /// the socket (bounded by [`CLOSE_TIMEOUT`]). Closing ours first would reset a client still
    /// writing frames it sent before its `close` (EPIPE on its side, and a close callback that
    /// never fires), as RabbitMQ does not.
    Draining,
    /// Nothing more to read; flush what is buffered and drop the socket.
    Done,
}

pub(crate) struct Connection {
    id: u64,
    peer: SocketAddr,
    context: Arc<Context>,
    state: State,
    read_buf: BytesMut,
    write_buf: BytesMut,
    tuning: Tuning,
    capabilities: ClientCapabilities,
    user: String,
    vhost: String,
    /// The open vhost; `None` until `connection.open`.
    vhost_ref: Option<Arc<Vhost>>,
    /// The channel table, from `connection.open` until the connection closes. Its session
    /// opens the connection's mailbox and outbox when first needed; their receiving ends move
    /// to the [`Inbox`] at the next turn of the loop.
    channels: Option<Channels>,
    last_read: Instant,
    last_write: Instant,
    /// The resource alarm in effect (its reason), as the alarm task announced it.
    alarm: Option<String>,
    /// `connection.blocked` was sent and awaits its `connection.unblocked`.
    blocked_sent: bool,
    /// Complete frames wait in the read buffer: the last turn used up its [`ENQUEUE_BUDGET`].
    input_pending: bool,
    /// Channel 0 wrote to the output buffer (the handshake, a heartbeat, a close): once written,
    /// the buffer is let go, so that an idle connection does not keep the handshake's capacity.
    /// Channels' output, the busy path, keeps its buffer.
    release_output: bool,
    /// When the current state gives up (handshake, closing) or the next heartbeat check is due.
    deadline: Option<Instant>,
    close_reason: String,
    /// Accepted over `max_connections` (this limit): `connection.open` is refused with 530, as
    /// RabbitMQ refuses it.
    refuse: Option<usize>,
    /// Counted among its user's and vhost's connections (from `connection.open` on).
    admitted: Option<super::tally::Admitted>,
    /// Counted among the connections in their handshake, until `connection.open`.
    handshake: Option<OwnedSemaphorePermit>,
    /// What the TLS handshake established (`None`: plain TCP).
    tls: Option<TlsPeer>,
    /// Its entry in the connection registry (the management API's view of it).
    entry: Arc<ConnectionEntry>,
    /// What the client said of itself at `start-ok` (product, version, …), for the registry.
    client: Vec<(String, String)>,
}

/// How the accept loop let a connection in: the permits it holds while it lives.
pub(crate) struct Admission {
    /// Its place under `max_connections`, or among the refusals in progress (with `refuse`);
    /// none without a limit. Held until the connection ends.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    /// Accepted over `max_connections` (this limit): refused at `connection.open`.
    pub(crate) refuse: Option<usize>,
    /// Its place among the connections in their handshake.
    pub(crate) handshake: OwnedSemaphorePermit,
}

/// Serves one accepted socket until it closes; logs the outcome. With `tls`, the TLS handshake
/// comes first; a client that fails it (one that speaks plain AMQP, say) is logged and dropped.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
    admission: Admission,
    tls: Option<Arc<TlsState>>,
) {
    let Admission {
        permit: _permit,
        refuse,
        handshake,
    } = admission;
    let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    let local = stream
        .local_addr()
        .map_or(peer, |a| SocketAddr::new(a.ip().to_canonical(), a.port()));
    let registered = context.registry.register(id, (peer, local), tls.is_some());
    let (stream, tls) = match tls {
        None => (Transport::Plain(stream), None),
        Some(tls) => {
            let accepted = tokio::select! {
                accepted = accept_tls(stream, tls, context.handshake_timeout) => accepted,
                _ = shutdown.changed() => return,
            };
            match accepted {
                Ok((stream, tls_peer)) => (stream, Some(tls_peer)),
                Err(reason) => {
                    info!(peer = %peer, reason = %reason, "TLS handshake failed: connection closed");
                    return;
                }
            }
        }
    };
    let now = Instant::now();
    let mut inbox = Inbox::default();
    let mut connection = Connection {
        id,
        peer,
        tuning: context.tuning,
        deadline: Some(now + context.handshake_timeout),
        context,
        state: State::ProtocolHeader,
        read_buf: BytesMut::new(),
        write_buf: BytesMut::new(),
        capabilities: ClientCapabilities::default(),
        user: String::new(),
        vhost: String::new(),
        vhost_ref: None,
        channels: None,
        last_read: now,
        last_write: now,
        alarm: None,
        blocked_sent: false,
        input_pending: false,
        release_output: false,
        close_reason: String::new(),
        refuse,
        admitted: None,
        handshake: Some(handshake),
        tls,
        entry: Arc::clone(&registered.entry),
        client: Vec::new(),
    };
    let alarms = connection.context.alarms.clone();
    let was_open = connection.run(stream, shutdown, alarms, &mut inbox).await;
    connection.teardown(&mut inbox);
    let reason = connection.close_reason;
    if was_open {
        info!(peer = %peer, user = %connection.user, vhost = %connection.vhost, reason = %reason, "connection closed");
    } else {
        info!(peer = %peer, user = %connection.user, reason = %reason, "connection closed during handshake");
    }
}

impl Connection {
    /// The I/O loop. Returns whether the connection got past the handshake.
    ///
    /// Readiness-based: the task waits for the socket to become readable before it takes a read
    /// buffer, and lets go of the buffer once every frame in it is handled, so an idle connection
    /// holds no read buffer at all. Output is written as soon as it is produced, once per wake-up;
    /// only when the socket is full does the task wait for it to become writable.
    async fn run(
        &mut self,
        mut stream: Transport,
        mut shutdown: watch::Receiver<bool>,
        mut alarms: watch::Receiver<Option<String>>,
        inbox: &mut Inbox,
    ) -> bool {
        let mut was_open = false;
        let timer = sleep_until(self.deadline.unwrap_or_else(far_future));
        tokio::pin!(timer);
        let mut timer_at = self.deadline;
        // Queues this connection published to that push back: input waits for them.
        let mut throttled: Vec<Arc<Queue>> = Vec::new();
        // A reload that removes this connection's user or vhost closes it, as may the API.
        let mut accounts = self.context.users.subscribe();
        let entry = Arc::clone(&self.entry);
        loop {
            was_open |= self.state == State::Running;
            if let Some(channels) = &mut self.channels {
                inbox.adopt(channels.mailboxes());
            }
            if self.output_pending(&stream) && !self.flush(&mut stream) {
                break;
            }
            let output = self.output_pending(&stream);
            if self.state == State::Done && !output {
                break;
            }
            let wake_at = self.wake_at();
            if timer_at != wake_at {
                timer_at = wake_at;
                timer.as_mut().reset(wake_at.unwrap_or_else(far_future));
            }
            let reading = self.reading(&throttled);
            if reading && self.input_pending {
                self.pending_input(&mut throttled);
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                biased;
                writable = stream.writable(), if output => {
                    if writable.is_err() {
                        self.finish("socket write failed");
                        break;
                    }
                }
                readable = stream.readable(), if reading => {
                    if readable.is_err() || !self.read(&mut stream) {
                        break;
                    }
                    self.take_pressured(&mut throttled);
                    // Let the tasks this input woke (consumers' connections) run before more.
                    tokio::task::yield_now().await;
                }
                () = released(&throttled), if !throttled.is_empty() => throttled.clear(),
                Some(first) = recv(&mut inbox.mail), if self.write_buf.len() < WRITE_HIGH_WATER => {
                    self.mail(first, &mut inbox.mail);
                }
                Some(report) = recv(&mut inbox.synced) => self.synced(report),
                () = &mut timer => self.on_timer(),
                changed = accounts.changed(), if self.state == State::Running => {
                    if changed.is_ok() {
                        self.accounts_changed();
                    }
                }
                () = entry.close_requested(), if self.closable() => {
                    self.close_requested(entry.close_reason());
                }
                changed = alarms.changed(), if self.state == State::Running => {
                    if changed.is_ok() {
                        self.alarm = alarms.borrow_and_update().clone();
                        self.on_alarm();
                    }
                }
                _ = shutdown.changed(), if self.closable() => {
                    self.close_connection(Exception::from(Error::Shutdown), "broker shutting down");
                }
            }
        }
        stream.shutdown().await;
        was_open
    }

    /// Whether the connection can still be closed (it is not closing or closed already).
    fn closable(&self) -> bool {
        !matches!(self.state, State::Closing | State::Draining | State::Done)
    }

    /// Whether input is read this turn: not once the connection is done, nor while too much
    /// output waits, a resource alarm holds this publisher back, or a queue it published to
    /// pushes back. A client that does not read our output is not throttled by its queues: it
    /// may be blocked writing the very input we would wait for (publishing and consuming on one
    /// connection); its deliveries wait in its outbox meanwhile, bounded by the window.
    fn reading(&self, throttled: &[Arc<Queue>]) -> bool {
        let stalled = self.write_buf.len() >= WRITE_HIGH_WATER;
        self.state != State::Done
            && self.write_buf.len() < WRITE_HARD_LIMIT
            && !self.blocking()
            && (throttled.is_empty() || stalled)
    }

    /// Handles the rest of the last read (left for lack of [`ENQUEUE_BUDGET`]), after the other
    /// tasks had their turn.
    fn pending_input(&mut self, throttled: &mut Vec<Arc<Queue>>) {
        self.input_pending = false;
        self.process_input();
        self.after_input();
        self.take_pressured(throttled);
    }

    /// Adds the queues that pushed back on this connection's publishes to `throttled`.
    fn take_pressured(&mut self, throttled: &mut Vec<Arc<Queue>>) {
        if let Some(channels) = &mut self.channels {
            channels.take_pressured(throttled);
        }
    }

    /// Whether this connection is held back by a resource alarm: it has published, so its input
    /// is not read until the alarm clears (its consumers still get their deliveries).
    fn blocking(&self) -> bool {
        self.alarm.is_some() && self.channels.as_ref().is_some_and(Channels::has_published)
    }

    /// Tells a client that supports it that it is blocked or unblocked.
    fn on_alarm(&mut self) {
        if !self.capabilities.connection_blocked || self.state != State::Running {
            return;
        }
        match (&self.alarm, self.blocked_sent) {
            (Some(reason), false) if self.blocking() => {
                let reason = warren_protocol::method::truncate_short(reason).into();
                self.send(connection::AMQPMethod::Blocked(connection::Blocked {
                    reason,
                }));
                self.blocked_sent = true;
            }
            (None, true) => {
                self.send(connection::AMQPMethod::Unblocked(connection::Unblocked {}));
                self.blocked_sent = false;
            }
            _ => {}
        }
    }

    /// Output waits: in the buffer, or (TLS) encrypted inside the transport.
    #[inline]
    fn output_pending(&self, stream: &Transport) -> bool {
        !self.write_buf.is_empty() || stream.wants_write()
    }

    /// Writes as much buffered output as the socket takes now. False when the socket failed.
    fn flush(&mut self, stream: &mut Transport) -> bool {
        match stream.try_write(&self.write_buf) {
            Ok(n) => {
                self.write_buf.advance(n);
                self.last_write = Instant::now();
                let release = self.release_output || self.write_buf.capacity() > READ_CHUNK;
                if self.write_buf.is_empty() && release {
                    // Do not keep a burst's (or the handshake's) memory for an idle connection.
                    self.write_buf = BytesMut::new();
                    self.release_output = false;
                }
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(e) => {
                self.finish(&format!("socket write failed: {e}"));
                false
            }
        }
    }

    /// Reads what the socket has and handles every complete frame. False when the socket closed.
    fn read(&mut self, stream: &mut Transport) -> bool {
        if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
            self.read_buf.reserve(READ_CHUNK);
        }
        match stream.try_read_buf(&mut self.read_buf) {
            Ok(0) => {
                self.finish("client closed the socket");
                return false;
            }
            Ok(_) => {
                self.last_read = Instant::now();
                self.process_input();
                self.after_input();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                self.finish(&format!("socket read failed: {e}"));
                return false;
            }
        }
        if self.read_buf.is_empty() {
            // Frames taken from the buffer share its memory; an empty buffer is let go so that an
            // idle connection holds none.
            self.read_buf = BytesMut::new();
        }
        true
    }

    /// After a batch of input: confirms and log flushes, and the alarm state.
    fn after_input(&mut self) {
        if let Some(channels) = &mut self.channels {
            channels.flush(&mut self.write_buf);
        }
        if self.alarm.is_some() {
            // It may have just become a publisher.
            self.on_alarm();
        }
    }

    /// Handles every complete frame in the read buffer.
    fn process_input(&mut self) {
        loop {
            match self.state {
                State::Done | State::Draining => {
                    self.read_buf.clear();
                    return;
                }
                State::ProtocolHeader => match parse_protocol_header(&mut self.read_buf) {
                    ProtocolHeader::Incomplete => return,
                    ProtocolHeader::Rejected => {
                        self.write_buf.extend_from_slice(&PROTOCOL_HEADER);
                        self.finish("protocol header mismatch");
                        return;
                    }
                    ProtocolHeader::Accepted => {
                        self.send(connection::AMQPMethod::Start(self.start()));
                        self.state = State::StartOk;
                        continue;
                    }
                },
                _ => {}
            }
            // Before tune-ok the server's own frame_max bounds frames; after it, the negotiated one.
            match parse_frame(&mut self.read_buf, self.tuning.frame_max) {
                Ok(None) => return,
                Ok(Some(frame)) => {
                    let channel = frame.channel;
                    if let Err(exception) = self.handle_frame(frame) {
                        self.exception(channel, exception);
                    }
                    let spent = self
                        .channels
                        .as_mut()
                        .is_some_and(|c| c.spent(ENQUEUE_BUDGET));
                    if spent {
                        self.input_pending = !self.read_buf.is_empty();
                        return;
                    }
                }
                Err(error) => {
                    if self.state == State::Closing {
                        // Unsynchronised input while closing: drop it; the close timeout ends this.
                        self.read_buf.clear();
                        return;
                    }
                    self.exception(0, Error::from(error).into());
                    self.read_buf.clear();
                    return;
                }
            }
        }
    }

    #[inline]
    fn handle_frame(&mut self, frame: Frame) -> Result<(), Exception> {
        if self.state == State::Closing {
            return self.handle_while_closing(frame);
        }
        match frame.frame_type {
            FrameType::Heartbeat if frame.channel == 0 => Ok(()),
            FrameType::Heartbeat => Err(Error::HeartbeatOnChannel(frame.channel).into()),
            FrameType::Method if frame.channel == 0 => {
                let method = decode_method(&frame.payload).map_err(Error::from)?;
                let (class_id, method_id) = method.ids();
                self.handle_connection_method(method)
                    .map_err(|error| Exception {
                        error,
                        class_id,
                        method_id,
                    })
            }
            _ if frame.channel == 0 => {
                Err(Error::UnexpectedFrame("content frame on channel 0".into()).into())
            }
            _ if self.state != State::Running => Err(Error::UnexpectedMethod(format!(
                "frame on channel {} before the connection is open",
                frame.channel
            ))
            .into()),
            _ => match &mut self.channels {
                Some(channels) => channels.handle(&mut self.write_buf, frame, self.last_read),
                None => Err(Error::ChannelNotOpen(frame.channel).into()),
            },
        }
    }

    /// Writes a method of channel 0 to the output buffer.
    fn send(&mut self, method: connection::AMQPMethod) {
        encode_method(&mut self.write_buf, 0, &AMQPClass::Connection(method));
        self.release_output = true;
    }
}

/// Resolves when none of `queues` pushes back any more, or after [`THROTTLE_MAX`]: a publisher
/// is slowed, never stalled (a client that publishes and consumes on one connection may only
/// read its deliveries once its writes go through).
async fn released(queues: &[Arc<Queue>]) {
    let all = async {
        for queue in queues {
            queue.flow.released().await;
        }
    };
    let _ = tokio::time::timeout(THROTTLE_MAX, all).await;
}
