//! The durable Raft log of one group (openraft's `RaftLogStorage`): the vote, the entries, the
//! committed id and the purge point, kept in memory for reads and journaled to one file in the
//! group's directory ([`journal`]) for recovery.
//!
//! The vote, a truncation and a purge return once fsynced; appended entries are readable at once
//! and reported to openraft (the IO-flushed callback) once fsynced. When purges and truncations
//! leave the file mostly dead, it is rewritten with what is live. Owns the log's memory and
//! file; never applies entries (that is [`super::state`]).

mod journal;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    AnyError, LogId, OptionalSend, RaftLogId, RaftTypeConfig, StorageError, StorageIOError, Vote,
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use journal::{Done, Journal};

const VOTE: u8 = 1;
const ENTRY: u8 = 2;
const TRUNCATE: u8 = 3;
const PURGE: u8 = 4;
const COMMITTED: u8 = 5;

/// A rewrite waits until the file holds this much more than twice what is live.
const REWRITE_SLACK: u64 = 64 << 10;

type Id<C> = <C as RaftTypeConfig>::NodeId;

/// The log as it stands, shared by the store and its readers (the replication tasks).
struct Log<C: RaftTypeConfig> {
    /// Entry by index, with the size of its record in the file.
    entries: BTreeMap<u64, (C::Entry, u64)>,
    vote: Option<Vote<Id<C>>>,
    committed: Option<LogId<Id<C>>>,
    purged: Option<LogId<Id<C>>>,
    /// The sum of the entries' record sizes.
    live: u64,
    /// The journal's length (what was sent to it).
    file: u64,
}

/// One group's log store; see the module doc.
pub struct LogStore<C: RaftTypeConfig> {
    log: Arc<Mutex<Log<C>>>,
    journal: Arc<Journal>,
}

/// A read handle on the log, for openraft's replication tasks.
pub struct LogReader<C: RaftTypeConfig> {
    log: Arc<Mutex<Log<C>>>,
}

impl<C: RaftTypeConfig> Clone for LogReader<C> {
    fn clone(&self) -> Self {
        LogReader {
            log: self.log.clone(),
        }
    }
}

fn io_error<C: RaftTypeConfig>(e: impl std::error::Error + 'static) -> StorageError<Id<C>> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
{
    /// The index of the last entry known committed (when the log was last told).
    pub fn committed_index(&self) -> Option<u64> {
        self.log.lock().committed.as_ref().map(|id| id.index)
    }

    /// Opens the log in `dir` (created if missing): replays the journal (a torn tail cut) and
    /// starts its writer. A record that passes its CRC but does not decode is an error.
    pub fn open(dir: &Path) -> io::Result<LogStore<C>> {
        std::fs::create_dir_all(dir)?;
        let recovered = journal::recover(dir)?;
        let mut log = Log::<C> {
            entries: BTreeMap::new(),
            vote: None,
            committed: None,
            purged: None,
            live: 0,
            file: recovered.len,
        };
        for (kind, body) in &recovered.records {
            log.replay(*kind, body).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("raft log {}: record kind {kind}: {e}", dir.display()),
                )
            })?;
        }
        tracing::debug!(dir = %dir.display(), entries = log.entries.len(), purged = ?log.purged, "raft log opened");
        let journal = Journal::open(dir)?;
        Ok(LogStore {
            log: Arc::new(Mutex::new(log)),
            journal: Arc::new(journal),
        })
    }

    /// Sends records to the journal and waits until they are fsynced.
    async fn write_durably(&self, bytes: Vec<u8>) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.journal
            .append(bytes, Some(Box::new(move |r| drop(tx.send(r)))));
        rx.await
            .map_err(|_| io::Error::other("raft log writer stopped"))?
    }

    /// Rewrites the journal with only what is live, when most of the file is dead.
    async fn compact_if_worth_it(&self) -> io::Result<()> {
        let bytes = {
            let log = self.log.lock();
            if log.file <= 2 * log.live + REWRITE_SLACK {
                return Ok(());
            }
            log.live_records()?
        };
        let len = bytes.len() as u64;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done: Done = Box::new(move |r| drop(tx.send(r)));
        self.journal.replace(bytes, done);
        rx.await
            .map_err(|_| io::Error::other("raft log writer stopped"))??;
        let mut log = self.log.lock();
        tracing::debug!(from = log.file, to = len, "raft log rewritten");
        log.file = len;
        Ok(())
    }

    fn journal_record(&self, kind: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(body.len() + 9);
        journal::frame(kind, body, &mut bytes);
        self.log.lock().file += bytes.len() as u64;
        bytes
    }
}

