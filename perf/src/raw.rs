//! The raw publisher (`--raw`): its own TCP socket and the project's codec instead of lapin.
//!
//! The handshake is done by hand (PLAIN auth, tune, open, channel 1, confirm.select). Publishing
//! encodes one publish + header + body frame set once as a template; each batch copies the
//! template per message, patches the 16 stamp bytes in place and goes out in one write. A reader
//! task parses confirms (basic.ack / basic.nack, single or multiple) off the socket and opens the
//! confirm window; a channel or connection close from the broker ends the run with its reason.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use lapin::uri::AMQPUri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use warren_protocol::content::{encode_content_header, encode_properties};
use warren_protocol::frame::{encode_frame, parse_frame, FrameType, PROTOCOL_HEADER};
use warren_protocol::method::{
    decode_method, encode_method, encode_publish, Method, Publish, ShortStr,
};
use warren_protocol::spec::{basic, channel, confirm, connection, AMQPClass};
use warren_protocol::types::{FieldTable, LongString};

use crate::message;
use crate::producer::Job;
use crate::stats::Shared;

/// Largest frame we agree to; the broker may ask for less.
const FRAME_MAX: u32 = 131_072;
pub const CHANNEL: u16 = 1;

pub struct RawProducer {
    job: Job,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    read_buf: BytesMut,
    frame_max: u32,
}

fn class_of(method: Method) -> Option<AMQPClass> {
    match method {
        Method::Other(class) => Some(class),
        _ => None,
    }
}

/// Reads the next method frame (skipping heartbeats) during the handshake.
async fn read_method(
    reader: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    frame_max: u32,
) -> Result<AMQPClass, String> {
    loop {
        match parse_frame(buf, frame_max) {
            Ok(Some(frame)) => {
                if frame.frame_type != FrameType::Method {
                    continue;
                }
                let method = decode_method(&frame.payload).map_err(|e| format!("{e}"))?;
                return class_of(method).ok_or_else(|| "unexpected method in handshake".into());
            }
            Ok(None) => {}
            Err(e) => return Err(format!("bad frame from broker: {e}")),
        }
        buf.reserve(4096);
        let n = reader.read_buf(buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("broker closed the connection".into());
        }
    }
}

pub fn close_reason(class: &AMQPClass) -> Option<String> {
    match class {
        AMQPClass::Connection(connection::AMQPMethod::Close(c)) => Some(format!(
            "connection closed by broker: {} {}",
            c.reply_code,
            c.reply_text.as_str()
        )),
        AMQPClass::Channel(channel::AMQPMethod::Close(c)) => Some(format!(
            "channel closed by broker: {} {}",
            c.reply_code,
            c.reply_text.as_str()
        )),
        _ => None,
    }
}

pub async fn send(
    writer: &mut OwnedWriteHalf,
    class: AMQPClass,
    channel: u16,
) -> Result<(), String> {
    let mut out = BytesMut::new();
    encode_method(&mut out, channel, &class);
    writer.write_all(&out).await.map_err(|e| e.to_string())
}

async fn expect(
    reader: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    frame_max: u32,
    what: &str,
    ok: impl Fn(&AMQPClass) -> bool,
) -> Result<AMQPClass, String> {
    let class = read_method(reader, buf, frame_max).await?;
    if let Some(reason) = close_reason(&class) {
        return Err(format!("{what}: {reason}"));
    }
    if !ok(&class) {
        return Err(format!("{what}: unexpected {class:?}"));
    }
    Ok(class)
}

/// An open connection with channel 1 open, as the handshake left it.
pub struct RawConnection {
    pub reader: OwnedReadHalf,
    pub writer: OwnedWriteHalf,
    /// Bytes read past the last handshake frame.
    pub read_buf: BytesMut,
    pub frame_max: u32,
}

