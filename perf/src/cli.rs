//! Command-line options (clap) and their checks. Nothing here touches the network.

use std::time::Duration;

use clap::{Parser, ValueEnum};

/// The exchange types the tool can declare and route for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeType {
    pub fn name(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Topic => "topic",
            ExchangeType::Headers => "headers",
        }
    }
}

/// warren-perf: throughput, latency and loss of an AMQP 0-9-1 broker, in the spirit of RabbitMQ's
/// PerfTest.
#[derive(Parser, Debug, Clone)]
#[command(name = "warren-perf", version, about, long_about = None)]
pub struct Args {
    /// Broker URI (amqp://user:pass@host:port/vhost).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,

    /// Number of producers (one connection each).
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: usize,

    /// Number of consumers (one connection each), spread round-robin over the queues.
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,

    /// Message body size in bytes (at least 16: producer id + sequence, send timestamp).
    #[arg(short = 's', long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(16..))]
    pub size: u32,

    /// Run time in seconds (default 10 unless --count is given).
    #[arg(short = 'z', long)]
    pub time: Option<f64>,

    /// Messages per producer; the run ends when every producer has sent this many.
    #[arg(short = 'C', long)]
    pub count: Option<u64>,

    /// Exchange to publish to; "" is the default exchange (routing key = queue name).
    /// With --type and no --exchange, the exchange is named "perf-<type>".
    #[arg(long)]
    pub exchange: Option<String>,

    /// Exchange type to declare (requires a named exchange; see --exchange).
    #[arg(long = "type", value_enum)]
    pub exchange_type: Option<ExchangeType>,

    /// Number of queues to declare and consume from.
    #[arg(long, default_value_t = 1)]
    pub queues: usize,

    /// Queue names: "{}" is replaced by the queue number 0..N.
    #[arg(long, default_value = "perf-q-{}")]
    pub queue_pattern: String,

    /// Routing key of every publish; "{}" is replaced by the producer number.
    /// Default: the queue name (default exchange), "perf" (direct, topic), "" (fanout),
    /// "perf=1" (headers: `k=v;k2=v2` pairs become message headers).
    #[arg(long)]
    pub routing_key: Option<String>,

    /// Binding keys, comma-separated; "{}" is replaced by the binding number. Binding i goes to
    /// queue i % queues. For headers exchanges a key is `k=v;k2=v2` (x-match=all).
    /// Default: the routing key.
    #[arg(long, value_delimiter = ',')]
    pub binding_keys: Vec<String>,

    /// Number of bindings to make, cycling through --binding-keys (default: one per key, and at
    /// least one per queue).
    #[arg(long)]
    pub bindings: Option<usize>,

    /// Publish persistent messages (delivery mode 2).
    #[arg(long)]
    pub persistent: bool,

    /// Declare durable queues (and exchange).
    #[arg(long)]
    pub durable: bool,

    /// Arguments of queue.declare, comma-separated `key=value` (an integer value is sent as a
    /// long-long, true/false as a boolean, anything else as a string), e.g.
    /// `x-queue-type=stream,x-max-length-bytes=20000000000`. With `x-queue-type=stream` the
    /// queues are declared durable and not purged (streams refuse queue.purge), and every
    /// consumer is expected to receive every message of its queue (each reads the log itself).
    #[arg(long, value_delimiter = ',', value_name = "K=V")]
    pub queue_args: Vec<String>,

    /// Arguments of basic.consume, as --queue-args, e.g. `x-stream-offset=first` (or `last`,
    /// `next`, an offset).
    #[arg(long, value_delimiter = ',', value_name = "K=V")]
    pub consume_args: Vec<String>,

    /// Publisher confirms, with at most N unconfirmed messages in flight per producer.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub confirm: Option<u64>,

    /// Consume with no-ack (automatic acknowledgement).
    #[arg(short = 'a', long)]
    pub auto_ack: bool,

    /// Manual acks: one ack with multiple=true every N deliveries (1 = ack each delivery).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub multi_ack_every: u64,

