//! Checks of the `x-` arguments of `queue.declare`, with RabbitMQ's reasons for refusing them.
//!
//! Only the form of each value is checked here (type, sign); what the arguments do belongs to the
//! queue. Arguments Warren does not know are accepted and ignored, as RabbitMQ does.

use warren_protocol::types::{AMQPValue, FieldTable};

use super::values::{integer, text, type_name, MAX_EXPIRY_MS};

/// How an argument's value is constrained.
enum Rule {
    /// An integer ≥ 0.
    NonNegative,
    /// An integer in 0..=ten years of milliseconds (`x-message-ttl`).
    Ttl,
    /// An integer in 1..=ten years of milliseconds (`x-expires`).
    Expires,
    /// An integer in 0..=255 (`x-max-priority`).
    Priority,
    /// A string (`x-dead-letter-exchange`, whose refusal RabbitMQ words its own way).
    ExchangeName,
    /// A string, allowed only beside `x-dead-letter-exchange`.
    DeadLetterRoutingKey,
    /// One of these strings; otherwise the reason given.
    OneOf(&'static [&'static str], Refusal),
    Boolean,
    /// A list of 1..=[`MAX_RETRY_DELAYS`] delays in milliseconds, each an expiry
    /// (`x-retry-delays`).
    Delays,
}

/// The most delays `x-retry-delays` may list.
pub const MAX_RETRY_DELAYS: usize = 64;

