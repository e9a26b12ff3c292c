//! `[server]`: the settings with their defaults filled in, their checks, the command line's
//! overrides, and the [`ServerOptions`] they make. Also which settings a running broker can take
//! on reload (the alarm thresholds) and which need a restart.

use std::path::PathBuf;
use std::time::Duration;

use warren_protocol::frame::FRAME_MIN_SIZE;

use super::error::{Problem, Source};
use super::model::{LogFormat, ServerSection, TimeoutAction};
use super::units::MemoryLimit;
use crate::broker::quorum::ClusterConfig;
use crate::server::{alarms, TlsFiles, Tuning, Users};
use crate::{ServerOptions, UnackedTimeoutAction};

/// The server settings in effect, every one filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub listeners: Vec<String>,
    pub data_dir: PathBuf,
    pub tuning: Tuning,
    /// At most this many client connections at once (`None`: no limit).
    pub max_connections: Option<u32>,
    pub handshake_timeout: Duration,
    pub unacked_timeout: Duration,
    pub unacked_timeout_action: UnackedTimeoutAction,
    pub max_message_size: u64,
    pub segment_size: u64,
    pub queue_memory_window: u64,
    /// How often the compaction task looks for log segments to punch holes in.
    pub compaction_interval: Duration,
    pub memory_high_watermark: u64,
    pub disk_free_limit: u64,
    /// A `tracing` filter: `info`, or `info,warren=debug`.
    pub log_level: String,
    pub log_format: LogFormat,
    /// Addresses to accept AMQP over TLS on.
    pub tls_listeners: Vec<String>,
    /// The TLS listeners' certificate, key and CA (set when there are TLS listeners).
    pub tls: Option<TlsFiles>,
    /// Addresses of the management HTTP API (empty: it is off).
    pub management_listeners: Vec<String>,
    /// `[cluster]`: this node in a cluster (`None`: a single node).
    pub cluster: Option<ClusterConfig>,
}

/// Where the management API listens unless told otherwise (RabbitMQ's port, loopback only).
pub const DEFAULT_MANAGEMENT_LISTENER: &str = "127.0.0.1:15672";

impl Default for Settings {
    fn default() -> Self {
        let options = ServerOptions::default();
        Settings {
            listeners: vec![options.listen],
            data_dir: options.data_dir,
            tuning: options.tuning,
            max_connections: None,
            handshake_timeout: options.handshake_timeout,
            unacked_timeout: options.unacked_timeout,
            unacked_timeout_action: options.unacked_timeout_action,
            max_message_size: options.max_message_size,
            segment_size: options.segment_size,
            queue_memory_window: options.queue_memory_window,
            compaction_interval: options.compaction_interval,
            memory_high_watermark: options.memory_high_watermark,
            disk_free_limit: options.disk_free_limit,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            tls_listeners: Vec::new(),
            tls: None,
            management_listeners: vec![DEFAULT_MANAGEMENT_LISTENER.into()],
            cluster: None,
        }
    }
}

/// What the command line says, overriding the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// `--management ADDR` (`off`: no management API).
    pub management: Option<String>,
}

impl Settings {
    /// Applies the command line's flags.
    pub fn override_with(&mut self, overrides: &Overrides) {
        if let Some(listen) = &overrides.listen {
            self.listeners = vec![listen.clone()];
        }
        if let Some(data_dir) = &overrides.data_dir {
            self.data_dir = data_dir.clone();
        }
        match overrides.management.as_deref() {
            None => {}
            Some("off") => self.management_listeners = Vec::new(),
            Some(address) => self.management_listeners = vec![address.to_owned()],
        }
    }

