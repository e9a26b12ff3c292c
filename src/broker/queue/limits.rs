//! The queue arguments that change what a queue does, read once when it is declared: length
//! limits and overflow, message TTL, priorities, single active consumer, expiry and
//! dead-lettering. Their form was checked at declare (`broker::arguments`); here a value of
//! another form counts as absent.

use std::time::Duration;

use warren_protocol::method::ShortStr;
use warren_protocol::types::{AMQPValue, FieldTable};

use super::super::arguments::retry_delays;
use super::super::values::{integer, text};

#[derive(Debug, Clone, Default)]
pub(super) struct Limits {
    /// `x-max-length`: ready messages at most.
    pub max_length: Option<usize>,
    /// `x-max-length-bytes`: bytes of ready message bodies at most.
    pub max_bytes: Option<u64>,
    /// `reject-publish` (and `reject-publish-dlx`): refuse the new message instead of dropping
    /// the oldest (`drop-head`, the default).
    pub reject: bool,
    /// `reject-publish-dlx`: a refused message is dead-lettered too.
    pub reject_dead_letters: bool,
    /// `x-message-ttl`, in milliseconds.
    pub message_ttl: Option<u64>,
    /// `x-max-priority`: messages are delivered highest priority first, up to this one.
    pub max_priority: u8,
    /// `x-single-active-consumer`: only the oldest consumer gets messages; the next one takes
    /// over when it goes.
    pub single_active: bool,
    /// `x-expires`: the queue is deleted once unused for this long.
    pub expires: Option<Duration>,
    /// `x-dead-letter-exchange` and `x-dead-letter-routing-key`.
    pub dead_letter: Option<(ShortStr, Option<ShortStr>)>,
    /// `x-retry-delays`: a rejected message is held this long (ms) before it comes back, one
    /// delay per retry; after the last it is dead-lettered.
    pub retry_delays: Option<Box<[u64]>>,
}

/// The limits of a queue declared without any of their arguments (most queues).
pub(super) static NO_LIMITS: Limits = Limits {
    max_length: None,
    max_bytes: None,
    reject: false,
    reject_dead_letters: false,
    message_ttl: None,
    max_priority: 0,
    single_active: false,
    expires: None,
    dead_letter: None,
    retry_delays: None,
};

impl Limits {
    /// Whether these are [`NO_LIMITS`]: nothing limits the queue.
    pub fn is_none(&self) -> bool {
        !self.bounded()
            && !self.reject
            && !self.reject_dead_letters
            && self.message_ttl.is_none()
            && self.max_priority == 0
            && !self.single_active
            && self.expires.is_none()
            && self.dead_letter.is_none()
            && self.retry_delays.is_none()
    }

    pub fn from_arguments(arguments: &FieldTable) -> Limits {
        let table = arguments.inner();
        let non_negative = |key: &str| {
            table
                .get(key)
                .and_then(integer)
                .and_then(|n| u64::try_from(n).ok())
        };
        let overflow = table
            .get("x-overflow")
            .and_then(text)
            .unwrap_or(b"drop-head");
        Limits {
            max_length: non_negative("x-max-length")
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_bytes: non_negative("x-max-length-bytes"),
            reject: overflow.starts_with(b"reject-publish"),
            reject_dead_letters: overflow == b"reject-publish-dlx",
            message_ttl: non_negative("x-message-ttl"),
            max_priority: non_negative("x-max-priority")
                .map_or(0, |n| u8::try_from(n).unwrap_or(u8::MAX)),
            single_active: matches!(
                table.get("x-single-active-consumer"),
                Some(AMQPValue::Boolean(true))
            ),
            expires: non_negative("x-expires").map(Duration::from_millis),
            dead_letter: dead_letter_target(arguments),
            retry_delays: table
                .get("x-retry-delays")
                .and_then(|value| retry_delays(value).ok())
                .map(Vec::into_boxed_slice),
        }
    }

    /// Whether the queue has a length limit at all.
    #[inline]
    pub fn bounded(&self) -> bool {
        self.max_length.is_some() || self.max_bytes.is_some()
    }

    /// Whether a queue with these limits holds more than it may.
    pub fn exceeded(&self, len: usize, bytes: u64) -> bool {
        self.max_length.is_some_and(|max| len > max)
            || self.max_bytes.is_some_and(|max| bytes > max)
    }

    /// Whether one more message of `body` bytes would not fit (for `reject-publish`).
    pub fn full_for(&self, len: usize, bytes: u64, body: u64) -> bool {
        self.max_length.is_some_and(|max| len >= max)
            || self
                .max_bytes
                .is_some_and(|max| bytes.saturating_add(body) > max)
    }
}

/// The dead-letter exchange and routing key of a queue's arguments.
fn dead_letter_target(arguments: &FieldTable) -> Option<(ShortStr, Option<ShortStr>)> {
    let string = |key: &str| {
        let text = text(arguments.inner().get(key)?)?;
        Some(ShortStr::copy_from_str(&String::from_utf8_lossy(text)))
    };
    let exchange = string("x-dead-letter-exchange")?;
    Some((exchange, string("x-dead-letter-routing-key")))
}