impl RawConnection {
    /// Connects, authenticates (PLAIN), tunes (no heartbeats), opens the vhost and channel 1.
    pub async fn open(uri: &str) -> Result<RawConnection, String> {
        let uri = AMQPUri::from_str(uri).map_err(|e| format!("uri: {e}"))?;
        let address = format!("{}:{}", uri.authority.host, uri.authority.port);
        let stream = TcpStream::connect(&address)
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        writer
            .write_all(&PROTOCOL_HEADER)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let min = warren_protocol::frame::FRAME_MIN_SIZE;
        expect(&mut reader, &mut buf, min, "connection.start", |c| {
            matches!(c, AMQPClass::Connection(connection::AMQPMethod::Start(_)))
        })
        .await?;
        let user = &uri.authority.userinfo;
        let response = format!("\0{}\0{}", user.username, user.password);
        let start_ok = connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from(response.into_bytes()),
            locale: "en_US".into(),
        };
        let start_ok = AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok));
        send(&mut writer, start_ok, 0)
            .await
            .map_err(|e| format!("start-ok: {e}"))?;
        let tune = expect(&mut reader, &mut buf, min, "connection.tune", |c| {
            matches!(c, AMQPClass::Connection(connection::AMQPMethod::Tune(_)))
        })
        .await?;
        let AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) = tune else {
            return Err("no connection.tune".into());
        };
        let frame_max = match tune.frame_max {
            0 => FRAME_MAX,
            n => n.min(FRAME_MAX),
        };
        let tune_ok = connection::TuneOk {
            channel_max: tune.channel_max.clamp(1, 16),
            frame_max,
            heartbeat: 0,
        };
        send(
            &mut writer,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune_ok)),
            0,
        )
        .await
        .map_err(|e| format!("tune-ok: {e}"))?;
        let open = connection::Open {
            virtual_host: uri.vhost.as_str().into(),
        };
        send(
            &mut writer,
            AMQPClass::Connection(connection::AMQPMethod::Open(open)),
            0,
        )
        .await
        .map_err(|e| format!("open: {e}"))?;
        expect(&mut reader, &mut buf, frame_max, "connection.open", |c| {
            matches!(c, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))
        })
        .await?;
        let mut raw = RawConnection {
            reader,
            writer,
            read_buf: buf,
            frame_max,
        };
        let open = AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}));
        raw.call(open, "channel.open", |c| {
            matches!(c, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))
        })
        .await?;
        Ok(raw)
    }

    /// Sends a method on channel 1 and waits for the reply `ok` accepts.
    pub async fn call(
        &mut self,
        class: AMQPClass,
        what: &str,
        ok: impl Fn(&AMQPClass) -> bool,
    ) -> Result<AMQPClass, String> {
        send(&mut self.writer, class, CHANNEL)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        expect(
            &mut self.reader,
            &mut self.read_buf,
            self.frame_max,
            what,
            ok,
        )
        .await
    }
}

/// `connection.close` 200, the polite goodbye.
pub fn close_method() -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: 200,
        reply_text: "done".into(),
        class_id: 0,
        method_id: 0,
    }))
}

