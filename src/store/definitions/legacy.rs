//! The definitions file of Warren before the log (one file rewritten whole on every change),
//! read once at start to upgrade a data directory to the log ([`super::DefinitionLog::open`]).
//! Nothing writes this format any more (but the tests, to have something to upgrade).
//!
//! Format: `WRNDEF01` | records, each `u32 length (BE) | bytes` | `u32 crc32c` of everything
//! before it. A file that fails any check is refused with an error that names it: the broker must
//! not start with half its topology.

use std::fs;
use std::io;
use std::path::Path;

use bytes::Bytes;

pub(super) const FILE: &str = "definitions";
const MAGIC: &[u8; 8] = b"WRNDEF01";
/// No definitions file is larger than this (a bound before reading it whole).
const MAX_FILE: u64 = 256 * 1024 * 1024;

/// Writes a definitions file in the old format (for the upgrade tests).
#[cfg(test)]
pub fn save(dir: &Path, records: &[Vec<u8>]) -> io::Result<()> {
    use std::fs::File;
    use std::io::Write;
    fs::create_dir_all(dir)?;
    let mut data = Vec::with_capacity(16 + records.iter().map(|r| r.len() + 4).sum::<usize>());
    data.extend_from_slice(MAGIC);
    for record in records {
        let len = u32::try_from(record.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "definition too large"))?;
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(record);
    }
    let crc = crc32c::crc32c(&data);
    data.extend_from_slice(&crc.to_be_bytes());
    let tmp = dir.join("definitions.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&data)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(FILE))?;
    File::open(dir)?.sync_all()
}

/// Reads the old definitions file in `dir`; no file means no definitions.
pub fn load(dir: &Path) -> io::Result<Vec<Bytes>> {
    let path = dir.join(FILE);
    let corrupt = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    let size = match fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if size > MAX_FILE {
        return Err(corrupt("larger than any definitions file Warren writes"));
    }
    let data = Bytes::from(fs::read(&path)?);
    if data.len() < MAGIC.len() + 4 || &data[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a Warren definitions file"));
    }
    let (body, trailer) = data.split_at(data.len() - 4);
    let stored = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if crc32c::crc32c(body) != stored {
        return Err(corrupt("checksum mismatch"));
    }
    let mut records = Vec::new();
    let mut at = MAGIC.len();
    while at < body.len() {
        let Some(len) = body.get(at..at + 4) else {
            return Err(corrupt("truncated record length"));
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let start = at + 4;
        let Some(end) = start.checked_add(len).filter(|&end| end <= body.len()) else {
            return Err(corrupt("record longer than the file"));
        };
        records.push(data.slice(start..end));
        at = end;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("warren-legacy-defs-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn round_trip_and_replace() {
        let dir = dir("round-trip");
        assert!(load(&dir).expect("no file is no definitions").is_empty());
        save(&dir, &[b"one".to_vec(), Vec::new(), b"three".to_vec()]).expect("save");
        let records = load(&dir).expect("load");
        assert_eq!(records, [&b"one"[..], b"", b"three"]);
        save(&dir, &[b"only".to_vec()]).expect("save again");
        assert_eq!(load(&dir).expect("load"), [&b"only"[..]]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn any_damage_is_refused_never_half_read() {
        let dir = dir("damage");
        save(&dir, &[b"exchange".to_vec(), b"queue".to_vec()]).expect("save");
        let good = fs::read(dir.join(FILE)).expect("read");
        for cut in 0..good.len() {
            fs::write(dir.join(FILE), &good[..cut]).expect("write");
            assert!(load(&dir).is_err(), "truncated at {cut}");
        }
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            fs::write(dir.join(FILE), &bad).expect("write");
            assert!(load(&dir).is_err(), "flipped byte {at}");
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
