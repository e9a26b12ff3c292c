use std::sync::Arc;

use warren_protocol::method::ShortStr;

use super::Rates;
use crate::broker::message::{Message, Stamp};
use crate::broker::queue::Queue;
use crate::broker::vhost::{PublishScratch, QueueDeclare, Vhost};
use crate::broker::Broker;
use crate::server::registry::Registry;

fn declare(vhost: &Vhost, name: &str) -> Arc<Queue> {
    let declare = QueueDeclare {
        name: ShortStr::copy_from_str(name),
        server_named: false,
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        arguments: Default::default(),
    };
    vhost.declare_queue(declare, 0).expect("declare").queue
}

fn publish(vhost: &Vhost, queue: &str, count: usize) {
    let mut scratch = PublishScratch::default();
    for _ in 0..count {
        let body = bytes::Bytes::from_static(b"x");
        let message = Arc::new(Message::new(b"", queue.as_bytes(), &[0, 0], body));
        vhost
            .publish(&message, Stamp::default(), &mut scratch)
            .expect("publish");
    }
}

#[test]
fn idle_queues_are_read_once_and_only_queues_that_move_are_sampled_again() {
    let broker = Broker::new(&["/".to_owned()]);
    let vhost = broker.vhost("/").expect("vhost");
    let queues: Vec<Arc<Queue>> = (0..100)
        .map(|i| declare(&vhost, &format!("q{i}")))
        .collect();
    let (registry, rates) = (Registry::default(), Rates::default());
    assert_eq!(
        rates.sample(&registry, &broker),
        100,
        "the first sample reads every queue"
    );
    assert_eq!(
        rates.sample(&registry, &broker),
        0,
        "idle queues are not read again"
    );
    assert!(rates.idle_since(&queues[8]).is_some());

    std::thread::sleep(std::time::Duration::from_millis(20));
    publish(&vhost, "q7", 10);
    assert_eq!(rates.sample(&registry, &broker), 1);
    assert!(rates.queue(&queues[7]).publish > 0.0);
    assert!(rates.idle_since(&queues[7]).is_none(), "busy");
    assert_eq!(rates.queue(&queues[8]).publish, 0.0);

    // Followed once more: its rate goes back to zero.
    assert_eq!(rates.sample(&registry, &broker), 1);
    assert_eq!(rates.queue(&queues[7]).publish, 0.0);
    assert!(rates.idle_since(&queues[7]).is_some());
    assert_eq!(rates.sample(&registry, &broker), 0);

    // A new queue is read once; a deleted one is forgotten.
    let new = declare(&vhost, "new");
    assert_eq!(rates.sample(&registry, &broker), 1);
    assert!(rates.idle_since(&new).is_some());
    vhost
        .delete_queue(&queues[9].name, false, false, 0)
        .expect("delete");
    assert_eq!(rates.sample(&registry, &broker), 1);
    assert_eq!(rates.sample(&registry, &broker), 0);
}
