//! The problems of `[server]`, `[[users]]` and `[[permissions]]`, and what a good file becomes.

use std::time::Duration;

use warren_protocol::types::AMQPValue;

use super::super::{from_str, DestinationType, LogFormat, Settings};
use super::{assert_problem, problems};
use crate::broker::exchange::ExchangeKind;
use crate::UnackedTimeoutAction;

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
        "[server]\ncompaction_interval = \"0s\"\n",
        "t.toml:2:23: compaction_interval: must be above 0s",
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
        "[[users]]\nname = \"app\"\npassword = \"secret\"\n\
         [[permissions]]\nuser = \"app\"\nconfigure = \"\"\nwrite = \"\"\nread = \".*\"\n",
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
compaction_interval = \"250ms\"
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
    assert_eq!((exchange.origin.line, exchange.origin.column), (19, 8));
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
    let options = s.server_options(&config);
    assert_eq!(options.listen, "127.0.0.1:5672");
    assert_eq!(options.extra_listeners, vec!["[::1]:5672"]);
    assert_eq!(options.max_connections, Some(500));
    assert_eq!(options.compaction_interval, Duration::from_millis(250));
}

#[test]
fn an_empty_file_is_the_defaults() {
    let config = from_str("empty.toml", "").unwrap();
    assert_eq!(config.settings, Settings::default());
    assert_eq!(config.settings.listeners, vec!["[::]:5672"]);
    assert_eq!(config.vhosts, vec!["/"]);
}

#[test]
fn settings_needing_a_restart() {
    let running = Settings::default();
    let mut changed = running.clone();
    changed.tuning.heartbeat = 5;
    changed.listeners = vec!["127.0.0.1:1".into()];
    changed.disk_free_limit += 1;
    assert_eq!(
        changed.needing_restart(&running),
        vec!["listeners", "heartbeat"]
    );
}

#[test]
fn permissions_defaults_and_topic_permissions() {
    // No [[users]]: the embedded guest, with every permission in `/`.
    let config = from_str("t.toml", "").unwrap();
    assert_eq!(config.permissions.len(), 1);
    assert_eq!(
        (
            config.permissions[0].user.as_str(),
            config.permissions[0].vhost.as_str()
        ),
        ("guest", "/")
    );
    // A user without permissions is a warning: it can open no vhost.
    let config = from_str(
        "t.toml",
        "[[users]]\nname = \"app\"\npassword_hash = \"AQIDBKSR723asempcKRBlyrPWcL1zhEiLhyy/se3Vks7S5g+\"\n",
    )
    .unwrap();
    assert!(config.permissions.is_empty());
    assert_eq!(
        config
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["t.toml: user 'app' has no [[permissions]]: it can log in but open no vhost"]
    );
    // Topic permissions: variables expanded, expressions checked, users and vhosts known.
    let text = "[[vhosts]]\nname = \"iot\"\n\
                [[users]]\nname = \"dev1\"\npassword_hash = \"AQIDBKSR723asempcKRBlyrPWcL1zhEiLhyy/se3Vks7S5g+\"\n\
                [[permissions]]\nuser = \"dev1\"\nvhost = \"iot\"\nconfigure = \"\"\nwrite = \".*\"\nread = \".*\"\n\
                [[topic_permissions]]\nuser = \"dev1\"\nvhost = \"iot\"\nexchange = \"telemetry\"\n\
                write = \"^{username}\\\\.\"\nread = \"^{vhost}\\\\.\"\n";
    let config = from_str("t.toml", text).unwrap();
    let topic = &config.topic_permissions[0];
    assert_eq!(topic.write.as_str(), "^dev1\\.");
    assert_eq!(topic.read.as_str(), "^iot\\.");
    assert_eq!(topic.exchange, "telemetry");
    let bad =
        "[[topic_permissions]]\nuser = \"nobody\"\nexchange = \"x\"\nwrite = \"(\"\nread = \"\"\n";
    let problems = from_str("t.toml", bad).unwrap_err();
    let problems: Vec<String> = problems.problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("user 'nobody', who is not declared"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("write: invalid regular expression '('"),
        "{problems:?}"
    );
}

#[test]
fn loopback_users() {
    // guest is loopback-only by default, other users are not.
    let users = "[[users]]\nname = \"guest\"\npassword = \"guest\"\n\
                 [[users]]\nname = \"app\"\npassword = \"x\"\n";
    let config = from_str("t.toml", users).unwrap();
    let loopback: Vec<(&str, bool)> = config
        .users
        .iter()
        .map(|u| (u.name.as_str(), u.loopback_only))
        .collect();
    assert_eq!(loopback, [("guest", true), ("app", false)]);
    // `loopback_users = []` (top-level, as RabbitMQ's) lets guest in from anywhere; in [server]
    // it may name others.
    let config = from_str("t.toml", &format!("loopback_users = []\n{users}")).unwrap();
    assert!(config.users.iter().all(|u| !u.loopback_only));
    let config = from_str(
        "t.toml",
        &format!("[server]\nloopback_users = [\"app\"]\n{users}"),
    )
    .unwrap();
    let loopback: Vec<bool> = config.users.iter().map(|u| u.loopback_only).collect();
    assert_eq!(loopback, [false, true]);
    // The embedded guest (no [[users]]) follows it too.
    let config = from_str("t.toml", "loopback_users = []\n").unwrap();
    assert!(!config.users[0].loopback_only);
    let problems = from_str("t.toml", "loopback_users = \"guest\"\n").unwrap_err();
    assert!(
        problems.problems[0]
            .to_string()
            .starts_with("t.toml:1:18: loopback_users:"),
        "{}",
        problems.problems[0]
    );
}