    /// The options a server is bound with, for the users, permissions and vhosts of `config`.
    pub fn server_options(&self, config: &super::Config) -> ServerOptions {
        let mut listeners = self.listeners.iter().cloned();
        ServerOptions {
            listen: listeners.next().unwrap_or_default(),
            extra_listeners: listeners.collect(),
            data_dir: self.data_dir.clone(),
            tuning: self.tuning,
            handshake_timeout: self.handshake_timeout,
            max_connections: self.max_connections.map(|n| n as usize),
            users: Users::with_permissions(config.users.clone(), config.permissions.clone())
                .with_topic_permissions(config.topic_permissions.clone()),
            unacked_timeout: self.unacked_timeout,
            unacked_timeout_action: self.unacked_timeout_action,
            max_message_size: self.max_message_size,
            segment_size: self.segment_size,
            queue_memory_window: self.queue_memory_window,
            compaction_interval: self.compaction_interval,
            memory_high_watermark: self.memory_high_watermark,
            disk_free_limit: self.disk_free_limit,
            vhosts: config.vhosts.clone(),
            vhost_limits: config.vhost_limits.clone(),
            tls_listeners: self.tls_listeners.clone(),
            tls: self.tls.clone(),
            management_listeners: self.management_listeners.clone(),
            cluster: self.cluster.clone(),
            ..ServerOptions::default()
        }
    }

    /// The settings that differ from `running` and that only a restart can change.
    pub fn needing_restart(&self, running: &Settings) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut differs = |name: &'static str, yes: bool| {
            if yes {
                changed.push(name);
            }
        };
        differs("listeners", self.listeners != running.listeners);
        differs("data_dir", self.data_dir != running.data_dir);
        differs(
            "heartbeat",
            self.tuning.heartbeat != running.tuning.heartbeat,
        );
        differs(
            "frame_max",
            self.tuning.frame_max != running.tuning.frame_max,
        );
        differs(
            "channel_max",
            self.tuning.channel_max != running.tuning.channel_max,
        );
        differs(
            "max_connections",
            self.max_connections != running.max_connections,
        );
        differs(
            "handshake_timeout",
            self.handshake_timeout != running.handshake_timeout,
        );
        differs(
            "unacked_timeout",
            self.unacked_timeout != running.unacked_timeout,
        );
        differs(
            "unacked_timeout_action",
            self.unacked_timeout_action != running.unacked_timeout_action,
        );
        differs(
            "max_message_size",
            self.max_message_size != running.max_message_size,
        );
        differs("segment_size", self.segment_size != running.segment_size);
        differs(
            "queue_memory_window",
            self.queue_memory_window != running.queue_memory_window,
        );
        differs(
            "compaction_interval",
            self.compaction_interval != running.compaction_interval,
        );
        differs("log_level", self.log_level != running.log_level);
        differs("log_format", self.log_format != running.log_format);
        differs("tls_listeners", self.tls_listeners != running.tls_listeners);
        differs(
            "management_listeners",
            self.management_listeners != running.management_listeners,
        );
        differs("cluster", self.cluster != running.cluster);
        changed
    }
}

