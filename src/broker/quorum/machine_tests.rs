use super::*;
use crate::broker::quorum::limits::Limits;
use tokio::sync::mpsc;

fn message(body: &str) -> Stored {
    Stored::new(b"", b"q", b"", body.as_bytes(), None).unwrap()
}

fn key(node: NodeId, id: u64) -> ConsumerKey {
    ConsumerKey { node, id }
}

/// A machine on node 1 and what it hands to node 1's consumers.
fn local() -> (QueueMachine, mpsc::UnboundedReceiver<ToNode>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let local = Local {
        node: 1,
        deliveries: tx,
    };
    (
        QueueMachine::new(
            Limits {
                delivery_limit: Some(2),
                ..Limits::default()
            },
            Some(local),
        ),
        rx,
    )
}

fn drain(rx: &mut mpsc::UnboundedReceiver<ToNode>) -> Vec<(u64, u64, String, u32)> {
    let mut got = Vec::new();
    while let Ok(told) = rx.try_recv() {
        let ToNode::Deliver(a) = told else {
            continue;
        };
        let body = String::from_utf8(a.message.body().to_vec()).unwrap();
        got.push((a.consumer, a.delivery, body, a.returns));
    }
    got
}

fn enqueue(m: &mut QueueMachine, bodies: &[&str]) {
    m.apply(&Command::Enqueue {
        from: None,
        messages: bodies.iter().map(|b| message(b)).collect(),
        at: 0,
    });
}

fn checkout(m: &mut QueueMachine, consumer: ConsumerKey, prefetch: u32) {
    m.apply(&Command::Checkout {
        consumer,
        prefetch,
        no_ack: false,
        at: 0,
    });
}

#[test]
fn consumers_take_turns_within_their_prefetch_and_only_local_ones_are_sent() {
    let (mut m, mut rx) = local();
    checkout(&mut m, key(1, 7), 2);
    checkout(&mut m, key(2, 7), 1);
    enqueue(&mut m, &["a", "b", "c", "d"]);
    // a -> node 1, b -> node 2, c -> node 1; d waits: both are at their prefetch.
    let sent = drain(&mut rx);
    assert_eq!(
        sent,
        vec![(7, 0, "a".into(), 0), (7, 2, "c".into(), 0)],
        "only node 1's deliveries are sent here"
    );
    assert_eq!((m.ready(), m.unsettled()), (1, 3));
    // Node 2 acks its delivery (1): d goes to it.
    m.apply(&Command::Settle {
        node: 2,
        deliveries: vec![1],
    });
    assert_eq!((m.ready(), m.unsettled()), (0, 3));
    assert!(drain(&mut rx).is_empty());
}

#[test]
fn a_settle_from_the_wrong_node_or_for_a_taken_back_delivery_matches_nothing() {
    let (mut m, mut rx) = local();
    checkout(&mut m, key(1, 1), 1);
    enqueue(&mut m, &["a"]);
    assert_eq!(drain(&mut rx).len(), 1);
    m.apply(&Command::Settle {
        node: 2,
        deliveries: vec![0],
    });
    assert_eq!(m.unsettled(), 1, "node 2 holds nothing");
    // The channel closes: the message comes back, to the next consumer, as delivery 1.
    m.apply(&Command::Down {
        consumer: key(1, 1),
    });
    checkout(&mut m, key(1, 2), 1);
    assert_eq!(drain(&mut rx), vec![(2, 1, "a".into(), 1)]);
    // The late ack of delivery 0 does not settle delivery 1.
    m.apply(&Command::Settle {
        node: 1,
        deliveries: vec![0],
    });
    assert_eq!(m.unsettled(), 1);
    m.apply(&Command::Settle {
        node: 1,
        deliveries: vec![1],
    });
    assert_eq!((m.ready(), m.unsettled()), (0, 0));
}

