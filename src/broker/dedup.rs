//! Message de-duplication, as the RabbitMQ plugin (noxdafox/rabbitmq-message-deduplication) and
//! LavinMQ name it: a queue or exchange declared with `x-message-deduplication` = true keeps a
//! window of the keys it has seen (`x-cache-size` of them at most, the oldest evicted first; each
//! for `x-cache-ttl` ms, or the message's own `x-cache-ttl` header, if set), and a message whose
//! key is in the window is dropped: an exchange drops it before routing, a queue before it
//! enqueues it. A message's key is its `x-deduplication-header` header, else its `message_id`;
//! a message with neither is never a duplicate.
//!
//! Owns: the arguments' checks (one wording for AMQP's 406 and the configuration file), the key
//! of a message, the window of one queue or exchange (behind its own mutex, a leaf lock) and,
//! for a durable one, its file (`store::dedup`), written before the publish that added the key
//! is confirmed. Never routes, enqueues or answers a publisher: `vhost/publish.rs` asks
//! [`Dedup::admit`] and turns the verdict into its answer.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::{error, warn};
use warren_protocol::types::{AMQPValue, FieldTable};

use super::message::now_ms;
use super::values::{integer, text, type_name};
use crate::store::dedup::{DedupLog, Entry, MAX_KEY};
use crate::store::Store;

/// The argument that turns de-duplication on (a boolean).
pub const ENABLE: &str = "x-message-deduplication";
/// How many keys the window keeps (a positive integer; required with [`ENABLE`]).
pub const CACHE_SIZE: &str = "x-cache-size";
/// How long a key stays in the window, in ms (a non-negative integer; 0 or absent: until evicted).
pub const CACHE_TTL: &str = "x-cache-ttl";
/// The message header that carries a message's key.
pub const HEADER: &str = "x-deduplication-header";
/// The arguments a redeclaration must repeat unchanged.
pub const ARGUMENTS: [&str; 3] = [ENABLE, CACHE_SIZE, CACHE_TTL];
/// The largest `x-cache-size` accepted (bounds the window's memory).
pub const MAX_CACHE_SIZE: i128 = 10_000_000;

/// A de-duplicating queue's or exchange's window, as its arguments set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub size: usize,
    /// `None`: keys stay until evicted.
    pub ttl_ms: Option<u64>,
}

/// Why de-duplication arguments were refused (the reply text of a 406 and of check-config).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid arg '{arg}': {reason}")]
pub struct Refused {
    pub arg: &'static str,
    pub reason: String,
}

/// Reads the de-duplication arguments: `None` when it is off.
pub fn settings(arguments: &FieldTable) -> Result<Option<Settings>, Refused> {
    let table = arguments.inner();
    match table.get(ENABLE) {
        None | Some(AMQPValue::Boolean(false)) => return Ok(None),
        Some(AMQPValue::Boolean(true)) => {}
        Some(other) => {
            return Err(Refused {
                arg: ENABLE,
                reason: format!("expected a boolean, got {}", type_name(other)),
            })
        }
    }
    let size = match table.get(CACHE_SIZE) {
        None => {
            return Err(Refused {
                arg: CACHE_SIZE,
                reason: format!("required when {ENABLE} is true (a positive integer)"),
            })
        }
        Some(value) => match integer(value) {
            Some(n) if (1..=MAX_CACHE_SIZE).contains(&n) => n as usize,
            Some(n) => {
                return Err(Refused {
                    arg: CACHE_SIZE,
                    reason: format!("{n} is not a positive integer up to {MAX_CACHE_SIZE}"),
                })
            }
            None => {
                return Err(Refused {
                    arg: CACHE_SIZE,
                    reason: format!("expected a positive integer, got {}", type_name(value)),
                })
            }
        },
    };
    let ttl_ms = match table.get(CACHE_TTL) {
        None => None,
        Some(value) => match integer(value) {
            Some(0) => None,
            Some(n) if n > 0 && n <= i128::from(u32::MAX) * 1000 => Some(n as u64),
            Some(n) => {
                return Err(Refused {
                    arg: CACHE_TTL,
                    reason: format!("{n} is not a non-negative number of milliseconds"),
                })
            }
            None => {
                return Err(Refused {
                    arg: CACHE_TTL,
                    reason: format!(
                        "expected a non-negative integer (ms), got {}",
                        type_name(value)
                    ),
                })
            }
        },
    };
    Ok(Some(Settings { size, ttl_ms }))
}

/// A message's key, and the TTL its own `x-cache-ttl` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub key: Vec<u8>,
    pub ttl_ms: Option<u64>,
}

