//! The problems of `[[exchanges]]`, `[[queues]]` and `[[bindings]]`.

use super::super::from_str;
use super::{assert_problem, problems};

#[test]
fn unknown_exchange_type() {
    assert_problem(
        "[[exchanges]]\nname = \"orders\"\ntype = \"topc\"\n",
        "t.toml:3:8: unknown exchange type 'topc' (expected direct, fanout, topic, headers or x-delayed-message)",
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
fn retry_delays_are_checked() {
    assert!(problems(
        "[[queues]]\nname = \"jobs\"\narguments = { \"x-retry-delays\" = [1000, 10000, 60000] }\n"
    )
    .is_empty());
    assert_problem(
        "[[queues]]\nname = \"q\"\narguments = { \"x-retry-delays\" = [] }\n",
        "t.toml:3:34: queue 'q': argument 'x-retry-delays' must list 1 to 64 delays (got 0)",
    );
    assert_problem(
        "[[queues]]\nname = \"q\"\narguments = { \"x-retry-delays\" = 5 }\n",
        "t.toml:3:34: queue 'q': argument 'x-retry-delays' must be an array of delays in \
         milliseconds (got an integer)",
    );
    assert_problem(
        "[[queues]]\nname = \"q\"\narguments = { \"x-retry-delays\" = [10, -5] }\n",
        "t.toml:3:34: queue 'q': argument 'x-retry-delays' must not be negative (got -5)",
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
fn exchanges_named_by_arguments_but_declared_nowhere_are_a_warning() {
    let text = "\
[[exchanges]]
name = \"x\"
type = \"direct\"
arguments = { \"alternate-exchange\" = \"unrouted\" }

[[queues]]
name = \"q\"
arguments = { \"x-dead-letter-exchange\" = \"dlx\" }

[[queues]]
name = \"fine\"
arguments = { \"x-dead-letter-exchange\" = \"x\" }

[[queues]]
name = \"default\"
arguments = { \"x-dead-letter-exchange\" = \"\" }
";
    let config = from_str("t.toml", text).unwrap();
    assert_eq!(
        config
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![
            "t.toml:4:38: exchange 'x': alternate-exchange names exchange 'unrouted', which is \
             neither declared in this file nor built in: what goes there is dropped until a \
             client declares it",
            "t.toml:8:42: queue 'q': x-dead-letter-exchange names exchange 'dlx', which is \
             neither declared in this file nor built in: what goes there is dropped until a \
             client declares it",
        ]
    );
}

#[test]
fn delayed_exchanges_need_a_known_delayed_type() {
    assert_problem(
        "[[exchanges]]\nname = \"later\"\ntype = \"x-delayed-message\"\n",
        "t.toml:3:8: exchange 'later': an exchange of type 'x-delayed-message' needs the argument 'x-delayed-type' (a string: direct, fanout, topic or headers) (Invalid argument, 'x-delayed-type' must be an existing exchange type)",
    );
    assert_problem(
        "[[exchanges]]\nname = \"later\"\ntype = \"x-delayed-message\"\narguments = { \"x-delayed-type\" = \"drect\" }\n",
        "t.toml:4:34: exchange 'later': argument 'x-delayed-type' must be direct, fanout, topic or headers (unknown exchange type 'drect')",
    );
    let ok = "\
[[exchanges]]
name = \"later\"
type = \"x-delayed-message\"
durable = true
arguments = { \"x-delayed-type\" = \"topic\" }

[[queues]]
name = \"q\"

[[bindings]]
source = \"later\"
destination = \"q\"
routing_key = \"a.*\"
";
    assert!(problems(ok).is_empty(), "{:?}", problems(ok));
}

#[test]
fn de_duplication_arguments_are_checked() {
    let text = "[[queues]]\nname = \"q\"\narguments = { \"x-message-deduplication\" = true }\n\
                [[exchanges]]\nname = \"x\"\ntype = \"fanout\"\narguments = { \
                \"x-message-deduplication\" = true, \"x-cache-size\" = 10, \"x-cache-ttl\" = -5 }\n\
                [[queues]]\nname = \"ok\"\narguments = { \"x-message-deduplication\" = true, \
                \"x-cache-size\" = 10, \"x-cache-ttl\" = 1000 }\n";
    let found = problems(text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].contains("queue 'q': invalid arg 'x-cache-size': required"),
        "{found:?}"
    );
    assert!(
        found[1].contains("exchange 'x': invalid arg 'x-cache-ttl'"),
        "{found:?}"
    );
}

#[test]
fn stream_queues_are_checked() {
    assert!(problems(
        "[[queues]]\nname = \"events\"\ndurable = true\narguments = { \"x-queue-type\" = \"stream\", \
         \"x-max-age\" = \"7D\", \"x-max-length-bytes\" = 1000000 }\n"
    )
    .is_empty());
    assert_problem(
        "[[queues]]\nname = \"events\"\narguments = { \"x-queue-type\" = \"stream\" }\n",
        "t.toml:2:8: queue 'events': a stream must be durable (durable = true)",
    );
    assert_problem(
        "[[queues]]\nname = \"events\"\ndurable = true\narguments = { \"x-queue-type\" = \
         \"stream\", \"x-message-ttl\" = 5 }\n",
        "t.toml:4:60: queue 'events': argument 'x-message-ttl' does not apply to a stream",
    );
    assert_problem(
        "[[queues]]\nname = \"events\"\ndurable = true\narguments = { \"x-queue-type\" = \
         \"stream\", \"x-max-age\" = \"10X\" }\n",
        "t.toml:4:56: queue 'events': argument 'x-max-age' is invalid (invalid_max_age)",
    );
}

#[test]
fn quorum_queues_are_checked() {
    assert!(problems(
        "[[queues]]\nname = \"orders\"\ndurable = true\narguments = { \"x-queue-type\" = \
         \"quorum\", \"x-delivery-limit\" = 5, \"x-quorum-initial-group-size\" = 3 }\n"
    )
    .is_empty());
    assert_problem(
        "[[queues]]\nname = \"orders\"\narguments = { \"x-queue-type\" = \"quorum\" }\n",
        "t.toml:2:8: queue 'orders': a quorum queue must be durable (durable = true)",
    );
    assert_problem(
        "[[queues]]\nname = \"orders\"\ndurable = true\nauto_delete = true\narguments = { \
         \"x-queue-type\" = \"quorum\" }\n",
        "t.toml:2:8: queue 'orders': a quorum queue cannot be auto delete",
    );
    assert_problem(
        "[[queues]]\nname = \"orders\"\ndurable = true\narguments = { \"x-queue-type\" = \
         \"quorum\", \"x-quorum-initial-group-size\" = 0 }\n",
        "t.toml:4:74: queue 'orders': argument 'x-quorum-initial-group-size' must be a \
         positive integer",
    );
}
