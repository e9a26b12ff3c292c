//! The expiry tick at scale: with many idle queues (no TTL, no `x-expires`) the tick visits none
//! of them (it pops only queues whose deadline came), while a TTL queue among them still expires
//! its message on time and dead-letters it.
//!
//! In-process only: the test reads the broker's own count of queues visited by the tick.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use warren::broker::vhost::QueueDeclare;
use warren::{Server, ServerOptions};
use warren_protocol::method::ShortStr;

const IDLE_QUEUES: usize = 20_000;
const TTL_MS: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_queues_cost_the_tick_nothing_and_a_ttl_queue_among_them_expires_on_time() {
    if skip_if_external("reads the in-process broker's tick counters") {
        return;
    }
    let data_dir = std::env::temp_dir().join(format!("warren-expiry-scale-{}", std::process::id()));
    let options = ServerOptions {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.clone(),
        ..ServerOptions::default()
    };
    let server = Server::bind(options).await.expect("bind");
    let addr = server.local_addr().expect("addr");
    let vhost = server.broker().vhost("/").expect("the default vhost");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    for i in 0..IDLE_QUEUES {
        let declare = QueueDeclare {
            name: ShortStr::copy_from_str(&format!("idle-{i}")),
            server_named: false,
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::default(),
        };
        vhost.declare_queue(declare, 0).expect("queue.declare");
    }
    assert_eq!(vhost.pending_deadlines(), 0, "idle queues register nothing");

    // A TTL queue dead-lettering to a queue a consumer watches.
    let connection = connect_uri(&format!("amqp://guest:guest@{addr}/%2f")).await;
    let channel = common::channel(&connection).await;
    let dead = "expiry-scale-dead";
    declare_queue_named(&channel, dead, Default::default(), FieldTable::default()).await;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(TTL_MS as i64),
    );
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dead.into()),
    );
    declare_queue_named(&channel, "expiry-scale-ttl", Default::default(), arguments).await;
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut deliveries = consume(&channel, dead, options).await;

    // A tick of the vhost now: nothing is due, nothing is visited.
    let started = Instant::now();
    assert_eq!(vhost.expire_due(), 0);
    eprintln!(
        "a tick over {IDLE_QUEUES} idle queues: {:?}",
        started.elapsed()
    );

    let visits = vhost.tick_visits();
    let published = Instant::now();
    publish(&channel, "", "expiry-scale-ttl", b"due").await;
    let delivery = deliveries.next().await;
    let late = published.elapsed();
    assert_eq!(delivery.data, b"due");
    assert!(
        late >= Duration::from_millis(TTL_MS) && late < Duration::from_millis(TTL_MS + 200),
        "expired {late:?} after the publish (TTL {TTL_MS} ms)"
    );
    // About ten ticks ran meanwhile; they visited the TTL queue, not the idle ones.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let visited = vhost.tick_visits() - visits;
    assert!(visited <= 3, "the ticks visited {visited} queues");
    assert_eq!(vhost.pending_deadlines(), 0, "nothing left due");

    let _ = stop.send(());
    let _ = task.await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
