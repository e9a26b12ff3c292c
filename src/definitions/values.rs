//! Field tables (queue, exchange and binding arguments) as JSON, both ways, as RabbitMQ's
//! management writes and reads them: integers of any width as JSON integers, floats as
//! numbers, strings, booleans, nested tables as objects and arrays as arrays. JSON integers
//! become long-long ints and other numbers doubles, as the configuration file's values do
//! (`config::arguments`). Pure functions.

use serde_json::{Map, Number, Value};
use warren_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};

use crate::config::arguments::field_name;

/// The JSON object of a field table.
pub fn table_to_json(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(key, value)| (key.as_str().to_owned(), value_to_json(value)))
        .collect()
}

/// The JSON of one field value. Byte arrays (RabbitMQ's `x`) become strings, lossily, and a
/// float that JSON cannot hold (NaN, infinities) null.
pub fn value_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::Float(f) => float(f64::from(*f)),
        AMQPValue::Double(f) => float(*f),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b.as_slice()).into()),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(value_to_json).collect())
        }
        AMQPValue::FieldTable(table) => Value::Object(table_to_json(table)),
        AMQPValue::Void => Value::Null,
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// The field table of a JSON object; an error names the first key that has no field value.
pub fn json_to_table(object: &Map<String, Value>) -> Result<FieldTable, String> {
    let mut table = FieldTable::default();
    for (key, value) in object {
        let value = json_to_value(value).map_err(|e| format!("argument '{key}': {e}"))?;
        table.insert(field_name(key)?, value);
    }
    Ok(table)
}

/// The field value of a JSON value: integer -> long-long, other number -> double, string ->
/// long string, bool -> boolean, array -> field array, object -> field table, null -> void.
pub fn json_to_value(value: &Value) -> Result<AMQPValue, String> {
    Ok(match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => AMQPValue::LongLongInt(i),
            (None, Some(f)) if n.is_f64() => AMQPValue::Double(f),
            _ => return Err(format!("{n} does not fit a signed 64-bit integer")),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(items) => {
            let mut array = FieldArray::default();
            for item in items {
                array.push(json_to_value(item)?);
            }
            AMQPValue::FieldArray(array)
        }
        Value::Object(object) => AMQPValue::FieldTable(json_to_table(object)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_field_tables() {
        let json = serde_json::json!({
            "i": -2, "f": 0.5, "b": true, "s": "x", "n": null,
            "a": [1, "y", [false]], "t": {"deep": {"k": 7}}
        });
        let Value::Object(object) = json.clone() else {
            unreachable!()
        };
        let table = json_to_table(&object).unwrap();
        assert_eq!(table.inner().get("i"), Some(&AMQPValue::LongLongInt(-2)));
        assert_eq!(table.inner().get("f"), Some(&AMQPValue::Double(0.5)));
        assert_eq!(Value::Object(table_to_json(&table)), json);
    }

    #[test]
    fn narrow_integers_and_refusals() {
        assert_eq!(value_to_json(&AMQPValue::ShortShortUInt(9)), Value::from(9));
        assert_eq!(value_to_json(&AMQPValue::Double(f64::NAN)), Value::Null);
        let huge = serde_json::json!({ "x": u64::MAX });
        let Value::Object(object) = huge else {
            unreachable!()
        };
        assert!(json_to_table(&object).unwrap_err().contains("argument 'x'"));
        let long_key: Map<String, Value> =
            [("k".repeat(256), Value::from(1))].into_iter().collect();
        assert!(json_to_table(&long_key).is_err());
    }
}
