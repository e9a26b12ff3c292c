//! The frame envelope: `type:u8 channel:u16 size:u32 payload[size] 0xCE`.
//!
//! Owns the frame layout and nothing else: [`parse_frame`] cuts one complete frame off the front of a
//! read buffer (the payload is a zero-copy [`Bytes`] slice of it), and the `begin`/`end` pair writes
//! one frame into an output buffer without a scratch copy. It never looks inside a payload.
//!
//! Untrusted sizes: the size field is checked against `frame_max` *before* the parser asks for more
//! bytes, so a peer can never make the reader buffer more than `frame_max` bytes for one frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nom::number::streaming::{be_u16, be_u32, be_u8};
use nom::{IResult, Parser};

use crate::error::FrameError;

/// What a client sends first: `AMQP` 0 0 9 1. The server answers a mismatch with this header.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// type + channel + size.
pub const FRAME_HEADER_LEN: usize = 7;
/// Header plus the frame-end octet: what a frame adds around its payload.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + 1;
/// The smallest `frame_max` a peer may negotiate, and the limit before `connection.tune-ok`.
pub const FRAME_MIN_SIZE: u32 = 4096;

/// The four frame types of AMQP 0-9-1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    Method = 1,
    Header = 2,
    Body = 3,
    Heartbeat = 8,
}

impl FrameType {
    fn from_octet(octet: u8) -> Option<FrameType> {
        match octet {
            1 => Some(FrameType::Method),
            2 => Some(FrameType::Header),
            3 => Some(FrameType::Body),
            8 => Some(FrameType::Heartbeat),
            _ => None,
        }
    }
}

/// One frame cut from the read buffer. `payload` shares the buffer's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub frame_type: FrameType,
    pub channel: u16,
    pub payload: Bytes,
}

/// Outcome of looking at the first bytes a client sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolHeader {
    /// Fewer bytes than needed to decide.
    Incomplete,
    /// `AMQP 0 0 9 1`; the 8 bytes have been consumed.
    Accepted,
    /// Anything else: answer with [`PROTOCOL_HEADER`] and close.
    Rejected,
}

/// Checks the protocol header at the front of `buf`, consuming it when it is accepted. A prefix that
/// already differs is rejected at once, without waiting for all 8 bytes.
pub fn parse_protocol_header(buf: &mut BytesMut) -> ProtocolHeader {
    let seen = buf.len().min(PROTOCOL_HEADER.len());
    if buf[..seen] != PROTOCOL_HEADER[..seen] {
        return ProtocolHeader::Rejected;
    }
    if seen < PROTOCOL_HEADER.len() {
        return ProtocolHeader::Incomplete;
    }
    let _ = buf.split_to(PROTOCOL_HEADER.len());
    ProtocolHeader::Accepted
}

fn frame_header(input: &[u8]) -> IResult<&[u8], (u8, u16, u32)> {
    (be_u8, be_u16, be_u32).parse(input)
}

