//! The lapin publisher: one connection and channel per producer, one `basic.publish` per message,
//! optional rate limit, optional publisher confirms with a bounded window.
//!
//! Confirms are awaited in publish order by a companion task that returns one window permit per
//! confirm, so the producer never has more than `--confirm N` messages unconfirmed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::message;
use crate::stats::Shared;

/// What every producer needs to know, whichever publisher it uses.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: usize,
    pub exchange: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub size: usize,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// msg/s; 0 = unlimited.
    pub rate: f64,
    /// With a rate: seconds after the start when the first message is due. Producers are spread
    /// over one interval (producer p of n starts at p / n / rate), so many slow producers make a
    /// steady stream instead of one burst per interval.
    pub phase: f64,
    pub confirm: Option<u64>,
    /// Messages per write (raw publisher only).
    pub raw_batch: u64,
    /// How long to wait for outstanding confirms after the last publish.
    pub confirm_grace: Duration,
}

impl Job {
    /// When message `sequence` is due under the rate limit (None: unlimited).
    pub fn due(&self, start: Instant, sequence: u64) -> Option<Instant> {
        (self.rate > 0.0)
            .then(|| start + Duration::from_secs_f64(self.phase + sequence as f64 / self.rate))
    }

    /// How many messages are due by now under the rate limit (the rate must be set).
    pub fn due_count(&self, start: Instant) -> u64 {
        let elapsed = start.elapsed().as_secs_f64() - self.phase;
        if elapsed < 0.0 {
            0
        } else {
            (elapsed * self.rate) as u64 + 1
        }
    }

    pub fn done(&self, sequence: u64, deadline: Option<Instant>, shared: &Shared) -> bool {
        self.count.is_some_and(|c| sequence >= c)
            || deadline.is_some_and(|d| Instant::now() >= d)
            || shared.stop.load(Ordering::Relaxed)
    }
}

pub struct Producer {
    job: Job,
    connection: Connection,
    channel: Channel,
}

impl Producer {
    pub async fn connect(uri: &str, job: Job) -> Result<Producer, String> {
        let connection = Connection::connect(uri, ConnectionProperties::default())
            .await
            .map_err(|e| format!("producer {}: connect: {e}", job.id))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("producer {}: channel.open: {e}", job.id))?;
        if job.confirm.is_some() {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| format!("producer {}: confirm.select: {e}", job.id))?;
        }
        Ok(Producer {
            job,
            connection,
            channel,
        })
    }

    /// Publishes until the deadline, the count, or a stop; then waits for the confirms.
    pub async fn run(
        self,
        shared: Arc<Shared>,
        start: Instant,
        deadline: Option<Instant>,
    ) -> Result<(), String> {
        let job = &self.job;
        let counters = &shared.producers[job.id];
        let window = job
            .confirm
            .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS as u64) as usize)));
        let (confirms_tx, confirms_rx) = mpsc::unbounded_channel();
        let collector = window.clone().map(|window| {
            tokio::spawn(collect_confirms(
                shared.clone(),
                job.id,
                confirms_rx,
                window,
            ))
        });
        let mut body = vec![0u8; job.size];
        let mut sequence = 0u64;
        let mut result = Ok(());
        while !job.done(sequence, deadline, &shared) {
            if let Some(due) = job.due(start, sequence) {
                if due > Instant::now() {
                    tokio::time::sleep_until(deadline.map_or(due, |d| due.min(d))).await;
                    continue;
                }
            }
            if let Some(window) = &window {
                let permit = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, window.acquire()).await {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    None => window.acquire().await,
                };
                match permit {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
            }
            message::stamp(&mut body, job.id as u16, sequence, shared.clock.now());
            counters.stamped.store(sequence + 1, Ordering::Release);
            let publish = self
                .channel
                .basic_publish(
                    job.exchange.as_str().into(),
                    job.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    job.properties.clone(),
                )
                .await;
            match publish {
                Ok(confirm) => {
                    counters.sent.fetch_add(1, Ordering::Release);
                    if window.is_some() {
                        let _ = confirms_tx.send(confirm);
                    }
                }
                Err(e) => {
                    result = Err(format!("producer {}: basic.publish: {e}", job.id));
                    break;
                }
            }
            sequence += 1;
        }
        counters
            .finished_at
            .store(shared.clock.now(), Ordering::Relaxed);
        drop(confirms_tx);
        if let Some(collector) = collector {
            match tokio::time::timeout(job.confirm_grace, collector).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => result = result.and(Err(e)),
                Ok(Err(e)) => result = result.and(Err(format!("confirm task: {e}"))),
                Err(_) => {
                    result = result.and(Err(format!(
                        "producer {}: confirms still outstanding {:?} after the last publish",
                        job.id, job.confirm_grace
                    )))
                }
            }
        }
        if self.channel.close(200, "done".into()).await.is_ok() {
            counters
                .accepted_at
                .store(shared.clock.now(), Ordering::Relaxed);
        }
        let _ = self.connection.close(200, "done".into()).await;
        result
    }
}

async fn collect_confirms(
    shared: Arc<Shared>,
    id: usize,
    mut confirms: mpsc::UnboundedReceiver<lapin::PublisherConfirm>,
    window: Arc<Semaphore>,
) -> Result<(), String> {
    let counters = &shared.producers[id];
    while let Some(confirm) = confirms.recv().await {
        match confirm.await {
            Ok(Confirmation::Ack(_)) => counters.confirmed.fetch_add(1, Ordering::Relaxed),
            Ok(Confirmation::Nack(_)) => counters.nacked.fetch_add(1, Ordering::Relaxed),
            Ok(Confirmation::NotRequested) => 0,
            Err(e) => return Err(format!("producer {id}: publisher confirm: {e}")),
        };
        window.add_permits(1);
    }
    Ok(())
}
