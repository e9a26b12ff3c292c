//! A quorum queue's limits, from its declaration's arguments as RabbitMQ's quorum queues take
//! them: `x-delivery-limit` (default 20), `x-max-length`, `x-max-length-bytes` (bodies' bytes
//! of the messages waiting), `x-overflow` (`drop-head`, the default, or `reject-publish`),
//! `x-message-ttl`, `x-single-active-consumer` and `x-expires`. Every replica reads them from the same replicated definition, so applying
//! a command under them comes to the same answer everywhere.
//!
//! Owns the parsing and its refusals; never applies a limit (the machine does).

use warren_protocol::types::{AMQPValue, FieldTable};

use crate::broker::values::{integer, text};

/// RabbitMQ 4's default `x-delivery-limit` for quorum queues.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 20;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// A message returned more often is dead-lettered (or dropped).
    pub delivery_limit: Option<u32>,
    /// Messages waiting for a consumer, at most.
    pub max_length: Option<u64>,
    /// Bytes of the bodies of the messages waiting, at most.
    pub max_bytes: Option<u64>,
    /// `x-overflow: reject-publish`: a publish to a full queue is refused (nacked) instead of
    /// the oldest message being dropped.
    pub reject_publish: bool,
    /// Milliseconds a message may wait for a consumer.
    pub message_ttl: Option<u64>,
    /// `x-single-active-consumer`: only the first consumer (in the order they came) gets
    /// messages; the next takes over when it goes.
    pub single_active: bool,
    /// `x-expires`: milliseconds without consumers, `basic.get` or redeclaration after which
    /// the queue is deleted.
    pub expires: Option<u64>,
}

impl Limits {
    /// The limits `arguments` set, or why they cannot be a quorum queue's (the text of
    /// RabbitMQ's 406 after `invalid arg '...' for queue ... :`).
    pub fn from_arguments(arguments: &FieldTable) -> Result<Limits, (&'static str, String)> {
        let args = arguments.inner();
        let number = |name: &'static str| -> Result<Option<u64>, _> {
            match args.get(name) {
                None => Ok(None),
                Some(value) => integer(value)
                    .filter(|n| *n >= 0)
                    .and_then(|n| u64::try_from(n).ok())
                    .map(Some)
                    .ok_or((name, "must be a non-negative integer".to_owned())),
            }
        };
        let delivery_limit = match number("x-delivery-limit")? {
            None => Some(DEFAULT_DELIVERY_LIMIT),
            Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        };
        let reject_publish = match args.get("x-overflow") {
            None => false,
            Some(value) => match text(value) {
                Some(b"drop-head") => false,
                Some(b"reject-publish") => true,
                Some(b"reject-publish-dlx") => {
                    return Err((
                        "x-overflow",
                        "reject-publish-dlx is not supported by quorum queues".into(),
                    ))
                }
                _ => return Err(("x-overflow", "must be drop-head or reject-publish".into())),
            },
        };
        Ok(Limits {
            delivery_limit,
            max_length: number("x-max-length")?,
            max_bytes: number("x-max-length-bytes")?,
            reject_publish,
            message_ttl: number("x-message-ttl")?,
            single_active: matches!(
                args.get("x-single-active-consumer"),
                Some(AMQPValue::Boolean(true))
            ),
            expires: match number("x-expires")? {
                Some(0) => return Err(("x-expires", "must be a positive integer".into())),
                expires => expires,
            },
        })
    }

    /// Whether `count` messages of `bytes` waiting are at or over a length limit (no room for
    /// another).
    pub fn full(&self, count: u64, bytes: u64) -> bool {
        self.max_length.is_some_and(|max| count >= max)
            || self.max_bytes.is_some_and(|max| bytes >= max)
    }

    /// Whether `count` messages of `bytes` waiting are over a length limit (the oldest must go).
    pub fn over(&self, count: u64, bytes: u64) -> bool {
        self.max_length.is_some_and(|max| count > max)
            || self.max_bytes.is_some_and(|max| bytes > max)
    }
}

#[cfg(test)]
mod tests {
    use warren_protocol::types::LongString;

    use super::*;

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (key, value) in entries {
            table.insert((*key).into(), value.clone());
        }
        table
    }

    #[test]
    fn arguments_read_as_rabbitmq_reads_them() {
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        assert_eq!(
            Limits::from_arguments(&FieldTable::default()),
            Ok(Limits {
                delivery_limit: Some(DEFAULT_DELIVERY_LIMIT),
                ..Limits::default()
            })
        );
        let limits = Limits::from_arguments(&table(&[
            ("x-max-length", AMQPValue::LongInt(10)),
            ("x-max-length-bytes", AMQPValue::LongLongInt(1000)),
            ("x-overflow", text("reject-publish")),
            ("x-message-ttl", AMQPValue::ShortInt(500)),
            ("x-delivery-limit", AMQPValue::LongInt(3)),
        ]))
        .unwrap();
        assert_eq!(
            limits,
            Limits {
                delivery_limit: Some(3),
                max_length: Some(10),
                max_bytes: Some(1000),
                reject_publish: true,
                message_ttl: Some(500),
                single_active: false,
                expires: None,
            }
        );
        assert!(limits.full(10, 0) && !limits.full(9, 999) && limits.full(0, 1000));
        assert!(limits.over(11, 0) && !limits.over(10, 1000));
        let refused = |entries: &[(&str, AMQPValue)]| Limits::from_arguments(&table(entries));
        assert_eq!(
            refused(&[("x-overflow", text("reject-publish-dlx"))]).map_err(|e| e.0),
            Err("x-overflow")
        );
        assert_eq!(
            refused(&[("x-max-length", AMQPValue::LongInt(-1))]).map_err(|e| e.0),
            Err("x-max-length")
        );
    }
}
