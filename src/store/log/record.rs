//! The record format of a segment file (`msgs.NNNNNNNNNN`):
//!
//! ```text
//! u32 length (big endian) | u32 crc32c(length bytes ++ payload) (big endian) | payload
//! ```
//!
//! The checksum covers the length too, so a zero-filled region (preallocated, or a torn write
//! whose data never reached the disk) never parses as a record: a zero length's checksum is
//! `crc32c([0; 4]) != 0`.

/// Bytes before the payload.
pub(super) const HEADER_LEN: u64 = 8;

/// The largest payload accepted, on write and on read (a length field above it is corruption).
pub(super) const MAX_PAYLOAD: u32 = 512 << 20;

/// The checksum stored in a record's header.
pub(super) fn checksum(len: u32, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len.to_be_bytes()), payload)
}

/// The header of a record holding `payload` (whose length the caller has bounded).
pub(super) fn header(len: u32, payload: &[u8]) -> [u8; HEADER_LEN as usize] {
    let mut header = [0; HEADER_LEN as usize];
    header[..4].copy_from_slice(&len.to_be_bytes());
    header[4..].copy_from_slice(&checksum(len, payload).to_be_bytes());
    header
}

/// A header as read: nothing in it is trusted yet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    pub len: u32,
    pub crc: u32,
}

impl Header {
    pub(super) fn parse(bytes: [u8; HEADER_LEN as usize]) -> Header {
        let [a, b, c, d, e, f, g, h] = bytes;
        Header {
            len: u32::from_be_bytes([a, b, c, d]),
            crc: u32::from_be_bytes([e, f, g, h]),
        }
    }

    /// The payload's length, if it is plausible for a record that must end within `available`
    /// bytes after its header.
    pub(super) fn bounded_len(&self, available: u64) -> Option<usize> {
        (self.len <= MAX_PAYLOAD && u64::from(self.len) <= available)
            .then(|| usize::try_from(self.len).ok())
            .flatten()
    }

    pub(super) fn matches(&self, payload: &[u8]) -> bool {
        checksum(self.len, payload) == self.crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_not_a_record() {
        let header = Header::parse([0; 8]);
        assert!(!header.matches(&[]));
        let header = Header::parse(header_of(&[]));
        assert!(header.matches(&[]));
    }

    fn header_of(payload: &[u8]) -> [u8; 8] {
        header(payload.len() as u32, payload)
    }

    #[test]
    fn checksum_covers_length() {
        let h = Header::parse(header_of(b"abc"));
        assert!(h.matches(b"abc"));
        let wrong_len = Header { len: 4, ..h };
        assert!(!wrong_len.matches(b"abc"));
        assert_eq!(h.bounded_len(3), Some(3));
        assert_eq!(h.bounded_len(2), None);
        let huge = Header {
            len: MAX_PAYLOAD + 1,
            ..h
        };
        assert_eq!(huge.bounded_len(u64::MAX), None);
    }
}
