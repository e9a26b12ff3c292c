//! The raw consumer (`--raw-consume`): its own TCP socket and the project's codec instead of
//! lapin, so that consuming costs the tool a few hundred ns per message instead of ~30-40 us.
//!
//! After the handshake ([`RawConnection::open`]) it sends `basic.qos` (with `--qos`) and
//! `basic.consume` (no-ack or manual), then reads into one large buffer and cuts every complete
//! frame out of each read with [`DeliveryParser`]: `basic.deliver`, the content header and the body
//! frames of a message become one [`Delivery`], whose first 16 body bytes (the stamp) go to the
//! same accounting as lapin's deliveries. A frame cut by the end of a read stays in the buffer for
//! the next one; a body cut into several frames is assembled by the parser's state. With manual
//! acks, one `basic.ack` (`multiple=true`, or single with `--multi-ack-every 1`) is encoded every N
//! deliveries and the acks of one read go out in one write after it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Duration, Instant};
use warren_protocol::frame::{FRAME_END, FRAME_HEADER_LEN, FRAME_OVERHEAD};
use warren_protocol::method::{decode_method, encode_ack, Ack, Method, CLASS_BASIC};
use warren_protocol::spec::{basic, connection, AMQPClass};

use crate::consumer::Settings;
use crate::message::STAMP_LEN;
use crate::raw::{close_method, close_reason, send, RawConnection, CHANNEL};
use crate::stats::Shared;

/// Bytes asked of the socket per read (plus room for one more frame).
const READ_BUF: usize = 256 * 1024;
const BASIC_DELIVER: u16 = 60;

/// One message: `basic.deliver` + content header + body, reduced to what the tool checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub tag: u64,
    pub redelivered: bool,
    pub body_size: u64,
    head: [u8; STAMP_LEN],
    head_len: usize,
}

impl Delivery {
    /// The first (up to 16) body bytes: the stamp.
    pub fn head(&self) -> &[u8] {
        &self.head[..self.head_len]
    }
}

/// What the parser hands out.
#[derive(Debug, PartialEq)]
pub enum Event {
    Delivery(Delivery),
    /// Any other method (decoded by the codec): cancel, close, close-ok, ...
    Method(AMQPClass),
}

/// Where the parser is within a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between messages: expecting a method frame.
    Idle,
    /// After `basic.deliver`: expecting the content header.
    Header { tag: u64, redelivered: bool },
    /// Reading body frames, `left` bytes to go.
    Body { delivery: Delivery, left: u64 },
}

/// Cuts frames off a byte stream and assembles deliveries; keeps its state between reads.
pub struct DeliveryParser {
    frame_max: u32,
    state: State,
}

fn short_str(payload: &[u8], at: usize) -> Option<usize> {
    let len = *payload.get(at)? as usize;
    let end = at + 1 + len;
    (end <= payload.len()).then_some(end)
}

/// (delivery tag, redelivered) from a `basic.deliver` payload (class and method ids included).
fn decode_deliver(payload: &[u8]) -> Option<(u64, bool)> {
    let at = short_str(payload, 4)?; // consumer tag
    let tag = u64::from_be_bytes(payload.get(at..at + 8)?.try_into().ok()?);
    let redelivered = *payload.get(at + 8)? & 1 != 0;
    let at = short_str(payload, at + 9)?; // exchange
    let at = short_str(payload, at)?; // routing key
    (at == payload.len()).then_some((tag, redelivered))
}

impl DeliveryParser {
    pub fn new(frame_max: u32) -> DeliveryParser {
        DeliveryParser {
            frame_max,
            state: State::Idle,
        }
    }

    /// Handles every complete frame at the front of `input`, calling `on` for each finished
    /// delivery or other method; returns how many bytes it consumed. A frame cut short by the end
    /// of `input` is left unconsumed: call again with it at the front and more bytes behind it.
    pub fn parse(
        &mut self,
        input: &[u8],
        mut on: impl FnMut(Event) -> Result<(), String>,
    ) -> Result<usize, String> {
        let mut at = 0;
        while input.len() - at >= FRAME_HEADER_LEN {
            let header = &input[at..at + FRAME_HEADER_LEN];
            let kind = header[0];
            let channel = u16::from_be_bytes([header[1], header[2]]);
            let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
            if size > self.frame_max.saturating_sub(FRAME_OVERHEAD as u32) {
                return Err(format!(
                    "frame of {size} bytes exceeds frame_max {}",
                    self.frame_max
                ));
            }
            let total = FRAME_OVERHEAD + size as usize;
            if input.len() - at < total {
                break;
            }
            let frame = &input[at..at + total];
            if frame[total - 1] != FRAME_END {
                return Err(format!("bad frame end {:#04x}", frame[total - 1]));
            }
            let payload = &frame[FRAME_HEADER_LEN..total - 1];
            at += total;
            self.frame(kind, channel, payload, &mut on)?;
        }
        Ok(at)
    }

