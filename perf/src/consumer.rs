//! The lapin consumer: one connection and channel per consumer, `basic.consume` on its queue,
//! every delivery accounted in [`Shared`], acks either automatic or one multiple-ack every N.

use std::sync::Arc;

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::watch;

use crate::stats::Shared;

#[derive(Clone, Debug)]
pub struct Settings {
    pub id: usize,
    /// Tracker index (the queue's, or for streams the consumer's own).
    pub queue: usize,
    pub queue_name: String,
    pub auto_ack: bool,
    pub multi_ack_every: u64,
    pub qos: u16,
    /// Per producer: does this queue route its messages?
    pub routed: Vec<bool>,
    /// Arguments of basic.consume (`--consume-args`).
    pub arguments: FieldTable,
}

pub struct Consumer {
    settings: Settings,
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl Consumer {
    pub async fn connect(uri: &str, settings: Settings) -> Result<Consumer, String> {
        let id = settings.id;
        let connection = Connection::connect(uri, ConnectionProperties::default())
            .await
            .map_err(|e| format!("consumer {id}: connect: {e}"))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("consumer {id}: channel.open: {e}"))?;
        if settings.qos > 0 {
            channel
                .basic_qos(settings.qos, BasicQosOptions::default())
                .await
                .map_err(|e| format!("consumer {id}: basic.qos: {e}"))?;
        }
        let options = BasicConsumeOptions {
            no_ack: settings.auto_ack,
            ..BasicConsumeOptions::default()
        };
        let consumer = channel
            .basic_consume(
                settings.queue_name.as_str().into(),
                format!("perf-c-{id}").into(),
                options,
                settings.arguments.clone(),
            )
            .await
            .map_err(|e| format!("consumer {id}: basic.consume {}: {e}", settings.queue_name))?;
        Ok(Consumer {
            settings,
            connection,
            channel,
            consumer,
        })
    }

    /// Consumes until `stop` turns true; acks what is left and closes.
    pub async fn run(
        mut self,
        shared: Arc<Shared>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), String> {
        let s = &self.settings;
        let mut unacked = 0u64;
        let mut last_tag = 0u64;
        let mut result = Ok(());
        loop {
            let delivery = tokio::select! {
                d = self.consumer.next() => d,
                _ = stop.wait_for(|stop| *stop) => break,
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    result = Err(format!("consumer {}: {e}", s.id));
                    break;
                }
                None => {
                    result = Err(format!("consumer {}: cancelled by the broker", s.id));
                    break;
                }
            };
            shared.on_delivery(
                s.id,
                s.queue,
                &delivery.data,
                delivery.redelivered,
                &s.routed,
            );
            if s.auto_ack {
                continue;
            }
            unacked += 1;
            last_tag = delivery.delivery_tag;
            if unacked >= s.multi_ack_every {
                let options = BasicAckOptions {
                    multiple: s.multi_ack_every > 1,
                };
                if let Err(e) = self.channel.basic_ack(last_tag, options).await {
                    result = Err(format!("consumer {}: basic.ack: {e}", s.id));
                    break;
                }
                unacked = 0;
            }
        }
        if unacked > 0 && result.is_ok() {
            let options = BasicAckOptions { multiple: true };
            let _ = self.channel.basic_ack(last_tag, options).await;
        }
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.connection.close(200, "done".into()).await;
        result
    }
}
