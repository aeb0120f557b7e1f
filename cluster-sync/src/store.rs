//! The raft log and vote over the daemon's store ([`LogBackend`]), as openraft's
//! `RaftLogStorage`.
//!
//! The backend is synchronous (redb); every call runs on tokio's blocking pool so that a
//! commit's fsync never stalls the I/O threads. Entries are encoded here (postcard) and handed
//! to the backend as bytes keyed by index; the backend seals them under the node sealing key.

use crate::{Entry, Fault, LogId, NodeId, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageError};
use openraft::{StorageIOError, Vote};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// The small records beside the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaKey {
    /// The current vote (term, candidate, committed flag).
    Vote,
    /// The last log id purged (entries up to it are gone).
    LastPurged,
}

impl MetaKey {
    /// Stable name of the record.
    pub fn name(self) -> &'static str {
        match self {
            MetaKey::Vote => "vote",
            MetaKey::LastPurged => "last_purged",
        }
    }
}

/// The log's storage, as the daemon provides it.
///
/// Correctness rules each implementation keeps (openraft relies on them):
/// - `write_meta`, `append`, `delete_from` are durable when they return `Ok` (fsynced);
/// - `append` is atomic: after a crash all of its entries are present or none;
/// - `read_range` returns entries in index order; `last_entry` the one with the highest index;
/// - reads may run while writes are in progress, and see either the state before or after.
pub trait LogBackend: Send + Sync + 'static {
    /// Reads a record.
    ///
    /// # Errors
    /// On a store fault.
    fn read_meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>, Fault>;
    /// Writes a record durably.
    ///
    /// # Errors
    /// On a store fault.
    fn write_meta(&self, key: MetaKey, value: Vec<u8>) -> Result<(), Fault>;
    /// Writes entries (index, encoded entry) atomically and durably.
    ///
    /// # Errors
    /// On a store fault; then none was written.
    fn append(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), Fault>;
    /// Entries with `start <= index < end`, in order (at most `limit` of them).
    ///
    /// # Errors
    /// On a store fault.
    fn read_range(&self, start: u64, end: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Fault>;
    /// The entry with the highest index.
    ///
    /// # Errors
    /// On a store fault.
    fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>, Fault>;
    /// Deletes every entry with `index >= start`, durably.
    ///
    /// # Errors
    /// On a store fault.
    fn delete_from(&self, start: u64) -> Result<(), Fault>;
    /// Deletes every entry with `index <= end`.
    ///
    /// # Errors
    /// On a store fault.
    fn delete_through(&self, end: u64) -> Result<(), Fault>;
}

type RaftResult<T> = std::result::Result<T, StorageError<NodeId>>;

fn io(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::fmt::Display,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::error(e.to_string())).into()
}

/// Runs a synchronous store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    f: impl FnOnce() -> std::result::Result<T, Fault> + Send + 'static,
) -> RaftResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(fault)) => Err(io(subject, verb, fault)),
        Err(join) => Err(io(subject, verb, format!("store task failed: {join}"))),
    }
}

fn encode<T: serde::Serialize>(v: &T) -> std::result::Result<Vec<u8>, Fault> {
    postcard::to_allocvec(v).map_err(|e| Fault(format!("encoding: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> std::result::Result<T, Fault> {
    postcard::from_bytes(b).map_err(|e| Fault(format!("decoding: {e}")))
}

/// openraft's log storage over a [`LogBackend`]. Cheap to clone (readers are clones).
#[derive(Clone)]
pub struct LogStore {
    backend: Arc<dyn LogBackend>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

impl LogStore {
    /// A log store over a backend.
    pub fn new(backend: Arc<dyn LogBackend>) -> LogStore {
        LogStore { backend }
    }

    async fn meta<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: MetaKey,
    ) -> RaftResult<Option<T>> {
        let backend = self.backend.clone();
        blocking(ErrorSubject::Store, ErrorVerb::Read, move || {
            backend.read_meta(key)?.map(|b| decode(&b)).transpose()
        })
        .await
    }

    async fn put_meta<T: serde::Serialize>(&self, key: MetaKey, value: &T) -> RaftResult<()> {
        let bytes = encode(value).map_err(|e| io(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let backend = self.backend.clone();
        blocking(ErrorSubject::Store, ErrorVerb::Write, move || {
            backend.write_meta(key, bytes)
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> RaftResult<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => x.saturating_add(1),
            Bound::Excluded(x) => *x,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        let backend = self.backend.clone();
        blocking(ErrorSubject::Logs, ErrorVerb::Read, move || {
            backend
                .read_range(start, end, usize::MAX)?
                .into_iter()
                .map(|(index, bytes)| {
                    let entry: Entry = decode(&bytes)?;
                    if entry.log_id.index != index {
                        return Err(Fault(format!(
                            "log entry stored at {index} says it is {}",
                            entry.log_id.index
                        )));
                    }
                    Ok(entry)
                })
                .collect()
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> RaftResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.meta(MetaKey::LastPurged).await?;
        let backend = self.backend.clone();
        let last: Option<LogId> = blocking(ErrorSubject::Logs, ErrorVerb::Read, move || {
            match backend.last_entry()? {
                None => Ok(None),
                Some((_, bytes)) => Ok(Some(decode::<Entry>(&bytes)?.log_id)),
            }
        })
        .await?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> RaftResult<()> {
        self.put_meta(MetaKey::Vote, vote).await
    }

    async fn read_vote(&mut self) -> RaftResult<Option<Vote<NodeId>>> {
        self.meta(MetaKey::Vote).await
    }

    // `save_committed` / `read_committed` keep openraft's defaults (not stored): the state
    // machine is durable on its own (each applied batch is one fsynced transaction), so
    // nothing needs re-applying at start, and each batch saves an fsync.

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> RaftResult<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = encode(&entry).map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            encoded.push((entry.log_id.index, bytes));
        }
        let backend = self.backend.clone();
        let result = blocking(ErrorSubject::Logs, ErrorVerb::Write, move || {
            backend.append(encoded)
        })
        .await;
        // Durable (the backend fsynced) before openraft is told so.
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> RaftResult<()> {
        let backend = self.backend.clone();
        blocking(ErrorSubject::Logs, ErrorVerb::Delete, move || {
            backend.delete_from(log_id.index)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> RaftResult<()> {
        // The purge mark first: entries at or below it are ignored even if the delete is lost.
        self.put_meta(MetaKey::LastPurged, &log_id).await?;
        let backend = self.backend.clone();
        blocking(ErrorSubject::Logs, ErrorVerb::Delete, move || {
            backend.delete_through(log_id.index)
        })
        .await
    }
}