#[test]
fn returned_messages_go_first_and_past_the_delivery_limit_are_dropped() {
    let (mut m, mut rx) = local();
    enqueue(&mut m, &["a", "b"]);
    checkout(&mut m, key(1, 1), 1);
    let mut returns = Vec::new();
    // Limit 2: "a" is delivered three times (returned twice), then dropped at its third return.
    for _ in 0..3 {
        let sent = drain(&mut rx);
        assert_eq!(sent.len(), 1);
        let (_, delivery, body, count) = sent[0].clone();
        assert_eq!(body, "a");
        returns.push(count);
        m.apply(&Command::Return {
            node: 1,
            deliveries: vec![delivery],
        });
    }
    assert_eq!(returns, vec![0, 1, 2]);
    assert_eq!(m.dropped, 1);
    assert_eq!(drain(&mut rx)[0].2, "b");
}

#[test]
fn cancel_keeps_what_the_consumer_holds_and_node_up_takes_back_everything() {
    let (mut m, mut rx) = local();
    checkout(&mut m, key(2, 1), 0);
    enqueue(&mut m, &["a", "b"]);
    m.apply(&Command::Cancel {
        consumer: key(2, 1),
    });
    assert_eq!((m.consumers(), m.unsettled()), (0, 2));
    enqueue(&mut m, &["c"]);
    assert_eq!(m.ready(), 1, "a cancelled consumer takes nothing new");
    m.apply(&Command::NodeUp { node: 2 });
    assert_eq!((m.ready(), m.unsettled()), (3, 0));
    checkout(&mut m, key(1, 1), 0);
    let bodies: Vec<String> = drain(&mut rx).into_iter().map(|d| d.2).collect();
    assert_eq!(bodies, ["a", "b", "c"], "returned first, in order");
}

#[test]
fn a_snapshot_restores_the_state_and_keeps_the_local_link() {
    let (mut m, mut rx) = local();
    checkout(&mut m, key(1, 1), 1);
    enqueue(&mut m, &["a", "b"]);
    drain(&mut rx);
    let bytes = m.snapshot();
    let (mut copy, mut copy_rx) = local();
    copy.restore(&bytes).unwrap();
    assert_eq!((copy.ready(), copy.unsettled()), (1, 1));
    copy.apply(&Command::Settle {
        node: 1,
        deliveries: vec![0],
    });
    assert_eq!(drain(&mut copy_rx)[0].2, "b");
    assert!(copy.restore(b"{").is_err());
    assert_eq!(copy.unsettled(), 1, "a bad snapshot changes nothing");
}

#[test]
fn purge_removes_only_ready_messages() {
    let (mut m, _rx) = local();
    checkout(&mut m, key(1, 1), 1);
    enqueue(&mut m, &["a", "b", "c"]);
    assert_eq!(m.apply(&Command::Purge), Response::Purged(2));
    assert_eq!((m.ready(), m.unsettled()), (0, 1));
}

#[test]
fn node_down_returns_its_consumers_messages_and_tells_that_node() {
    let (mut m, mut rx) = local();
    checkout(&mut m, key(1, 1), 5);
    checkout(&mut m, key(2, 1), 5);
    enqueue(&mut m, &["a", "b"]);
    drain(&mut rx);
    assert_eq!(
        m.consumer_nodes().into_iter().collect::<Vec<_>>(),
        vec![1, 2]
    );
    // Node 2 went silent: "b" (its) goes to node 1's consumer.
    m.apply(&Command::NodeDown { node: 2, by: 1 });
    assert_eq!(drain(&mut rx), vec![(1, 2, "b".into(), 1)]);
    assert!(rx.try_recv().is_err(), "node 1 is not told anything else");
    // Node 1 went silent: it is told it was forgotten.
    m.apply(&Command::NodeDown { node: 1, by: 2 });
    assert!(matches!(rx.try_recv(), Ok(ToNode::Forgotten)));
    assert_eq!((m.consumers(), m.ready(), m.unsettled()), (0, 2, 0));
}

#[test]
fn an_enqueue_sent_again_is_applied_once() {
    let (mut m, _rx) = local();
    let batch = |seq| Command::Enqueue {
        from: Some(Batch {
            node: 2,
            incarnation: 7,
            seq,
        }),
        messages: vec![message("a")],
        at: 0,
    };
    m.apply(&batch(1));
    m.apply(&batch(1));
    m.apply(&batch(2));
    assert_eq!(m.ready(), 2, "the repeated batch 1 was dropped");
    // Another incarnation of the writer starts its numbers again.
    m.apply(&Command::Enqueue {
        from: Some(Batch {
            node: 2,
            incarnation: 8,
            seq: 1,
        }),
        messages: vec![message("b")],
        at: 0,
    });
    assert_eq!(m.ready(), 3);
    let (mut copy, _rx) = local();
    copy.restore(&m.snapshot()).unwrap();
    copy.apply(&batch(2));
    assert_eq!(copy.ready(), 3, "the snapshot keeps the writers' numbers");
}

