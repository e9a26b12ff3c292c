//! Every problem a file can have, asserted with its file, line, column and text; and what a good
//! file turns into.

use std::time::Duration;

use warren_protocol::types::AMQPValue;

use super::{from_str, DestinationType, LogFormat};
use crate::broker::exchange::ExchangeKind;
use crate::UnackedTimeoutAction;

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
        "t.toml:1:1: unknown key 'colour' (a configuration file has [server], [[users]], \
         [[vhosts]], [[permissions]], [[exchanges]], [[queues]], [[bindings]])",
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
        "t.toml:2:26: unacked_timeout_action: unknown variant `drop`, expected `redeliver` or \
         `close-channel`",
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
fn durations_and_sizes() {
    assert_problem(
        "[server]\nheartbeat = \"60x\"\n",
        "t.toml:2:13: heartbeat: invalid duration \"60x\": expected a whole number and a unit \
         (ms, s, m, h, d), e.g. \"30s\"",
    );
    assert_problem(
        "[server]\nheartbeat = \"1500ms\"\n",
        "t.toml:2:13: heartbeat: must be a whole number of seconds, at most 65535s (\"0s\" \
         turns heartbeats off)",
    );
    assert_problem(
        "[server]\nmax_message_size = \"12 parsecs\"\n",
        "t.toml:2:20: max_message_size: invalid size \"12 parsecs\": expected a whole number \
         of bytes, optionally with a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. \"128MiB\"",
    );
    assert_problem(
        "[server]\nframe_max = 100\n",
        "t.toml:2:13: frame_max: 100 is below the protocol's minimum of 4096 bytes",
    );
    assert_problem(
        "[server]\nlisteners = [\"0.0.0.0:5672\", \"nowhere\"]\n",
        "t.toml:2:30: listeners: 'nowhere' is not an address to listen on (expected ip:port \
         or host:port, e.g. \"0.0.0.0:5672\")",
    );
    assert_problem(
        "[server]\nlog_level = \"info,warren=loud\"\n",
        "t.toml:2:13: log_level: invalid filter 'info,warren=loud': error parsing level \
         filter: expected one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\", \
         or a number 0-5",
    );
}

#[test]
fn unknown_exchange_type() {
    assert_problem(
        "[[exchanges]]\nname = \"orders\"\ntype = \"topc\"\n",
        "t.toml:3:8: unknown exchange type 'topc' (expected direct, fanout, topic or headers)",
    );
}

#[test]
fn bindings_to_what_is_not_declared() {
    let text = "\
[[exchanges]]
name = \"events\"
type = \"direct\"

[[queues]]
name = \"q\"

[[bindings]]
source = \"nope\"
destination = \"q\"

[[bindings]]
source = \"events\"
destination = \"missing\"

[[bindings]]
source = \"events\"
destination = \"elsewhere\"
destination_type = \"exchange\"

[[bindings]]
source = \"amq.topic\"
destination = \"q\"
routing_key = \"a.*\"

[[bindings]]
source = \"amq.fanout\"
destination = \"events\"
destination_type = \"exchange\"
";
    assert_eq!(
        problems(text),
        vec![
            "t.toml:9:10: binding from exchange 'nope' in vhost '/', which is neither declared \
             in this file nor built in",
            "t.toml:14:15: binding to queue 'missing' in vhost '/', which is not declared in \
             this file",
            "t.toml:18:15: binding to exchange 'elsewhere' in vhost '/', which is neither \
             declared in this file nor built in",
        ]
    );
}

#[test]
fn the_default_exchange() {
    assert_problem(
        "[[exchanges]]\nname = \"\"\ntype = \"direct\"\n",
        "t.toml:2:8: the default exchange (\"\") is built in and cannot be declared",
    );
    assert_problem(
        "[[queues]]\nname = \"q\"\n[[bindings]]\nsource = \"\"\ndestination = \"q\"\n",
        "t.toml:4:10: binding from the default exchange (\"\"): every queue is bound to it by \
         its name already",
    );
}

