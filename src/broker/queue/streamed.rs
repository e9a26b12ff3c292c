//! A stream queue's side of [`Queue`] (`x-queue-type: stream`): the queue keeps its
//! [`Stream`] in its boxed `Limited` and hands it every operation (see `broker/stream`); the
//! queue's own state stays empty. Here: attaching the stream, finding it, and a publish into it.

use std::sync::Arc;

use super::super::message::Message;
use super::super::stream::{Stream, SubscribeRefused};
use super::{ConsumeRefused, Enqueued, Published, Queue};

impl Queue {
    /// A stream queue: its messages are in `stream` (see `broker/stream`), which its group
    /// commit is `stream`'s store's.
    pub fn with_stream(mut self, stream: Arc<Stream>) -> Queue {
        self.group_commit = Some(Arc::clone(stream.store()));
        self.limited_mut().stream = Some(stream);
        self
    }

    /// The stream, for a stream queue.
    #[inline]
    pub fn stream(&self) -> Option<&Arc<Stream>> {
        self.limited.as_ref()?.stream.as_ref()
    }
}

/// [`Queue::publish`] for a stream queue: appended to its log (written and handed to the group
/// commit by the publisher's [`Queue::flush_log`]).
pub(super) fn publish_to_stream(stream: &Stream, message: &Message) -> Published {
    thread_local! {
        static PAYLOAD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let appended = PAYLOAD.with(|payload| stream.publish(message, &mut payload.borrow_mut()));
    let enqueued = match appended {
        Ok(true) => Enqueued::Logged,
        Ok(false) => Enqueued::Deleted,
        Err(e) => {
            tracing::error!(error = %e, "stream: appending a message failed");
            Enqueued::Failed
        }
    };
    Published {
        enqueued,
        logged: enqueued == Enqueued::Logged,
        dropped: Vec::new(),
    }
}

impl From<SubscribeRefused> for ConsumeRefused {
    fn from(refused: SubscribeRefused) -> ConsumeRefused {
        match refused {
            SubscribeRefused::ExclusiveInUse => ConsumeRefused::ExclusiveInUse,
            SubscribeRefused::Deleted => ConsumeRefused::Deleted,
        }
    }
}