#[test]
fn get_takes_the_next_message_and_holds_it_until_settled() {
    let (mut m, mut rx) = local();
    enqueue(&mut m, &["a", "b", "c"]);
    let Response::Got(Some(got)) = m.apply(&Command::Get {
        node: 2,
        no_ack: false,
        at: 0,
    }) else {
        panic!("a message");
    };
    assert_eq!((got.message.body(), got.remaining), (&b"a"[..], 2));
    assert_eq!(m.unsettled(), 1);
    // Requeued by its node: back first, counted.
    m.apply(&Command::Return {
        node: 2,
        deliveries: vec![got.delivery],
    });
    let Response::Got(Some(again)) = m.apply(&Command::Get {
        node: 2,
        no_ack: true,
        at: 0,
    }) else {
        panic!("a message");
    };
    assert_eq!((again.message.body(), again.returns), (&b"a"[..], 1));
    assert_eq!((m.ready(), m.unsettled(), m.consumers()), (2, 0, 0));
    // A consumer that comes later gets the rest; the getter never took a turn.
    checkout(&mut m, key(1, 1), 0);
    assert_eq!(drain(&mut rx).len(), 2);
    m.apply(&Command::Purge);
    assert_eq!(
        m.apply(&Command::Get {
            node: 2,
            no_ack: false,
            at: 0,
        }),
        Response::Got(None)
    );
}

#[test]
fn past_the_delivery_limit_only_the_returning_node_dead_letters() {
    let dead_letters = |rx: &mut mpsc::UnboundedReceiver<ToNode>| {
        let mut bodies = Vec::new();
        while let Ok(told) = rx.try_recv() {
            if let ToNode::DeadLetter(stored, Reason::DeliveryLimit) = told {
                bodies.push(String::from_utf8(stored.body().to_vec()).unwrap());
            }
        }
        bodies
    };
    for (node, expected) in [(2, Vec::<String>::new()), (1, vec!["a".to_owned()])] {
        let (mut m, mut rx) = local();
        enqueue(&mut m, &["a"]);
        checkout(&mut m, key(node, 1), 1);
        // Limit 2: the third return drops it; delivery numbers count from 0.
        for delivery in 0..3 {
            m.apply(&Command::Return {
                node,
                deliveries: vec![delivery],
            });
        }
        assert_eq!(m.dropped, 1);
        assert_eq!(dead_letters(&mut rx), expected, "consumer on node {node}");
    }
}

/// A machine on node 1 with `limits`.
fn limited(limits: Limits) -> (QueueMachine, mpsc::UnboundedReceiver<ToNode>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let local = Local {
        node: 1,
        deliveries: tx,
    };
    (QueueMachine::new(limits, Some(local)), rx)
}

/// An enqueue written by node `node` at `at`.
fn enqueue_from(m: &mut QueueMachine, node: NodeId, at: u64, bodies: &[&str]) -> Response {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    m.apply(&Command::Enqueue {
        from: Some(Batch {
            node,
            incarnation: 1,
            seq: SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }),
        messages: bodies.iter().map(|b| message(b)).collect(),
        at,
    })
}

/// What node 1 was told to dead-letter: (body, reason).
fn dead(rx: &mut mpsc::UnboundedReceiver<ToNode>) -> Vec<(String, &'static str)> {
    let mut got = Vec::new();
    while let Ok(told) = rx.try_recv() {
        if let ToNode::DeadLetter(stored, reason) = told {
            got.push((
                String::from_utf8(stored.body().to_vec()).unwrap(),
                reason.name(),
            ));
        }
    }
    got
}

