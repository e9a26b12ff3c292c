//! `arguments` tables: TOML values as AMQP field values (integer -> long-long, float -> double,
//! string -> long string, bool -> boolean, array -> field array, table -> field table), and the
//! broker's refusals of queue arguments put in words for a person editing a file.

use warren_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

use crate::broker::arguments::{ArgumentError, Refused, MAX_RETRY_DELAYS};

/// The field value of a TOML value; an error for what AMQP has no value for (dates).
pub fn field_value(value: &toml::Value) -> Result<AMQPValue, String> {
    Ok(match value {
        toml::Value::Integer(n) => AMQPValue::LongLongInt(*n),
        toml::Value::Float(f) => AMQPValue::Double(*f),
        toml::Value::Boolean(b) => AMQPValue::Boolean(*b),
        toml::Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        toml::Value::Array(items) => {
            let mut array = FieldArray::default();
            for item in items {
                array.push(field_value(item)?);
            }
            AMQPValue::FieldArray(array)
        }
        toml::Value::Table(table) => {
            let mut fields = FieldTable::default();
            for (key, value) in table {
                fields.insert(field_name(key)?, field_value(value)?);
            }
            AMQPValue::FieldTable(fields)
        }
        toml::Value::Datetime(_) => {
            return Err(
                "dates and times cannot be argument values (use an integer or a string)".into(),
            )
        }
    })
}

/// A field table key: a short string (at most 255 bytes).
pub fn field_name(key: &str) -> Result<ShortString, String> {
    ShortString::try_new(key).map_err(|_| format!("argument name '{key}' is longer than 255 bytes"))
}

/// A queue argument's refusal, worded for the file: `must not be negative (got -1)`.
pub fn explain(error: &ArgumentError) -> (&'static str, String) {
    match error {
        ArgumentError::Type { arg, type_name } => (
            *arg,
            format!("must be a string (got {})", toml_type(type_name)),
        ),
        ArgumentError::Invalid { arg, reason } => (*arg, explain_reason(reason)),
    }
}

fn explain_reason(reason: &Refused) -> String {
    match reason {
        Refused::Negative(n) => format!("must not be negative (got {n})"),
        Refused::Zero(_) => "must be greater than 0".into(),
        Refused::TooLarge(n) => format!("must be at most 315360000000 ms, ten years (got {n})"),
        Refused::AboveMaxPriority(n) => format!("must be at most 255 (got {n})"),
        Refused::UnacceptableType(type_name) => {
            format!("has the wrong type ({})", toml_type(type_name))
        }
        Refused::NotInteger(type_name) => {
            format!("must be an integer (got {})", toml_type(type_name))
        }
        Refused::InvalidOverflow => {
            "must be \"drop-head\", \"reject-publish\" or \"reject-publish-dlx\"".into()
        }
        Refused::RoutingKeyWithoutExchange => {
            "is set without x-dead-letter-exchange (add one)".into()
        }
        Refused::Unsupported { what, value } => format!("unsupported {what} '{value}'"),
        Refused::NotDelays(type_name) => {
            format!(
                "must be an array of delays in milliseconds (got {})",
                toml_type(type_name)
            )
        }
        Refused::DelayCount(n) => {
            format!("must list 1 to {MAX_RETRY_DELAYS} delays (got {n})")
        }
    }
}

/// How a TOML user knows the type that the broker names in RabbitMQ's words.
fn toml_type(type_name: &str) -> &str {
    match type_name {
        "longstr" | "shortstr" => "a string",
        "long" | "signedint" => "an integer",
        "double" | "float" => "a float",
        "bool" => "a boolean",
        "array" => "an array",
        "table" => "a table",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_values_become_field_values() {
        let value: toml::Value = toml::from_str::<toml::Table>(
            "v = { i = 1, f = 0.5, b = true, s = \"x\", a = [1, \"y\"], t = { n = -2 } }",
        )
        .unwrap()["v"]
            .clone();
        let AMQPValue::FieldTable(table) = field_value(&value).unwrap() else {
            panic!("a table");
        };
        let get = |k: &str| table.inner().get(k).cloned().unwrap();
        assert_eq!(get("i"), AMQPValue::LongLongInt(1));
        assert_eq!(get("f"), AMQPValue::Double(0.5));
        assert_eq!(get("b"), AMQPValue::Boolean(true));
        assert_eq!(
            get("s"),
            AMQPValue::LongString(LongString::from(b"x".to_vec()))
        );
        assert!(matches!(get("a"), AMQPValue::FieldArray(a) if a.as_slice().len() == 2));
        assert!(matches!(get("t"), AMQPValue::FieldTable(_)));
        let date: toml::Value =
            toml::from_str::<toml::Table>("d = 1979-05-27").unwrap()["d"].clone();
        assert!(field_value(&date).is_err());
    }

    #[test]
    fn refusals_in_words() {
        let invalid = |reason: Refused| {
            explain(&ArgumentError::Invalid {
                arg: "x-message-ttl",
                reason,
            })
            .1
        };
        assert_eq!(
            invalid(Refused::Negative(-1)),
            "must not be negative (got -1)"
        );
        assert_eq!(invalid(Refused::Zero(0)), "must be greater than 0");
        assert_eq!(
            invalid(Refused::TooLarge(315_360_000_001)),
            "must be at most 315360000000 ms, ten years (got 315360000001)"
        );
        assert_eq!(
            invalid(Refused::AboveMaxPriority(300)),
            "must be at most 255 (got 300)"
        );
        assert_eq!(
            invalid(Refused::NotInteger("longstr")),
            "must be an integer (got a string)"
        );
        assert_eq!(
            invalid(Refused::UnacceptableType("long")),
            "has the wrong type (an integer)"
        );
        assert_eq!(
            invalid(Refused::Unsupported {
                what: "queue mode",
                value: "fast".into()
            }),
            "unsupported queue mode 'fast'"
        );
    }
}
