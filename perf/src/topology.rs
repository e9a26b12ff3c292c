//! The routing model of a run: queue names, bindings, each producer's routing key and headers,
//! which consumer reads which queue, and which (queue, producer) pairs must see every message.
//! Also declares all of it on the broker. The expectation is computed here, from the same
//! bindings that are declared, so the loss check knows what "every message" means for fanout,
//! topic and headers scenarios.

use std::collections::HashSet;

use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::cli::{Args, ExchangeType};

/// One binding: `exchange -> queues[queue]` with `key` (headers: `k=v;...` pairs).
#[derive(Clone, Debug)]
pub struct Binding {
    pub queue: usize,
    pub key: String,
}

#[derive(Clone, Debug)]
pub struct Topology {
    pub exchange: String,
    pub kind: Option<ExchangeType>,
    pub queues: Vec<String>,
    pub bindings: Vec<Binding>,
    /// Routing key per producer.
    pub routing_keys: Vec<String>,
    /// Message headers per producer (headers exchanges only).
    pub headers: Vec<Vec<(String, String)>>,
    /// Queue index per consumer.
    pub consumer_queue: Vec<usize>,
    /// Tracker index per consumer: its queue's, or (streams) its own, since every consumer of a
    /// stream reads every message.
    pub consumer_tracker: Vec<usize>,
    /// `expected[tracker][producer]`: the tracker's queue is consumed and routes that producer's
    /// messages (a tracker is a queue, or for streams a consumer).
    pub expected: Vec<Vec<bool>>,
    /// Arguments of queue.declare (`--queue-args`).
    pub queue_args: FieldTable,
    /// The queues are streams: declared durable, never purged.
    pub stream: bool,
    /// Warnings to show before the run (e.g. bindings that collapse into one).
    pub warnings: Vec<String>,
}

impl Topology {
    pub fn plan(args: &Args) -> Topology {
        let (exchange, kind) = args.exchange();
        let queues: Vec<String> = (0..args.queues)
            .map(|q| args.queue_pattern.replace("{}", &q.to_string()))
            .collect();
        let routing_template = args.routing_key.clone().unwrap_or_else(|| {
            match kind {
                None => String::new(), // per producer: its queue's name
                Some(ExchangeType::Direct | ExchangeType::Topic) => "perf".into(),
                Some(ExchangeType::Fanout) => String::new(),
                Some(ExchangeType::Headers) => "perf=1".into(),
            }
        });
        let routing_keys: Vec<String> = (0..args.producers)
            .map(|p| match (kind, &args.routing_key) {
                (None, None) => queues[p % queues.len()].clone(),
                _ => routing_template.replace("{}", &p.to_string()),
            })
            .collect();
        let headers = routing_keys
            .iter()
            .map(|rk| match kind {
                Some(ExchangeType::Headers) => parse_pairs(rk),
                _ => Vec::new(),
            })
            .collect();

        let mut warnings = Vec::new();
        let bindings = if kind.is_none() {
            Vec::new()
        } else {
            let keys = if args.binding_keys.is_empty() {
                vec![routing_template.replace("{}", "0")]
            } else {
                args.binding_keys.clone()
            };
            let n = args.bindings.unwrap_or(keys.len()).max(queues.len());
            let bindings: Vec<Binding> = (0..n)
                .map(|i| Binding {
                    queue: i % queues.len(),
                    key: keys[i % keys.len()].replace("{}", &i.to_string()),
                })
                .collect();
            let distinct: HashSet<(usize, &str)> =
                bindings.iter().map(|b| (b.queue, b.key.as_str())).collect();
            if distinct.len() < bindings.len() {
                warnings.push(format!(
                    "{} of the {} bindings repeat an earlier (queue, key) pair and collapse into \
                     it; put \"{{}}\" in --binding-keys to make them distinct",
                    bindings.len() - distinct.len(),
                    bindings.len()
                ));
            }
            bindings
        };

        let consumer_queue: Vec<usize> = (0..args.consumers).map(|c| c % queues.len()).collect();
        let stream = args.stream();
        let consumer_tracker: Vec<usize> = if stream {
            (0..args.consumers).collect()
        } else {
            consumer_queue.clone()
        };
        let mut topology = Topology {
            exchange,
            kind,
            queues,
            bindings,
            routing_keys,
            headers,
            consumer_queue,
            consumer_tracker,
            expected: Vec::new(),
            queue_args: field_table(&args.queue_args),
            stream,
            warnings,
        };
        topology.expected = if stream {
            topology
                .consumer_queue
                .iter()
                .map(|&q| (0..args.producers).map(|p| topology.routes(p, q)).collect())
                .collect()
        } else {
            (0..topology.queues.len())
                .map(|q| {
                    let consumed = topology.consumer_queue.contains(&q);
                    (0..args.producers)
                        .map(|p| consumed && topology.routes(p, q))
                        .collect()
                })
                .collect()
        };
        topology
    }

