//! The output of `warren ctl`: which columns each listing shows and where in the API's JSON
//! each comes from, the aligned tables (`tabled`), the key/value lines of `status`, and the
//! JSON printed with `--json`.
//!
//! It owns formatting only: it receives JSON already fetched and never makes a request.

use serde_json::Value;
use tabled::builder::Builder;
use tabled::settings::object::{Columns, Segment};
use tabled::settings::{Alignment, Padding, Style};

/// A column: its header and the dotted path of its value in one listed object.
pub struct Column {
    pub header: &'static str,
    pub path: &'static str,
}

const fn col(header: &'static str, path: &'static str) -> Column {
    Column { header, path }
}

pub const QUEUES: &[Column] = &[
    col("vhost", "vhost"),
    col("name", "name"),
    col("type", "type"),
    col("durable", "durable"),
    col("messages_ready", "messages_ready"),
    col("messages_unacknowledged", "messages_unacknowledged"),
    col("consumers", "consumers"),
    col("publish_rate", "message_stats.publish_details.rate"),
    col("deliver_rate", "message_stats.deliver_get_details.rate"),
];

pub const EXCHANGES: &[Column] = &[
    col("vhost", "vhost"),
    col("name", "name"),
    col("type", "type"),
    col("durable", "durable"),
    col("auto_delete", "auto_delete"),
    col("internal", "internal"),
    col("arguments", "arguments"),
];

pub const BINDINGS: &[Column] = &[
    col("vhost", "vhost"),
    col("source", "source"),
    col("destination", "destination"),
    col("destination_type", "destination_type"),
    col("routing_key", "routing_key"),
    col("arguments", "arguments"),
];

pub const CONNECTIONS: &[Column] = &[
    col("name", "name"),
    col("user", "user"),
    col("vhost", "vhost"),
    col("client_name", "user_provided_name"),
    col("ssl", "ssl"),
    col("channels", "channels"),
    col("state", "state"),
    col("connected_since", "connected_since"),
];

pub const CHANNELS: &[Column] = &[
    col("name", "name"),
    col("user", "user"),
    col("vhost", "vhost"),
    col("consumers", "consumer_count"),
    col("prefetch_count", "prefetch_count"),
    col("messages_unacknowledged", "messages_unacknowledged"),
    col("confirm", "confirm"),
    col("transactional", "transactional"),
];

pub const CONSUMERS: &[Column] = &[
    col("vhost", "queue.vhost"),
    col("queue", "queue.name"),
    col("consumer_tag", "consumer_tag"),
    col("channel", "channel_details.name"),
    col("ack_required", "ack_required"),
    col("exclusive", "exclusive"),
    col("prefetch_count", "prefetch_count"),
    col("active", "active"),
];

pub const USERS: &[Column] = &[col("name", "name"), col("tags", "tags")];

pub const VHOSTS: &[Column] = &[
    col("name", "name"),
    col("messages", "messages"),
    col("messages_ready", "messages_ready"),
    col("messages_unacknowledged", "messages_unacknowledged"),
    col("description", "description"),
];

pub const PERMISSIONS: &[Column] = &[
    col("user", "user"),
    col("vhost", "vhost"),
    col("configure", "configure"),
    col("write", "write"),
    col("read", "read"),
];

/// The value at a dotted `path` of `object`, if any.
fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(object, |value, key| value.get(key))
}

/// One cell: strings as they are, rates with one decimal, lists joined with commas, objects
/// as compact JSON, nothing for null or missing.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_f64() => format!("{:.1}", n.as_f64().unwrap_or(0.0)),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| cell(Some(item)))
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(map)) if map.is_empty() => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The listing `items` (a JSON array) as an aligned table of `columns`, numbers right-aligned;
/// one line per item under a header line.
pub fn table(items: &Value, columns: &[Column]) -> String {
    let rows: Vec<&Value> = items
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut builder = Builder::default();
    builder.push_record(columns.iter().map(|c| c.header));
    for row in &rows {
        builder.push_record(columns.iter().map(|c| cell(lookup(row, c.path))));
    }
    let mut table = builder.build();
    table.with(Style::blank());
    table.modify(Segment::all(), Padding::new(0, 1, 0, 0));
    for (index, column) in columns.iter().enumerate() {
        let mut present = rows
            .iter()
            .filter_map(|row| lookup(row, column.path))
            .filter(|value| !value.is_null())
            .peekable();
        let numeric = present.peek().is_some() && present.all(Value::is_number);
        if numeric {
            table.modify(Columns::one(index), Alignment::right());
        }
    }
    // Style::blank pads every line to the table's width: trim it.
    table
        .to_string()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `key: value` lines, the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(key, value)| format!("{:<width$} {value}", format!("{key}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Milliseconds as `3d 4h 5m 6s` (the larger units only when not zero).
pub fn duration(millis: u64) -> String {
    let secs = millis / 1000;
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m {seconds}s"),
        _ => format!("{days}d {hours}h {minutes}m {seconds}s"),
    }
}

/// Prints `value` as the API gave it (pretty-printed).
pub fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(_) => println!("{value}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_read_dotted_paths() {
        let queue = json!({"name": "q", "message_stats": {"publish_details": {"rate": 2.5}},
                           "tags": ["a", "b"], "n": 3, "args": {}});
        assert_eq!(
            cell(lookup(&queue, "message_stats.publish_details.rate")),
            "2.5"
        );
        assert_eq!(
            cell(lookup(&queue, "message_stats.deliver_get_details.rate")),
            ""
        );
        assert_eq!(cell(lookup(&queue, "tags")), "a,b");
        assert_eq!(cell(lookup(&queue, "n")), "3");
        assert_eq!(cell(lookup(&queue, "args")), "");
    }

    #[test]
    fn tables_align_columns_and_right_align_numbers() {
        let items = json!([{"name": "a", "n": 1}, {"name": "longer", "n": 100}]);
        let columns = [col("name", "name"), col("n", "n")];
        let text = table(&items, &columns);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("name    "), "{text}");
        assert!(lines[1].ends_with("  1"), "{text}");
        assert!(lines[2].ends_with("100"), "{text}");
        assert_eq!(lines[1].len(), lines[2].len(), "{text}");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(5_000), "5s");
        assert_eq!(duration(65_000), "1m 5s");
        assert_eq!(duration(3_600_000 + 61_000), "1h 1m 1s");
        assert_eq!(duration(86_400_000 * 2), "2d 0h 0m 0s");
    }
}
