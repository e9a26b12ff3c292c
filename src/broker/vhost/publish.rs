//! One publish, from the exchange to the queues: route (the topology's read lock, once), put the
//! one shared message into every queue it reaches, dead-letter what the queues give up on (once
//! their locks are let go), and say what the publisher's confirm depends on. The channel makes
//! this one call per message and turns the answer into a confirm or a `basic.return`; it never
//! touches a queue on the way.

use std::sync::Arc;

use super::dead_letter::dead_letter;
use super::{RouteScratch, Vhost};
use crate::broker::message::{Message, Stamp};
use crate::broker::queue::{Enqueued, Published, Queue};
use crate::error::Error;
use crate::store::Store;

/// What a publish's confirm depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safety {
    /// Every queue that took it has it (in memory, or nothing to sync).
    Safe,
    /// Safe once the group commit has synced the logs it went to.
    Syncing,
    /// A queue failed to take it (its log could not be written, or it refused it for length):
    /// the confirm is a nack.
    Failed,
}

/// What [`Vhost::publish`] did with a message.
#[derive(Debug)]
pub struct Routed {
    /// Some queue took it, or refused it for its length: a mandatory message is not returned.
    pub routed: bool,
    pub safety: Safety,
    /// The store whose group commit a `Syncing` publish waits for.
    pub store: Option<Arc<Store>>,
}

/// A publisher's reusable buffers, and what its publishes leave it to do (one per connection).
#[derive(Debug, Default)]
pub struct PublishScratch {
    route: RouteScratch,
    /// Queues whose logs took publishes and wait for the caller to flush them
    /// ([`Queue::flush_log`], once per log per read batch).
    pub unflushed: Vec<Arc<Queue>>,
    /// Queues that push back on this publisher (see `broker::flow`).
    pub pressured: Vec<Arc<Queue>>,
    /// Messages put into queues since the caller last reset this: the work its publishes made
    /// for consumers' connections.
    pub enqueued: usize,
}

impl Vhost {
    /// Routes `message` from its exchange and puts it into every queue it reaches, as `stamp`
    /// says they are to hold it. An unknown or internal exchange is the channel error
    /// RabbitMQ gives (404, 403).
    #[inline]
    pub fn publish(
        &self,
        message: &Arc<Message>,
        stamp: Stamp,
        scratch: &mut PublishScratch,
    ) -> Result<Routed, Error> {
        self.route(
            message.exchange_bytes(),
            message.routing_key_bytes(),
            message.properties(),
            &mut scratch.route,
        )?;
        let mut result = Routed {
            routed: false,
            safety: Safety::Safe,
            store: None,
        };
        scratch.enqueued += scratch.route.queues.len();
        for queue in scratch.route.queues.drain(..) {
            let Published {
                enqueued,
                logged,
                dropped,
            } = queue.publish(message, stamp);
            for (message, reason) in dropped {
                dead_letter(self, &queue, &message, reason);
            }
            if logged && !scratch.unflushed.iter().any(|q| Arc::ptr_eq(q, &queue)) {
                scratch.unflushed.push(Arc::clone(&queue));
            }
            let pushes_back = queue.flow.under_pressure();
            if pushes_back && !scratch.pressured.iter().any(|q| Arc::ptr_eq(q, &queue)) {
                scratch.pressured.push(Arc::clone(&queue));
            }
            match enqueued {
                Enqueued::Queued => result.routed = true,
                Enqueued::Logged => {
                    result.routed = true;
                    if result.safety == Safety::Safe {
                        result.safety = Safety::Syncing;
                    }
                    result.store = queue.store().cloned();
                }
                Enqueued::Failed => result.safety = Safety::Failed,
                // Routed (no return for mandatory), but refused: a confirm is a nack.
                Enqueued::Rejected => {
                    result.routed = true;
                    result.safety = Safety::Failed;
                }
                Enqueued::Deleted => {}
            }
        }
        Ok(result)
    }
}
