//! The log store on its own: what survives a reopen, a torn tail, truncation, purge and rewrite.

use std::path::PathBuf;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};

use super::journal::FILE;
use super::LogStore;
use crate::cluster::machine::{Machine, TypeConfig};

struct Nothing;

impl Machine for Nothing {
    type Command = String;
    type Response = ();
    fn apply(&mut self, _: &String) {}
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

type C = TypeConfig<Nothing>;
type Entry = openraft::Entry<C>;

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-raft-log-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn entry(index: u64) -> Entry {
    Entry {
        log_id: id(index),
        payload: EntryPayload::Normal(format!("command {index}")),
    }
}

async fn indexes(store: &mut LogStore<C>) -> Vec<u64> {
    store
        .try_get_log_entries(0..u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

#[tokio::test]
async fn vote_entries_and_committed_survive_a_reopen() {
    let dir = dir("reopen");
    {
        let mut store = LogStore::<C>::open(&dir).unwrap();
        store.save_vote(&Vote::new(3, 2)).await.unwrap();
        store.blocking_append((1..=5).map(entry)).await.unwrap();
        store.save_committed(Some(id(4))).await.unwrap();
        store.blocking_append([entry(6)]).await.unwrap(); // makes the committed record durable
    }
    let mut store = LogStore::<C>::open(&dir).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    assert_eq!(store.read_committed().await.unwrap(), Some(id(4)));
    assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4, 5, 6]);
    let entries = store.try_get_log_entries(2..4).await.unwrap();
    assert!(matches!(&entries[0].payload, EntryPayload::Normal(c) if c == "command 2"));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(
        (state.last_purged_log_id, state.last_log_id),
        (None, Some(id(6)))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_torn_tail_is_cut_on_recovery() {
    let dir = dir("torn");
    {
        let mut store = LogStore::<C>::open(&dir).unwrap();
        store.blocking_append((1..=3).map(entry)).await.unwrap();
    }
    let path = dir.join(FILE);
    let whole = std::fs::metadata(&path).unwrap().len();
    {
        let mut store = LogStore::<C>::open(&dir).unwrap();
        store.blocking_append([entry(4)]).await.unwrap();
    }
    // A crash in the middle of the fourth record; then garbage that is no record at all.
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let mut store = LogStore::<C>::open(&dir).unwrap();
    assert_eq!(indexes(&mut store).await, vec![1, 2, 3]);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        whole,
        "the torn record was cut off"
    );
    store.blocking_append([entry(4)]).await.unwrap();
    drop(store);
    let mut store = LogStore::<C>::open(&dir).unwrap();
    assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn truncation_and_purge_survive_a_reopen_and_a_rewrite_shrinks_the_file() {
    let dir = dir("purge");
    let big = |index: u64| Entry {
        log_id: id(index),
        payload: EntryPayload::Normal("x".repeat(1000)),
    };
    {
        let mut store = LogStore::<C>::open(&dir).unwrap();
        store.blocking_append((1..=200).map(big)).await.unwrap();
        store.truncate(id(151)).await.unwrap();
        store.blocking_append([entry(151)]).await.unwrap();
        store.purge(id(140)).await.unwrap();
    }
    let size = std::fs::metadata(dir.join(FILE)).unwrap().len();
    assert!(
        size < 20_000,
        "the journal was rewritten with the 11 live entries: {size} bytes"
    );
    let mut store = LogStore::<C>::open(&dir).unwrap();
    assert_eq!(indexes(&mut store).await, (141..=151).collect::<Vec<_>>());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(
        (state.last_purged_log_id, state.last_log_id),
        (Some(id(140)), Some(id(151)))
    );
    // A purge of everything leaves the purge point as the last log id.
    store.purge(id(151)).await.unwrap();
    drop(store);
    let mut store = LogStore::<C>::open(&dir).unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(
        (state.last_purged_log_id, state.last_log_id),
        (Some(id(151)), Some(id(151)))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
