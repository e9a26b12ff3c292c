//! A [`Machine`] as openraft's state machine (`RaftStateMachine`): committed entries applied in
//! order, the last applied id and membership tracked beside the machine, snapshots built from
//! [`Machine::snapshot`] and installed through [`Machine::restore`].
//!
//! The machine itself is not written to disk: the snapshot file ([`super::snapshot`]) is, and on
//! start-up the machine is restored from it and openraft re-applies the log after it. Owns the
//! machine; never writes the log.

use std::io::{self, Cursor};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError,
    StorageIOError, StoredMembership,
};
use parking_lot::Mutex;

use super::machine::{Machine, NodeId, TypeConfig};
use super::snapshot::{Meta, SnapshotFile, Stored};

type Entry<M> = openraft::Entry<TypeConfig<M>>;

/// The machine and how far it has applied.
struct Applied<M> {
    machine: M,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
}

/// One group's state machine; see the module doc.
pub struct MachineStore<M: Machine> {
    applied: Arc<Mutex<Applied<M>>>,
    snapshots: Arc<SnapshotFile>,
    /// Makes snapshot ids unique among those built by this process.
    built: Arc<AtomicU64>,
    /// The weight of the commands applied since the last snapshot (see [`Machine::weight`]).
    logged: Arc<AtomicU64>,
}

/// Builds a snapshot of the machine as it stands when the builder is asked for one.
pub struct SnapshotBuilder<M: Machine> {
    applied: Arc<Mutex<Applied<M>>>,
    snapshots: Arc<SnapshotFile>,
    built: Arc<AtomicU64>,
    logged: Arc<AtomicU64>,
}

impl<M: Machine> MachineStore<M> {
    /// `machine` restored from the snapshot in `dir`, if there is one.
    pub fn open(dir: &Path, mut machine: M) -> io::Result<MachineStore<M>> {
        std::fs::create_dir_all(dir)?;
        let snapshots = SnapshotFile::open(dir)?;
        let (last_applied, membership) = match snapshots.current() {
            Some(stored) => {
                machine.restore(&stored.data).map_err(|why| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("snapshot in {}: {why}", dir.display()),
                    )
                })?;
                (stored.meta.last_log_id, stored.meta.last_membership)
            }
            None => (None, StoredMembership::default()),
        };
        Ok(MachineStore {
            applied: Arc::new(Mutex::new(Applied {
                machine,
                last_applied,
                membership,
            })),
            snapshots: Arc::new(snapshots),
            built: Arc::new(AtomicU64::new(0)),
            logged: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Whether a snapshot is due: the commands applied since the last weigh at least as much
    /// as the state, and at least `least`.
    pub fn snapshot_due(&self, least: u64) -> bool {
        let logged = self.logged.load(Ordering::Relaxed);
        logged >= least && logged >= self.read(|m| m.weight())
    }

    /// Reads the machine (on this replica: it may lag the leader).
    pub fn read<R>(&self, f: impl FnOnce(&M) -> R) -> R {
        f(&self.applied.lock().machine)
    }

    /// A second handle on the same machine, for reads after openraft has taken the store.
    pub(crate) fn reader(&self) -> MachineStore<M> {
        MachineStore {
            applied: self.applied.clone(),
            snapshots: self.snapshots.clone(),
            built: self.built.clone(),
            logged: self.logged.clone(),
        }
    }
}

/// Writes a snapshot file on a blocking thread.
async fn save(snapshots: Arc<SnapshotFile>, stored: Stored) -> Result<(), StorageError<NodeId>> {
    let signature = Some(stored.meta.signature());
    let error = match tokio::task::spawn_blocking(move || snapshots.save(stored)).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => AnyError::new(&e),
        Err(e) => AnyError::new(&e),
    };
    Err(StorageIOError::write_snapshot(signature, error).into())
}

impl<M: Machine> RaftSnapshotBuilder<TypeConfig<M>> for SnapshotBuilder<M> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig<M>>, StorageError<NodeId>> {
        let (data, last_log_id, last_membership) = {
            let applied = self.applied.lock();
            self.logged.store(0, Ordering::Relaxed);
            (
                applied.machine.snapshot(),
                applied.last_applied,
                applied.membership.clone(),
            )
        };
        let n = self.built.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{n}", id.leader_id.term, id.index),
            None => format!("0-0-{n}"),
        };
        let meta = Meta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let data = Arc::new(data);
        save(
            self.snapshots.clone(),
            Stored {
                meta: meta.clone(),
                data: data.clone(),
            },
        )
        .await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        })
    }
}

impl<M: Machine> RaftStateMachine<TypeConfig<M>> for MachineStore<M> {
    type SnapshotBuilder = SnapshotBuilder<M>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let applied = self.applied.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> Result<Vec<Option<M::Response>>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<M>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.applied.lock();
        let mut responses = Vec::new();
        let mut logged = 0;
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            responses.push(match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Normal(command) => {
                    logged += M::command_weight(&command);
                    Some(applied.machine.apply(&command))
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    None
                }
            });
        }
        self.logged.fetch_add(logged, Ordering::Relaxed);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            applied: self.applied.clone(),
            snapshots: self.snapshots.clone(),
            built: self.built.clone(),
            logged: self.logged.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = Arc::new(snapshot.into_inner());
        {
            let mut applied = self.applied.lock();
            applied.machine.restore(&data).map_err(|why| {
                let e = io::Error::new(io::ErrorKind::InvalidData, why);
                StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
            })?;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            self.logged.store(0, Ordering::Relaxed);
        }
        tracing::info!(id = %meta.snapshot_id, last = ?meta.last_log_id, "snapshot installed");
        save(
            self.snapshots.clone(),
            Stored {
                meta: meta.clone(),
                data,
            },
        )
        .await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig<M>>>, StorageError<NodeId>> {
        Ok(self.snapshots.current().map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data.to_vec())),
        }))
    }
}
