//! Crash tests for a backlog past the memory window (issue 19): the queue's ready list is its log
//! (runs read back from disk), recovery leaves everything past the window in the log with
//! per-segment marks and punched ranges. With a 16 KiB memory window, 64 KiB segments and
//! compaction every 100 ms, the real `warren` binary is killed with SIGKILL:
//!
//! 1. while publishers fill a growing backlog with confirms (several rounds, varying moments);
//! 2. while a consumer drains part of the backlog, acking out of order, nacking with requeue,
//!    rejecting and holding some (so segments keep holes, compaction punches them);
//! 3. during recovery itself, repeatedly;
//! 4. with a priority queue and a requeued message past the window.
//!
//! After each, a checker drains the queue and reports what was lost, duplicated, reordered, or
//! came back after an ack the broker had handled. What Warren promises (ARCHITECTURE.md,
//! Durability): a confirmed message survives; an ack is written (not synced) when the broker
//! handles it, so under kill -9 (the page cache survives) an ack it handled stays gone, while an
//! ack still in flight may come back (at-least-once). An ack counts as handled once a later
//! method on its channel (a passive queue.declare) has been answered.
//!
//! Scale: `WARREN_CRASH_SCALE=10 cargo test --release --test backlog_crash -- --nocapture` (the
//! default, 1, keeps the file under a minute in a debug build).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::message::DeliveryResult;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::mpsc;

/// A message's identity, from its body: (publisher, round, sequence number).
type Id = (u32, u32, u64);

