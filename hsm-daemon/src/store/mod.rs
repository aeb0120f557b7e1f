//! Storage in layers: a small [`Store`] trait (get / ordered scan / atomic batch commit,
//! durable when commit returns), a redb backend, and [`sealed::SealedStore`] on top, which
//! AEAD-seals every record under the node sealing key.

pub mod redb_store;
pub mod sealed;

use std::fmt;

/// One (key, value) entry.
pub type Entry = (Vec<u8>, Vec<u8>);
/// A table's entries as the backend returns them: (key, value) in key order.
pub type Entries = Vec<Entry>;

/// The tables a node keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// Node metadata: seal parameters, the sealed cluster domain key.
    Meta,
    /// Token objects, by object id.
    Objects,
    /// Users, by name.
    Users,
    /// The replicated log, by index (u64 big-endian).
    RaftLog,
    /// The log's records: vote, committed, last purged.
    RaftMeta,
    /// The state machine's position: last applied log id, membership.
    Applied,
    /// Request keys already applied (u128 big-endian), so a retried command applies once.
    Requests,
    /// The same keys by the index that applied them (u64 BE || u128 BE), oldest first, to
    /// forget the oldest.
    RequestOrder,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 8] = [
        Table::Meta,
        Table::Objects,
        Table::Users,
        Table::RaftLog,
        Table::RaftMeta,
        Table::Applied,
        Table::Requests,
        Table::RequestOrder,
    ];

    /// Stable name (used as the backend's table name and in sealing's associated data).
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Objects => "objects",
            Table::Users => "users",
            Table::RaftLog => "raft_log",
            Table::RaftMeta => "raft_meta",
            Table::Applied => "applied",
            Table::Requests => "requests",
            Table::RequestOrder => "request_order",
        }
    }
}

/// One write in a batch: a value to put, or `None` to delete.
#[derive(Debug)]
pub struct Write {
    /// Table.
    pub table: Table,
    /// Key.
    pub key: Vec<u8>,
    /// New value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// Deletes every key of a table in `start..end` (`end` `None`: to the end of the table).
#[derive(Debug)]
pub struct RangeDelete {
    /// Table.
    pub table: Table,
    /// First key deleted.
    pub start: Vec<u8>,
    /// First key kept, or `None`.
    pub end: Option<Vec<u8>>,
}

/// Writes applied all together or not at all: the range deletes first, then the writes in
/// order.
#[derive(Debug, Default)]
pub struct Batch {
    /// Range deletes, applied before `writes`.
    pub ranges: Vec<RangeDelete>,
    /// The writes, in order.
    pub writes: Vec<Write>,
}

impl Batch {
    /// Adds a put.
    pub fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push(Write {
            table,
            key,
            value: Some(value),
        });
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.writes.push(Write {
            table,
            key,
            value: None,
        });
    }

    /// Adds a range delete (applied before every put and delete of the batch).
    pub fn delete_range(&mut self, table: Table, start: Vec<u8>, end: Option<Vec<u8>>) {
        self.ranges.push(RangeDelete { table, start, end });
    }
}

/// Why the store failed.
#[derive(Debug)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// A raw key-value backend.
///
/// Contract every backend keeps (the conformance tests check it):
/// - `commit` is atomic: after a crash, either every write of the batch is visible or none;
/// - `commit` is durable: once it returns `Ok`, the batch survives a crash or power loss;
/// - `scan` returns a table's entries in ascending key order.
pub trait Store: Send + Sync {
    /// Reads one value.
    ///
    /// # Errors
    /// On backend failure.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every entry of a table, ordered by key.
    ///
    /// # Errors
    /// On backend failure.
    fn scan(&self, table: Table) -> Result<Entries, StoreError>;

    /// The entries with `start <= key < end` (`end` `None`: to the end), ordered by key, at
    /// most `limit`.
    ///
    /// # Errors
    /// On backend failure.
    fn range(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;

    /// The entry with the greatest key.
    ///
    /// # Errors
    /// On backend failure.
    fn last(&self, table: Table) -> Result<Option<Entry>, StoreError>;

    /// Applies a batch atomically and durably.
    ///
    /// # Errors
    /// On backend failure; then nothing of the batch was applied.
    fn commit(&self, batch: Batch) -> Result<(), StoreError>;
}

#[cfg(test)]
pub(crate) mod conformance;
