//! Bucket files of delayed messages: one append-only file per span of due times, each a run of
//! CRC-framed records, deleted whole once every record in it has fired.
//!
//! Owns the files' byte layout and nothing else: what a record holds (a message, its due time)
//! and which bucket a record goes to are the broker's (`broker/delays.rs`). Never keeps a
//! record in memory beyond the call that reads it.
//!
//! A file is `<start>.<width>.<n>` in its directory: `start` the first second of the span (Unix
//! time), `width` its length in seconds, `n` a number that makes the name unique (a span's
//! bucket may be refilled while an older file of it is still firing). A record is
//!
//! ```text
//! len: u32 LE   payload length
//! crc: u32 LE   CRC-32C of the payload
//! payload       len bytes
//! ```
//!
//! A torn tail (a crash mid-append) ends the file: reading stops at the first record whose
//! length runs past the end or whose CRC does not match.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Frame header: length and CRC.
const HEADER: usize = 8;
/// The largest payload a reader accepts (a message body is at most 128 MiB here).
const MAX_PAYLOAD: usize = 256 << 20;
/// How much of a file a scan reads per call.
const SCAN_CHUNK: usize = 1 << 20;

/// The name of a bucket file, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketName {
    pub start: u64,
    pub width: u32,
    pub n: u64,
}

impl BucketName {
    pub fn file_name(&self) -> String {
        format!("{:012}.{}.{}", self.start, self.width, self.n)
    }

    pub fn parse(name: &str) -> Option<BucketName> {
        let mut parts = name.split('.');
        let start = parts.next()?.parse().ok()?;
        let width = parts.next()?.parse().ok()?;
        let n = parts.next()?.parse().ok()?;
        if parts.next().is_some() || width == 0 {
            return None;
        }
        Some(BucketName { start, width, n })
    }
}

/// Creates (or opens, to append) a bucket file.
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Appends framed records: one `write` for all of them.
pub fn append<'a>(
    file: &File,
    payloads: impl IntoIterator<Item = &'a [u8]>,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    buf.clear();
    for payload in payloads {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        buf.extend_from_slice(payload);
    }
    (&*file).write_all(buf)
}

/// Reads every whole record of `path` in file order, handing `visit` each one's offset, framed
/// length (header included) and payload. Stops at a torn or damaged record; returns how many
/// were read and whether the file ended cleanly.
pub fn scan(path: &Path, visit: impl FnMut(u64, u32, &[u8])) -> io::Result<(usize, bool)> {
    let scanned = scan_from(path, 0, usize::MAX, visit)?;
    Ok((scanned.count, scanned.end == Some(true)))
}

/// How far a [`scan_from`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    pub count: usize,
    /// The offset after the last record visited: where the next scan starts.
    pub next: u64,
    /// `Some(clean)` when the file is done (at its end, or at a torn or damaged record);
    /// `None` when `limit` records were visited first.
    pub end: Option<bool>,
}

/// [`scan`], from the record at `offset`, visiting at most `limit` records.
pub fn scan_from(
    path: &Path,
    offset: u64,
    limit: usize,
    mut visit: impl FnMut(u64, u32, &[u8]),
) -> io::Result<Scanned> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf: Vec<u8> = Vec::with_capacity(SCAN_CHUNK);
    let mut at = 0usize; // start of unread bytes in buf
    let mut offset = offset; // file offset of buf[at]
    let mut count = 0;
    let mut eof = false;
    let done = |count, next, clean| Scanned {
        count,
        next,
        end: Some(clean),
    };
    loop {
        if count == limit {
            return Ok(Scanned {
                count,
                next: offset,
                end: None,
            });
        }
        // A whole record in the buffer?
        let avail = &buf[at..];
        if avail.len() >= HEADER {
            let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
            let crc = u32::from_le_bytes([avail[4], avail[5], avail[6], avail[7]]);
            if len > MAX_PAYLOAD {
                return Ok(done(count, offset, false));
            }
            if avail.len() >= HEADER + len {
                let payload = &avail[HEADER..HEADER + len];
                if crc32c::crc32c(payload) != crc {
                    return Ok(done(count, offset, false));
                }
                let framed = (HEADER + len) as u32;
                visit(offset, framed, payload);
                count += 1;
                at += HEADER + len;
                offset += u64::from(framed);
                continue;
            }
        }
        if eof {
            return Ok(done(count, offset, buf.len() == at));
        }
        // Keep the partial record, read more.
        buf.drain(..at);
        at = 0;
        let want = SCAN_CHUNK.max(match buf.len() >= HEADER {
            true => HEADER + u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize,
            false => 0,
        });
        let old = buf.len();
        buf.resize(old + want, 0);
        let read = read_full(&mut file, &mut buf[old..])?;
        buf.truncate(old + read);
        if read < want {
            eof = true;
        }
    }
}

