//! Publisher flow control, over real sockets: a publisher whose queue cannot hand its messages to
//! a consumer that is behind on reading its socket is slowed to the consumer's pace (its input is
//! read at most one batch per 100 ms while the queue is under pressure), and loses nothing; a
//! queue with no consumers, or whose consumer is at its prefetch limit (slow to ack, not to
//! read), never slows its publishers; a client that publishes to and consumes from one queue on
//! one connection, writing before it reads, is never stalled for good; and a consumer held back by
//! its unsent-delivery window is served again as its connection writes, acked or not.
//!
//! The thresholds are Warren's own (see `src/broker/flow.rs`), so the tests skip themselves
//! against an external broker.

mod common;

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::BasicProperties;
use tokio::task::JoinHandle;
use warren_protocol::content::{encode_content, encode_properties};
use warren_protocol::frame::FrameType;
use warren_protocol::method::{decode_method, encode_method, Method};
use warren_protocol::spec::{basic, queue, AMQPClass};

const WARREN_ONLY: &str = "publisher flow control thresholds are Warren's own";

/// A bound for the waits that move tens of megabytes through a debug build on a slow machine.
const LONG: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test after [`LONG`].
async fn within_long<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(LONG, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {LONG:?}: {what}"),
    }
}

/// Body of message `n`: `n` (8 bytes, big-endian), then padding up to `size` bytes.
fn numbered_body(n: u64, size: usize) -> Vec<u8> {
    let mut body = n.to_be_bytes().to_vec();
    body.resize(size.max(8), b'.');
    body
}

/// The number a [`numbered_body`] carries.
fn body_number(body: &[u8]) -> u64 {
    let bytes: [u8; 8] = body
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .unwrap_or_else(|| panic!("a numbered body, got {} bytes", body.len()));
    u64::from_be_bytes(bytes)
}

/// The frames of `basic.publish` of messages `numbers` to `queue` (default exchange) on
/// channel 1.
fn publishes(queue: &str, numbers: Range<u64>, size: usize, frame_max: u32) -> BytesMut {
    let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
        exchange: "".into(),
        routing_key: queue.into(),
        mandatory: false,
        immediate: false,
    }));
    let properties = encode_properties(&BasicProperties::default());
    let mut out = BytesMut::new();
    for n in numbers {
        encode_method(&mut out, 1, &publish);
        encode_content(&mut out, 1, &properties, &numbered_body(n, size), frame_max);
    }
    out
}

/// A raw client past the handshake (no heartbeats: a client that does not read must not be
/// closed for missed heartbeats) with channel 1 open; and the negotiated frame_max.
async fn raw_client(broker: &Broker) -> (RawClient, u32) {
    let (mut client, tune) = within("handshake", RawClient::handshake(broker.addr, 0)).await;
    within("channel.open", client.open_channel(1)).await;
    (client, tune.frame_max)
}

/// The next method on the client, decoded (deliveries' content frames skipped).
async fn next_method(client: &mut RawClient) -> Method {
    match client.recv_any_method().await {
        Some((_, method)) => method,
        None => panic!("the broker closed the socket"),
    }
}

/// Declares `name` (or, `passive`, checks it exists) on channel 1; returns its ready count.
async fn declare(client: &mut RawClient, name: &str, passive: bool) -> u32 {
    let declare = queue::Declare {
        queue: name.into(),
        passive,
        ..Default::default()
    };
    client
        .send_method(1, AMQPClass::Queue(queue::AMQPMethod::Declare(declare)))
        .await;
    match next_method(client).await {
        Method::Other(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))) => ok.message_count,
        other => panic!("expected queue.declare-ok, got {other:?}"),
    }
}

/// How many messages `name` holds ready, from a passive declare.
async fn ready(client: &mut RawClient, name: &str) -> u32 {
    within("queue.declare (passive)", declare(client, name, true)).await
}