impl<C: RaftTypeConfig> Log<C>
where
    C::Entry: Serialize + DeserializeOwned,
{
    fn replay(&mut self, kind: u8, body: &[u8]) -> Result<(), String> {
        let size = body.len() as u64 + 9;
        match kind {
            VOTE => self.vote = Some(serde_json::from_slice(body).map_err(|e| e.to_string())?),
            COMMITTED => {
                self.committed = serde_json::from_slice(body).map_err(|e| e.to_string())?
            }
            ENTRY => {
                let entry: C::Entry = serde_json::from_slice(body).map_err(|e| e.to_string())?;
                let index = entry.get_log_id().index;
                self.truncate(index);
                self.entries.insert(index, (entry, size));
                self.live += size;
            }
            TRUNCATE => {
                let since = body
                    .try_into()
                    .map(u64::from_le_bytes)
                    .map_err(|_| "bad truncate record")?;
                self.truncate(since);
            }
            PURGE => {
                let upto: LogId<Id<C>> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
                self.purge(upto);
            }
            other => return Err(format!("unknown record kind {other}")),
        }
        Ok(())
    }

    /// Drops the entries from `since` on.
    fn truncate(&mut self, since: u64) {
        for (_, (_, size)) in self.entries.split_off(&since) {
            self.live -= size;
        }
    }

    /// Drops the entries up to `upto` (inclusive) and remembers it as the purge point.
    fn purge(&mut self, upto: LogId<Id<C>>) {
        let kept = self.entries.split_off(&(upto.index + 1));
        for (_, (_, size)) in std::mem::replace(&mut self.entries, kept) {
            self.live -= size;
        }
        self.purged = Some(upto);
    }

    fn last_log_id(&self) -> Option<LogId<Id<C>>> {
        match self.entries.last_key_value() {
            Some((_, (entry, _))) => Some(entry.get_log_id().clone()),
            None => self.purged.clone(),
        }
    }

    /// The journal of what is live: vote, committed, purge point, entries.
    fn live_records(&self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(self.live as usize + 256);
        if let Some(vote) = &self.vote {
            journal::frame(VOTE, &encode(vote)?, &mut bytes);
        }
        journal::frame(COMMITTED, &encode(&self.committed)?, &mut bytes);
        if let Some(purged) = &self.purged {
            journal::frame(PURGE, &encode(purged)?, &mut bytes);
        }
        for (entry, _) in self.entries.values() {
            journal::frame(ENTRY, &encode(entry)?, &mut bytes);
        }
        Ok(bytes)
    }
}

/// The entries of `log` in `range` (both readers of the log serve them the same way).
fn entries_in<C: RaftTypeConfig>(log: &Mutex<Log<C>>, range: impl RangeBounds<u64>) -> Vec<C::Entry>
where
    C::Entry: Clone,
{
    let log = log.lock();
    log.entries
        .range(range)
        .map(|(_, (entry, _))| entry.clone())
        .collect()
}

impl<C> RaftLogReader<C> for LogReader<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<Id<C>>> {
        Ok(entries_in(&self.log, range))
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<Id<C>>> {
        Ok(entries_in(&self.log, range))
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
{
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<Id<C>>> {
        let log = self.log.lock();
        Ok(LogState {
            last_purged_log_id: log.purged.clone(),
            last_log_id: log.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            log: self.log.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<Id<C>>) -> Result<(), StorageError<Id<C>>> {
        let body = encode(vote).map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        let bytes = self.journal_record(VOTE, &body);
        self.write_durably(bytes)
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        self.log.lock().vote = Some(vote.clone());
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<Id<C>>>, StorageError<Id<C>>> {
        Ok(self.log.lock().vote.clone())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<Id<C>>>,
    ) -> Result<(), StorageError<Id<C>>> {
        let body = encode(&committed).map_err(io_error::<C>)?;
        let bytes = self.journal_record(COMMITTED, &body);
        self.log.lock().committed = committed;
        self.journal.append(bytes, None);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<Id<C>>>, StorageError<Id<C>>> {
        Ok(self.log.lock().committed.clone())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<Id<C>>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Encoded first, so that a failure leaves the log as it was.
        let mut bytes = Vec::new();
        let mut sized = Vec::new();
        for entry in entries {
            let body = encode(&entry).map_err(io_error::<C>)?;
            let before = bytes.len();
            journal::frame(ENTRY, &body, &mut bytes);
            sized.push((entry, (bytes.len() - before) as u64));
        }
        {
            let mut log = self.log.lock();
            for (entry, size) in sized {
                let index = entry.get_log_id().index;
                log.truncate(index);
                log.entries.insert(index, (entry, size));
                log.live += size;
            }
            log.file += bytes.len() as u64;
        }
        self.journal
            .append(bytes, Some(Box::new(move |r| callback.log_io_completed(r))));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<Id<C>>) -> Result<(), StorageError<Id<C>>> {
        tracing::debug!(since = %log_id, "raft log truncate");
        self.log.lock().truncate(log_id.index);
        let bytes = self.journal_record(TRUNCATE, &log_id.index.to_le_bytes());
        self.write_durably(bytes).await.map_err(io_error::<C>)?;
        self.compact_if_worth_it().await.map_err(io_error::<C>)
    }

    async fn purge(&mut self, log_id: LogId<Id<C>>) -> Result<(), StorageError<Id<C>>> {
        tracing::debug!(upto = %log_id, "raft log purge");
        let body = encode(&log_id).map_err(io_error::<C>)?;
        self.log.lock().purge(log_id);
        let bytes = self.journal_record(PURGE, &body);
        self.write_durably(bytes).await.map_err(io_error::<C>)?;
        self.compact_if_worth_it().await.map_err(io_error::<C>)
    }
}