/// The key of a message (from its raw properties): its `x-deduplication-header` header (a
/// string as its bytes, another value by its type and value), else its `message_id`; `None`
/// when it has neither (or a key above 64 KiB), so it is never a duplicate.
pub fn key(properties: &[u8]) -> Option<Key> {
    let mut ttl_ms = None;
    let mut from_header = None;
    if warren_protocol::content::has_headers(properties) {
        if let Some(headers) = warren_protocol::content::decode_headers(properties) {
            let headers = headers.inner();
            if let Some(value) = headers.get(HEADER) {
                from_header = Some(match text(value) {
                    Some(bytes) => bytes.to_vec(),
                    // Tagged so that it never equals a string's key.
                    None => format!("\u{0}{value:?}").into_bytes(),
                });
            }
            ttl_ms = headers
                .get(CACHE_TTL)
                .and_then(integer)
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n > 0);
        }
    }
    let key = match from_header {
        Some(key) => key,
        None => warren_protocol::content::message_id(properties)?.to_vec(),
    };
    (key.len() <= MAX_KEY).then_some(Key { key, ttl_ms })
}

/// What [`Dedup::admit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen within the window: now it is.
    New,
    /// Seen within the window: drop the message (and confirm it).
    Duplicate,
    /// The key could not be written to the window's file: refuse the message (a nack).
    Failed,
}

/// One queue's or exchange's window.
#[derive(Debug)]
pub struct Dedup {
    settings: Settings,
    /// The group commit that makes the window's file durable (a durable queue or exchange).
    store: Option<Arc<Store>>,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    seen: HashMap<Arc<[u8]>, Seen>,
    /// Keys oldest first, with the stamp they had when added (an entry whose key was added
    /// again since, or forgotten, is stale and skipped).
    order: VecDeque<(Arc<[u8]>, u64)>,
    next_stamp: u64,
    log: Option<DedupLog>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// ms since the epoch; 0: never.
    expires: u64,
    stamp: u64,
}

impl Dedup {
    /// A window kept in memory only (a transient queue or exchange).
    pub fn in_memory(settings: Settings) -> Dedup {
        Dedup {
            settings,
            store: None,
            window: Mutex::new(Window::new(None)),
        }
    }

