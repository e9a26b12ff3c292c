//! Content: the header frame (`class-id weight body-size property-flags properties`) and the body
//! frames that follow it.
//!
//! The broker carries properties byte-for-byte: [`ContentHeader::properties`] is the raw
//! `flags + property list` slice of the frame, checked once by a bounded walk at decode and written
//! back unchanged on delivery. Single properties are read from it on demand, without decoding the
//! rest; [`ContentHeader::decode_properties`] gives `amq-protocol`'s full `BasicProperties`.
//! Bodies are split into frames of at most `frame_max - 8` payload bytes.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::frame::{begin_frame, encode_frame, end_frame, FrameType, FRAME_OVERHEAD};
use crate::method::CLASS_BASIC;
use crate::spec::basic::{gen_properties, parse_properties};
use crate::spec::BasicProperties;
use crate::table::{check_short_string, check_table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ContentError {
    #[error("content header truncated")]
    Truncated,
    #[error("content header weight must be 0, got {0}")]
    Weight(u16),
    #[error("content header for class {0}, only basic (60) carries content")]
    Class(u16),
    #[error("malformed content properties")]
    Properties,
}

/// A content header, its properties kept as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentHeader {
    pub class_id: u16,
    pub body_size: u64,
    /// Property flags and property list, exactly as on the wire.
    pub properties: Bytes,
}

/// How each basic property is encoded, from flag bit 15 down to bit 2.
#[derive(Clone, Copy)]
enum PropKind {
    ShortString,
    Table,
    Octet,
    Timestamp,
}

const BASIC_PROPERTIES: [PropKind; 14] = {
    use PropKind::*;
    [
        ShortString, // content-type
        ShortString, // content-encoding
        Table,       // headers
        Octet,       // delivery-mode
        Octet,       // priority
        ShortString, // correlation-id
        ShortString, // reply-to
        ShortString, // expiration
        ShortString, // message-id
        Timestamp,   // timestamp
        ShortString, // type
        ShortString, // user-id
        ShortString, // app-id
        ShortString, // cluster-id (deprecated)
    ]
};
const HEADERS: usize = 2;
const DELIVERY_MODE: usize = 3;
const PRIORITY: usize = 4;

/// Walks the property list; calls `visit(index, value bytes)` for each present property.
fn walk_properties<'a>(
    properties: &'a [u8],
    mut visit: impl FnMut(usize, &'a [u8]),
) -> Result<(), ContentError> {
    let flags = properties.get(..2).ok_or(ContentError::Properties)?;
    let flags = u16::from_be_bytes([flags[0], flags[1]]);
    if flags & 0b11 != 0 {
        // Bit 0 would announce more flag words, bit 1 a 15th property: basic has neither.
        return Err(ContentError::Properties);
    }
    let mut rest = &properties[2..];
    for (index, kind) in BASIC_PROPERTIES.iter().enumerate() {
        if flags & (1 << (15 - index)) == 0 {
            continue;
        }
        let after = match kind {
            PropKind::ShortString => {
                check_short_string(rest).map_err(|_| ContentError::Properties)?
            }
            PropKind::Table => check_table(rest, 0).map_err(|_| ContentError::Properties)?,
            PropKind::Octet => rest.get(1..).ok_or(ContentError::Properties)?,
            PropKind::Timestamp => rest.get(8..).ok_or(ContentError::Properties)?,
        };
        visit(index, &rest[..rest.len() - after.len()]);
        rest = after;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(ContentError::Properties)
    }
}

impl ContentHeader {
    fn octet_property(&self, wanted: usize) -> Option<u8> {
        let mut found = None;
        let _ = walk_properties(&self.properties, |index, value| {
            if index == wanted {
                found = value.first().copied();
            }
        });
        found
    }

    /// delivery-mode (1 transient, 2 persistent), if set.
    pub fn delivery_mode(&self) -> Option<u8> {
        self.octet_property(DELIVERY_MODE)
    }

    /// priority, if set.
    pub fn priority(&self) -> Option<u8> {
        self.octet_property(PRIORITY)
    }

    /// All properties, decoded by `amq-protocol` (allocates; not for the per-message path).
    ///
    /// The fields are public, so the properties may not have come through
    /// [`decode_content_header`] (a header built by hand, or read back from storage): they are
    /// walked again here, so that a deeply nested `headers` table never reaches `amq-protocol`'s
    /// unbounded recursive parser.
    pub fn decode_properties(&self) -> Result<BasicProperties, ContentError> {
        walk_properties(&self.properties, |_, _| {})?;
        match parse_properties(&self.properties[..]) {
            Ok(([], props)) => Ok(props),
            _ => Err(ContentError::Properties),
        }
    }
}