/// The scale of the backlogs (`WARREN_CRASH_SCALE`, default 1).
fn scale() -> u64 {
    std::env::var("WARREN_CRASH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(1)
}

/// A well-mixed hash of a few numbers (the tests' deterministic randomness).
fn mix(values: &[u64]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for v in values {
        h ^= v.wrapping_add(0x9E37_79B9_7F4A_7C15);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
    }
    h
}

/// The body of a message: its id, then filler to a size that varies with it (40 to 240 bytes,
/// and now and then 300 KB: a record larger than a segment and than one read of a run).
fn body(id: Id) -> Vec<u8> {
    let (publisher, round, seq) = id;
    let mut body = format!("{publisher}.{round}.{seq}.").into_bytes();
    let size = match seq % 4999 == 4998 {
        true => 300_000,
        false => 40 + (mix(&[u64::from(publisher), u64::from(round), seq]) % 200) as usize,
    };
    body.resize(size.max(body.len()), b'x');
    body
}

fn parse(data: &[u8]) -> Id {
    let text = String::from_utf8_lossy(&data[..data.len().min(64)]).into_owned();
    let mut parts = text.split('.');
    let mut next = || parts.next().and_then(|p| p.parse::<u64>().ok());
    match (next(), next(), next()) {
        (Some(p), Some(r), Some(s)) => {
            let id = (p as u32, r as u32, s);
            assert_eq!(data, &body(id)[..], "the body of {id:?} came back changed");
            id
        }
        _ => panic!("a body that is not ours: {text:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The broker process.

struct Warren {
    child: Child,
    addr: SocketAddr,
}

/// The test's files: its data directory, beside it its configuration and the broker's log.
struct Dirs {
    data: PathBuf,
}

impl Dirs {
    fn new(test: &str) -> Dirs {
        let data =
            std::env::temp_dir().join(format!("warren-backlog-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let _ = std::fs::remove_file(data.with_extension("log"));
        std::fs::write(
            data.with_extension("toml"),
            "[server]\nsegment_size = \"64KiB\"\nqueue_memory_window = \"16KiB\"\n\
             compaction_interval = \"100ms\"\n",
        )
        .expect("configuration file");
        Dirs { data }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// Removed only when the test passed (a failure leaves them for inspection).
    fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.data);
        let _ = std::fs::remove_file(self.data.with_extension("log"));
        let _ = std::fs::remove_file(self.data.with_extension("toml"));
    }
}

fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

impl Warren {
    /// Starts the broker without waiting for it (it recovers, then listens).
    fn spawn(dirs: &Dirs) -> Warren {
        let addr = free_addr();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dirs.data.with_extension("log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_warren"))
            .arg("--config")
            .arg(dirs.data.with_extension("toml"))
            .args([
                "--management",
                "off",
                "--listen",
                &addr.to_string(),
                "--data-dir",
            ])
            .arg(&dirs.data)
            .env_remove("WARREN_CONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start warren");
        Warren { child, addr }
    }

    /// Starts the broker and waits until it listens (recovery done); how long that took.
    fn start(dirs: &Dirs) -> (Warren, Duration) {
        let started = Instant::now();
        let mut warren = Warren::spawn(dirs);
        while TcpStream::connect(warren.addr).is_err() {
            if let Ok(Some(status)) = warren.child.try_wait() {
                panic!("warren exited ({status}) before listening:\n{}", dirs.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "warren did not listen within 60 s:\n{}",
                dirs.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        (warren, started.elapsed())
    }

    fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// kill -9.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Warren {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Clients.

const PLAIN: &str = "backlog";
const PRIORITY: &str = "backlog-priority";

fn arguments(queue: &str) -> FieldTable {
    let mut table = FieldTable::default();
    if queue == PRIORITY {
        table.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(5));
    }
    table
}

async fn declare(channel: &Channel, queue: &str) -> lapin::Result<u32> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), durable, arguments(queue))
        .await?;
    Ok(declared.message_count())
}

/// A round trip on `channel`: once answered, every method sent before it on the channel was
/// handled by the broker (its acks written to the log).
async fn sync(channel: &Channel, queue: &str) -> lapin::Result<u32> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?;
    Ok(declared.message_count())
}

/// A message's priority in the priority tests (6 counts as 5, the queue's maximum).
fn priority_of(id: Id) -> u8 {
    (mix(&[u64::from(id.1), id.2, 7]) % 7) as u8
}

/// What a publisher got confirmed.
#[derive(Debug, Default)]
struct Published {
    confirmed: Vec<u64>,
    /// Published, but neither confirmed nor nacked when the connection went.
    unconfirmed: u64,
}

/// Publishes persistent messages `(publisher, round, 0..)` with confirms, 256 in flight, until
/// `limit` or until the connection fails (the broker killed); what was confirmed.
async fn publish(
    uri: String,
    queue: &'static str,
    publisher: u32,
    round: u32,
    limit: u64,
) -> Published {
    let mut published = Published::default();
    let Ok(connection) = Connection::connect(&uri, ConnectionProperties::default()).await else {
        return published;
    };
    let Ok(channel) = connection.create_channel().await else {
        return published;
    };
    if declare(&channel, queue).await.is_err()
        || channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .is_err()
    {
        return published;
    }
    let mut in_flight = VecDeque::new();
    let mut seq = 0;
    let mut failed = false;
    while seq < limit && !failed {
        let id = (publisher, round, seq);
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        if queue == PRIORITY {
            properties = properties.with_priority(priority_of(id));
        }
        match channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body(id),
                properties,
            )
            .await
        {
            Ok(confirm) => in_flight.push_back((seq, confirm)),
            Err(_) => failed = true,
        }
        seq += 1;
        while in_flight.len() > 256 || (failed || seq == limit) && !in_flight.is_empty() {
            let (seq, confirm) = in_flight.pop_front().expect("in flight");
            match confirm.await {
                Ok(confirmation) if confirmation.is_ack() => published.confirmed.push(seq),
                _ => {
                    in_flight.clear();
                    failed = true;
                }
            }
        }
    }
    // Confirms come in order: the confirmed ones are 0..k, the rest perhaps sent.
    published.unconfirmed = seq - published.confirmed.len() as u64;
    if !failed {
        let _ = connection.close(200, "published".into()).await;
    }
    published
}

/// A consumer's deliveries, in order (lapin's delegate forwards them synchronously).
fn deliveries(consumer: &lapin::Consumer) -> mpsc::UnboundedReceiver<lapin::message::Delivery> {
    let (sender, receiver) = mpsc::unbounded_channel();
    consumer.set_delegate(move |event: DeliveryResult| {
        if let Ok(Some(delivery)) = event {
            let _ = sender.send(delivery);
        }
        std::future::ready(())
    });
    receiver
}

/// One message as a checking drain saw it.
#[derive(Debug, Clone, Copy)]
struct Got {
    id: Id,
    redelivered: bool,
}

/// Takes every message of `queue` (no-ack consumer, then basic.get until empty), in order.
async fn drain(uri: &str, queue: &str) -> Vec<Got> {
    let connection = Connection::connect(uri, ConnectionProperties::default())
        .await
        .expect("connect to drain");
    let channel = connection.create_channel().await.expect("channel");
    let count = declare(&channel, queue).await.expect("declare") as usize;
    let consumer = channel
        .basic_consume(
            queue.into(),
            "drain".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut receiver = deliveries(&consumer);
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        match tokio::time::timeout(Duration::from_secs(10), receiver.recv()).await {
            Ok(Some(delivery)) => seen.push(Got {
                id: parse(&delivery.data),
                redelivered: delivery.redelivered,
            }),
            _ => {
                eprintln!(
                    "drain of {queue}: the queue said {count} messages, {} came in 10 s",
                    seen.len()
                );
                break;
            }
        }
    }
    channel
        .basic_cancel("drain".into(), BasicCancelOptions::default())
        .await
        .expect("cancel");
    tokio::time::sleep(Duration::from_millis(50)).await;
    while let Ok(delivery) = receiver.try_recv() {
        seen.push(Got {
            id: parse(&delivery.data),
            redelivered: delivery.redelivered,
        });
    }
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        seen.push(Got {
            id: parse(&message.delivery.data),
            redelivered: message.delivery.redelivered,
        });
    }
    connection
        .close(200, "drained".into())
        .await
        .expect("close");
    seen
}

// ---------------------------------------------------------------------------------------------
// What must be there, and the checker.

/// What the test knows of each message it published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Confirmed, not settled: must be there, once.
    Live,
    /// Published but never confirmed: may be there, at most once.
    Unconfirmed,
    /// Acked (or rejected) and handled by the broker before the kill: must not come back.
    Gone,
    /// Acked (or rejected) with no answer before the kill: may come back, at most once.
    Maybe,
}