fn read_full(file: &mut File, mut out: &mut [u8]) -> io::Result<usize> {
    let mut total = 0;
    while !out.is_empty() {
        match file.read(out) {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                out = &mut out[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Reads the record framed at `offset` (`framed` bytes, header included) and checks its CRC.
pub fn read_at(file: &File, offset: u64, framed: u32) -> io::Result<Vec<u8>> {
    let framed = framed as usize;
    if !(HEADER..=HEADER + MAX_PAYLOAD).contains(&framed) {
        return Err(damaged());
    }
    let mut buf = vec![0u8; framed];
    file.read_exact_at(&mut buf, offset)?;
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len != framed - HEADER || crc32c::crc32c(&buf[HEADER..]) != crc {
        return Err(damaged());
    }
    buf.drain(..HEADER);
    Ok(buf)
}

fn damaged() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "damaged delayed-message record")
}

/// The bucket files in `dir` (none if it does not exist); names that are not buckets are
/// skipped.
pub fn list(dir: &Path) -> io::Result<Vec<(BucketName, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(bucket) = name.to_str().and_then(BucketName::parse) {
            found.push((bucket, entry.path()));
        }
    }
    Ok(found)
}

/// Syncs a directory, so that the files created in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_and_a_torn_tail_ends_the_file() {
        let dir = std::env::temp_dir().join(format!("warren-delayed-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(
            BucketName {
                start: 5,
                width: 1,
                n: 0,
            }
            .file_name(),
        );
        let file = open_append(&path).unwrap();
        let mut buf = Vec::new();
        let big = vec![9u8; 3 << 20];
        append(&file, [&b"one"[..], &b""[..]], &mut buf).unwrap();
        for payload in [&big[..], &b"four"[..]] {
            append(&file, [payload], &mut buf).unwrap();
        }
        let mut seen = Vec::new();
        let (n, clean) = scan(&path, |offset, framed, payload| {
            seen.push((offset, framed, payload.len()))
        })
        .unwrap();
        assert_eq!((n, clean), (4, true));
        assert_eq!(seen[3].2, 4);
        let (offset, framed, _) = seen[2];
        let reader = File::open(&path).unwrap();
        assert_eq!(read_at(&reader, offset, framed).unwrap(), big);
        // Cut the last record in half.
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (n, clean) = scan(&path, |_, _, _| {}).unwrap();
        assert_eq!((n, clean), (3, false));
        // In steps: two records, then the rest.
        let first = scan_from(&path, 0, 2, |_, _, _| {}).unwrap();
        assert_eq!((first.count, first.next, first.end), (2, seen[2].0, None));
        let rest = scan_from(&path, first.next, 10, |_, _, _| {}).unwrap();
        assert_eq!((rest.count, rest.end), (1, Some(false)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_round_trip() {
        let name = BucketName {
            start: 1_700_000_000,
            width: 60,
            n: 7,
        };
        assert_eq!(BucketName::parse(&name.file_name()), Some(name));
        assert_eq!(BucketName::parse("x.1.2"), None);
        assert_eq!(BucketName::parse("1.0.2"), None);
    }
}
