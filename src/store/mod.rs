//! The message store: what survives a restart. Knows bytes and files, never AMQP.
//!
//! - [`log`]: one append-only, segmented log per durable queue (its persistent messages, their
//!   acks), with CRC-checked records and recovery that cuts a torn tail.
//! - [`sync`]: group commit: one `fsync` covers every write made before it, and whoever waits on
//!   it (a publisher confirm) is told once it is done.
//! - [`definitions`]: the durable topology (exchanges, queues, bindings) as a small append-only
//!   log, rewritten whole at start.
//!
//! Layout under `--data-dir`:
//!
//! ```text
//! definitions              durable exchanges, queues, bindings (records, see definitions.rs)
//! queues/<id>/             one directory per durable queue (<id>: 16 hex digits of a hash of
//!                          vhost and name; the queue's names are in its first record)
//!   msgs.0000000001 …      segments: records appended, sealed when full
//!   acks.0000000001 …      per segment: offsets of records settled
//! ```

pub mod log;