    fn frame(
        &mut self,
        kind: u8,
        channel: u16,
        payload: &[u8],
        on: &mut impl FnMut(Event) -> Result<(), String>,
    ) -> Result<(), String> {
        match (kind, self.state) {
            (1, State::Idle) => {
                if payload.len() >= 4
                    && u16::from_be_bytes([payload[0], payload[1]]) == CLASS_BASIC
                    && u16::from_be_bytes([payload[2], payload[3]]) == BASIC_DELIVER
                {
                    let (tag, redelivered) =
                        decode_deliver(payload).ok_or("malformed basic.deliver")?;
                    self.state = State::Header { tag, redelivered };
                    return Ok(());
                }
                match decode_method(&Bytes::copy_from_slice(payload)) {
                    Ok(Method::Other(class)) => on(Event::Method(class)),
                    Ok(other) => Err(format!(
                        "unexpected method {:?} on channel {channel}",
                        other.ids()
                    )),
                    Err(e) => Err(format!("bad method on channel {channel}: {e}")),
                }
            }
            (2, State::Header { tag, redelivered }) => {
                let size = payload
                    .get(4..12)
                    .ok_or("content header truncated")?
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| "content header truncated")?;
                let delivery = Delivery {
                    tag,
                    redelivered,
                    body_size: size,
                    head: [0; STAMP_LEN],
                    head_len: 0,
                };
                if size == 0 {
                    self.state = State::Idle;
                    return on(Event::Delivery(delivery));
                }
                self.state = State::Body {
                    delivery,
                    left: size,
                };
                Ok(())
            }
            (3, State::Body { mut delivery, left }) => {
                let len = payload.len() as u64;
                if len > left {
                    return Err(format!(
                        "body frame of {len} bytes, only {left} left of the body"
                    ));
                }
                let room = STAMP_LEN - delivery.head_len;
                let take = room.min(payload.len());
                delivery.head[delivery.head_len..delivery.head_len + take]
                    .copy_from_slice(&payload[..take]);
                delivery.head_len += take;
                if len == left {
                    self.state = State::Idle;
                    return on(Event::Delivery(delivery));
                }
                self.state = State::Body {
                    delivery,
                    left: left - len,
                };
                Ok(())
            }
            (8, _) => Ok(()), // heartbeat
            (kind, state) => Err(format!(
                "frame type {kind} on channel {channel} unexpected in state {state:?}"
            )),
        }
    }
}

pub struct RawConsumer {
    settings: Settings,
    raw: RawConnection,
}