/// Cuts the next complete frame off the front of `buf`.
///
/// - `Ok(Some(frame))`: one frame, removed from `buf`;
/// - `Ok(None)`: `buf` holds only part of a frame (nothing consumed; read more and call again);
/// - `Err(_)`: the bytes can never become a valid frame (bad type, size over `frame_max`, bad end).
pub fn parse_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, FrameError> {
    // The header is three fixed-width integers, read directly (this runs three times per
    // published message; nom's combinators cost several times as much here).
    let Some(&[frame_type, c0, c1, s0, s1, s2, s3]) = buf.get(..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let channel = u16::from_be_bytes([c0, c1]);
    let size = u32::from_be_bytes([s0, s1, s2, s3]);
    let frame_type =
        FrameType::from_octet(frame_type).ok_or(FrameError::UnknownType(frame_type))?;
    let max_payload = frame_max.saturating_sub(FRAME_OVERHEAD as u32);
    if size > max_payload {
        return Err(FrameError::TooLarge { size, frame_max });
    }
    let total = FRAME_OVERHEAD + size as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let end = buf[total - 1];
    if end != FRAME_END {
        return Err(FrameError::BadFrameEnd { found: end });
    }
    // One split (the payload) instead of cutting the frame and then its header off it.
    buf.advance(FRAME_HEADER_LEN);
    let payload = buf.split_to(size as usize).freeze();
    buf.advance(1);
    Ok(Some(Frame {
        frame_type,
        channel,
        payload,
    }))
}

/// Bytes still needed to complete the frame at the front of `buf` (at least 1 when incomplete);
/// lets a reader reserve room for a large frame in one step. Assumes the size was already checked.
pub fn bytes_needed(buf: &[u8]) -> usize {
    match frame_header(buf) {
        Ok((_, (_, _, size))) => (FRAME_OVERHEAD + size as usize).saturating_sub(buf.len()),
        Err(_) => FRAME_HEADER_LEN - buf.len().min(FRAME_HEADER_LEN),
    }
}

/// Starts a frame in `out`; the caller appends the payload and then calls [`end_frame`] with the
/// returned position. Writing in place avoids a scratch buffer per frame.
pub fn begin_frame(out: &mut BytesMut, frame_type: FrameType, channel: u16) -> usize {
    let start = out.len();
    out.put_u8(frame_type as u8);
    out.put_u16(channel);
    out.put_u32(0);
    start
}

/// Finishes the frame begun at `start`: patches its size and appends the frame-end octet.
pub fn end_frame(out: &mut BytesMut, start: usize) {
    let size = (out.len() - start - FRAME_HEADER_LEN) as u32;
    out[start + 3..start + 7].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

/// Writes a whole frame with the given payload.
pub fn encode_frame(out: &mut BytesMut, frame_type: FrameType, channel: u16, payload: &[u8]) {
    out.reserve(FRAME_OVERHEAD + payload.len());
    out.put_u8(frame_type as u8);
    out.put_u16(channel);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.put_u8(FRAME_END);
}

/// Writes a heartbeat frame (always on channel 0, empty payload).
pub fn encode_heartbeat(out: &mut BytesMut) {
    encode_frame(out, FrameType::Heartbeat, 0, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes(frame_type: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
        let mut v = vec![frame_type];
        v.extend_from_slice(&channel.to_be_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v.push(end);
        v
    }

    #[test]
    fn protocol_header_accepts_only_0_9_1() {
        let mut buf = BytesMut::from(&b"AMQP\x00\x00\x09\x01rest"[..]);
        assert_eq!(parse_protocol_header(&mut buf), ProtocolHeader::Accepted);
        assert_eq!(&buf[..], b"rest");
        let mut partial = BytesMut::from(&b"AMQ"[..]);
        assert_eq!(
            parse_protocol_header(&mut partial),
            ProtocolHeader::Incomplete
        );
        let mut old = BytesMut::from(&b"AMQP\x01\x01\x00\x09"[..]);
        assert_eq!(parse_protocol_header(&mut old), ProtocolHeader::Rejected);
        let mut http = BytesMut::from(&b"GE"[..]);
        assert_eq!(parse_protocol_header(&mut http), ProtocolHeader::Rejected);
    }

    #[test]
    fn parses_back_to_back_frames_and_leaves_the_rest() {
        let mut wire = frame_bytes(1, 7, b"abc", FRAME_END);
        wire.extend(frame_bytes(8, 0, b"", FRAME_END));
        wire.extend_from_slice(&[3, 0]);
        let mut buf = BytesMut::from(&wire[..]);
        let f = parse_frame(&mut buf, 4096).unwrap().unwrap();
        assert_eq!(
            (f.frame_type, f.channel, &f.payload[..]),
            (FrameType::Method, 7, &b"abc"[..])
        );
        let f = parse_frame(&mut buf, 4096).unwrap().unwrap();
        assert_eq!(f.frame_type, FrameType::Heartbeat);
        assert_eq!(parse_frame(&mut buf, 4096), Ok(None));
        assert_eq!(&buf[..], &[3, 0]);
    }

    #[test]
    fn every_split_point_is_incomplete_until_the_last_byte() {
        let wire = frame_bytes(3, 1, &[9u8; 40], FRAME_END);
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(parse_frame(&mut buf, 4096), Ok(None), "cut at {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed at {cut}");
            assert!(bytes_needed(&buf) >= 1);
            // Until the header is complete, only the header is known to be missing.
            let expected_total = if cut < FRAME_HEADER_LEN {
                FRAME_HEADER_LEN
            } else {
                wire.len()
            };
            assert_eq!(bytes_needed(&buf) + cut, expected_total, "cut at {cut}");
        }
        let mut buf = BytesMut::from(&wire[..]);
        assert!(parse_frame(&mut buf, 4096).unwrap().is_some());
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_bad_end_octet() {
        let mut buf = BytesMut::from(&frame_bytes(1, 0, b"abcd", 0x00)[..]);
        assert_eq!(
            parse_frame(&mut buf, 4096),
            Err(FrameError::BadFrameEnd { found: 0 })
        );
    }

    #[test]
    fn rejects_oversize_before_the_payload_arrives() {
        // Only the 7 header bytes, announcing 4089 bytes: one more than frame_max 4096 allows.
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0, 0, 0x0F, 0xF9][..]);
        assert_eq!(
            parse_frame(&mut buf, 4096),
            Err(FrameError::TooLarge {
                size: 4089,
                frame_max: 4096
            })
        );
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF][..]);
        assert!(matches!(
            parse_frame(&mut buf, 131_072),
            Err(FrameError::TooLarge { .. })
        ));
        // Exactly frame_max is fine.
        let mut buf = BytesMut::from(&frame_bytes(3, 1, &[0u8; 4088], FRAME_END)[..]);
        assert!(parse_frame(&mut buf, 4096).unwrap().is_some());
    }

    #[test]
    fn rejects_unknown_frame_type() {
        let mut buf = BytesMut::from(&frame_bytes(4, 0, b"", FRAME_END)[..]);
        assert_eq!(parse_frame(&mut buf, 4096), Err(FrameError::UnknownType(4)));
    }

    #[test]
    fn begin_end_frame_matches_encode_frame() {
        let mut a = BytesMut::new();
        let start = begin_frame(&mut a, FrameType::Body, 3);
        a.put_slice(b"payload");
        end_frame(&mut a, start);
        let mut b = BytesMut::new();
        encode_frame(&mut b, FrameType::Body, 3, b"payload");
        assert_eq!(a, b);
        let mut hb = BytesMut::new();
        encode_heartbeat(&mut hb);
        assert_eq!(&hb[..], &[8, 0, 0, 0, 0, 0, 0, FRAME_END]);
    }
}
