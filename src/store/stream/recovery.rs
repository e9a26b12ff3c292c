//! Opening a stream's log: every segment scanned once, torn tails cut, damaged segments set
//! aside (see the module above).

use super::*;

/// Reads one segment file, or sets it aside: its records up to the first torn or damaged one
/// (the last segment is cut there), and its last CHUNK_START. `after`: the previous segment's
/// next offset.
pub(super) fn recover(
    path: PathBuf,
    name: u64,
    after: u64,
    last: bool,
) -> io::Result<Option<(Segment, Option<u64>)>> {
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let len = file.metadata()?.len();
    // The magic and, if there is a record, its length, CRC and offset.
    let mut head = [0u8; 24];
    let got = (len as usize).min(head.len());
    file.read_exact_at(&mut head[..got], 0)?;
    if got < MAGIC.len() || head[..MAGIC.len()] != MAGIC[..] {
        if last && len <= MAGIC.len() as u64 {
            // Created, not yet written when the process stopped: it held nothing synced.
            tracing::warn!(file = %path.display(), "stream segment: removing an empty last segment");
            fs::remove_file(&path)?;
        } else {
            tracing::warn!(file = %path.display(), "stream segment: bad magic; skipping it");
            set_aside(&path)?;
        }
        return Ok(None);
    }
    let first = if got == head.len() {
        u64::from_be_bytes([
            head[16], head[17], head[18], head[19], head[20], head[21], head[22], head[23],
        ])
    } else {
        name
    };
    let file = Arc::new(file);
    let mut segment = Segment::new(path, Arc::clone(&file), name.max(after));
    segment.bytes = len;
    let mut plan = ReadPlan {
        file,
        position: MAGIC.len() as u64,
        next: first,
        end: len,
        sealed: true,
        buf: Vec::new(),
        at: 0,
    };
    let mut last_chunk_start = None;
    let damage = loop {
        let read = plan.walk(0, SCAN_BYTES, |record, position| {
            let size = (FRAME + HEADER) as u64
                + record.filter.map_or(0, |f| f.len() as u64)
                + record.payload.len() as u64;
            segment.note(record.offset, record.timestamp, position, size);
            if record.chunk_start {
                last_chunk_start = Some(record.offset);
            }
            true
        });
        match read {
            Ok(true) => {}
            Ok(false) => break None,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => break Some(e),
            Err(e) => return Err(e),
        }
    };
    if let Some(damage) = damage {
        if last {
            tracing::warn!(file = %segment.path.display(), %damage, at = plan.position, len, "stream segment: cutting a torn tail");
            plan.file.set_len(plan.position)?;
            segment.bytes = plan.position;
        } else if segment.has_records() {
            tracing::warn!(file = %segment.path.display(), %damage, at = plan.position, len, "stream segment: keeping the records before a damaged one");
        }
    }
    if !segment.has_records() && !last {
        tracing::warn!(file = %segment.path.display(), "stream segment: no readable record; skipping it");
        set_aside(&segment.path)?;
        return Ok(None);
    }
    Ok(Some((segment, last_chunk_start)))
}
