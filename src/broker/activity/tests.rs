use std::sync::{Arc, Weak};

use warren_protocol::method::ShortStr;

use super::{Activity, Watched};
use crate::broker::message::{Message, Stamp};
use crate::broker::queue::{ChannelCredit, Queue, QueueOptions};
use crate::broker::storage::Memory;

fn options() -> QueueOptions {
    QueueOptions {
        durable: false,
        exclusive_owner: None,
        auto_delete: false,
        arguments: Default::default(),
        consumer_timeout: None,
    }
}

/// A queue of `activity`'s, kept in memory, whose storage counts as a log (so that compaction
/// concerns it).
fn queue(activity: &Arc<Activity>, name: &str) -> Arc<Queue> {
    Arc::new_cyclic(|queue| {
        let watch = activity.watch(queue.clone());
        Queue::new(ShortStr::copy_from_str(name), options())
            .with_storage(Box::new(Watched::new(Memory, watch, true)))
    })
}

fn publish(queue: &Queue) {
    let message = Arc::new(Message::new(
        b"",
        b"q",
        &[0, 0],
        bytes::Bytes::from_static(b"x"),
    ));
    queue.publish(&message, Stamp::default());
}

fn names(queues: &[Arc<Queue>]) -> Vec<&str> {
    queues.iter().map(|q| q.name.as_str()).collect()
}

#[test]
fn a_new_queue_is_listed_for_compaction_once_then_only_when_it_changes() {
    let activity = Arc::new(Activity::default());
    let a = queue(&activity, "a");
    let _b = queue(&activity, "b");
    assert_eq!(names(&activity.take_compaction()), ["a", "b"]);
    assert!(
        activity.take_compaction().is_empty(),
        "idle queues are not listed"
    );
    publish(&a);
    publish(&a);
    assert_eq!(activity.compaction_listed(), 1, "listed once however busy");
    assert_eq!(names(&activity.take_compaction()), ["a"]);
    assert!(activity.take_compaction().is_empty());
}

#[test]
fn sampling_lists_nothing_until_a_sampler_starts_then_each_queue_that_moved_once() {
    let activity = Arc::new(Activity::default());
    let a = queue(&activity, "a");
    let b = queue(&activity, "b");
    publish(&a);
    assert!(
        activity.take_sampling().is_empty(),
        "no sampler: nothing is kept"
    );
    assert!(activity.start_sampling());
    assert!(!activity.start_sampling());
    publish(&a);
    publish(&a);
    // A delivery the storage does not see (a message in memory), reported by its caller.
    let taker = Arc::new(ChannelCredit::default());
    assert!(b.get(true, &taker).is_none());
    activity.touched(&b);
    activity.touched(&b);
    let listed = activity.take_sampling();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|q| Weak::ptr_eq(q, &Arc::downgrade(&a))));
    assert!(listed.iter().any(|q| Weak::ptr_eq(q, &Arc::downgrade(&b))));
    assert!(activity.take_sampling().is_empty());
}

#[test]
fn a_deleted_queue_is_listed_for_the_sampler_to_forget() {
    let activity = Arc::new(Activity::default());
    activity.start_sampling();
    let a = queue(&activity, "a");
    activity.take_sampling();
    let _ = a.delete();
    let weak = Arc::downgrade(&a);
    drop(a);
    let listed = activity.take_sampling();
    assert_eq!(listed.len(), 1);
    assert!(Weak::ptr_eq(&listed[0], &weak));
    assert!(listed[0].upgrade().is_none());
}
