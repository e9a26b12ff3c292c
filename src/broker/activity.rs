//! Which queues did something since the background passes last looked at them, so that those
//! passes visit only them: log compaction (every 5 s, `Broker::start_background`) and the
//! management API's rate sampler (`management::rates`). An idle queue is in neither list and
//! costs them nothing, however many there are.
//!
//! A vhost owns one [`Activity`]: two lists of queues. A queue gets on them through its
//! storage, wrapped in a [`Watched`] (`watched.rs`) that marks the queue on every call that
//! changes what it holds (put, delivered, settle, read, destroy): the compaction list for what
//! may make its log's segments due, the sampling list for what moves its `published` and
//! `delivered` counters. A queue is listed at most once per list (its [`Watch`] remembers), so
//! a busy queue costs one atomic load per message. What moves the counters without the storage
//! (a delivery of a message held in memory when a consumer subscribes or `basic.get`s) is
//! reported by its caller through [`Activity::touched`]; a queue with consumers is followed by
//! the sampler itself.
//!
//! Locks: each list's mutex is a leaf, taken under a queue's lock (marking) or alone (a pass
//! takes the list, lets go, then locks each queue alone). Nothing here blocks or does I/O.

mod watched;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::queue::Queue;
pub use watched::Watched;

/// A vhost's lists of queues that did something.
#[derive(Debug, Default)]
pub struct Activity {
    compaction: Mutex<Vec<Arc<Watch>>>,
    sampling: Mutex<Vec<Arc<Watch>>>,
    /// Queues whose counters moved outside their storage (reported by callers; may repeat).
    touched: Mutex<Vec<Weak<Queue>>>,
    /// Whether a rate sampler drains the sampling lists (else nothing is listed for it: a
    /// broker without the management API keeps no list of deleted queues).
    sampled: AtomicBool,
}

/// One queue's place on its vhost's lists.
#[derive(Debug)]
pub struct Watch {
    queue: Weak<Queue>,
    activity: Arc<Activity>,
    /// On the compaction list now.
    compaction: AtomicBool,
    /// On the sampling list now.
    sampling: AtomicBool,
}

impl Activity {
    /// The watch of a queue (being built: `queue` upgrades once it is), listed on both lists so
    /// that a new or recovered queue is visited once (its log may be due already; the sampler
    /// takes its first figures).
    pub fn watch(self: &Arc<Self>, queue: Weak<Queue>) -> Arc<Watch> {
        let watch = Arc::new(Watch {
            queue,
            activity: Arc::clone(self),
            compaction: AtomicBool::new(false),
            sampling: AtomicBool::new(false),
        });
        watch.compaction_due();
        watch.moved();
        watch
    }

    /// The queues whose logs may have compaction to do, taken off the list: each is listed
    /// again by its next change, or by a compaction that stopped before it was done.
    pub fn take_compaction(&self) -> Vec<Arc<Queue>> {
        let listed = std::mem::take(&mut *self.compaction.lock());
        listed
            .into_iter()
            .filter_map(|watch| {
                // Before the queue is visited: a change during the visit lists it again.
                watch.compaction.store(false, Ordering::SeqCst);
                watch.queue.upgrade()
            })
            .collect()
    }

    /// Turns the sampling lists on; true the first time (the caller reads every queue once:
    /// those that were idle since before are in no list).
    pub fn start_sampling(&self) -> bool {
        !self.sampled.swap(true, Ordering::SeqCst)
    }

    /// The queues whose counters may have moved since the last call (deleted ones included,
    /// as dead references: the sampler forgets them), each once; empty until
    /// [`Activity::start_sampling`].
    pub fn take_sampling(&self) -> Vec<Weak<Queue>> {
        let listed = std::mem::take(&mut *self.sampling.lock());
        let touched = std::mem::take(&mut *self.touched.lock());
        let mut queues: Vec<Weak<Queue>> = listed
            .into_iter()
            .map(|watch| {
                watch.sampling.store(false, Ordering::SeqCst);
                watch.queue.clone()
            })
            .chain(touched)
            .collect();
        queues.sort_unstable_by_key(Weak::as_ptr);
        queues.dedup_by(|a, b| Weak::ptr_eq(a, b));
        queues
    }

    /// A caller moved `queue`'s counters without its storage knowing (a consumer subscribed
    /// and got messages held in memory, a `basic.get`): the sampler looks at it next time.
    pub fn touched(&self, queue: &Arc<Queue>) {
        if self.sampled.load(Ordering::Relaxed) {
            self.touched.lock().push(Arc::downgrade(queue));
        }
    }

    /// Empties the lists (the vhost is gone: a listed watch holds the lists it is on).
    pub fn clear(&self) {
        self.compaction.lock().clear();
        self.sampling.lock().clear();
        self.touched.lock().clear();
    }

    /// How many queues are listed for compaction (for tests).
    pub fn compaction_listed(&self) -> usize {
        self.compaction.lock().len()
    }
}

impl Watch {
    /// Its log may have compaction to do (something was settled or written).
    #[inline]
    pub fn compaction_due(self: &Arc<Self>) {
        if !self.compaction.load(Ordering::Relaxed) && !self.compaction.swap(true, Ordering::SeqCst)
        {
            self.activity.compaction.lock().push(Arc::clone(self));
        }
    }

    /// Its counters moved (or it was deleted).
    #[inline]
    pub fn moved(self: &Arc<Self>) {
        if !self.activity.sampled.load(Ordering::Relaxed) {
            return;
        }
        if !self.sampling.load(Ordering::Relaxed) && !self.sampling.swap(true, Ordering::SeqCst) {
            self.activity.sampling.lock().push(Arc::clone(self));
        }
    }
}

#[cfg(test)]
mod tests;