/// Starts a consumer of `name` on channel 1 (`prefetch` per consumer, 0: none) and waits for its
/// consume-ok. After this the client may stop reading: the broker's writes then back up.
async fn start_consumer(client: &mut RawClient, name: &str, no_ack: bool, prefetch: u16) {
    within("basic.consume", async {
        if prefetch != 0 {
            let qos = basic::Qos {
                prefetch_count: prefetch,
                ..Default::default()
            };
            client
                .send_method(1, AMQPClass::Basic(basic::AMQPMethod::Qos(qos)))
                .await;
            match next_method(client).await {
                Method::Other(AMQPClass::Basic(basic::AMQPMethod::QosOk(_))) => {}
                other => panic!("expected basic.qos-ok, got {other:?}"),
            }
        }
        let consume = basic::Consume {
            queue: name.into(),
            consumer_tag: "".into(),
            no_local: false,
            no_ack,
            exclusive: false,
            nowait: false,
            arguments: Default::default(),
        };
        client
            .send_method(1, AMQPClass::Basic(basic::AMQPMethod::Consume(consume)))
            .await;
        match next_method(client).await {
            Method::Other(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))) => {}
            other => panic!("expected basic.consume-ok, got {other:?}"),
        }
    })
    .await
}

/// Reads deliveries until it has seen the bodies of messages `numbers`, in order and nothing
/// else; returns the last delivery tag. Each wait for a frame is bounded (10 s).
async fn expect_deliveries(client: &mut RawClient, numbers: Range<u64>) -> u64 {
    let mut expected = numbers.start;
    let mut last_tag = 0;
    while expected < numbers.end {
        let frame = client
            .recv()
            .await
            .unwrap_or_else(|| panic!("socket closed after {expected} deliveries"));
        match frame.frame_type {
            FrameType::Method => match decode_method(&frame.payload).expect("a method") {
                Method::Other(AMQPClass::Basic(basic::AMQPMethod::Deliver(deliver))) => {
                    last_tag = deliver.delivery_tag;
                }
                other => panic!("expected basic.deliver (message {expected}), got {other:?}"),
            },
            FrameType::Header => {}
            FrameType::Body => {
                let got = body_number(&frame.payload);
                assert_eq!(got, expected, "deliveries out of order (or one was lost)");
                expected += 1;
            }
            other => panic!("unexpected {other:?} frame"),
        }
    }
    last_tag
}

/// A raw publisher writing numbered messages from a task of its own.
struct Publisher {
    /// Messages handed to the socket so far (the broker may not have read them yet).
    written: Arc<AtomicU64>,
    /// Ends once every publish was written and handled (a passive declare behind them was
    /// answered), with the client and the queue's ready count then.
    task: JoinHandle<(RawClient, u32)>,
}

/// Messages per `write_all` of a [`Publisher`].
const WRITE_BATCH: u64 = 100;

fn spawn_publisher(
    mut client: RawClient,
    queue: &str,
    count: u64,
    size: usize,
    frame_max: u32,
) -> Publisher {
    let written = Arc::new(AtomicU64::new(0));
    let queue = queue.to_owned();
    let task = tokio::spawn({
        let written = Arc::clone(&written);
        async move {
            let mut next = 0;
            while next < count {
                let end = (next + WRITE_BATCH).min(count);
                client
                    .send(&publishes(&queue, next..end, size, frame_max))
                    .await;
                written.store(end, Ordering::SeqCst);
                next = end;
            }
            let ready = declare(&mut client, &queue, true).await;
            (client, ready)
        }
    });
    Publisher { written, task }
}