impl RawProducer {
    pub async fn connect(uri: &str, job: Job) -> Result<RawProducer, String> {
        let id = job.id;
        let fail = |e: String| format!("raw producer {id}: {e}");
        let mut raw = RawConnection::open(uri).await.map_err(fail)?;
        if job.confirm.is_some() {
            let select = confirm::Select { nowait: false };
            let select = AMQPClass::Confirm(confirm::AMQPMethod::Select(select));
            raw.call(select, "confirm.select", |c| {
                matches!(c, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)))
            })
            .await
            .map_err(fail)?;
        }
        Ok(RawProducer {
            job,
            reader: raw.reader,
            writer: raw.writer,
            read_buf: raw.read_buf,
            frame_max: raw.frame_max,
        })
    }

    /// One message's frames with a zeroed stamp, and the offset of the stamp in them.
    fn template(&self) -> (Vec<u8>, usize) {
        let job = &self.job;
        let mut out = BytesMut::new();
        let publish = Publish {
            exchange: ShortStr::copy_from_str(&job.exchange),
            routing_key: ShortStr::copy_from_str(&job.routing_key),
            mandatory: false,
            immediate: false,
        };
        encode_publish(&mut out, CHANNEL, &publish);
        let properties = encode_properties(&job.properties);
        encode_content_header(&mut out, CHANNEL, job.size as u64, &properties);
        let stamp_at = out.len() + warren_protocol::frame::FRAME_HEADER_LEN;
        let body = vec![0u8; job.size];
        let chunk = (self.frame_max as usize - warren_protocol::frame::FRAME_OVERHEAD).max(1);
        for piece in body.chunks(chunk) {
            encode_frame(&mut out, FrameType::Body, CHANNEL, piece);
        }
        (out.to_vec(), stamp_at)
    }

    pub async fn run(
        mut self,
        shared: Arc<Shared>,
        start: Instant,
        deadline: Option<Instant>,
    ) -> Result<(), String> {
        let (template, stamp_at) = self.template();
        let job = self.job.clone();
        let counters = &shared.producers[job.id];
        let window_open = Arc::new(Notify::new());
        let reader = tokio::spawn(read_confirms(
            self.reader,
            self.read_buf,
            self.frame_max,
            shared.clone(),
            job.id,
            window_open.clone(),
        ));
        let mut batch: Vec<u8> = Vec::with_capacity(template.len() * job_batch(&job) as usize);
        let mut sequence = 0u64;
        let mut result = Ok(());
        while !job.done(sequence, deadline, &shared) && !reader.is_finished() {
            let mut n = job_batch(&job);
            if let Some(c) = job.count {
                n = n.min(c - sequence);
            }
            if job.rate > 0.0 {
                let due_now = job.due_count(start);
                if due_now <= sequence {
                    if let Some(due) = job.due(start, sequence) {
                        tokio::time::sleep_until(deadline.map_or(due, |d| due.min(d))).await;
                    }
                    continue;
                }
                n = n.min(due_now - sequence);
            }
            if let Some(window) = job.confirm {
                let settled = counters.confirmed.load(Ordering::Acquire)
                    + counters.nacked.load(Ordering::Acquire);
                let in_flight = sequence - settled.min(sequence);
                if in_flight >= window {
                    let wait = window_open.notified();
                    match deadline {
                        Some(d) => {
                            let _ = tokio::time::timeout_at(d, wait).await;
                        }
                        None => wait.await,
                    }
                    continue;
                }
                n = n.min(window - in_flight);
            }
            batch.clear();
            let now = shared.clock.now();
            for i in 0..n {
                let at = batch.len() + stamp_at;
                batch.extend_from_slice(&template);
                let stamp = &mut batch[at..at + message::STAMP_LEN];
                message::stamp(stamp, job.id as u16, sequence + i, now);
            }
            counters.stamped.store(sequence + n, Ordering::Release);
            if let Err(e) = self.writer.write_all(&batch).await {
                result = Err(format!("raw producer {}: write: {e}", job.id));
                break;
            }
            counters.sent.fetch_add(n, Ordering::Release);
            sequence += n;
            // A socket that always has room never makes write_all wait, and a task that never
            // waits starves the consumers sharing its worker (they sit in its LIFO slot).
            tokio::task::yield_now().await;
        }
        counters
            .finished_at
            .store(shared.clock.now(), Ordering::Relaxed);
        if job.confirm.is_some() {
            let grace = Instant::now() + job.confirm_grace;
            while counters.confirmed.load(Ordering::Acquire)
                + counters.nacked.load(Ordering::Acquire)
                < sequence
                && !reader.is_finished()
            {
                if tokio::time::timeout_at(grace, window_open.notified())
                    .await
                    .is_err()
                {
                    result = result.and(Err(format!(
                        "raw producer {}: confirms still outstanding {:?} after the last publish",
                        job.id, job.confirm_grace
                    )));
                    break;
                }
            }
        }
        let _ = send(&mut self.writer, close_method(), 0).await;
        // Keep the socket open until close-ok: the broker may still be working through publishes
        // it has not read yet (flow control), and closing our side first makes RabbitMQ drop the
        // connection with them ("client unexpectedly closed TCP connection").
        let wait = job.confirm_grace.max(std::time::Duration::from_secs(2));
        let reader_result = tokio::time::timeout(wait, reader).await;
        let result = match reader_result {
            Ok(Ok(Err(e))) => result.and(Err(e)),
            Ok(Ok(Ok(true))) => {
                counters
                    .accepted_at
                    .store(shared.clock.now(), Ordering::Relaxed);
                result
            }
            Ok(_) => result,
            Err(_) => result.and(Err(format!(
                "raw producer {}: no connection.close-ok within {wait:?}",
                job.id
            ))),
        };
        drop(self.writer);
        result
    }
}