#[test]
fn reserved_names() {
    assert_problem(
        "[[exchanges]]\nname = \"amq.orders\"\ntype = \"topic\"\n",
        "t.toml:2:8: exchange name 'amq.orders' uses the reserved prefix 'amq.'",
    );
    assert_problem(
        "[[exchanges]]\nname = \"amq.topic\"\ntype = \"topic\"\n",
        "t.toml:2:8: exchange 'amq.topic' is built in: bind to it without declaring it",
    );
    assert_problem(
        "[[queues]]\nname = \"amq.q\"\n",
        "t.toml:2:8: queue name 'amq.q' uses the reserved prefix 'amq.'",
    );
    assert_problem(
        "[[queues]]\nname = \"\"\n",
        "t.toml:2:8: a queue in a file needs a name (server-named queues belong to clients)",
    );
}

#[test]
fn duplicate_names_per_vhost() {
    let text = "\
[[vhosts]]
name = \"b2b\"

[[vhosts]]
name = \"b2b\"

[[exchanges]]
name = \"x\"
type = \"direct\"

[[exchanges]]
name = \"x\"
type = \"direct\"
vhost = \"b2b\"

[[exchanges]]
name = \"x\"
type = \"fanout\"

[[queues]]
name = \"q\"

[[queues]]
name = \"q\"

[[bindings]]
source = \"x\"
destination = \"q\"
routing_key = \"k\"

[[bindings]]
source = \"x\"
destination = \"q\"
routing_key = \"k\"
";
    assert_eq!(
        problems(text),
        vec![
            "t.toml:5:8: duplicate vhost 'b2b' (first declared on line 2)",
            "t.toml:17:8: duplicate exchange 'x' in vhost '/' (first declared on line 8)",
            "t.toml:24:8: duplicate queue 'q' in vhost '/' (first declared on line 21)",
            "t.toml:32:10: duplicate binding from 'x' to queue 'q' with key 'k' in vhost '/' \
             (first declared on line 27)",
        ]
    );
}

#[test]
fn invalid_argument_values_each_one() {
    let text = "[[queues]]\nname = \"retry\"\narguments = { \"x-message-ttl\" = -1, \
                \"x-max-length\" = \"ten\", \"x-overflow\" = \"explode\", \"x-expires\" = 0 }\n";
    assert_eq!(
        problems(text),
        vec![
            "t.toml:3:33: queue 'retry': argument 'x-message-ttl' must not be negative (got -1)",
            "t.toml:3:54: queue 'retry': argument 'x-max-length' must be an integer (got a \
             string)",
            "t.toml:3:76: queue 'retry': argument 'x-overflow' must be \"drop-head\", \
             \"reject-publish\" or \"reject-publish-dlx\"",
            "t.toml:3:101: queue 'retry': argument 'x-expires' must be greater than 0",
        ]
    );
    assert_problem(
        "[[queues]]\nname = \"q\"\narguments = { \"x-dead-letter-exchange\" = 1 }\n",
        "t.toml:3:42: queue 'q': argument 'x-dead-letter-exchange' must be a string (got an \
         integer)",
    );
    assert_problem(
        "[[queues]]\nname = \"q\"\narguments = { \"x-dead-letter-routing-key\" = \"k\" }\n",
        "t.toml:3:45: queue 'q': argument 'x-dead-letter-routing-key' is set without \
         x-dead-letter-exchange (add one)",
    );
    assert_problem(
        "[[queues]]\nname = \"q\"\narguments = { \"x-when\" = 1979-05-27 }\n",
        "t.toml:3:26: argument 'x-when': dates and times cannot be argument values (use an \
         integer or a string)",
    );
    assert_problem(
        "[[exchanges]]\nname = \"x\"\ntype = \"direct\"\narguments = { \"alternate-exchange\" = 5 }\n",
        "t.toml:4:38: argument 'alternate-exchange' must be a string naming an exchange",
    );
}

