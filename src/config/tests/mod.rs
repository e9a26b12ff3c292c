//! Every problem a file can have, asserted with its file, line, column and text; and what a good
//! file turns into. Reading problems (syntax, unknown keys, types) here; the topology's in
//! `topology.rs`; the server section's, users' and permissions' in `settings.rs`.

mod cluster;
mod settings;
mod topology;

use super::from_str;

/// The problems of `text` (as `t.toml`), one line each.
fn problems(text: &str) -> Vec<String> {
    match from_str("t.toml", text) {
        Ok(_) => Vec::new(),
        Err(report) => report.problems.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that `text` has exactly this one problem.
#[track_caller]
fn assert_problem(text: &str, expected: &str) {
    assert_eq!(problems(text), vec![expected.to_owned()], "in:\n{text}");
}

#[test]
fn toml_syntax_errors_are_all_reported_with_their_place() {
    let found = problems("[server]\nheartbeat = \n\n[[exchanges]]\nname = \"x\n");
    assert_eq!(
        found,
        vec![
            "t.toml:2:13: TOML syntax: string values must be quoted, expected literal string",
            "t.toml:5:10: TOML syntax: invalid basic string, expected `\"`",
        ]
    );
}

#[test]
fn unknown_keys() {
    assert_problem(
        "colour = 1\n",
        "t.toml:1:1: unknown key 'colour' (a configuration file has [server], [cluster], [[users]], \
         [[vhosts]], [[permissions]], [[topic_permissions]], [[exchanges]], [[queues]], \
         [[bindings]], loopback_users)",
    );
    assert_problem(
        "[[exchanges]]\nname = \"x\"\ntype = \"topic\"\ndurabel = true\n",
        "t.toml:4:1: unknown key 'durabel' in [[exchanges]] (expected one of: name, type, \
         vhost, durable, auto_delete, internal, arguments)",
    );
    let found = problems("[server]\nport = 1\nhost = \"x\"\n");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("t.toml:2:1: unknown key 'port' in [server]"));
    assert!(found[1].starts_with("t.toml:3:1: unknown key 'host' in [server]"));
}

#[test]
fn wrong_types_every_one_of_an_entry() {
    let found = problems("[[queues]]\nname = \"q\"\ndurable = \"yes\"\nauto_delete = 3\n");
    assert_eq!(
        found,
        vec![
            "t.toml:3:11: durable: invalid type: string \"yes\", expected a boolean",
            "t.toml:4:15: auto_delete: invalid type: integer `3`, expected a boolean",
        ]
    );
    assert_problem(
        "[server]\nunacked_timeout_action = \"drop\"\n",
        "t.toml:2:26: unacked_timeout_action: unknown variant `drop`, expected one of \
         `redeliver`, `close-channel`, `cancel`",
    );
    assert_problem(
        "exchanges = 3\n",
        "t.toml:1:13: 'exchanges' must be an array of tables: write each entry as [[exchanges]]",
    );
}

#[test]
fn missing_required_keys() {
    assert_problem(
        "\n[[exchanges]]\nname = \"x\"\n",
        "t.toml:2:1: [[exchanges]] entry has no 'type', which is required",
    );
    assert_problem(
        "[[queues]]\ndurable = true\n",
        "t.toml:1:1: [[queues]] entry has no 'name', which is required",
    );
}

#[test]
fn every_problem_in_one_report() {
    let text = "\
bogus = 1
[server]
heartbeat = \"x\"
[[exchanges]]
name = \"e\"
type = \"nope\"
[[queues]]
name = \"q\"
arguments = { \"x-message-ttl\" = -5 }
[[bindings]]
source = \"missing\"
destination = \"gone\"
";
    assert_eq!(problems(text).len(), 6, "{:#?}", problems(text));
}