/// How RabbitMQ words an unknown string value.
#[derive(Clone, Copy)]
enum Refusal {
    /// `invalid_overflow`.
    InvalidOverflow,
    /// A quoted sentence naming the value: `"unsupported queue mode 'x'"`.
    Unsupported(&'static str),
}

/// In RabbitMQ's order of checking.
const RULES: [(&str, Rule); 13] = [
    ("x-expires", Rule::Expires),
    ("x-message-ttl", Rule::Ttl),
    ("x-dead-letter-exchange", Rule::ExchangeName),
    ("x-dead-letter-routing-key", Rule::DeadLetterRoutingKey),
    ("x-max-length", Rule::NonNegative),
    ("x-max-length-bytes", Rule::NonNegative),
    ("x-max-priority", Rule::Priority),
    (
        "x-overflow",
        Rule::OneOf(
            &["drop-head", "reject-publish", "reject-publish-dlx"],
            Refusal::InvalidOverflow,
        ),
    ),
    (
        "x-queue-mode",
        Rule::OneOf(&["default", "lazy"], Refusal::Unsupported("queue mode")),
    ),
    ("x-single-active-consumer", Rule::Boolean),
    (
        "x-queue-type",
        Rule::OneOf(
            &["classic", "quorum", "stream"],
            Refusal::Unsupported("queue type"),
        ),
    ),
    // Warren's own (RabbitMQ 3.10 ignores it): the unacked timeout in milliseconds.
    ("x-consumer-timeout", Rule::NonNegative),
    // Warren's own: retry with backoff (broker/vhost/retry.rs).
    ("x-retry-delays", Rule::Delays),
];

/// Why a queue argument was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgumentError {
    /// `invalid arg '{arg}' for queue …: {reason}`.
    Invalid { arg: &'static str, reason: Refused },
    /// `invalid type '{type}' for arg '{arg}' in queue …`.
    Type {
        arg: &'static str,
        type_name: &'static str,
    },
}

/// Why an argument's value is refused. Its `Display` is RabbitMQ's wording (the reply text);
/// a configuration file words it for a person from the variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `"expected integer, got {type}"`.
    NotInteger(&'static str),
    /// `{unacceptable_type,{type}}`.
    UnacceptableType(&'static str),
    Negative(i128),
    Zero(i128),
    /// Above ten years of milliseconds (a TTL or expiry).
    TooLarge(i128),
    /// Above 255 (`x-max-priority`).
    AboveMaxPriority(i128),
    /// An `x-overflow` that is none of the three.
    InvalidOverflow,
    /// `x-dead-letter-routing-key` without `x-dead-letter-exchange`.
    RoutingKeyWithoutExchange,
    /// `"unsupported {what} '{value}'"`.
    Unsupported {
        what: &'static str,
        value: String,
    },
    /// Not a list of delays (`x-retry-delays`): the value's type.
    NotDelays(&'static str),
    /// A list of delays that is empty or longer than [`MAX_RETRY_DELAYS`]: its length.
    DelayCount(usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NotInteger(type_name) => write!(f, "\"expected integer, got {type_name}\""),
            Refused::UnacceptableType(type_name) => write!(f, "{{unacceptable_type,{type_name}}}"),
            Refused::Negative(n) => write!(f, "{{value_negative,{n}}}"),
            Refused::Zero(n) => write!(f, "{{value_zero,{n}}}"),
            Refused::TooLarge(n) => write!(f, "{{value_too_large,{n}}}"),
            Refused::AboveMaxPriority(n) => write!(f, "{{max_value_exceeded,{n}}}"),
            Refused::InvalidOverflow => f.write_str("invalid_overflow"),
            Refused::RoutingKeyWithoutExchange => f.write_str("routing_key_but_no_dlx_defined"),
            Refused::Unsupported { what, value } => write!(f, "\"unsupported {what} '{value}'\""),
            Refused::NotDelays(type_name) => {
                write!(
                    f,
                    "\"expected an array of delays in milliseconds, got {type_name}\""
                )
            }
            Refused::DelayCount(n) => {
                write!(f, "\"expected 1 to {MAX_RETRY_DELAYS} delays, got {n}\"")
            }
        }
    }
}

/// RabbitMQ's refusal of an expiry of `n` ms (`x-message-ttl`, `x-expires`, the `expiration`
/// property), if it refuses it: negative, or above ten years.
pub fn expiry_refusal(n: i128) -> Option<Refused> {
    match n {
        n if n < 0 => Some(Refused::Negative(n)),
        n if n > MAX_EXPIRY_MS => Some(Refused::TooLarge(n)),
        _ => None,
    }
}

/// The `expiration` property as RabbitMQ reads it (Erlang's `string:to_integer`: an optional
/// sign, digits, nothing after): a TTL in milliseconds, or the reason it is refused.
pub fn parse_expiration(text: &[u8]) -> Result<u64, String> {
    let (negative, rest) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err("no_integer".into());
    }
    let (number, leftover) = rest.split_at(digits);
    if !leftover.is_empty() {
        return Err(format!(
            "{{leftover_string,\"{}\"}}",
            String::from_utf8_lossy(leftover)
        ));
    }
    let significant = match number.iter().position(|b| *b != b'0') {
        Some(first) => &number[first..],
        None => b"0",
    };
    let shown = String::from_utf8_lossy(significant);
    if significant.len() > 30 {
        // Beyond any limit either way; shown as Erlang's bignum would be.
        return Err(match negative {
            true => format!("{{value_negative,-{shown}}}"),
            false => format!("{{value_too_large,{shown}}}"),
        });
    }
    let magnitude: i128 = shown.parse().map_err(|_| "no_integer".to_owned())?;
    let n = if negative { -magnitude } else { magnitude };
    match expiry_refusal(n) {
        Some(reason) => Err(reason.to_string()),
        None => u64::try_from(n).map_err(|_| "no_integer".to_owned()),
    }
}

/// The names of the queue arguments checked here.
pub fn known_queue_arguments() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|(name, _)| *name)
}