fn job_batch(job: &Job) -> u64 {
    job.raw_batch.max(1)
}

/// Confirms seen so far: everything up to `through` is settled, plus single confirms above it.
#[derive(Default)]
struct Settled {
    through: u64,
    above: BTreeSet<u64>,
}

impl Settled {
    /// Settles `tag` (or everything up to it when `multiple`); returns how many were new.
    fn settle(&mut self, tag: u64, multiple: bool) -> u64 {
        if tag <= self.through {
            return 0;
        }
        if multiple {
            let singles = self.above.range(..=tag).count() as u64;
            self.above = self.above.split_off(&(tag + 1));
            let new = tag - self.through - singles;
            self.through = tag;
            return new;
        }
        if !self.above.insert(tag) {
            return 0;
        }
        while self.above.remove(&(self.through + 1)) {
            self.through += 1;
        }
        1
    }
}

async fn read_confirms(
    mut reader: OwnedReadHalf,
    mut buf: BytesMut,
    frame_max: u32,
    shared: Arc<Shared>,
    id: usize,
    window_open: Arc<Notify>,
) -> Result<bool, String> {
    let counters = &shared.producers[id];
    let mut settled = Settled::default();
    loop {
        loop {
            let frame = match parse_frame(&mut buf, frame_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Err(format!("raw producer {id}: bad frame: {e}")),
            };
            if frame.frame_type != FrameType::Method {
                continue;
            }
            let method = decode_method(&frame.payload)
                .map_err(|e| format!("raw producer {id}: bad method: {e}"))?;
            match method {
                Method::Ack(ack) => {
                    let n = settled.settle(ack.delivery_tag, ack.multiple);
                    counters.confirmed.fetch_add(n, Ordering::Release);
                }
                Method::Other(AMQPClass::Basic(basic::AMQPMethod::Nack(nack))) => {
                    let n = settled.settle(nack.delivery_tag, nack.multiple);
                    counters.nacked.fetch_add(n, Ordering::Release);
                }
                Method::Other(AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) => {
                    return Ok(true);
                }
                Method::Other(class) => {
                    if let Some(reason) = close_reason(&class) {
                        window_open.notify_one();
                        return Err(format!("raw producer {id}: {reason}"));
                    }
                }
                Method::Publish(_) => {}
            }
        }
        window_open.notify_one();
        buf.reserve(64 * 1024);
        match reader.read_buf(&mut buf).await {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(format!("raw producer {id}: read: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settles_single_and_multiple_confirms() {
        let mut s = Settled::default();
        assert_eq!(s.settle(2, false), 1);
        assert_eq!(s.settle(1, false), 1);
        assert_eq!(s.through, 2);
        assert_eq!(s.settle(5, false), 1);
        assert_eq!(s.settle(6, true), 3); // 3, 4, 6 (5 was already settled)
        assert_eq!(s.through, 6);
        assert!(s.above.is_empty());
        assert_eq!(s.settle(6, true), 0);
    }
}
