//! The arguments of stream queues, as RabbitMQ reads them: what `queue.declare` may say about a
//! stream (its properties, retention) and what `basic.consume` may ask of one (where to start,
//! which filter values). Pure functions from field tables to values or RabbitMQ's refusal texts.

use warren_protocol::types::{AMQPValue, FieldTable};

use super::super::values::{integer, text, type_name};

/// The `x-queue-type` of a stream.
pub const STREAM_TYPE: &str = "stream";

/// The queue arguments a stream takes (RabbitMQ's `queue_arguments` of its stream type).
const STREAM_ARGUMENTS: [&str; 7] = [
    "x-max-length-bytes",
    "x-queue-type",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-stream-filter-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

/// RabbitMQ's default segment size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 500_000_000;
/// The largest `x-stream-max-segment-size-bytes` RabbitMQ accepts.
const MAX_SEGMENT_BYTES: i128 = 3_000_000_000;

/// Whether a queue declared with `arguments` is a stream.
pub fn is_stream(arguments: &FieldTable) -> bool {
    arguments
        .inner()
        .get("x-queue-type")
        .and_then(text)
        .is_some_and(|t| t == STREAM_TYPE.as_bytes())
}

/// How long a stream keeps messages and how large it may grow, and its segment size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_bytes: Option<u64>,
    pub max_age_ms: Option<u64>,
    pub segment_bytes: u64,
}

impl Retention {
    /// From a stream's (checked) arguments.
    pub fn from_arguments(arguments: &FieldTable) -> Retention {
        let get = |name: &str| arguments.inner().get(name);
        let non_negative =
            |value: Option<&AMQPValue>| value.and_then(integer).and_then(|n| u64::try_from(n).ok());
        Retention {
            max_bytes: non_negative(get("x-max-length-bytes")),
            max_age_ms: get("x-max-age").and_then(|v| max_age_ms(v).ok()),
            segment_bytes: non_negative(get("x-stream-max-segment-size-bytes"))
                .filter(|&n| n > 0)
                .unwrap_or(DEFAULT_SEGMENT_BYTES),
        }
    }
}

/// Why a stream declaration is refused: the reply text after "invalid ..." (a 406).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRefused {
    /// `invalid property '{0}'` (`non-durable`, `exclusive-owner`, `auto-delete`).
    Property(&'static str),
    /// `invalid arg '{0}' ... of queue type rabbit_stream_queue`: a queue argument streams do
    /// not take.
    Unsupported(String),
    /// `invalid arg '{arg}' ...: {reason}`.
    Invalid { arg: &'static str, reason: String },
}

impl std::fmt::Display for StreamRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamRefused::Property(property) => write!(f, "invalid property '{property}'"),
            StreamRefused::Unsupported(arg) => {
                write!(f, "argument '{arg}' does not apply to a stream")
            }
            StreamRefused::Invalid { arg, reason } => write!(f, "invalid arg '{arg}': {reason}"),
        }
    }
}

/// RabbitMQ's checks of a stream's declaration: its arguments first (every argument Warren
/// knows for queues that streams do not take, named in `known`), then its properties.
pub fn check_stream(
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    arguments: &FieldTable,
    known: &[&str],
) -> Result<(), StreamRefused> {
    for (name, _) in arguments.inner().iter() {
        let name = name.as_str();
        if known.contains(&name) && !STREAM_ARGUMENTS.contains(&name) {
            return Err(StreamRefused::Unsupported(name.to_owned()));
        }
    }
    if let Some(value) = arguments.inner().get("x-max-age") {
        max_age_ms(value).map_err(|reason| StreamRefused::Invalid {
            arg: "x-max-age",
            reason,
        })?;
    }
    if let Some(value) = arguments.inner().get("x-stream-max-segment-size-bytes") {
        match integer(value) {
            None => {
                return Err(StreamRefused::Invalid {
                    arg: "x-stream-max-segment-size-bytes",
                    reason: format!("{{unacceptable_type,{}}}", type_name(value)),
                })
            }
            Some(n) if n < 0 => {
                return Err(StreamRefused::Invalid {
                    arg: "x-stream-max-segment-size-bytes",
                    reason: format!("{{value_negative,{n}}}"),
                })
            }
            Some(n) if n > MAX_SEGMENT_BYTES => {
                return Err(StreamRefused::Invalid {
                    arg: "x-stream-max-segment-size-bytes",
                    reason: "Exceeded max value for x-stream-max-segment-size-bytes".into(),
                })
            }
            Some(_) => {}
        }
    }
    if auto_delete {
        return Err(StreamRefused::Property("auto-delete"));
    }
    if exclusive {
        return Err(StreamRefused::Property("exclusive-owner"));
    }
    if !durable {
        return Err(StreamRefused::Property("non-durable"));
    }
    Ok(())
}