impl RawConsumer {
    pub async fn connect(uri: &str, settings: Settings) -> Result<RawConsumer, String> {
        let id = settings.id;
        let fail = |e: String| format!("raw consumer {id}: {e}");
        let mut raw = RawConnection::open(uri).await.map_err(fail)?;
        if settings.qos > 0 {
            let qos = basic::Qos {
                prefetch_count: settings.qos,
                global: false,
            };
            raw.call(
                AMQPClass::Basic(basic::AMQPMethod::Qos(qos)),
                "basic.qos",
                |c| matches!(c, AMQPClass::Basic(basic::AMQPMethod::QosOk(_))),
            )
            .await
            .map_err(fail)?;
        }
        let consume = basic::Consume {
            queue: settings.queue_name.as_str().into(),
            consumer_tag: format!("perf-c-{id}").into(),
            no_local: false,
            no_ack: settings.auto_ack,
            exclusive: false,
            nowait: false,
            arguments: settings.arguments.clone(),
        };
        let what = format!("basic.consume {}", settings.queue_name);
        raw.call(
            AMQPClass::Basic(basic::AMQPMethod::Consume(consume)),
            &what,
            |c| matches!(c, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))),
        )
        .await
        .map_err(fail)?;
        Ok(RawConsumer { settings, raw })
    }

    /// Consumes until `stop` turns true; acks what is left and closes.
    pub async fn run(
        self,
        shared: Arc<Shared>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), String> {
        let RawConsumer { settings: s, raw } = self;
        let RawConnection {
            mut reader,
            mut writer,
            read_buf,
            frame_max,
        } = raw;
        let id = s.id;
        let mut parser = DeliveryParser::new(frame_max);
        let mut buf = vec![0u8; READ_BUF.max(frame_max as usize) + frame_max as usize];
        // Deliveries may have followed consume-ok in the handshake's last read.
        buf[..read_buf.len()].copy_from_slice(&read_buf);
        let mut end = read_buf.len();
        let mut out = BytesMut::with_capacity(4096);
        let mut unacked = 0u64;
        let mut last_tag = 0u64;
        let every = s.multi_ack_every.max(1);
        let mut result = Ok(());
        let mut closed = false;
        loop {
            let mut on = |event| match event {
                Event::Delivery(d) => {
                    shared.on_delivery(id, s.queue, d.head(), d.redelivered, &s.routed);
                    if !s.auto_ack {
                        unacked += 1;
                        last_tag = d.tag;
                        if unacked >= every {
                            let ack = Ack {
                                delivery_tag: d.tag,
                                multiple: every > 1,
                            };
                            encode_ack(&mut out, CHANNEL, &ack);
                            unacked = 0;
                        }
                    }
                    Ok(())
                }
                Event::Method(AMQPClass::Basic(basic::AMQPMethod::Cancel(_))) => {
                    Err("cancelled by the broker".to_string())
                }
                Event::Method(class) => {
                    Err(close_reason(&class).unwrap_or_else(|| format!("unexpected {class:?}")))
                }
            };
            let used = match parser.parse(&buf[..end], &mut on) {
                Ok(used) => used,
                Err(e) => {
                    result = Err(format!("raw consumer {id}: {e}"));
                    closed = e.contains("connection closed by broker");
                    break;
                }
            };
            // Keep the unparsed tail (part of one frame) at the front.
            buf.copy_within(used..end, 0);
            end -= used;
            if !out.is_empty() {
                if let Err(e) = writer.write_all(&out).await {
                    result = Err(format!("raw consumer {id}: write: {e}"));
                    closed = true;
                    break;
                }
                out.clear();
            }
            let read_end = (end + READ_BUF).min(buf.len());
            let n = tokio::select! {
                n = reader.read(&mut buf[end..read_end]) => n,
                _ = stop.wait_for(|stop| *stop) => break,
            };
            match n {
                Ok(0) => {
                    result = Err(format!("raw consumer {id}: broker closed the connection"));
                    closed = true;
                    break;
                }
                Ok(n) => end += n,
                Err(e) => {
                    result = Err(format!("raw consumer {id}: read: {e}"));
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            return result;
        }
        if unacked > 0 && result.is_ok() {
            let ack = Ack {
                delivery_tag: last_tag,
                multiple: true,
            };
            encode_ack(&mut out, CHANNEL, &ack);
        }
        let _ = writer.write_all(&out).await;
        let _ = send(&mut writer, close_method(), 0).await;
        // Read (and drop) until close-ok, briefly.
        let give_up = Instant::now() + Duration::from_secs(2);
        end = 0;
        while let Ok(Ok(n)) = tokio::time::timeout_at(give_up, reader.read(&mut buf[end..])).await {
            if n == 0 {
                break;
            }
            end += n;
            let mut close_ok = false;
            let used = parser.parse(&buf[..end], |event| {
                if let Event::Method(AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) =
                    event
                {
                    close_ok = true;
                }
                Ok(())
            });
            let Ok(used) = used else { break };
            if close_ok {
                break;
            }
            buf.copy_within(used..end, 0);
            end -= used;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_protocol::content::encode_content_header;
    use warren_protocol::frame::{encode_frame, encode_heartbeat, FrameType};
    use warren_protocol::method::{encode_deliver, encode_method, Deliver};

    /// One delivery whose body goes out in frames of `chunk` bytes (the codec's split when
    /// `chunk` is `frame_max - 8`).
    fn message(out: &mut BytesMut, tag: u64, body: &[u8], chunk: usize) {
        let deliver = Deliver {
            consumer_tag: b"perf-c-0",
            delivery_tag: tag,
            redelivered: tag.is_multiple_of(2),
            exchange: b"",
            routing_key: b"perf-q-0",
        };
        encode_deliver(out, CHANNEL, &deliver);
        encode_content_header(out, CHANNEL, body.len() as u64, &[0, 0]);
        for piece in body.chunks(chunk) {
            encode_frame(out, FrameType::Body, CHANNEL, piece);
        }
    }

    const FRAME_MAX: u32 = 4096;

    /// Messages of 16, 0, 5, 100, 40, 10,000 and 16 bytes (a heartbeat after the third), bodies
    /// cut into frames of `chunk` bytes.
    fn stream(chunk: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut out = BytesMut::new();
        let bodies: Vec<Vec<u8>> = [16usize, 0, 5, 100, 40, 10_000, 16]
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|b| (b * 7 + i) as u8).collect())
            .collect();
        for (i, body) in bodies.iter().enumerate() {
            message(&mut out, i as u64 + 1, body, chunk);
            if i == 2 {
                encode_heartbeat(&mut out);
            }
        }
        (out.to_vec(), bodies)
    }

    /// Feeds `input` in pieces of `step` bytes, keeping the unconsumed tail like the reader does.
    fn feed(parser: &mut DeliveryParser, input: &[u8], step: usize) -> Vec<Event> {
        let mut events = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in input.chunks(step) {
            pending.extend_from_slice(piece);
            let used = parser
                .parse(&pending, |e| {
                    events.push(e);
                    Ok(())
                })
                .expect("parses");
            pending.drain(..used);
        }
        assert!(pending.is_empty(), "{} bytes left over", pending.len());
        events
    }

    fn check(events: &[Event], bodies: &[Vec<u8>]) {
        assert_eq!(events.len(), bodies.len());
        for (i, (event, body)) in events.iter().zip(bodies).enumerate() {
            let Event::Delivery(d) = event else {
                panic!("not a delivery: {event:?}")
            };
            assert_eq!(d.tag, i as u64 + 1);
            assert_eq!(d.redelivered, d.tag.is_multiple_of(2));
            assert_eq!(d.body_size, body.len() as u64);
            assert_eq!(d.head(), &body[..body.len().min(STAMP_LEN)]);
        }
    }

    #[test]
    fn frames_split_across_reads() {
        let chunk = FRAME_MAX as usize - FRAME_OVERHEAD;
        let (input, bodies) = stream(chunk);
        for step in [1, 2, 3, 7, 8, 13, 64, 4095, 4097, input.len()] {
            let mut parser = DeliveryParser::new(FRAME_MAX);
            check(&feed(&mut parser, &input, step), &bodies);
        }
    }

    #[test]
    fn bodies_split_over_frames() {
        // Body frames of 5 bytes: the 16-byte stamp spans four frames, 10,000 bytes take 2,000.
        // Also with the frames themselves split across reads.
        let (input, bodies) = stream(5);
        for step in [1, 6, 19, 1000, input.len()] {
            let mut parser = DeliveryParser::new(FRAME_MAX);
            check(&feed(&mut parser, &input, step), &bodies);
        }
    }

    #[test]
    fn passes_other_methods_and_rejects_garbage() {
        let mut out = BytesMut::new();
        let cancel = basic::Cancel {
            consumer_tag: "perf-c-0".into(),
            nowait: true,
        };
        encode_method(
            &mut out,
            CHANNEL,
            &AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)),
        );
        let mut parser = DeliveryParser::new(4096);
        let events = feed(&mut parser, &out, 3);
        assert!(matches!(
            events.as_slice(),
            [Event::Method(AMQPClass::Basic(basic::AMQPMethod::Cancel(
                _
            )))]
        ));
        // A body frame with no delivery before it.
        let mut out = BytesMut::new();
        encode_frame(&mut out, FrameType::Body, CHANNEL, b"x");
        assert!(parser.parse(&out, |_| Ok(())).is_err());
        // A frame over frame_max is refused before its payload arrives.
        let mut parser = DeliveryParser::new(4096);
        assert!(parser.parse(&[3, 0, 1, 0, 1, 0, 0], |_| Ok(())).is_err());
    }
}