/// Checks every argument Warren knows; the first refusal, as RabbitMQ words it.
pub fn check_queue_arguments(arguments: &FieldTable) -> Result<(), ArgumentError> {
    let table = arguments.inner();
    for (arg, rule) in &RULES {
        let Some(value) = table.get(*arg) else {
            continue;
        };
        let invalid = |reason: Refused| ArgumentError::Invalid { arg, reason };
        match rule {
            Rule::ExchangeName => {
                if text(value).is_none() {
                    return Err(ArgumentError::Type {
                        arg,
                        type_name: type_name(value),
                    });
                }
            }
            Rule::DeadLetterRoutingKey => {
                if text(value).is_none() {
                    return Err(invalid(unacceptable(value)));
                }
                if !table.contains_key("x-dead-letter-exchange") {
                    return Err(invalid(Refused::RoutingKeyWithoutExchange));
                }
            }
            Rule::OneOf(allowed, refusal) => match text(value) {
                None => return Err(invalid(unacceptable(value))),
                Some(s) if allowed.iter().any(|a| a.as_bytes() == s) => {}
                Some(s) => {
                    return Err(invalid(match refusal {
                        Refusal::InvalidOverflow => Refused::InvalidOverflow,
                        Refusal::Unsupported(what) => Refused::Unsupported {
                            what,
                            value: String::from_utf8_lossy(s).into_owned(),
                        },
                    }))
                }
            },
            Rule::Boolean => {
                if !matches!(value, AMQPValue::Boolean(_)) {
                    return Err(invalid(unacceptable(value)));
                }
            }
            Rule::Delays => {
                if let Err(reason) = retry_delays(value) {
                    return Err(invalid(reason));
                }
            }
            Rule::NonNegative | Rule::Ttl | Rule::Expires | Rule::Priority => {
                let Some(n) = integer(value) else {
                    return Err(invalid(Refused::NotInteger(type_name(value))));
                };
                let reason = match rule {
                    Rule::Expires if n == 0 => Some(Refused::Zero(n)),
                    Rule::Ttl | Rule::Expires => expiry_refusal(n),
                    _ if n < 0 => Some(Refused::Negative(n)),
                    Rule::Priority if n > 255 => Some(Refused::AboveMaxPriority(n)),
                    _ => None,
                };
                if let Some(reason) = reason {
                    return Err(invalid(reason));
                }
            }
        }
    }
    Ok(())
}

/// The delays of an `x-retry-delays` value, in milliseconds, or why they are refused.
pub fn retry_delays(value: &AMQPValue) -> Result<Vec<u64>, Refused> {
    let AMQPValue::FieldArray(array) = value else {
        return Err(Refused::NotDelays(type_name(value)));
    };
    let items = array.as_slice();
    if items.is_empty() || items.len() > MAX_RETRY_DELAYS {
        return Err(Refused::DelayCount(items.len()));
    }
    items
        .iter()
        .map(|item| {
            let n = integer(item).ok_or_else(|| Refused::NotInteger(type_name(item)))?;
            if let Some(reason) = expiry_refusal(n) {
                return Err(reason);
            }
            u64::try_from(n).map_err(|_| Refused::Negative(n))
        })
        .collect()
}

fn unacceptable(value: &AMQPValue) -> Refused {
    Refused::UnacceptableType(type_name(value))
}

/// `x-priority` of a basic.consume (0 when absent). Like RabbitMQ 3.10, any other type is
/// refused: the error's reason, `"expected integer, got longstr"` (quotes included).
pub fn consume_priority(arguments: &FieldTable) -> Result<i64, String> {
    match arguments.inner().get("x-priority") {
        None => Ok(0),
        Some(value) => super::values::integer(value)
            .and_then(|p| i64::try_from(p).ok())
            .ok_or_else(|| {
                format!(
                    "\"expected integer, got {}\"",
                    super::values::type_name(value)
                )
            }),
    }
}

