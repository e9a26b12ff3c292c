//! A bounded walk over encoded AMQP field tables and field arrays.
//!
//! `amq-protocol` parses tables recursively with no depth limit, so a peer could send a frame of
//! nested tables deep enough to overflow the stack. Before any table reaches that parser (or is
//! forwarded raw to consumers), [`check_table`] walks it without allocating: every length is checked
//! against the bytes actually present, every key must be UTF-8, every type tag known, and nesting may
//! not exceed [`MAX_DEPTH`]. Type tags follow RabbitMQ's dialect, as `amq-protocol` does.

use thiserror::Error;

/// Deepest nesting of tables/arrays accepted. RabbitMQ's own `x-death` header nests three deep.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TableError {
    #[error("field table truncated")]
    Truncated,
    #[error("field table nests deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("unknown field type {0:#04x}")]
    UnknownType(u8),
    #[error("field name is not UTF-8")]
    BadKey,
}

fn take(input: &[u8], n: usize) -> Result<(&[u8], &[u8]), TableError> {
    if input.len() < n {
        return Err(TableError::Truncated);
    }
    Ok((&input[..n], &input[n..]))
}

fn long_len(input: &[u8]) -> Result<(usize, &[u8]), TableError> {
    let (len, rest) = take(input, 4)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    Ok((len, rest))
}

/// Checks a short string (`u8` length, UTF-8 bytes) and returns what follows it.
pub fn check_short_string(input: &[u8]) -> Result<&[u8], TableError> {
    let (len, rest) = take(input, 1)?;
    let (text, rest) = take(rest, len[0] as usize)?;
    std::str::from_utf8(text).map_err(|_| TableError::BadKey)?;
    Ok(rest)
}

/// Checks a field table (with its `u32` length prefix) at the front of `input`; returns the rest.
pub fn check_table(input: &[u8], depth: usize) -> Result<&[u8], TableError> {
    if depth >= MAX_DEPTH {
        return Err(TableError::TooDeep);
    }
    let (len, rest) = long_len(input)?;
    let (mut body, rest) = take(rest, len)?;
    while !body.is_empty() {
        body = check_short_string(body)?;
        body = check_value(body, depth)?;
    }
    Ok(rest)
}

fn check_array(input: &[u8], depth: usize) -> Result<&[u8], TableError> {
    if depth >= MAX_DEPTH {
        return Err(TableError::TooDeep);
    }
    let (len, rest) = long_len(input)?;
    let (mut body, rest) = take(rest, len)?;
    while !body.is_empty() {
        body = check_value(body, depth)?;
    }
    Ok(rest)
}

/// Checks one tagged value (type octet then value) and returns what follows it.
fn check_value(input: &[u8], depth: usize) -> Result<&[u8], TableError> {
    let (tag, rest) = take(input, 1)?;
    let fixed = match tag[0] {
        b'V' => 0,
        b't' | b'b' | b'B' => 1,
        b's' | b'U' | b'u' => 2,
        b'I' | b'i' | b'f' => 4,
        b'D' => 5,
        b'l' | b'L' | b'd' | b'T' => 8,
        b'S' | b'x' => {
            let (len, rest) = long_len(rest)?;
            return take(rest, len).map(|(_, rest)| rest);
        }
        b'F' => return check_table(rest, depth + 1),
        b'A' => return check_array(rest, depth + 1),
        other => return Err(TableError::UnknownType(other)),
    };
    take(rest, fixed).map(|(_, rest)| rest)
}

/// Encodes a field table (with its 4-byte length prefix).
pub fn encode_field_table(out: &mut bytes::BytesMut, table: &crate::types::FieldTable) {
    use crate::types::generation::gen_field_table;
    match cookie_factory::gen(gen_field_table(table), Vec::new()) {
        Ok((bytes, _)) => out.extend_from_slice(&bytes),
        // Writing to a Vec cannot fail; an empty table is the safe fallback.
        Err(_) => out.extend_from_slice(&[0, 0, 0, 0]),
    }
}

/// Decodes a field table (with its length prefix) after a bounded [`check_table`] walk; `None`
/// if it is malformed or has bytes left over.
pub fn decode_field_table(input: &[u8]) -> Option<crate::types::FieldTable> {
    match check_table(input, 0) {
        Ok([]) => {}
        _ => return None,
    }
    match crate::types::parsing::parse_field_table(input) {
        Ok(([], table)) => Some(table),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[u8]) -> Vec<u8> {
        let mut v = (entries.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(entries);
        v
    }

    #[test]
    fn accepts_every_type() {
        let mut e = Vec::new();
        for (tag, bytes) in [
            (b't', 1),
            (b'b', 1),
            (b'B', 1),
            (b's', 2),
            (b'u', 2),
            (b'I', 4),
            (b'i', 4),
            (b'f', 4),
            (b'D', 5),
            (b'l', 8),
            (b'L', 8),
            (b'd', 8),
            (b'T', 8),
            (b'V', 0),
        ] {
            e.extend_from_slice(&[1, b'k', tag]);
            e.extend(std::iter::repeat_n(0u8, bytes));
        }
        e.extend_from_slice(&[1, b'S', b'S', 0, 0, 0, 2, b'h', b'i']);
        e.extend_from_slice(&[1, b'x', b'x', 0, 0, 0, 0]);
        e.extend_from_slice(&[1, b'A', b'A', 0, 0, 0, 2, b't', 1]);
        e.extend_from_slice(&[1, b'F', b'F', 0, 0, 0, 0]);
        let t = table(&e);
        assert_eq!(check_table(&t, 0), Ok(&[][..]));
    }

    #[test]
    fn rejects_truncation_at_every_length() {
        let t = table(&[3, b'k', b'e', b'y', b'S', 0, 0, 0, 1, b'v']);
        for cut in 0..t.len() {
            assert!(check_table(&t[..cut], 0).is_err(), "cut {cut}");
        }
        // A table whose own length claims more than its contents hold.
        let lying = table(&[3, b'k', b'e', b'y', b'S', 0, 0, 0, 9, b'v']);
        assert_eq!(check_table(&lying, 0), Err(TableError::Truncated));
    }

    #[test]
    fn rejects_deep_nesting_without_recursing_far() {
        let mut t = table(&[]);
        for _ in 0..1_000 {
            let mut e = vec![0u8, b'F'];
            e.extend_from_slice(&t);
            t = table(&e);
        }
        assert_eq!(check_table(&t, 0), Err(TableError::TooDeep));
        let mut a = vec![0, 0, 0, 0];
        for _ in 0..100 {
            let mut e = vec![b'A'];
            e.extend_from_slice(&a);
            a = (e.len() as u32).to_be_bytes().to_vec();
            a.extend_from_slice(&e);
        }
        assert_eq!(check_array(&a, 0), Err(TableError::TooDeep));
    }

    #[test]
    fn rejects_unknown_tags_and_bad_keys() {
        assert_eq!(
            check_table(&table(&[1, b'k', b'?']), 0),
            Err(TableError::UnknownType(b'?'))
        );
        assert_eq!(
            check_table(&table(&[1, 0xFF, b'V']), 0),
            Err(TableError::BadKey)
        );
    }
}