/// The `headers` property of a raw property list, decoded; `None` when absent or malformed.
pub fn decode_headers(properties: &[u8]) -> Option<crate::types::FieldTable> {
    let mut found = None;
    walk_properties(properties, |index, value| {
        if index == HEADERS {
            found = Some(value);
        }
    })
    .ok()?;
    crate::table::decode_field_table(found?)
}

/// A raw property list with header `name` set to `value` (added, or replacing one of that
/// name); `None` if the list is malformed.
pub fn with_header(
    properties: &[u8],
    name: &str,
    value: crate::types::AMQPValue,
) -> Option<Vec<u8>> {
    walk_properties(properties, |_, _| {}).ok()?;
    let decoded = match parse_properties(properties) {
        Ok(([], props)) => props,
        _ => return None,
    };
    let mut headers = decoded.headers().clone().unwrap_or_default();
    headers.insert(name.into(), value);
    Some(encode_properties(&decoded.with_headers(headers)).to_vec())
}

/// A raw property list with a long-long-int header `name` added at the end of its headers
/// table (a table of its own when it has none), copied once, nothing decoded: the per-delivery
/// path of a stream (`x-stream-offset`). `None` if the list is malformed, `name` is longer than a
/// short string, or the headers may already hold `name` (then [`with_header`] replaces it).
pub fn with_long_header(properties: &[u8], name: &str, value: i64) -> Option<Vec<u8>> {
    let name = name.as_bytes();
    let name_len = u8::try_from(name.len()).ok()?;
    let base = properties.as_ptr() as usize;
    let mut table = None;
    let mut insert_at = 2;
    walk_properties(properties, |index, value| {
        let start = value.as_ptr() as usize - base;
        if index == HEADERS {
            table = Some(start..start + value.len());
        } else if index < HEADERS {
            insert_at = start + value.len();
        }
    })
    .ok()?;
    let entry_len = 1 + name.len() + 1 + 8;
    let mut out = Vec::with_capacity(properties.len() + entry_len + 4);
    let push_entry = |out: &mut Vec<u8>| {
        out.push(name_len);
        out.extend_from_slice(name);
        out.push(b'l');
        out.extend_from_slice(&value.to_be_bytes());
    };
    match table {
        Some(range) => {
            let table = &properties[range.clone()];
            if table
                .windows(name.len() + 1)
                .any(|w| w[0] == name_len && &w[1..] == name)
            {
                return None;
            }
            let inner = u32::from_be_bytes(table.get(..4)?.try_into().ok()?);
            let inner = inner.checked_add(u32::try_from(entry_len).ok()?)?;
            out.extend_from_slice(&properties[..range.start]);
            out.extend_from_slice(&inner.to_be_bytes());
            out.extend_from_slice(&table[4..]);
            push_entry(&mut out);
            out.extend_from_slice(&properties[range.end..]);
        }
        None => {
            let flags = u16::from_be_bytes([properties[0], properties[1]]) | (1 << (15 - HEADERS));
            out.extend_from_slice(&flags.to_be_bytes());
            out.extend_from_slice(&properties[2..insert_at]);
            out.extend_from_slice(&(entry_len as u32).to_be_bytes());
            push_entry(&mut out);
            out.extend_from_slice(&properties[insert_at..]);
        }
    }
    Some(out)
}

/// The index of the message-id property.
const MESSAGE_ID: usize = 8;

/// The message-id property of a raw property list, if set; one flag test when it is not.
pub fn message_id(properties: &[u8]) -> Option<&[u8]> {
    let flags = u16::from_be_bytes([*properties.first()?, *properties.get(1)?]);
    if flags & (1 << (15 - MESSAGE_ID)) == 0 {
        return None;
    }
    let mut found = None;
    let _ = walk_properties(properties, |index, value| {
        if index == MESSAGE_ID {
            found = value.get(1..);
        }
    });
    found
}

/// Whether a raw property list says it carries headers (one flag test).
pub fn has_headers(properties: &[u8]) -> bool {
    match (properties.first(), properties.get(1)) {
        (Some(&high), Some(&low)) => u16::from_be_bytes([high, low]) & (1 << (15 - HEADERS)) != 0,
        _ => false,
    }
}

/// The indexes of the properties a broker checks on publish.
const REPLY_TO: usize = 6;
const EXPIRATION: usize = 7;
const USER_ID: usize = 11;