#[test]
fn topic_binding_keys_with_an_empty_word() {
    for (key, column) in [("a..b", 15), (".a", 15), ("a.", 15)] {
        let text = format!(
            "[[queues]]\nname = \"q\"\n[[bindings]]\nsource = \"amq.topic\"\ndestination = \"q\"\nrouting_key = \"{key}\"\n"
        );
        assert_problem(
            &text,
            &format!(
                "t.toml:6:{column}: topic binding key '{key}' has an empty word (words are \
                 separated by single dots: 'a.b', 'a.*', 'a.#')"
            ),
        );
    }
    // On a direct exchange, dots mean nothing.
    let direct = "[[queues]]\nname = \"q\"\n[[bindings]]\nsource = \"amq.direct\"\n\
                  destination = \"q\"\nrouting_key = \"a..b\"\n";
    assert_eq!(problems(direct), Vec::<String>::new());
}

#[test]
fn headers_binding_arguments() {
    assert_problem(
        "[[queues]]\nname = \"q\"\n[[bindings]]\nsource = \"amq.match\"\ndestination = \"q\"\n\
         arguments = { \"x-match\" = \"some\", \"kind\" = \"a\" }\n",
        "t.toml:6:27: headers binding: Invalid x-match field value <<\"some\">>; expected \
         all, any, all-with-x, or any-with-x",
    );
}

#[test]
fn undeclared_vhosts() {
    let text = "\
[[queues]]
name = \"q\"
vhost = \"orders\"

[[bindings]]
source = \"amq.direct\"
destination = \"q\"
vhost = \"orders\"
";
    // The binding's vhost is reported; its queue, filed under that vhost, is found.
    assert_eq!(
        problems(text),
        vec![
            "t.toml:3:9: vhost 'orders' is not declared (add [[vhosts]] with name = \"orders\")",
            "t.toml:8:9: vhost 'orders' is not declared (add [[vhosts]] with name = \"orders\")",
        ]
    );
}

#[test]
fn exclusive_queues_are_refused() {
    assert_problem(
        "[[queues]]\nname = \"q\"\nexclusive = true\n",
        "t.toml:3:13: queue 'q': exclusive queues belong to the connection that declares them \
         and cannot be declared in a file",
    );
    assert_eq!(
        problems("[[queues]]\nname = \"q\"\nexclusive = false\n"),
        Vec::<String>::new()
    );
}

#[test]
fn users_and_permissions() {
    assert_problem(
        "[[users]]\nname = \"app\"\npassword_hash = \"AAAA\"\n",
        "t.toml:3:17: password_hash of user 'app' is not a RabbitMQ SHA-256 hash: 3 bytes once \
         decoded, where RabbitMQ's SHA-256 hash is 36 (a 4-byte salt and a 32-byte digest)",
    );
    assert_problem(
        "[[users]]\nname = \"app\"\n",
        "t.toml:2:8: user 'app' has no password_hash (nor password)",
    );
    assert_problem(
        "[[users]]\nname = \"app\"\npassword = \"a\"\npassword_hash = \"kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR\"\n",
        "t.toml:3:12: user 'app' has both password_hash and password: keep one",
    );
    assert_problem(
        "[[users]]\nname = \"app\"\npassword = \"a\"\nhashing_algorithm = \"md5\"\n",
        "t.toml:4:21: hashing_algorithm: 'md5' is not supported (only \
         rabbit_password_hashing_sha256)",
    );
    assert_problem(
        "[[users]]\nname = \"a\"\npassword = \"x\"\n[[users]]\nname = \"a\"\npassword = \"y\"\n",
        "t.toml:5:8: duplicate user 'a' (first declared on line 2)",
    );
    let text = "[[users]]\nname = \"a\"\npassword = \"x\"\n[[permissions]]\nuser = \"b\"\n\
                configure = \"(\"\nwrite = \".*\"\nread = \".*\"\n";
    assert_eq!(
        problems(text),
        vec![
            "t.toml:5:8: permissions for user 'b', who is not declared in [[users]]",
            "t.toml:6:13: configure: invalid regular expression '(': unclosed group",
        ]
    );
}