#[derive(Debug, Default)]
struct Model {
    fates: HashMap<Id, Fate>,
}

impl Model {
    fn published(&mut self, publisher: u32, round: u32, published: &Published) {
        for &seq in &published.confirmed {
            self.fates.insert((publisher, round, seq), Fate::Live);
        }
        let next = published.confirmed.last().map_or(0, |s| s + 1);
        for seq in next..next + published.unconfirmed {
            self.fates
                .insert((publisher, round, seq), Fate::Unconfirmed);
        }
    }

    fn count(&self, fate: Fate) -> usize {
        self.fates.values().filter(|f| **f == fate).count()
    }

    fn gone(&self) -> HashSet<Id> {
        self.fates
            .iter()
            .filter(|(_, f)| **f == Fate::Gone)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Applies what a consumer did before the kill.
    fn consumed(&mut self, round: &RoundLog) {
        for (n, id) in round.settled.iter().enumerate() {
            let fate = match n < round.handled {
                true => Fate::Gone,
                false => Fate::Maybe,
            };
            self.fates.insert(*id, fate);
        }
    }

    /// The messages seen by a drain that took everything: every `Live` message once, nothing
    /// `Gone`, nothing twice, and each publisher's messages in publishing order (`ordered`).
    fn check(&self, seen: &[Got], ordered: bool, what: &str) {
        let mut problems = Vec::new();
        let mut count: HashMap<Id, usize> = HashMap::new();
        for got in seen {
            *count.entry(got.id).or_default() += 1;
        }
        let mut lost: Vec<Id> = self
            .fates
            .iter()
            .filter(|(id, f)| **f == Fate::Live && !count.contains_key(id))
            .map(|(id, _)| *id)
            .collect();
        lost.sort_unstable();
        if !lost.is_empty() {
            problems.push(format!(
                "{} confirmed messages lost, first {:?}",
                lost.len(),
                &lost[..lost.len().min(10)]
            ));
        }
        let mut back: Vec<Id> = count
            .keys()
            .filter(|id| self.fates.get(id) == Some(&Fate::Gone))
            .copied()
            .collect();
        back.sort_unstable();
        if !back.is_empty() {
            problems.push(format!(
                "{} messages came back after an ack the broker had handled, first {:?}",
                back.len(),
                &back[..back.len().min(10)]
            ));
        }
        let mut twice: Vec<Id> = count
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| *id)
            .collect();
        twice.sort_unstable();
        if !twice.is_empty() {
            problems.push(format!(
                "{} messages delivered more than once, first {:?}",
                twice.len(),
                &twice[..twice.len().min(10)]
            ));
        }
        let strangers: Vec<Id> = count
            .keys()
            .filter(|id| !self.fates.contains_key(id))
            .copied()
            .collect();
        if !strangers.is_empty() {
            problems.push(format!("messages never published: {strangers:?}"));
        }
        if ordered {
            let mut last: BTreeMap<u32, (usize, Id)> = BTreeMap::new();
            let mut reordered = Vec::new();
            for (at, got) in seen.iter().enumerate() {
                if let Some((before, previous)) = last.get(&got.id.0) {
                    if *previous >= got.id {
                        reordered.push(format!(
                            "{previous:?} (#{before}) before {:?} (#{at})",
                            got.id
                        ));
                    }
                }
                last.insert(got.id.0, (at, got.id));
            }
            if !reordered.is_empty() {
                problems.push(format!(
                    "{} out of publishing order, first {:?}",
                    reordered.len(),
                    &reordered[..reordered.len().min(5)]
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "{what}: drained {} messages ({} live, {} gone, {} maybe, {} unconfirmed expected):\n  {}",
            seen.len(),
            self.count(Fate::Live),
            self.count(Fate::Gone),
            self.count(Fate::Maybe),
            self.count(Fate::Unconfirmed),
            problems.join("\n  ")
        );
    }
}

/// Files of a segment log whose blocks were punched (allocated less than their length).
fn punched_segments(dir: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => punched_segments(&entry.path()),
            Ok(meta) => {
                let name = entry.file_name();
                let is_msgs = name.to_string_lossy().starts_with("msgs.");
                usize::from(is_msgs && meta.blocks() * 512 + 8192 <= meta.len())
            }
            Err(_) => 0,
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// A consumer killed mid-way.

/// What a consumer did in one broker lifetime.
#[derive(Debug, Default)]
struct RoundLog {
    delivered: usize,
    /// Acked or rejected (without requeue), in the order sent on the channel.
    settled: Vec<Id>,
    /// How many of `settled` the broker is known to have handled (a later round trip answered).
    handled: usize,
    nacked: usize,
    rejected: usize,
    kept: usize,
    /// What it saw that must not happen, even before any restart.
    errors: Vec<String>,
}

/// Consumes `queue` (prefetch 1000) until the connection fails, settling by a hash of the
/// message and `round`: 2% held unacked (so segments keep live records), 5% nacked back to
/// the queue (once each), 3% rejected, the rest acked in shuffled batches of 64; a round trip
/// every 512 settles marks them handled. A delivery of something `gone` (acked and handled in
/// an earlier lifetime) or of something acked in this one is an error.
async fn consume_until_killed(
    uri: String,
    queue: &'static str,
    round: u32,
    gone: Arc<HashSet<Id>>,
    log: Arc<Mutex<RoundLog>>,
) {
    let Ok(connection) = Connection::connect(&uri, ConnectionProperties::default()).await else {
        return;
    };
    let Ok(channel) = connection.create_channel().await else {
        return;
    };
    if channel
        .basic_qos(1000, BasicQosOptions::default())
        .await
        .is_err()
    {
        return;
    }
    let Ok(consumer) = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    else {
        return;
    };
    let mut receiver = deliveries(&consumer);
    let mut acked_here: HashSet<Id> = HashSet::new();
    let mut nacked_here: HashSet<Id> = HashSet::new();
    let mut batch: Vec<(u64, Id)> = Vec::new();
    let mut since_sync = 0;
    let mut kept = Vec::new();
    let note = |f: &mut dyn FnMut(&mut RoundLog)| {
        if let Ok(mut log) = log.lock() {
            f(&mut log);
        }
    };
    loop {
        let delivery = match tokio::time::timeout(Duration::from_millis(500), receiver.recv()).await
        {
            Ok(Some(delivery)) => delivery,
            Ok(None) => return,
            Err(_) => {
                if !connection.status().connected() {
                    return;
                }
                continue;
            }
        };
        let id = parse(&delivery.data);
        note(&mut |log| {
            log.delivered += 1;
            if gone.contains(&id) {
                log.errors.push(format!(
                    "{id:?}: acked before the last kill, delivered again"
                ));
            }
            if acked_here.contains(&id) {
                log.errors
                    .push(format!("{id:?}: delivered again after its ack"));
            }
        });
        let tag = delivery.delivery_tag;
        let h = mix(&[u64::from(id.0), u64::from(id.1), id.2, u64::from(round)]) % 100;
        let sent = match h {
            0..=1 => {
                kept.push(delivery); // held until the kill
                note(&mut |log| log.kept += 1);
                Ok(())
            }
            2..=6 if nacked_here.insert(id) => {
                note(&mut |log| log.nacked += 1);
                channel
                    .basic_nack(
                        tag,
                        BasicNackOptions {
                            requeue: true,
                            multiple: false,
                        },
                    )
                    .await
            }
            7..=9 => {
                note(&mut |log| {
                    log.rejected += 1;
                    log.settled.push(id);
                });
                acked_here.insert(id);
                since_sync += 1;
                channel
                    .basic_reject(tag, BasicRejectOptions { requeue: false })
                    .await
            }
            _ => {
                batch.push((tag, id));
                Ok(())
            }
        };
        if sent.is_err() {
            return;
        }
        if batch.len() >= 64 {
            let mut shuffled = std::mem::take(&mut batch);
            shuffled.sort_by_key(|(tag, _)| mix(&[*tag, u64::from(round)]));
            for (tag, id) in shuffled {
                note(&mut |log| log.settled.push(id));
                acked_here.insert(id);
                since_sync += 1;
                if channel
                    .basic_ack(tag, BasicAckOptions::default())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        if since_sync >= 512 {
            let sent = log.lock().map(|log| log.settled.len()).unwrap_or(0);
            if sync(&channel, queue).await.is_err() {
                return;
            }
            note(&mut |log| log.handled = sent);
            since_sync = 0;
        }
    }
}

/// Starts the broker on `dirs`, runs a killable consumer for `after`, kills the broker; what
/// the consumer did, with the model updated.
async fn consumer_round(
    dirs: &Dirs,
    queue: &'static str,
    round: u32,
    after: Duration,
    model: &mut Model,
) -> RoundLog {
    let (warren, _) = Warren::start(dirs);
    let log = Arc::new(Mutex::new(RoundLog::default()));
    let consumer = tokio::spawn(consume_until_killed(
        warren.uri(),
        queue,
        round,
        Arc::new(model.gone()),
        Arc::clone(&log),
    ));
    tokio::time::sleep(after).await;
    warren.kill();
    tokio::time::timeout(Duration::from_secs(20), consumer)
        .await
        .expect("the consumer ends once the broker is gone")
        .expect("consumer task");
    let log = std::mem::take(&mut *log.lock().expect("round log"));
    assert!(
        log.errors.is_empty(),
        "round {round}: {:?}",
        &log.errors[..log.errors.len().min(10)]
    );
    model.consumed(&log);
    log
}

/// Publishes `per_publisher` messages from each of `publishers` to a fresh broker and stops it
/// with kill -9 once everything is confirmed.
async fn fill(
    dirs: &Dirs,
    queue: &'static str,
    publishers: u32,
    per_publisher: u64,
    model: &mut Model,
) {
    let (warren, _) = Warren::start(dirs);
    let tasks: Vec<_> = (0..publishers)
        .map(|p| tokio::spawn(publish(warren.uri(), queue, p, 0, per_publisher)))
        .collect();
    for (p, task) in tasks.into_iter().enumerate() {
        let published = task.await.expect("publisher");
        assert_eq!(
            published.confirmed.len() as u64,
            per_publisher,
            "every publish confirmed before any kill"
        );
        model.published(p as u32, 0, &published);
    }
    warren.kill();
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_publishing_a_backlog_loses_no_confirmed_message() {
    let dirs = Dirs::new("publish");
    let started = Instant::now();
    // Each round publishes for a while longer with the scale, from two publishers at once.
    let kill_after_ms = [1500u64, 250, 2600, 40, 1200, 2200, 600, 1800];
    let mut model = Model::default();
    let mut confirmed = 0;
    for (round, &delay) in kill_after_ms.iter().enumerate() {
        let round = round as u32;
        let (warren, recovery) = Warren::start(&dirs);
        let tasks: Vec<_> = (0..2)
            .map(|p| tokio::spawn(publish(warren.uri(), PLAIN, p, round, u64::MAX)))
            .collect();
        tokio::time::sleep(Duration::from_millis(delay * scale())).await;
        warren.kill();
        let mut this_round = 0;
        for (p, task) in tasks.into_iter().enumerate() {
            let published = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("publisher ends once the broker is gone")
                .expect("publisher task");
            this_round += published.confirmed.len();
            model.published(p as u32, round, &published);
        }
        confirmed += this_round;
        eprintln!(
            "publish round {round}: started in {recovery:?}, {this_round} confirmed in {delay} ms, \
             backlog {confirmed}"
        );
    }
    assert!(
        confirmed > 1000,
        "too few confirmed to prove anything: {confirmed}"
    );
    let (warren, recovery) = Warren::start(&dirs);
    let seen = drain(&warren.uri(), PLAIN).await;
    eprintln!(
        "recovered {} messages in {recovery:?}, {} confirmed; {:?} in all",
        seen.len(),
        confirmed,
        started.elapsed()
    );
    model.check(&seen, true, "after kill -9 while publishing");
    drop(warren);
    dirs.remove();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_draining_with_out_of_order_acks_nacks_and_rejects() {
    let dirs = Dirs::new("drain");
    let started = Instant::now();
    let mut model = Model::default();
    fill(&dirs, PLAIN, 2, 20_000 * scale(), &mut model).await;
    let mut punched = 0;
    for (round, delay) in [700u64, 1200, 300, 900, 1500].into_iter().enumerate() {
        let round = round as u32 + 1;
        let log = consumer_round(
            &dirs,
            PLAIN,
            round,
            Duration::from_millis(delay * scale()),
            &mut model,
        )
        .await;
        let holes = punched_segments(&dirs.data);
        punched = punched.max(holes);
        eprintln!(
            "drain round {round}: {} delivered, {} settled ({} handled), {} nacked, {} rejected, \
             {} held; {holes} punched segments",
            log.delivered,
            log.settled.len(),
            log.handled,
            log.nacked,
            log.rejected,
            log.kept
        );
    }
    let (warren, recovery) = Warren::start(&dirs);
    let seen = drain(&warren.uri(), PLAIN).await;
    eprintln!(
        "recovered {} in {recovery:?}; {} must be there; {:?} in all; at most {punched} segments \
         punched at once",
        seen.len(),
        model.count(Fate::Live),
        started.elapsed()
    );
    model.check(&seen, true, "after kill -9 while draining");
    assert!(
        punched > 0,
        "compaction never punched a segment: the test proved less than it says"
    );
    drop(warren);
    dirs.remove();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_recovery_of_a_large_backlog() {
    let dirs = Dirs::new("recovery");
    let started = Instant::now();
    let mut model = Model::default();
    fill(&dirs, PLAIN, 2, 20_000 * scale(), &mut model).await;
    // Holes, marks and punched ranges for recovery to find.
    consumer_round(
        &dirs,
        PLAIN,
        1,
        Duration::from_millis(800 * scale()),
        &mut model,
    )
    .await;
    let (warren, full) = Warren::start(&dirs);
    warren.kill();
    let full_ms = full.as_millis().max(1) as u64;
    let mut killed = 0;
    for n in 0..12u64 {
        // From a few ms to past the whole recovery.
        let delay = match n % 4 {
            0 => 1 + n,
            1 => full_ms / 4,
            2 => full_ms / 2,
            _ => full_ms * 9 / 10,
        };
        let mut warren = Warren::spawn(&dirs);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let listening = TcpStream::connect(warren.addr).is_ok();
        killed += usize::from(!listening && warren.child.try_wait().ok().flatten().is_none());
        warren.kill();
    }
    let (warren, recovery) = Warren::start(&dirs);
    let seen = drain(&warren.uri(), PLAIN).await;
    eprintln!(
        "a recovery takes {full:?}; killed during it {killed} times of 12; the last {recovery:?}; \
         {} drained, {:?} in all",
        seen.len(),
        started.elapsed()
    );
    model.check(&seen, true, "after kill -9 during recovery");
    assert!(
        killed >= 3,
        "too few kills landed during recovery ({killed})"
    );
    drop(warren);
    dirs.remove();
}

/// What a priority queue hands out: highest priority first, publishing order within one.
fn priority_order(ids: impl IntoIterator<Item = Id>) -> Vec<Id> {
    let mut ids: Vec<Id> = ids.into_iter().collect();
    ids.sort_by_key(|id| (std::cmp::Reverse(priority_of(*id).min(5)), id.1, id.2));
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_backlog_and_a_requeued_message_survive_kill_9() {
    let dirs = Dirs::new("priority");
    let mut model = Model::default();
    let first = 3_000 * scale();
    fill(&dirs, PRIORITY, 1, first, &mut model).await;

    // Ten deliveries (the highest priority's first ten): ack eight out of order, nack one back
    // (requeued past the window), hold one; then kill -9.
    let (warren, _) = Warren::start(&dirs);
    let connection = Connection::connect(&warren.uri(), ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(10, BasicQosOptions::default())
        .await
        .expect("qos");
    let consumer = channel
        .basic_consume(
            PRIORITY.into(),
            "ten".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut receiver = deliveries(&consumer);
    let mut ten = Vec::new();
    while ten.len() < 10 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
            .await
            .expect("a delivery")
            .expect("consumer open");
        ten.push(delivery);
    }
    channel
        .basic_cancel("ten".into(), BasicCancelOptions::default())
        .await
        .expect("cancel");
    let ids: Vec<Id> = ten.iter().map(|d| parse(&d.data)).collect();
    let expected = priority_order(model.fates.keys().copied());
    assert_eq!(ids, expected[..10], "the highest priority first, in order");
    let (nacked, held) = (ids[2], ids[4]);
    for n in [9, 0, 7, 3, 1, 8, 5, 6] {
        channel
            .basic_ack(ten[n].delivery_tag, BasicAckOptions::default())
            .await
            .expect("ack");
        model.fates.insert(ids[n], Fate::Gone);
    }
    channel
        .basic_nack(
            ten[2].delivery_tag,
            BasicNackOptions {
                requeue: true,
                multiple: false,
            },
        )
        .await
        .expect("nack");
    sync(&channel, PRIORITY).await.expect("round trip");
    warren.kill();

    // Restart: more messages join the runs; 200 taken and acked; kill -9 again.
    let (warren, _) = Warren::start(&dirs);
    let more = publish(warren.uri(), PRIORITY, 0, 1, 1_000 * scale()).await;
    assert_eq!(more.confirmed.len() as u64, 1_000 * scale());
    model.published(0, 1, &more);
    let live = |model: &Model| {
        priority_order(
            model
                .fates
                .iter()
                .filter(|(_, f)| **f == Fate::Live)
                .map(|(id, _)| *id),
        )
    };
    let expected = live(&model);
    let connection = Connection::connect(&warren.uri(), ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let mut got = Vec::new();
    for _ in 0..200 {
        let message = channel
            .basic_get(PRIORITY.into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")
            .expect("a message");
        let id = parse(&message.delivery.data);
        got.push((id, message.delivery.redelivered));
        message
            .delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
    }
    sync(&channel, PRIORITY).await.expect("round trip");
    warren.kill();
    let wanted: Vec<(Id, bool)> = expected[..200]
        .iter()
        .map(|id| (*id, *id == nacked || *id == held))
        .collect();
    assert_eq!(
        got, wanted,
        "after a restart: priority order, the requeued and held ones redelivered"
    );
    for (id, _) in &got {
        model.fates.insert(*id, Fate::Gone);
    }

    // Restart: the rest, in priority order, nothing redelivered that was not delivered.
    let expected = live(&model);
    let (warren, _) = Warren::start(&dirs);
    let seen = drain(&warren.uri(), PRIORITY).await;
    model.check(&seen, false, "priority queue after kill -9");
    let ids: Vec<Id> = seen.iter().map(|g| g.id).collect();
    assert!(
        ids == expected,
        "priority order after restarts: {} drained, {} expected",
        ids.len(),
        expected.len()
    );
    let redelivered: Vec<Id> = seen
        .iter()
        .filter(|g| g.redelivered)
        .map(|g| g.id)
        .collect();
    let wrongly: Vec<&Id> = redelivered
        .iter()
        .filter(|id| **id != nacked && **id != held)
        .collect();
    assert!(
        wrongly.is_empty(),
        "redelivered though never delivered: {wrongly:?}"
    );
    drop(warren);
    dirs.remove();
}