    /// A window kept in the file at `path` too, and recovered from it.
    pub fn durable(settings: Settings, store: Arc<Store>, path: &Path) -> io::Result<Dedup> {
        let (log, entries) = DedupLog::open(path)?;
        let replayed = entries.len();
        let mut window = Window::new(Some(log));
        let now = now_ms();
        for entry in entries {
            match entry {
                Entry::Seen { key, expires } => {
                    if expires == 0 || expires > now {
                        window.insert(Arc::from(key), expires, settings.size);
                    } else {
                        window.remove(&key);
                    }
                }
                Entry::Forget { key } => window.remove(&key),
            }
        }
        if replayed > 2 * settings.size {
            window.rewrite()?;
        }
        Ok(Dedup {
            settings,
            store: Some(store),
            window: Mutex::new(window),
        })
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// The group commit a confirm waits for when this window's file was written (`None`: the
    /// window is in memory only).
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Keys in the window (expired ones not yet evicted included).
    pub fn len(&self) -> usize {
        self.window.lock().seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks `key` against the window and adds it if it is not there, in one step, so that of
    /// two publishes of one key only one is `New`, however close together. A durable window
    /// writes the key to its file and hands the file to the group commit before it answers.
    pub fn admit(&self, key: &Key) -> Verdict {
        let now = now_ms();
        let mut window = self.window.lock();
        if let Some(seen) = window.seen.get(&key.key[..]) {
            if seen.expires == 0 || seen.expires > now {
                return Verdict::Duplicate;
            }
        }
        let expires = key
            .ttl_ms
            .or(self.settings.ttl_ms)
            .map_or(0, |ttl| now.saturating_add(ttl));
        if let (Some(log), Some(store)) = (window.log.as_mut(), self.store.as_ref()) {
            let entry = Entry::Seen {
                key: key.key.clone(),
                expires,
            };
            if let Err(e) = log.append(&entry) {
                error!(error = %e, "cannot write to a de-duplication file");
                return Verdict::Failed;
            }
            store.syncer.dirty([log.file()]);
        }
        window.insert(Arc::from(&key.key[..]), expires, self.settings.size);
        if window.log.as_ref().map_or(0, DedupLog::entries) > 2 * self.settings.size + 64 {
            if let Err(e) = window.rewrite() {
                error!(error = %e, "cannot rewrite a de-duplication file");
            }
        }
        Verdict::New
    }

    /// Takes `key` out of the window: the publish that added it failed, so a resend must pass.
    pub fn forget(&self, key: &Key) {
        let mut window = self.window.lock();
        window.remove(&key.key);
        if let Some(log) = window.log.as_mut() {
            let entry = Entry::Forget {
                key: key.key.clone(),
            };
            if let Err(e) = log.append(&entry) {
                warn!(error = %e, "cannot write to a de-duplication file");
            }
        }
    }

    /// Removes the window's file (its queue or exchange is deleted).
    pub fn remove_file(&self) {
        let mut window = self.window.lock();
        if let Some(log) = window.log.take() {
            if let Err(e) = log.remove() {
                warn!(error = %e, "cannot remove a de-duplication file");
            }
        }
    }
}

impl Window {
    fn new(log: Option<DedupLog>) -> Window {
        Window {
            seen: HashMap::new(),
            order: VecDeque::new(),
            next_stamp: 0,
            log,
        }
    }

    /// Adds (or renews) `key`, then evicts the oldest keys past `size`.
    fn insert(&mut self, key: Arc<[u8]>, expires: u64, size: usize) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.seen.insert(Arc::clone(&key), Seen { expires, stamp });
        self.order.push_back((key, stamp));
        while self.seen.len() > size {
            let Some((oldest, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.seen.get(&oldest).is_some_and(|s| s.stamp == stamp) {
                self.seen.remove(&oldest);
            }
        }
        if self.order.len() > 2 * size + 16 {
            let seen = &self.seen;
            self.order
                .retain(|(key, stamp)| seen.get(key).is_some_and(|s| s.stamp == *stamp));
        }
    }

    fn remove(&mut self, key: &[u8]) {
        self.seen.remove(key);
    }

    /// The live keys, oldest first.
    fn live(&self) -> impl Iterator<Item = (&[u8], u64)> {
        let now = now_ms();
        self.order.iter().filter_map(move |(key, stamp)| {
            let seen = self.seen.get(key)?;
            (seen.stamp == *stamp && (seen.expires == 0 || seen.expires > now))
                .then_some((&key[..], seen.expires))
        })
    }

    fn rewrite(&mut self) -> io::Result<()> {
        let Some(mut log) = self.log.take() else {
            return Ok(());
        };
        let result = log.rewrite(self.live());
        self.log = Some(log);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn arguments_are_checked() {
        assert_eq!(settings(&FieldTable::default()), Ok(None));
        let on = (ENABLE, AMQPValue::Boolean(true));
        assert_eq!(
            settings(&table(std::slice::from_ref(&on))).unwrap_err().arg,
            CACHE_SIZE
        );
        let zero = (CACHE_SIZE, AMQPValue::LongLongInt(0));
        assert_eq!(
            settings(&table(&[on.clone(), zero])).unwrap_err().arg,
            CACHE_SIZE
        );
        let size = (CACHE_SIZE, AMQPValue::LongLongInt(10));
        let ttl = (CACHE_TTL, AMQPValue::LongLongInt(-1));
        assert_eq!(
            settings(&table(&[on.clone(), size.clone(), ttl]))
                .unwrap_err()
                .arg,
            CACHE_TTL
        );
        let ttl = (CACHE_TTL, AMQPValue::LongLongInt(500));
        assert_eq!(
            settings(&table(&[on, size, ttl])),
            Ok(Some(Settings {
                size: 10,
                ttl_ms: Some(500)
            }))
        );
    }

    #[test]
    fn a_message_s_key_is_its_header_else_its_message_id() {
        use warren_protocol::content::encode_properties;
        use warren_protocol::spec::BasicProperties;
        let none = encode_properties(&BasicProperties::default());
        assert_eq!(super::key(&none), None);
        let id = encode_properties(&BasicProperties::default().with_message_id("m1".into()));
        assert_eq!(super::key(&id).map(|k| k.key), Some(b"m1".to_vec()));
        let headers = table(&[
            (HEADER, AMQPValue::LongString("h1".into())),
            (CACHE_TTL, AMQPValue::LongLongInt(50)),
        ]);
        let both = encode_properties(
            &BasicProperties::default()
                .with_message_id("m1".into())
                .with_headers(headers),
        );
        assert_eq!(
            super::key(&both),
            Some(Key {
                key: b"h1".to_vec(),
                ttl_ms: Some(50)
            })
        );
        let number = table(&[(HEADER, AMQPValue::LongLongInt(7))]);
        let number = encode_properties(&BasicProperties::default().with_headers(number));
        let found = super::key(&number).map(|k| k.key);
        assert!(
            found.is_some_and(|k| k != b"7"),
            "a number is not the string \"7\""
        );
    }

    fn key(k: &str) -> Key {
        Key {
            key: k.as_bytes().to_vec(),
            ttl_ms: None,
        }
    }

    #[test]
    fn the_window_drops_duplicates_and_evicts_the_oldest() {
        let dedup = Dedup::in_memory(Settings {
            size: 2,
            ttl_ms: None,
        });
        assert_eq!(dedup.admit(&key("a")), Verdict::New);
        assert_eq!(dedup.admit(&key("a")), Verdict::Duplicate);
        assert_eq!(dedup.admit(&key("b")), Verdict::New);
        assert_eq!(dedup.admit(&key("c")), Verdict::New);
        assert_eq!(dedup.len(), 2);
        assert_eq!(dedup.admit(&key("a")), Verdict::New);
        assert_eq!(dedup.admit(&key("c")), Verdict::Duplicate);
        dedup.forget(&key("c"));
        assert_eq!(dedup.admit(&key("c")), Verdict::New);
    }

    #[test]
    fn keys_expire() {
        let dedup = Dedup::in_memory(Settings {
            size: 10,
            ttl_ms: Some(1),
        });
        assert_eq!(dedup.admit(&key("a")), Verdict::New);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(dedup.admit(&key("a")), Verdict::New);
        let long = Key {
            key: b"b".to_vec(),
            ttl_ms: Some(60_000),
        };
        assert_eq!(dedup.admit(&long), Verdict::New);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(dedup.admit(&key("b")), Verdict::Duplicate);
    }
}