    /// Consumer prefetch (basic.qos); 0 = unlimited (not sent).
    #[arg(short = 'q', long, default_value_t = 0)]
    pub qos: u16,

    /// Per-producer publish rate limit in msg/s; 0 = unlimited.
    #[arg(short = 'r', long, default_value_t = 0.0)]
    pub rate: f64,

    /// Publish with the lean raw-frame publisher (own socket, pre-encoded frames, big writes)
    /// instead of lapin.
    #[arg(long)]
    pub raw: bool,

    /// Consume with the lean raw-frame consumer (own socket, 256 KiB reads, many frames parsed
    /// per read, acks batched into one write per read) instead of lapin.
    #[arg(long)]
    pub raw_consume: bool,

    /// Publish first, consume after: consumers attach only when every producer has finished
    /// (needs --count), so the queues hold the whole run as a backlog; the consume rate is then
    /// the drain rate (window: consumers attached -> last delivery).
    #[arg(long)]
    pub backlog: bool,

    /// Messages per socket write for --raw.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub raw_batch: u64,

    /// Print one JSON object at the end (progress lines go to stderr).
    #[arg(long)]
    pub json: bool,

    /// Declare, purge and bind nothing: the queues and exchange exist already.
    #[arg(long)]
    pub predeclared: bool,

    /// Broker process id, to report its CPU time and peak RSS (from /proc).
    #[arg(long)]
    pub broker_pid: Option<u32>,

    /// Seconds to wait after the producers stop for consumers to receive everything.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,

    /// Tokio worker threads of the tool (default: the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl Args {
    /// How long producers run, if time-bounded.
    pub fn duration(&self) -> Option<Duration> {
        match (self.time, self.count) {
            (Some(t), _) => Some(Duration::from_secs_f64(t.max(0.0))),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        }
    }

    /// Are the queues streams (`--queue-args x-queue-type=stream`)?
    pub fn stream(&self) -> bool {
        self.queue_args
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .any(|(k, v)| k.trim() == "x-queue-type" && v.trim() == "stream")
    }

    /// The exchange name and type after defaults; `None` type for the default exchange.
    pub fn exchange(&self) -> (String, Option<ExchangeType>) {
        match (&self.exchange, self.exchange_type) {
            (Some(name), kind) if !name.is_empty() => {
                (name.clone(), Some(kind.unwrap_or(ExchangeType::Direct)))
            }
            (_, Some(kind)) => (format!("perf-{}", kind.name()), Some(kind)),
            _ => (String::new(), None),
        }
    }

    /// Checks combinations clap cannot express.
    pub fn check(&self) -> Result<(), String> {
        if self.queues == 0 {
            return Err("--queues must be at least 1".into());
        }
        if self.producers > usize::from(u16::MAX) {
            return Err("at most 65535 producers".into());
        }
        if let Some(t) = self.time {
            if !(t.is_finite() && t > 0.0) {
                return Err("--time must be a positive number of seconds".into());
            }
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return Err("--rate must be >= 0".into());
        }
        if !(self.drain.is_finite() && self.drain >= 0.0) {
            return Err("--drain must be >= 0".into());
        }
        if !self.auto_ack && self.qos > 0 && self.multi_ack_every > u64::from(self.qos) {
            return Err(format!(
                "--multi-ack-every {} exceeds --qos {}: the consumer would wait for deliveries \
                 the broker will not send until it acks",
                self.multi_ack_every, self.qos
            ));
        }
        for kv in self.queue_args.iter().chain(&self.consume_args) {
            if !kv.contains('=') {
                return Err(format!(
                    "'{kv}' is not key=value (--queue-args, --consume-args)"
                ));
            }
        }
        if self.stream() && !self.auto_ack && self.qos == 0 {
            return Err("stream queues need a prefetch: give --qos".into());
        }
        if self.backlog && self.count.is_none() {
            return Err("--backlog needs --count (messages per producer)".into());
        }
        if self.exchange.as_deref() == Some("") && self.exchange_type.is_some() {
            return Err("--type needs a named exchange (the default exchange is direct)".into());
        }
        Ok(())
    }
}