/// The properties a broker validates on every publish, borrowed from a raw property list.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PublishChecks<'a> {
    pub delivery_mode: Option<u8>,
    /// The priority property.
    pub priority: Option<u8>,
    /// The expiration text (a TTL in milliseconds, as a string).
    pub expiration: Option<&'a [u8]>,
    pub user_id: Option<&'a [u8]>,
    /// reply-to (direct reply-to rewrites `amq.rabbitmq.reply-to`).
    pub reply_to: Option<&'a [u8]>,
}

/// Reads delivery-mode, priority, reply-to, expiration and user-id from a raw property list in one walk, and skips
/// the walk when none of them is set (one flag test). Malformed lists give what was found.
pub fn publish_checks(properties: &[u8]) -> PublishChecks<'_> {
    let mut checks = PublishChecks::default();
    let (Some(&high), Some(&low)) = (properties.first(), properties.get(1)) else {
        return checks;
    };
    let flags = u16::from_be_bytes([high, low]);
    let wanted = [DELIVERY_MODE, PRIORITY, REPLY_TO, EXPIRATION, USER_ID]
        .iter()
        .fold(0u16, |mask, index| mask | 1 << (15 - index));
    if flags & wanted == 0 {
        return checks;
    }
    let _ = walk_properties(properties, |index, value| match index {
        DELIVERY_MODE => checks.delivery_mode = value.first().copied(),
        PRIORITY => checks.priority = value.first().copied(),
        REPLY_TO => checks.reply_to = value.get(1..),
        EXPIRATION => checks.expiration = value.get(1..),
        USER_ID => checks.user_id = value.get(1..),
        _ => {}
    });
    checks
}

/// A raw property list with its expiration property taken out (dead-lettering removes it);
/// `None` if the list is malformed.
pub fn without_expiration(properties: &[u8]) -> Option<Vec<u8>> {
    let flags = u16::from_be_bytes([*properties.first()?, *properties.get(1)?]);
    let bit = 1 << (15 - EXPIRATION);
    let mut out = Vec::with_capacity(properties.len());
    out.extend_from_slice(&(flags & !bit).to_be_bytes());
    walk_properties(properties, |index, value| {
        if index != EXPIRATION {
            out.extend_from_slice(value);
        }
    })
    .ok()?;
    Some(out)
}

/// Encodes `props` into the raw `flags + property list` form kept in [`ContentHeader`].
pub fn encode_properties(props: &BasicProperties) -> Bytes {
    match cookie_factory::gen(gen_properties(props), Vec::with_capacity(16)) {
        Ok((bytes, _)) => Bytes::from(bytes),
        // Writing to a Vec cannot fail; an empty property list is the safe fallback.
        Err(_) => Bytes::from_static(&[0, 0]),
    }
}

/// Decodes a content header frame payload, checking its properties once.
pub fn decode_content_header(payload: &Bytes) -> Result<ContentHeader, ContentError> {
    if payload.len() < 14 {
        return Err(ContentError::Truncated);
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let weight = u16::from_be_bytes([payload[2], payload[3]]);
    let mut size = [0u8; 8];
    size.copy_from_slice(&payload[4..12]);
    if class_id != CLASS_BASIC {
        return Err(ContentError::Class(class_id));
    }
    if weight != 0 {
        return Err(ContentError::Weight(weight));
    }
    let properties = payload.slice(12..);
    walk_properties(&properties, |_, _| {})?;
    Ok(ContentHeader {
        class_id,
        body_size: u64::from_be_bytes(size),
        properties,
    })
}

/// Writes a content header frame.
pub fn encode_content_header(out: &mut BytesMut, channel: u16, body_size: u64, properties: &[u8]) {
    out.reserve(FRAME_OVERHEAD + 12 + properties.len());
    let start = begin_frame(out, FrameType::Header, channel);
    out.put_u16(CLASS_BASIC);
    out.put_u16(0);
    out.put_u64(body_size);
    out.put_slice(properties);
    end_frame(out, start);
}

/// Writes `body` as body frames of at most `frame_max - 8` payload bytes each (none if empty).
pub fn encode_body(out: &mut BytesMut, channel: u16, body: &[u8], frame_max: u32) {
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    out.reserve(body.len() + body.len().div_ceil(chunk) * FRAME_OVERHEAD);
    for piece in body.chunks(chunk) {
        encode_frame(out, FrameType::Body, channel, piece);
    }
}

/// Writes a content header and its body.
pub fn encode_content(
    out: &mut BytesMut,
    channel: u16,
    properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    encode_content_header(out, channel, body.len() as u64, properties);
    encode_body(out, channel, body, frame_max);
}