/// `x-max-age` (`7D`, `12h`, `30m`, `10s`; `Y` and `M` too) in milliseconds, or RabbitMQ's
/// reason for refusing it.
pub fn max_age_ms(value: &AMQPValue) -> Result<u64, String> {
    let Some(bytes) = text(value) else {
        return Err(format!("{{unacceptable_type,{}}}", type_name(value)));
    };
    interval_ms(bytes).ok_or_else(|| "invalid_max_age".to_owned())
}

/// A number followed by one unit letter, in milliseconds.
fn interval_ms(text: &[u8]) -> Option<u64> {
    let (&unit, digits) = text.split_last()?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || digits.len() > 12 {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let seconds: u64 = match unit {
        b'Y' => 365 * 86_400,
        b'M' => 30 * 86_400,
        b'D' => 86_400,
        b'h' => 3_600,
        b'm' => 60,
        b's' => 1,
        _ => return None,
    };
    n.checked_mul(seconds)?.checked_mul(1000)
}

/// Where a stream consumer starts (`x-stream-offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest message kept.
    First,
    /// The first message of the last chunk written (a batch flushed together).
    Last,
    /// Only messages published from now on (the default).
    Next,
    /// This offset (below the oldest: the oldest; beyond the end: wait for it).
    Offset(u64),
    /// The first message stored at or after this time (ms since the Unix epoch).
    Timestamp(u64),
}

/// `x-stream-offset` of `basic.consume`, or a reason to refuse it. `now_ms` resolves an
/// interval (`"1h"`: from an hour ago).
pub fn start(arguments: &FieldTable, now_ms: u64) -> Result<Start, String> {
    let Some(value) = arguments.inner().get("x-stream-offset") else {
        return Ok(Start::Next);
    };
    if let AMQPValue::Timestamp(seconds) = value {
        return Ok(Start::Timestamp(seconds.saturating_mul(1000)));
    }
    if let Some(n) = integer(value) {
        return Ok(Start::Offset(u64::try_from(n).unwrap_or(0)));
    }
    let refused = || {
        format!(
            "invalid x-stream-offset {}",
            super::super::values::show(Some(value))
        )
    };
    let text = text(value).ok_or_else(refused)?;
    Ok(match text {
        b"first" => Start::First,
        b"last" => Start::Last,
        b"next" => Start::Next,
        other => Start::Timestamp(now_ms.saturating_sub(interval_ms(other).ok_or_else(refused)?)),
    })
}

/// A consumer's filter (`x-stream-filter`, `x-stream-match-unfiltered`): the filter values it
/// wants; and whether it also wants messages published without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    values: Vec<Vec<u8>>,
    match_unfiltered: bool,
}

impl Filter {
    /// From `basic.consume`'s arguments: `None` when it does not filter.
    pub fn from_arguments(arguments: &FieldTable) -> Option<Filter> {
        let values = match arguments.inner().get("x-stream-filter")? {
            AMQPValue::FieldArray(items) => items
                .as_slice()
                .iter()
                .filter_map(text)
                .map(<[u8]>::to_vec)
                .collect(),
            other => vec![text(other)?.to_vec()],
        };
        let match_unfiltered = matches!(
            arguments.inner().get("x-stream-match-unfiltered"),
            Some(AMQPValue::Boolean(true))
        );
        Some(Filter {
            values,
            match_unfiltered,
        })
    }