    /// Does a message from producer `p` reach queue `q`?
    pub fn routes(&self, p: usize, q: usize) -> bool {
        let key = &self.routing_keys[p];
        let Some(kind) = self.kind else {
            return *key == self.queues[q];
        };
        self.bindings
            .iter()
            .filter(|b| b.queue == q)
            .any(|b| match kind {
                ExchangeType::Direct => b.key == *key,
                ExchangeType::Fanout => true,
                ExchangeType::Topic => topic_matches(&b.key, key),
                ExchangeType::Headers => {
                    let have = &self.headers[p];
                    parse_pairs(&b.key).iter().all(|pair| have.contains(pair))
                }
            })
    }

    /// Declares the exchange and queues, purges the queues and binds them.
    pub async fn declare(&self, channel: &Channel, durable: bool) -> Result<(), String> {
        if let Some(kind) = self.kind {
            let kind = match kind {
                ExchangeType::Direct => ExchangeKind::Direct,
                ExchangeType::Fanout => ExchangeKind::Fanout,
                ExchangeType::Topic => ExchangeKind::Topic,
                ExchangeType::Headers => ExchangeKind::Headers,
            };
            let options = ExchangeDeclareOptions {
                durable,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    self.exchange.as_str().into(),
                    kind,
                    options,
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("exchange.declare {}: {e}", self.exchange))?;
        }
        for queue in &self.queues {
            let options = QueueDeclareOptions {
                durable: durable || self.stream,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(queue.as_str().into(), options, self.queue_args.clone())
                .await
                .map_err(|e| format!("queue.declare {queue}: {e}"))?;
            if self.stream {
                continue; // streams refuse queue.purge (540); each run has a fresh broker
            }
            channel
                .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                .await
                .map_err(|e| format!("queue.purge {queue}: {e}"))?;
        }
        for binding in &self.bindings {
            let queue = &self.queues[binding.queue];
            let (key, arguments) = match self.kind {
                Some(ExchangeType::Headers) => {
                    let mut args = FieldTable::default();
                    args.insert("x-match".into(), long_string("all"));
                    for (k, v) in parse_pairs(&binding.key) {
                        args.insert(k.into(), long_string(&v));
                    }
                    (String::new(), args)
                }
                _ => (binding.key.clone(), FieldTable::default()),
            };
            channel
                .queue_bind(
                    queue.as_str().into(),
                    self.exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    arguments,
                )
                .await
                .map_err(|e| format!("queue.bind {queue} {}: {e}", binding.key))?;
        }
        Ok(())
    }

    /// Headers for producer `p` as an AMQP field table, if its messages carry any.
    pub fn header_table(&self, p: usize) -> Option<FieldTable> {
        let pairs = &self.headers[p];
        if pairs.is_empty() {
            return None;
        }
        let mut table = FieldTable::default();
        for (k, v) in pairs {
            table.insert(ShortString::from(k.as_str()), long_string(v));
        }
        Some(table)
    }
}

/// `key=value` pairs as an AMQP field table: an integer value becomes a long-long, true/false a
/// boolean, anything else a long string.
pub fn field_table(pairs: &[String]) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in pairs.iter().filter_map(|kv| kv.split_once('=')) {
        let v = v.trim();
        let value = if let Ok(n) = v.parse::<i64>() {
            AMQPValue::LongLongInt(n)
        } else if let Ok(b) = v.parse::<bool>() {
            AMQPValue::Boolean(b)
        } else {
            long_string(v)
        };
        table.insert(ShortString::from(k.trim()), value);
    }
    table
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// `k=v;k2=v2` -> pairs (entries without `=` are ignored).
pub fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// AMQP topic matching: words separated by '.', `*` matches one word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = key.split('.').collect();
    matches_words(&pattern, &key)
}

fn matches_words(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| matches_words(rest, &key[skip..])),
        Some((word, rest)) => match key.split_first() {
            Some((k, key_rest)) => (*word == "*" || word == k) && matches_words(rest, key_rest),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("a.*", "a.b"));
        assert!(!topic_matches("a.*", "a.b.c"));
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("a.#", "a.b.c"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#.c", "a.b.c"));
        assert!(!topic_matches("b.#", "a.b"));
        assert!(topic_matches("*.x.#.y", "w.x.y"));
        assert!(topic_matches("perf", "perf"));
    }

    #[test]
    fn argument_tables() {
        let table = field_table(&[
            "x-queue-type=stream".into(),
            "x-max-length-bytes=1000".into(),
            "x-stream-match-unfiltered=true".into(),
        ]);
        let get = |k: &str| table.inner().get(&ShortString::from(k)).cloned();
        assert_eq!(get("x-queue-type"), Some(long_string("stream")));
        assert_eq!(
            get("x-max-length-bytes"),
            Some(AMQPValue::LongLongInt(1000))
        );
        assert_eq!(
            get("x-stream-match-unfiltered"),
            Some(AMQPValue::Boolean(true))
        );
    }

    #[test]
    fn pairs() {
        assert_eq!(
            parse_pairs("a=1; b=2;junk"),
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
    }
}