/// `x-consumer-timeout` of a basic.consume, in ms (RabbitMQ 3.12+): `None` when absent; zero
/// means never. Anything but a non-negative integer is refused.
pub fn consume_timeout(arguments: &FieldTable) -> Result<Option<std::time::Duration>, String> {
    let Some(value) = arguments.inner().get("x-consumer-timeout") else {
        return Ok(None);
    };
    match super::values::integer(value).map(u64::try_from) {
        Some(Ok(ms)) => Ok(Some(std::time::Duration::from_millis(ms))),
        Some(Err(_)) => Err("\"expected non-negative integer\"".into()),
        None => Err(format!(
            "\"expected integer, got {}\"",
            super::values::type_name(value)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expirations_read_as_rabbitmq_reads_them() {
        assert_eq!(parse_expiration(b"60000"), Ok(60000));
        assert_eq!(parse_expiration(b"0"), Ok(0));
        assert_eq!(parse_expiration(b"-0"), Ok(0));
        assert_eq!(parse_expiration(b"+7"), Ok(7));
        assert_eq!(parse_expiration(b"007"), Ok(7));
        assert_eq!(parse_expiration(b"315360000000"), Ok(315_360_000_000));
        let refused = |text: &[u8]| parse_expiration(text).unwrap_err();
        assert_eq!(refused(b"315360000001"), "{value_too_large,315360000001}");
        assert_eq!(
            refused(b"99999999999999999999"),
            "{value_too_large,99999999999999999999}"
        );
        assert_eq!(refused(b"-5"), "{value_negative,-5}");
        assert_eq!(refused(b"1.5"), "{leftover_string,\".5\"}");
        assert_eq!(refused(b"100ms"), "{leftover_string,\"ms\"}");
        assert_eq!(refused(b"abc"), "no_integer");
        assert_eq!(refused(b""), "no_integer");
        assert_eq!(refused(b"-"), "no_integer");
        assert_eq!(refused(b" 5"), "no_integer");
    }
    use warren_protocol::types::{LongString, ShortString};

    fn args(name: &str, value: AMQPValue) -> FieldTable {
        let mut table = FieldTable::default();
        table.insert(ShortString::from(name), value);
        table
    }

    #[test]
    fn integers_of_any_width_are_accepted() {
        for value in [
            AMQPValue::ShortShortInt(5),
            AMQPValue::ShortInt(5),
            AMQPValue::LongInt(5),
            AMQPValue::LongLongInt(5),
            AMQPValue::LongUInt(5),
        ] {
            assert_eq!(check_queue_arguments(&args("x-max-length", value)), Ok(()));
        }
    }

    /// The refusal as (argument, RabbitMQ's reason text).
    fn refusal(result: Result<(), ArgumentError>) -> Option<(&'static str, String)> {
        match result {
            Err(ArgumentError::Invalid { arg, reason }) => Some((arg, reason.to_string())),
            _ => None,
        }
    }

    #[test]
    fn wrong_types_and_values_are_refused_with_rabbitmq_reasons() {
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        let cases = [
            (
                "x-max-length",
                text("ten"),
                "\"expected integer, got longstr\"",
            ),
            (
                "x-message-ttl",
                AMQPValue::LongInt(-1),
                "{value_negative,-1}",
            ),
            ("x-expires", AMQPValue::LongInt(0), "{value_zero,0}"),
            (
                "x-message-ttl",
                AMQPValue::LongLongInt(315_360_000_001),
                "{value_too_large,315360000001}",
            ),
            (
                "x-max-priority",
                AMQPValue::LongInt(256),
                "{max_value_exceeded,256}",
            ),
            ("x-overflow", text("bogus"), "invalid_overflow"),
            (
                "x-overflow",
                AMQPValue::LongInt(1),
                "{unacceptable_type,signedint}",
            ),
            (
                "x-queue-mode",
                text("fast"),
                "\"unsupported queue mode 'fast'\"",
            ),
            (
                "x-single-active-consumer",
                text("yes"),
                "{unacceptable_type,longstr}",
            ),
            (
                "x-dead-letter-routing-key",
                text("k"),
                "routing_key_but_no_dlx_defined",
            ),
        ];
        for (arg, value, reason) in cases {
            assert_eq!(
                refusal(check_queue_arguments(&args(arg, value))),
                Some((arg, reason.to_owned()))
            );
        }
        assert_eq!(
            check_queue_arguments(&args("x-dead-letter-exchange", AMQPValue::LongInt(1))),
            Err(ArgumentError::Type {
                arg: "x-dead-letter-exchange",
                type_name: "signedint"
            })
        );
        assert_eq!(
            check_queue_arguments(&args("x-custom", AMQPValue::LongInt(-1))),
            Ok(())
        );
        assert_eq!(
            check_queue_arguments(&args("x-overflow", text("reject-publish"))),
            Ok(())
        );
    }
}