    /// Whether a message with this filter value (`None`: it has none) is wanted.
    pub fn accepts(&self, value: Option<&[u8]>) -> bool {
        match value {
            None => self.match_unfiltered,
            Some(value) => self.values.iter().any(|v| v == value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_protocol::types::{FieldArray, LongString};

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (name, value) in entries {
            table.insert((*name).into(), value.clone());
        }
        table
    }

    fn long(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
    }

    #[test]
    fn max_age_takes_rabbitmqs_units() {
        assert_eq!(max_age_ms(&long("7D")), Ok(7 * 86_400_000));
        assert_eq!(max_age_ms(&long("30s")), Ok(30_000));
        assert_eq!(max_age_ms(&long("10X")), Err("invalid_max_age".into()));
        assert_eq!(max_age_ms(&long("h")), Err("invalid_max_age".into()));
        assert_eq!(
            max_age_ms(&AMQPValue::LongInt(10)),
            Err("{unacceptable_type,signedint}".into())
        );
    }

    #[test]
    fn a_stream_must_be_durable_and_takes_only_its_arguments() {
        let known = ["x-message-ttl", "x-max-length-bytes", "x-queue-type"];
        let args = table(&[("x-queue-type", long("stream"))]);
        assert_eq!(check_stream(true, false, false, &args, &known), Ok(()));
        assert_eq!(
            check_stream(false, false, false, &args, &known),
            Err(StreamRefused::Property("non-durable"))
        );
        assert_eq!(
            check_stream(true, true, false, &args, &known),
            Err(StreamRefused::Property("exclusive-owner"))
        );
        let ttl = table(&[("x-message-ttl", AMQPValue::LongInt(5))]);
        assert_eq!(
            check_stream(true, false, false, &ttl, &known),
            Err(StreamRefused::Unsupported("x-message-ttl".into()))
        );
        let unknown = table(&[("x-whatever", AMQPValue::LongInt(5))]);
        assert_eq!(check_stream(true, false, false, &unknown, &known), Ok(()));
    }

    #[test]
    fn offsets_and_filters_are_read_as_rabbitmq_does() {
        let now = 10_000_000;
        assert_eq!(start(&table(&[]), now), Ok(Start::Next));
        for (value, want) in [
            (long("first"), Start::First),
            (long("last"), Start::Last),
            (long("next"), Start::Next),
            (AMQPValue::LongLongInt(5), Start::Offset(5)),
            (AMQPValue::LongInt(-1), Start::Offset(0)),
            (AMQPValue::Timestamp(7), Start::Timestamp(7000)),
            (long("1h"), Start::Timestamp(now - 3_600_000)),
        ] {
            assert_eq!(start(&table(&[("x-stream-offset", value)]), now), Ok(want));
        }
        assert!(start(&table(&[("x-stream-offset", long("bogus"))]), now).is_err());

        let list = AMQPValue::FieldArray(FieldArray::from(vec![long("red"), long("blue")]));
        let filter = Filter::from_arguments(&table(&[("x-stream-filter", list)])).unwrap();
        assert!(filter.accepts(Some(b"red")) && filter.accepts(Some(b"blue")));
        assert!(!filter.accepts(Some(b"green")) && !filter.accepts(None));
        let unfiltered = Filter::from_arguments(&table(&[
            ("x-stream-filter", long("red")),
            ("x-stream-match-unfiltered", AMQPValue::Boolean(true)),
        ]))
        .unwrap();
        assert!(unfiltered.accepts(None) && !unfiltered.accepts(Some(b"blue")));
        assert_eq!(Filter::from_arguments(&table(&[])), None);
    }
}