/// A no-ack consumer that does not read its socket fills the broker's
/// buffers and its unsent window, its queue's backlog passes the mark, and from then on the
/// publisher's input is read at most a batch (64 KiB, about 60 of these 1 KiB messages) per
/// 100 ms, so the backlog grows by hundreds a second, not by tens of thousands. Once the consumer
/// reads, everything arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_does_not_read_throttles_the_publisher_until_it_does() {
    if skip_if_external(WARREN_ONLY) {
        return;
    }
    const COUNT: u64 = 60_000;
    const SIZE: usize = 1024;
    let broker = Broker::start().await;
    let queue = unique("throttled");
    let (mut observer, frame_max) = raw_client(&broker).await;
    within("queue.declare", declare(&mut observer, &queue, false)).await;
    let (mut consumer, _) = raw_client(&broker).await;
    start_consumer(&mut consumer, &queue, true, 0).await;
    let (publisher, _) = raw_client(&broker).await;
    let started = Instant::now();
    let publisher = spawn_publisher(publisher, &queue, COUNT, SIZE, frame_max);

    // The consumer's socket and the broker's buffers for it fill up, then a backlog builds.
    within_long("a backlog to build", async {
        while ready(&mut observer, &queue).await < 4096 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let backlog_at = started.elapsed();
    let first = ready(&mut observer, &queue).await;
    let written_first = publisher.written.load(Ordering::SeqCst);
    let watch = Instant::now();
    let mut most = 0;
    while watch.elapsed() < Duration::from_secs(3) {
        most = most.max(ready(&mut observer, &queue).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let written = publisher.written.load(Ordering::SeqCst);
    eprintln!(
        "backlog after {backlog_at:?}: {first} ready, {written_first} written; 3 s later: \
         at most {most} ready, {written} written"
    );
    assert!(
        !publisher.task.is_finished() && written < COUNT,
        "the publisher was not held back ({written} of {COUNT} written)"
    );
    assert!(most < 30_000, "the backlog grew to {most}");

    let read = Instant::now();
    within_long(
        "every message, in order",
        expect_deliveries(&mut consumer, 0..COUNT),
    )
    .await;
    within_long("the publisher to finish", publisher.task)
        .await
        .expect("publisher task");
    eprintln!("drained in {:?}", read.elapsed());
    assert_eq!(ready(&mut observer, &queue).await, 0);
}

/// How long publishing [`UNTHROTTLED`] messages may take: ample for a debug build on a slow
/// machine (about a second here), far from the 80 s a throttled publisher (64 KiB per 100 ms)
/// would need for their 50 MB.
const UNTHROTTLED_LIMIT: Duration = Duration::from_secs(30);
const UNTHROTTLED: u64 = 50_000;

/// Publishes [`UNTHROTTLED`] messages of 1 KiB to `queue` from `publisher` and expects them all
/// to be taken in promptly, and (but for `taken` handed to consumers) to be ready.
async fn expect_unthrottled(
    publisher: RawClient,
    observer: &mut RawClient,
    queue: &str,
    frame_max: u32,
    taken: u32,
) {
    let started = Instant::now();
    let publisher = spawn_publisher(publisher, queue, UNTHROTTLED, 1024, frame_max);
    let Ok(finished) = tokio::time::timeout(UNTHROTTLED_LIMIT, publisher.task).await else {
        let written = publisher.written.load(Ordering::SeqCst);
        panic!("the publisher was held back: {written} of {UNTHROTTLED} in {UNTHROTTLED_LIMIT:?}");
    };
    let (_publisher, ready_then) = finished.expect("publisher task");
    eprintln!("{UNTHROTTLED} published in {:?}", started.elapsed());
    let expected = UNTHROTTLED as u32 - taken;
    assert_eq!(ready_then, expected);
    assert_eq!(ready(observer, queue).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_without_consumers_does_not_throttle_its_publisher() {
    if skip_if_external(WARREN_ONLY) {
        return;
    }
    let broker = Broker::start().await;
    let queue = unique("no_consumers");
    let (mut observer, frame_max) = raw_client(&broker).await;
    within("queue.declare", declare(&mut observer, &queue, false)).await;
    let (publisher, _) = raw_client(&broker).await;
    expect_unthrottled(publisher, &mut observer, &queue, frame_max, 0).await;
}

/// A consumer at its prefetch limit that does not ack: the backlog is its to take when it is
/// ready, not the broker falling behind, so its publisher goes at full speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_at_its_prefetch_limit_does_not_throttle_the_publisher() {
    if skip_if_external(WARREN_ONLY) {
        return;
    }
    const PREFETCH: u16 = 1000;
    let broker = Broker::start().await;
    let queue = unique("prefetch_bound");
    let (mut observer, frame_max) = raw_client(&broker).await;
    within("queue.declare", declare(&mut observer, &queue, false)).await;
    let (mut consumer, _) = raw_client(&broker).await;
    start_consumer(&mut consumer, &queue, false, PREFETCH).await;
    // The consumer reads what it is sent (it is slow to ack, not to read).
    let consumer = tokio::spawn(async move {
        let last = expect_deliveries(&mut consumer, 0..PREFETCH.into()).await;
        (consumer, last)
    });
    let (publisher, _) = raw_client(&broker).await;
    expect_unthrottled(publisher, &mut observer, &queue, frame_max, PREFETCH.into()).await;
    let (mut consumer, last) = within_long("the prefetched deliveries", consumer)
        .await
        .expect("consumer task");
    assert_eq!(last, u64::from(PREFETCH));
    assert!(
        consumer.recv_within(QUIET).await.is_err(),
        "a delivery past the prefetch limit"
    );
}

/// Waits until the ready count of `queue` is above 0 and stays put for 200 ms: the broker has
/// read everything it will read for now and handed its consumers all they take.
async fn wait_for_a_still_backlog(observer: &mut RawClient, queue: &str) -> u32 {
    within_long("a backlog that stays put", async {
        let mut last = 0;
        loop {
            let now = ready(observer, queue).await;
            if now > 0 && now == last {
                return now;
            }
            last = now;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// One connection consumes (no-ack) a queue and publishes to it, writing before it reads. First
/// 20 MB, more than its socket and its output buffer take, then, once the broker has caught up
/// (its consumer stopped by its window, the rest waiting in the queue), another 50 MB, more than
/// the sockets' buffers hold: the broker must keep reading the input of a client that is not
/// reading its output, or both wait for each other for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_and_consuming_on_one_connection_does_not_deadlock() {
    if skip_if_external(WARREN_ONLY) {
        return;
    }
    const FIRST: u64 = 20_000;
    const COUNT: u64 = 70_000;
    const SIZE: usize = 1024;
    let broker = Broker::start().await;
    let queue = unique("same_connection");
    let (mut client, frame_max) = raw_client(&broker).await;
    within("queue.declare", declare(&mut client, &queue, false)).await;
    start_consumer(&mut client, &queue, true, 0).await;
    let (mut observer, _) = raw_client(&broker).await;
    let started = Instant::now();
    within_long(
        "the first publishes to be written",
        client.send(&publishes(&queue, 0..FIRST, SIZE, frame_max)),
    )
    .await;
    let backlog = wait_for_a_still_backlog(&mut observer, &queue).await;
    eprintln!("backlog {backlog} at {:?}", started.elapsed());
    within_long("the other publishes to be written", async {
        let mut next = FIRST;
        while next < COUNT {
            let end = (next + WRITE_BATCH).min(COUNT);
            client
                .send(&publishes(&queue, next..end, SIZE, frame_max))
                .await;
            next = end;
        }
    })
    .await;
    within_long(
        "every message, in order",
        expect_deliveries(&mut client, 0..COUNT),
    )
    .await;
    eprintln!("all read at {:?}", started.elapsed());
    assert_eq!(ready(&mut observer, &queue).await, 0);
}

/// An ack-mode consumer without a prefetch limit whose client acks only once it has 3000
/// deliveries: the queue hands it the first 1024 (its unsent window) at once and must serve it
/// again as they are written, not wait for an ack that never comes first.
#[tokio::test]
async fn an_unlimited_consumer_that_acks_late_gets_past_the_unsent_window() {
    const COUNT: usize = 3000;
    let broker = Broker::start().await;
    let (connection, channel) = open(&broker).await;
    let queue = declare_queue(
        &channel,
        "ack_late",
        QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        },
    )
    .await;
    publish_numbered(&channel, &queue, COUNT).await;
    let mut deliveries = consume(&channel, &queue, BasicConsumeOptions::default()).await;
    let got = deliveries.take(COUNT).await;
    assert_eq!(numbers(&got), (0..COUNT).collect::<Vec<_>>());
    assert!(got.iter().all(|d| !d.redelivered));
    let last = got.last().expect("deliveries").delivery_tag;
    assert_eq!(last, COUNT as u64);
    within(
        "basic.ack multiple",
        channel.basic_ack(last, BasicAckOptions { multiple: true }),
    )
    .await
    .expect("basic.ack");
    // Closing the channel would requeue anything unacked: nothing is left.
    let other = common::channel(&connection).await;
    close_channel(&channel).await;
    assert_eq!(queue_counts(&other, &queue).await, (0, 0));
}