#[test]
fn plain_passwords_are_a_warning() {
    let config = from_str(
        "t.toml",
        "[[users]]\nname = \"app\"\npassword = \"secret\"\n",
    )
    .unwrap();
    assert_eq!(
        config
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![
            "t.toml:3:12: user 'app' has a plain-text password: prefer password_hash \
              (RabbitMQ's salted SHA-256)"
        ]
    );
    assert!(config.users[0].password.matches("secret"));
    assert!(!config.users[0].loopback_only);
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

#[test]
fn a_good_file() {
    let text = "\
[server]
listeners = [\"127.0.0.1:5672\", \"[::1]:5672\"]
data_dir = \"/var/lib/warren\"
heartbeat = \"30s\"
frame_max = 65536
channel_max = 100
max_connections = 500
unacked_timeout = \"5m\"
unacked_timeout_action = \"close-channel\"
max_message_size = \"16MiB\"
memory_high_watermark = \"2GiB\"
log_format = \"json\"

[[vhosts]]
name = \"shop\"

[[exchanges]]
name = \"orders\"
type = \"topic\"
vhost = \"shop\"
durable = true

[[queues]]
name = \"payments\"
vhost = \"shop\"
durable = true
arguments = { \"x-message-ttl\" = 60000, \"x-dead-letter-exchange\" = \"dlx\" }

[[bindings]]
source = \"orders\"
destination = \"payments\"
vhost = \"shop\"
routing_key = \"order.*.paid\"
";
    let config = from_str("shop.toml", text).unwrap();
    let s = &config.settings;
    assert_eq!(s.listeners, vec!["127.0.0.1:5672", "[::1]:5672"]);
    assert_eq!(s.data_dir, std::path::PathBuf::from("/var/lib/warren"));
    assert_eq!(s.tuning.heartbeat, 30);
    assert_eq!(s.tuning.frame_max, 65536);
    assert_eq!(s.tuning.channel_max, 100);
    assert_eq!(s.max_connections, Some(500));
    assert_eq!(s.unacked_timeout, Duration::from_secs(300));
    assert_eq!(s.unacked_timeout_action, UnackedTimeoutAction::CloseChannel);
    assert_eq!(s.max_message_size, 16 << 20);
    assert_eq!(s.memory_high_watermark, 2 << 30);
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(config.vhosts, vec!["/", "shop"]);
    // No [[users]]: the embedded guest.
    assert_eq!(config.users.len(), 1);
    assert_eq!(config.users[0].name, "guest");
    assert!(config.users[0].loopback_only);
    let exchange = &config.topology.exchanges[0];
    assert_eq!(
        (exchange.vhost.as_str(), exchange.kind, exchange.durable),
        ("shop", ExchangeKind::Topic, true)
    );
    assert!(!exchange.auto_delete && !exchange.internal);
    assert_eq!((exchange.origin.line, exchange.origin.column), (18, 8));
    let queue = &config.topology.queues[0];
    assert_eq!(
        queue.arguments.inner().get("x-message-ttl"),
        Some(&AMQPValue::LongLongInt(60000))
    );
    let binding = &config.topology.bindings[0];
    assert_eq!(binding.destination_type, DestinationType::Queue);
    assert_eq!(binding.routing_key, "order.*.paid");
    assert_eq!(
        config.summary(),
        "shop.toml: ok: 1 vhost, 1 exchange, 1 queue, 1 binding, 0 users"
    );
    let options = s.server_options(&config.users, &config.permissions, &config.vhosts);
    assert_eq!(options.listen, "127.0.0.1:5672");
    assert_eq!(options.extra_listeners, vec!["[::1]:5672"]);
    assert_eq!(options.max_connections, Some(500));
}

#[test]
fn an_empty_file_is_the_defaults() {
    let config = from_str("empty.toml", "").unwrap();
    assert_eq!(config.settings, super::Settings::default());
    assert_eq!(config.settings.listeners, vec!["0.0.0.0:5672"]);
    assert_eq!(config.vhosts, vec!["/"]);
}

#[test]
fn settings_needing_a_restart() {
    let running = super::Settings::default();
    let mut changed = running.clone();
    changed.tuning.heartbeat = 5;
    changed.listeners = vec!["127.0.0.1:1".into()];
    changed.disk_free_limit += 1;
    assert_eq!(
        changed.needing_restart(&running),
        vec!["listeners", "heartbeat"]
    );
}
