//! A queue's registrations in its deadlines: only when something is due, only when earlier than
//! what it registered, stale entries refused, the next deadline registered after a visit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use warren_protocol::method::ShortStr;
use warren_protocol::types::{AMQPValue, FieldTable};

use super::super::super::deadlines::Deadlines;
use super::super::super::message::{now_ms, Message, Stamp};
use super::super::{ChannelCredit, Queue, QueueOptions};

fn queue(arguments: &[(&str, i64)], deadlines: &Arc<Deadlines<Queue>>) -> Arc<Queue> {
    let mut table = FieldTable::default();
    for (key, value) in arguments {
        table.insert((*key).into(), AMQPValue::LongLongInt(*value));
    }
    let options = QueueOptions {
        durable: false,
        exclusive_owner: None,
        auto_delete: false,
        arguments: table,
        consumer_timeout: None,
    };
    let queue = Arc::new(Queue::new(ShortStr::from_static("q"), options));
    queue.attach(deadlines);
    queue
}

fn publish(queue: &Queue, ttl: Option<u64>) {
    let message = Arc::new(Message::new(b"", b"q", &[0, 0], Bytes::from_static(b"m")));
    let stamp = Stamp {
        ttl,
        ..Stamp::default()
    };
    queue.publish(&message, stamp);
}

#[test]
fn a_queue_with_nothing_that_expires_never_registers() {
    let deadlines = Arc::new(Deadlines::default());
    let queue = queue(&[], &deadlines);
    publish(&queue, None);
    let _ = queue.get(true, &Arc::new(ChannelCredit::default()));
    assert!(deadlines.is_empty());
    assert_eq!(queue.registered(), None);
}

#[test]
fn a_ttl_queue_registers_its_head_once_not_per_publish() {
    let deadlines = Arc::new(Deadlines::default());
    let queue = queue(&[("x-message-ttl", 60_000)], &deadlines);
    assert!(deadlines.is_empty(), "nothing held, nothing due");
    let before = now_ms();
    for _ in 0..100 {
        publish(&queue, None);
    }
    assert_eq!(deadlines.len(), 1);
    let at = queue.registered().unwrap_or(0);
    assert!(at > before + 60_000 && at <= now_ms() + 60_001, "{at}");
}

#[test]
fn an_earlier_deadline_is_registered_and_the_older_entry_is_stale() {
    let deadlines = Arc::new(Deadlines::default());
    let queue = queue(&[], &deadlines);
    publish(&queue, Some(60_000));
    let late = queue.registered().unwrap_or(0);
    // The head goes; a message expiring sooner becomes the head.
    let _ = queue.get(true, &Arc::new(ChannelCredit::default()));
    publish(&queue, Some(1_000));
    let soon = queue.registered().unwrap_or(u64::MAX);
    assert!(soon < late);
    assert_eq!(deadlines.len(), 2);
    assert!(!queue.claim(late), "stale: skipped without a visit");
    assert!(queue.claim(soon));
    assert!(!queue.claim(soon), "taken once");
}

#[test]
fn a_visit_drops_the_expired_head_and_registers_the_next() {
    let deadlines = Arc::new(Deadlines::default());
    let queue = queue(&[], &deadlines);
    publish(&queue, Some(1));
    publish(&queue, Some(60_000));
    std::thread::sleep(Duration::from_millis(5));
    let due = deadlines.take_due(now_ms());
    assert_eq!(due.len(), 1);
    let (at, visited) = &due[0];
    assert!(visited.claim(*at));
    let expired = visited.expire(Instant::now());
    assert!(!expired.unused);
    assert_eq!(queue.counts().0, 1, "the first one expired");
    let next = queue.registered().unwrap_or(0);
    assert!(
        next > now_ms() + 50_000,
        "the second one's deadline: {next}"
    );
    assert!(deadlines.take_due(now_ms()).is_empty());
}

#[test]
fn a_deleted_queue_is_dropped_and_registers_nothing_more() {
    let deadlines = Arc::new(Deadlines::default());
    let deleted = queue(&[("x-message-ttl", 1)], &deadlines);
    publish(&deleted, None);
    let _ = deleted.delete();
    std::thread::sleep(Duration::from_millis(5));
    let due = deadlines.take_due(now_ms());
    for (at, queue) in &due {
        if queue.claim(*at) {
            let expired = queue.expire(Instant::now());
            assert!(expired.dropped.is_empty() && !expired.unused);
        }
    }
    assert!(deadlines.is_empty(), "not registered again");
    let gone = queue(&[("x-message-ttl", 1)], &deadlines);
    publish(&gone, None);
    drop(gone);
    std::thread::sleep(Duration::from_millis(5));
    assert!(
        deadlines.take_due(now_ms()).is_empty(),
        "dropped when popped"
    );
}

#[test]
fn x_expires_registers_at_creation_and_a_renewal_moves_it_later() {
    let deadlines = Arc::new(Deadlines::default());
    let queue = queue(&[("x-expires", 400)], &deadlines);
    let first = queue.registered().unwrap_or(0);
    assert_eq!(deadlines.len(), 1);
    std::thread::sleep(Duration::from_millis(250));
    queue.touch();
    assert_eq!(deadlines.len(), 1, "a renewal registers nothing");
    std::thread::sleep(Duration::from_millis(200));
    // The first deadline came: not unused yet, the renewed deadline is registered.
    let due = deadlines.take_due(now_ms().max(first));
    assert_eq!(due.len(), 1);
    assert!(queue.claim(due[0].0));
    assert!(!queue.expire(Instant::now()).unused);
    let renewed = queue.registered().unwrap_or(0);
    assert!(renewed > first, "{renewed} > {first}");
    std::thread::sleep(Duration::from_millis(250));
    let due = deadlines.take_due(now_ms().max(renewed));
    assert!(queue.claim(due[0].0));
    assert!(queue.expire(Instant::now()).unused);
}