/// Checks `[server]` and fills in the defaults.
pub(super) fn check_server(
    source: &Source<'_>,
    mut server: ServerSection,
    problems: &mut Vec<Problem>,
) -> Settings {
    let mut settings = Settings::default();
    check_resources(source, &mut server, &mut settings, problems);
    if let Some(listeners) = server.listeners {
        if listeners.is_empty() {
            problems.push(
                source.whole("[server] listeners is empty: the broker would accept no connections"),
            );
        }
        for listener in &listeners {
            if let Err(why) = check_listener(listener.get_ref()) {
                problems.push(source.problem(&listener.span(), why));
            }
        }
        settings.listeners = listeners.into_iter().map(|l| l.into_inner()).collect();
    }
    if let Some(listeners) = server.management_listeners {
        for listener in &listeners {
            if let Err(why) = check_listener(listener.get_ref()) {
                problems.push(source.problem(&listener.span(), format!("management_{why}")));
            }
        }
        settings.management_listeners = listeners.into_iter().map(|l| l.into_inner()).collect();
    }
    if let Some(data_dir) = server.data_dir {
        settings.data_dir = PathBuf::from(data_dir);
    }
    if let Some(heartbeat) = server.heartbeat {
        let value = heartbeat.get_ref().0;
        match u16::try_from(value.as_secs()) {
            Ok(secs) if value.subsec_nanos() == 0 => settings.tuning.heartbeat = secs,
            _ => problems.push(source.problem(
                &heartbeat.span(),
                "heartbeat: must be a whole number of seconds, at most 65535s (\"0s\" turns heartbeats off)",
            )),
        }
    }
    if let Some(frame_max) = server.frame_max {
        match *frame_max.get_ref() {
            n if n >= FRAME_MIN_SIZE => settings.tuning.frame_max = n,
            n => problems.push(source.problem(
                &frame_max.span(),
                format!("frame_max: {n} is below the protocol's minimum of {FRAME_MIN_SIZE} bytes"),
            )),
        }
    }
    if let Some(channel_max) = server.channel_max {
        settings.tuning.channel_max = channel_max;
    }
    settings.max_connections = server.max_connections.filter(|n| *n > 0);
    if let Some(timeout) = server.handshake_timeout {
        if timeout.get_ref().0.is_zero() {
            problems.push(source.problem(&timeout.span(), "handshake_timeout: must be above 0s"));
        }
        settings.handshake_timeout = timeout.into_inner().0;
    }
    if let Some(level) = server.log_level {
        match tracing_subscriber::EnvFilter::try_new(level.get_ref()) {
            Ok(_) => settings.log_level = level.into_inner(),
            Err(e) => problems.push(source.problem(
                &level.span(),
                format!("log_level: invalid filter '{}': {e}", level.get_ref()),
            )),
        }
    }
    if let Some(format) = server.log_format {
        settings.log_format = format;
    }
    settings
}

/// The `[server]` settings of timeouts, sizes and resource limits.
fn check_resources(
    source: &Source<'_>,
    server: &mut ServerSection,
    settings: &mut Settings,
    problems: &mut Vec<Problem>,
) {
    if let Some(timeout) = server.unacked_timeout.take() {
        settings.unacked_timeout = timeout.0;
    }
    if let Some(action) = server.unacked_timeout_action.take() {
        settings.unacked_timeout_action = match action {
            TimeoutAction::Redeliver => UnackedTimeoutAction::Redeliver,
            TimeoutAction::CloseChannel => UnackedTimeoutAction::CloseChannel,
            TimeoutAction::Cancel => UnackedTimeoutAction::Cancel,
        };
    }
    if let Some(size) = server.max_message_size.take() {
        if size.get_ref().0 == 0 {
            problems.push(source.problem(&size.span(), "max_message_size: must be above 0"));
        }
        settings.max_message_size = size.into_inner().0;
    }
    if let Some(size) = server.segment_size.take() {
        if size.get_ref().0 < 4096 {
            problems.push(source.problem(&size.span(), "segment_size: must be at least 4KiB"));
        }
        settings.segment_size = size.into_inner().0;
    }
    if let Some(size) = server.queue_memory_window.take() {
        settings.queue_memory_window = size.0;
    }
    if let Some(interval) = server.compaction_interval.take() {
        if interval.get_ref().0.is_zero() {
            problems
                .push(source.problem(&interval.span(), "compaction_interval: must be above 0s"));
        }
        settings.compaction_interval = interval.into_inner().0;
    }
    if let Some(limit) = server.memory_high_watermark.take() {
        settings.memory_high_watermark = match limit.into_inner() {
            MemoryLimit::Absolute(bytes) => bytes,
            MemoryLimit::Fraction(fraction) => {
                // The default is 40% of the machine's memory: scale it.
                let total = alarms::default_memory_high_watermark() as f64 / 0.4;
                (total * fraction) as u64
            }
        };
    }
    if let Some(size) = server.disk_free_limit.take() {
        settings.disk_free_limit = size.0;
    }
}

/// A listener is `ip:port` or `host:port`.
pub(super) fn check_listener(address: &str) -> Result<(), String> {
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!(
            "listeners: '{address}' is not an address to listen on (expected ip:port or host:port, e.g. \"0.0.0.0:5672\")"
        )),
    }
}
