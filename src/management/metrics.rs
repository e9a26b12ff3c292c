//! `GET /metrics`: Prometheus' text format, with the RabbitMQ plugin's metric names where one
//! exists. Everything is read at scrape time (the registry's counters, each queue's figures,
//! the process's RSS and the data directory's free space) and the fsync latency histogram
//! kept by the group commit; nothing is kept for it between scrapes.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::Management;
use crate::server::alarms;

/// Prometheus' label value escaping: backslash, double quote and newline.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole exposition, as text.
pub fn render(state: &Management) -> String {
    let mut out = String::with_capacity(4096);
    global_metrics(state, &mut out);
    queue_metrics(state, &mut out);
    delayed_metrics(state, &mut out);
    resource_metrics(state, &mut out);
    crate::store::sync::write_fsync_histogram(&mut out);
    out
}

/// The node's message counters, connections and channels.
fn global_metrics(state: &Management, out: &mut String) {
    let counts = state.registry.totals();
    for (name, value, help) in [
        ("received", counts.received, "Messages published by clients"),
        (
            "routed",
            counts.routed,
            "Published messages routed to at least one queue",
        ),
        (
            "delivered",
            counts.delivered,
            "Messages delivered to consumers and basic.get",
        ),
        (
            "redelivered",
            counts.redelivered,
            "Deliveries that were redeliveries",
        ),
        (
            "acknowledged",
            counts.acknowledged,
            "Deliveries acknowledged by clients",
        ),
        ("confirmed", counts.confirmed, "Publisher confirms sent"),
    ] {
        let full = format!("rabbitmq_global_messages_{name}_total");
        metric(out, &full, "counter", help);
        let _ = writeln!(out, "{full} {value}");
    }
    let connections = state.registry.connections();
    metric(out, "rabbitmq_connections", "gauge", "Open connections");
    let _ = writeln!(out, "rabbitmq_connections {}", connections.len());
    let channels: u64 = connections
        .iter()
        .map(|c| u64::from(c.channel_count()))
        .sum();
    metric(out, "rabbitmq_channels", "gauge", "Open channels");
    let _ = writeln!(out, "rabbitmq_channels {channels}");
}

/// Memory, disk and the alarms.
fn resource_metrics(state: &Management, out: &mut String) {
    let help = "Resident memory of the broker";
    metric(out, "rabbitmq_process_resident_memory_bytes", "gauge", help);
    let rss = alarms::rss_bytes();
    let _ = writeln!(out, "rabbitmq_process_resident_memory_bytes {rss}");
    let disk = alarms::free_disk_bytes(&state.data_dir).unwrap_or(0);
    let help = "Free space on the data directory's disk";
    metric(out, "rabbitmq_disk_space_available_bytes", "gauge", help);
    let _ = writeln!(out, "rabbitmq_disk_space_available_bytes {disk}");
    let alarm = state.alarms.borrow().clone();
    for (name, kind) in [
        ("rabbitmq_alarms_memory_used_watermark", "memory"),
        ("rabbitmq_alarms_free_disk_space_watermark", "disk"),
    ] {
        metric(
            out,
            name,
            "gauge",
            &format!("1 while the {kind} alarm is in effect"),
        );
        let on = alarm.as_deref().is_some_and(|a| a.contains(kind));
        let _ = writeln!(out, "{name} {}", u8::from(on));
    }
}

fn queue_metrics(state: &Management, out: &mut String) {
    let mut ready = String::new();
    let mut unacked = String::new();
    let mut consumers = String::new();
    for name in state.broker.vhost_names() {
        let Some(vhost) = state.broker.vhost(&name) else {
            continue;
        };
        for queue in vhost.queues() {
            let stats = queue.stats();
            let labels = format!(
                "vhost=\"{}\",queue=\"{}\"",
                label(&name),
                label(queue.name.as_str())
            );
            let _ = writeln!(
                ready,
                "rabbitmq_queue_messages_ready{{{labels}}} {}",
                stats.ready
            );
            let _ = writeln!(
                unacked,
                "rabbitmq_queue_messages_unacked{{{labels}}} {}",
                stats.unacked
            );
            let _ = writeln!(
                consumers,
                "rabbitmq_queue_consumers{{{labels}}} {}",
                stats.consumers
            );
        }
    }
    metric(
        out,
        "rabbitmq_queue_messages_ready",
        "gauge",
        "Messages ready to be delivered",
    );
    out.push_str(&ready);
    metric(
        out,
        "rabbitmq_queue_messages_unacked",
        "gauge",
        "Messages delivered and not yet acknowledged",
    );
    out.push_str(&unacked);
    metric(
        out,
        "rabbitmq_queue_consumers",
        "gauge",
        "Consumers of the queue",
    );
    out.push_str(&consumers);
}

/// Delayed messages (`x-delayed-message` exchanges and `x-retry-delays` holds) per vhost:
/// messages held and fired since start, and the bucket files waiting.
fn delayed_metrics(state: &Management, out: &mut String) {
    let mut lines = [String::new(), String::new(), String::new()];
    for name in state.broker.vhost_names() {
        let Some(vhost) = state.broker.vhost(&name) else {
            continue;
        };
        let (held, fired, buckets, _) = vhost.delays().stats();
        let labels = format!("vhost=\"{}\"", label(&name));
        let _ = writeln!(
            lines[0],
            "warren_delayed_messages_held_total{{{labels}}} {held}"
        );
        let _ = writeln!(
            lines[1],
            "warren_delayed_messages_fired_total{{{labels}}} {fired}"
        );
        let _ = writeln!(lines[2], "warren_delayed_buckets{{{labels}}} {buckets}");
    }
    let [held, fired, buckets] = lines;
    let help = "Delayed messages held since start (delayed exchanges and retries)";
    metric(out, "warren_delayed_messages_held_total", "counter", help);
    out.push_str(&held);
    let help = "Delayed messages fired (published when due) since start";
    metric(out, "warren_delayed_messages_fired_total", "counter", help);
    out.push_str(&fired);
    let help = "Bucket files of delayed messages waiting to fire";
    metric(out, "warren_delayed_buckets", "gauge", help);
    out.push_str(&buckets);
}

/// Unauthenticated, as the RabbitMQ plugin's endpoint (bind the management listener to a
/// private address to keep it private).
pub async fn metrics(State(state): State<Arc<Management>>) -> Response {
    let body = tokio::task::spawn_blocking(move || render(&state))
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
