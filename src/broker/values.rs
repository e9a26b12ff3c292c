//! Field values as RabbitMQ reads, compares and names them in its reply texts: integers of any
//! width, argument equivalence on redeclaration, and type names (`signedint`, `longstr`, …).
//! Pure functions; no state.

use warren_protocol::types::AMQPValue;

/// The longest time to live or expiry RabbitMQ accepts: ten years, in milliseconds.
pub const MAX_EXPIRY_MS: i128 = 315_360_000_000;

/// An integer argument of any AMQP integer type.
pub fn integer(value: &AMQPValue) -> Option<i128> {
    Some(match value {
        AMQPValue::ShortShortInt(v) => i128::from(*v),
        AMQPValue::ShortShortUInt(v) => i128::from(*v),
        AMQPValue::ShortInt(v) => i128::from(*v),
        AMQPValue::ShortUInt(v) => i128::from(*v),
        AMQPValue::LongInt(v) => i128::from(*v),
        AMQPValue::LongUInt(v) => i128::from(*v),
        AMQPValue::LongLongInt(v) => i128::from(*v),
        _ => return None,
    })
}

/// Compares a redeclared argument as RabbitMQ does: integers of any width are equal when their
/// values are. On a difference, returns how the 406 text shows each side: `'11'` when both are
/// set, [`describe`] when one is missing.
pub fn argument_mismatch(
    got: Option<&AMQPValue>,
    have: Option<&AMQPValue>,
) -> Option<(String, String)> {
    match (got, have) {
        (None, None) => None,
        (Some(a), Some(b)) => {
            let same = match (integer(a), integer(b)) {
                (Some(x), Some(y)) => x == y,
                _ => a == b,
            };
            (!same).then(|| (format!("'{}'", show(got)), format!("'{}'", show(have))))
        }
        _ => Some((describe(got), describe(have))),
    }
}

/// A field value as RabbitMQ names it in 406 texts: `the value '10' of type 'signedint'`.
pub fn describe(value: Option<&AMQPValue>) -> String {
    match value {
        None => "none".into(),
        Some(value) => format!(
            "the value '{}' of type '{}'",
            show(Some(value)),
            type_name(value)
        ),
    }
}

/// The bytes of a string value (long or short string), the only types RabbitMQ takes where an
/// argument names something.
pub fn text(value: &AMQPValue) -> Option<&[u8]> {
    match value {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        _ => None,
    }
}

/// RabbitMQ's name for a field value's type.
pub fn type_name(value: &AMQPValue) -> &'static str {
    match value {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) => "shortstr",
        AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

pub fn show(value: Option<&AMQPValue>) -> String {
    match value {
        None => "none".into(),
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        Some(other) => match integer(other) {
            Some(n) => n.to_string(),
            None => format!("{other:?}"),
        },
    }
}
