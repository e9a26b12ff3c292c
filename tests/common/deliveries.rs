//! Consumers as tests watch them: every event of a lapin consumer, in order, read with timeouts.

use std::time::Duration;

use lapin::message::{Delivery, DeliveryResult};
use lapin::options::BasicConsumeOptions;
use lapin::{Channel, Consumer};
use tokio::sync::mpsc;
use warren_protocol::types::FieldTable;

use super::*;

/// Starts a consumer with a server-generated tag.
pub async fn consume(channel: &Channel, queue: &str, options: BasicConsumeOptions) -> Deliveries {
    try_consume(channel, queue, "", options)
        .await
        .unwrap_or_else(|e| panic!("basic.consume {queue}: {e}"))
}

pub async fn try_consume(
    channel: &Channel,
    queue: &str,
    consumer_tag: &str,
    options: BasicConsumeOptions,
) -> lapin::Result<Deliveries> {
    let consumer = within(
        "basic.consume",
        channel.basic_consume(
            queue.into(),
            consumer_tag.into(),
            options,
            FieldTable::default(),
        ),
    )
    .await?;
    Ok(Deliveries::new(consumer))
}

/// What happened to a consumer, in order: deliveries, then at most one error and a cancel.
///
/// lapin's `Consumer` is a `futures::Stream`; the tests have no `futures` crate, so a delegate
/// forwards every event, in order, into a channel that is read with timeouts.
pub struct Deliveries {
    pub tag: String,
    events: mpsc::UnboundedReceiver<DeliveryResult>,
    /// Kept alive: lapin cancels a consumer whose last handle is dropped.
    consumer: Consumer,
}

impl Deliveries {
    pub fn new(consumer: Consumer) -> Deliveries {
        let (sender, events) = mpsc::unbounded_channel();
        // The closure runs synchronously on lapin's dispatch path, so order is kept.
        consumer.set_delegate(move |event: DeliveryResult| {
            let _ = sender.send(event);
            std::future::ready(())
        });
        Deliveries {
            tag: consumer.tag().to_string(),
            events,
            consumer,
        }
    }

    /// The next event within `limit`: `Some(Ok(Some(_)))` a delivery, `Some(Ok(None))` the
    /// consumer was cancelled, `Some(Err(_))` its channel or connection failed; `None` nothing.
    pub async fn event_within(&mut self, limit: Duration) -> Option<DeliveryResult> {
        match tokio::time::timeout(limit, self.events.recv()).await {
            Ok(Some(event)) => Some(event),
            Ok(None) => Some(Ok(None)),
            Err(_) => None,
        }
    }

    /// The next delivery; fails the test on a cancel, an error or [`WAIT`] of silence.
    pub async fn next(&mut self) -> Delivery {
        match self.event_within(WAIT).await {
            Some(Ok(Some(delivery))) => delivery,
            Some(Ok(None)) => panic!(
                "consumer {} was cancelled, a delivery was expected",
                self.tag
            ),
            Some(Err(e)) => panic!(
                "consumer {} failed ({e}), a delivery was expected",
                self.tag
            ),
            None => panic!("no delivery within {WAIT:?} on consumer {}", self.tag),
        }
    }

    /// The next `count` deliveries.
    pub async fn take(&mut self, count: usize) -> Vec<Delivery> {
        let mut deliveries = Vec::with_capacity(count);
        for _ in 0..count {
            deliveries.push(self.next().await);
        }
        deliveries
    }

    /// Fails the test if anything is delivered within [`QUIET`].
    pub async fn expect_quiet(&mut self) {
        if let Some(event) = self.event_within(QUIET).await {
            panic!("consumer {} expected nothing, got {event:?}", self.tag);
        }
    }

    /// Waits for the consumer to be cancelled (by the broker or by its channel closing),
    /// skipping a channel error; fails on a delivery.
    pub async fn expect_cancelled(&mut self) {
        loop {
            match self.event_within(WAIT).await {
                Some(Ok(None)) => return,
                Some(Err(_)) => continue,
                Some(Ok(Some(delivery))) => {
                    panic!("consumer {} expected a cancel, got {delivery:?}", self.tag)
                }
                None => panic!("consumer {} was not cancelled within {WAIT:?}", self.tag),
            }
        }
    }

    /// Waits for the consumer's channel (or connection) to fail; returns the error. Fails the test
    /// on a delivery or a plain cancel.
    pub async fn expect_error(&mut self) -> lapin::Error {
        match self.event_within(WAIT).await {
            Some(Err(error)) => error,
            Some(Ok(Some(delivery))) => {
                panic!("consumer {} expected an error, got {delivery:?}", self.tag)
            }
            Some(Ok(None)) => panic!("consumer {} was cancelled without an error", self.tag),
            None => panic!("consumer {} saw no error within {WAIT:?}", self.tag),
        }
    }

    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }
}
