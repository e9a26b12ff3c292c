//! Checks of the `x-` arguments of `queue.declare`, with RabbitMQ's reasons for refusing them.
//!
//! Only the form of each value is checked here (type, sign); what the arguments do belongs to the
//! queue. Arguments Warren does not know are accepted and ignored, as RabbitMQ does.

use warren_protocol::types::{AMQPValue, FieldTable};

use super::vhost::{integer, type_name};

/// How an argument's value is constrained.
enum Rule {
    /// An integer ≥ 0.
    NonNegative,
    /// An integer > 0.
    Positive,
    /// An integer in 0..=255 (`x-max-priority`).
    Priority,
    /// A string.
    Text,
}

const RULES: [(&str, Rule); 8] = [
    ("x-expires", Rule::Positive),
    ("x-message-ttl", Rule::NonNegative),
    ("x-max-length", Rule::NonNegative),
    ("x-max-length-bytes", Rule::NonNegative),
    ("x-max-priority", Rule::Priority),
    ("x-consumer-timeout", Rule::NonNegative),
    ("x-dead-letter-exchange", Rule::Text),
    ("x-dead-letter-routing-key", Rule::Text),
];

/// The first invalid argument of a queue declaration: (name, reason as RabbitMQ words it).
pub fn check_queue_arguments(arguments: &FieldTable) -> Result<(), (&'static str, String)> {
    for (name, rule) in &RULES {
        let Some(value) = arguments.inner().get(*name) else {
            continue;
        };
        check(rule, value).map_err(|reason| (*name, reason))?;
    }
    Ok(())
}

fn check(rule: &Rule, value: &AMQPValue) -> Result<(), String> {
    if let Rule::Text = rule {
        return match value {
            AMQPValue::LongString(_) | AMQPValue::ShortString(_) => Ok(()),
            other => Err(format!("{{unacceptable_type,{}}}", type_name(other))),
        };
    }
    let Some(n) = integer(value) else {
        return Err(format!("\"expected integer, got {}\"", type_name(value)));
    };
    match rule {
        Rule::NonNegative if n < 0 => Err(format!("{{value_negative,{n}}}")),
        Rule::Positive if n == 0 => Err(format!("{{value_zero,{n}}}")),
        Rule::Positive if n < 0 => Err(format!("{{value_negative,{n}}}")),
        Rule::Priority if n < 0 => Err(format!("{{value_negative,{n}}}")),
        Rule::Priority if n > 255 => Err(format!("{{value_too_large,{n},255}}")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn wrong_types_and_signs_are_refused_with_rabbitmq_reasons() {
        let text = AMQPValue::LongString(LongString::from("ten"));
        assert_eq!(
            check_queue_arguments(&args("x-max-length", text)),
            Err(("x-max-length", "\"expected integer, got longstr\"".into()))
        );
        assert_eq!(
            check_queue_arguments(&args("x-message-ttl", AMQPValue::LongInt(-1))),
            Err(("x-message-ttl", "{value_negative,-1}".into()))
        );
        assert_eq!(
            check_queue_arguments(&args("x-expires", AMQPValue::LongInt(0))),
            Err(("x-expires", "{value_zero,0}".into()))
        );
        assert_eq!(
            check_queue_arguments(&args("x-max-priority", AMQPValue::LongInt(256))),
            Err(("x-max-priority", "{value_too_large,256,255}".into()))
        );
        assert_eq!(
            check_queue_arguments(&args("x-dead-letter-exchange", AMQPValue::LongInt(1))),
            Err((
                "x-dead-letter-exchange",
                "{unacceptable_type,signedint}".into()
            ))
        );
        assert_eq!(
            check_queue_arguments(&args("x-custom", AMQPValue::LongInt(-1))),
            Ok(())
        );
    }
}