#[test]
fn max_length_drops_the_oldest_and_the_writer_dead_letters_them() {
    let limits = Limits {
        max_length: Some(2),
        ..Limits::default()
    };
    let (mut m, mut rx) = limited(limits.clone());
    assert_eq!(enqueue_from(&mut m, 1, 0, &["a", "b", "c"]), Response::Done);
    assert_eq!(m.ready(), 2);
    assert_eq!(dead(&mut rx), vec![("a".to_owned(), "maxlen")]);
    // Written by node 2: node 2 dead-letters, not this one.
    enqueue_from(&mut m, 2, 0, &["d"]);
    assert_eq!((m.ready(), dead(&mut rx).len()), (2, 0));
    checkout(&mut m, key(1, 1), 0);
    let bodies: Vec<String> = drain(&mut rx).into_iter().map(|d| d.2).collect();
    assert_eq!(bodies, ["c", "d"]);

    let bytes = Limits {
        max_bytes: Some(3),
        ..Limits::default()
    };
    let (mut m, mut rx) = limited(bytes);
    enqueue_from(&mut m, 1, 0, &["ab", "cd"]);
    assert_eq!(dead(&mut rx), vec![("ab".to_owned(), "maxlen")]);
    assert_eq!(m.ready(), 1);
}

#[test]
fn reject_publish_refuses_a_whole_enqueue_once_the_queue_is_full() {
    let (mut m, mut rx) = limited(Limits {
        max_length: Some(2),
        reject_publish: true,
        ..Limits::default()
    });
    assert_eq!(enqueue_from(&mut m, 1, 0, &["a", "b"]), Response::Done);
    assert_eq!(enqueue_from(&mut m, 1, 0, &["c"]), Response::Refused);
    assert_eq!((m.ready(), dead(&mut rx).len()), (2, 0));
    m.apply(&Command::Purge);
    assert_eq!(enqueue_from(&mut m, 1, 0, &["d"]), Response::Done);
}

#[test]
fn messages_expire_by_the_time_commands_carry() {
    let (mut m, mut rx) = limited(Limits {
        message_ttl: Some(100),
        ..Limits::default()
    });
    enqueue_from(&mut m, 1, 1_000, &["a"]);
    let mut short = message("b");
    short.ttl = Some(10);
    m.apply(&Command::Enqueue {
        from: None,
        messages: vec![short, message("c")],
        at: 1_050,
    });
    assert_eq!(m.next_expiry(), Some(1_100));
    m.apply(&Command::Tick { at: 1_099, by: 1 });
    assert_eq!(m.ready(), 3, "nothing expired yet");
    m.apply(&Command::Tick { at: 1_100, by: 1 });
    // "a" expired at the head, and then "b" (due at 1060) behind it.
    assert_eq!(
        dead(&mut rx),
        vec![("a".to_owned(), "expired"), ("b".to_owned(), "expired")]
    );
    // A consumer coming after "c" expired never gets it, though no tick came.
    m.apply(&Command::Checkout {
        consumer: key(1, 1),
        prefetch: 0,
        no_ack: false,
        at: 1_150,
    });
    assert!(drain(&mut rx).is_empty());
    assert_eq!(m.ready(), 0);
    assert_eq!(m.dropped, 3);
}

#[test]
fn a_single_active_consumer_gets_everything_until_it_goes() {
    let (mut m, mut rx) = limited(Limits {
        single_active: true,
        ..Limits::default()
    });
    assert_eq!(m.unused(), Some(0));
    checkout(&mut m, key(1, 1), 0);
    checkout(&mut m, key(1, 2), 0);
    assert_eq!(m.unused(), None);
    enqueue(&mut m, &["a", "b"]);
    let first: Vec<u64> = drain(&mut rx).into_iter().map(|d| d.0).collect();
    assert_eq!(first, [1, 1], "only the first consumer");
    // It goes: what it held, and what comes, go to the next.
    m.apply(&Command::Down {
        consumer: key(1, 1),
    });
    enqueue(&mut m, &["c"]);
    let next: Vec<(u64, String)> = drain(&mut rx).into_iter().map(|d| (d.0, d.2)).collect();
    assert_eq!(
        next,
        [(2, "a".into()), (2, "b".into()), (2, "c".into())],
        "the next consumer takes over"
    );
    m.apply(&Command::Cancel {
        consumer: key(1, 2),
    });
    m.apply(&Command::Touch { at: 500, by: 1 });
    assert_eq!(m.unused(), Some(500), "unused since its last redeclaration");
}
