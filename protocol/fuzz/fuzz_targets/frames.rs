//! Fuzz target `frames`: the input is a byte stream as a peer would send it after the protocol
//! header. The first two bytes choose `frame_max` (at least 4096, at most 4096 + 65535); the rest is
//! fed to the `parse_frame` loop the broker runs, in chunks whose sizes come from the input, so that
//! both "need more bytes" and complete frames are exercised. Every method frame goes through
//! `decode_method`, every content header through `decode_content_header` and, when that accepts it,
//! through `decode_properties`, `delivery_mode` and `priority`.
//!
//! Besides "no panic, no stack overflow, no runaway allocation", it checks the parser's contract:
//! a frame is only ever cut when complete, its payload is within `frame_max - 8`, and a method that
//! decodes re-encodes to a frame that decodes and re-encodes to the same bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warren_protocol::content::decode_content_header;
use warren_protocol::frame::{parse_frame, FrameType, FRAME_MIN_SIZE, FRAME_OVERHEAD};
use warren_protocol::method::{decode_method, encode_ack, encode_method, encode_publish, Method};

fn encode(method: &Method, channel: u16) -> BytesMut {
    let mut out = BytesMut::new();
    match method {
        Method::Publish(p) => encode_publish(&mut out, channel, p),
        Method::Ack(a) => encode_ack(&mut out, channel, a),
        Method::Other(class) => encode_method(&mut out, channel, class),
    }
    out
}

/// A decoded method re-encodes to a frame that decodes and re-encodes to the same bytes. (Bytes,
/// not values: a float field table value may be NaN, which is not equal to itself.)
fn check_reencode(method: &Method, channel: u16) {
    let first = encode(method, channel);
    let mut buf = first.clone();
    let frame = parse_frame(&mut buf, u32::MAX)
        .expect("re-encoded frame parses")
        .expect("re-encoded frame is complete");
    assert!(buf.is_empty());
    let again = decode_method(&frame.payload).expect("re-encoded method decodes");
    assert_eq!(again.ids(), method.ids());
    assert_eq!(encode(&again, channel), first);
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let frame_max = FRAME_MIN_SIZE + u32::from(u16::from_be_bytes([data[0], data[1]]));
    // Feed the stream in chunks of 1..=256 bytes (chunk size from the third byte), as reads would.
    let chunk = usize::from(data[2]) + 1;
    let stream = &data[3..];

    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut consumed = 0;
    'feed: while fed < stream.len() {
        let next = (fed + chunk).min(stream.len());
        buf.extend_from_slice(&stream[fed..next]);
        fed = next;
        loop {
            let before = buf.len();
            let frame = match parse_frame(&mut buf, frame_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    assert_eq!(buf.len(), before, "an incomplete frame consumed bytes");
                    break;
                }
                // A malformed stream: the broker closes the connection here.
                Err(_) => break 'feed,
            };
            let size = frame.payload.len();
            assert!(size <= frame_max as usize - FRAME_OVERHEAD);
            assert_eq!(before - buf.len(), size + FRAME_OVERHEAD);
            consumed += size + FRAME_OVERHEAD;
            match frame.frame_type {
                FrameType::Method => {
                    if let Ok(method) = decode_method(&frame.payload) {
                        let _ = method.ids();
                        check_reencode(&method, frame.channel);
                    }
                }
                FrameType::Header => {
                    if let Ok(header) = decode_content_header(&frame.payload) {
                        let _ = header.delivery_mode();
                        let _ = header.priority();
                        let _ = header.decode_properties();
                    }
                }
                FrameType::Body | FrameType::Heartbeat => {}
            }
        }
    }
    assert!(consumed <= stream.len());
});
